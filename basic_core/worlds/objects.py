"""The objects world: 1-4 objects on a 2x2 grid, every caption a complete description of its scene.

Built so that a negative is a negative. A caption names the count, the background and every object's
size, colour, fill, shape and cell ("two shapes on gray: large red solid circle top left, small blue
outlined star bottom right"), so it is true of another scene only if that scene is the same up to
jitter and shading. With 6 shapes x 3 colours x 3 sizes x 2 fills per object, 4 cells and 3
backgrounds, scenes of one object (4% of them) are the ones that repeat:
`python -m basic_core.data fn-rate --world objects --group-size 4096` counts them (under 1%).

It is also built to be learnable by a small model on a CPU: four large cells at 32x32, shapes chosen for
distinct silhouettes, captions in one fixed order (count, background, objects in reading order), and
only three colours: with eight, a pilot's towers matched scenes by their colours and learned little else
(one seed; experiments/README.md, the testbed's pilots). Zero-shot tasks ask one attribute of single-
object scenes (the count task: scenes of 1-4 objects); each class is the mean embedding of the captions
of scenes drawn with that attribute fixed (the prompts are descriptions like the training captions, not
templates with a word left out).
"""

from __future__ import annotations

import dataclasses
import re
import zlib

import numpy as np

from basic_core.data.source import PairSet, noisy_caption_sources
from basic_core.data.tasks import ZeroShotTask
from basic_core.worlds import render
from basic_core.worlds.fresh import FreshPairs

SHAPES = ("circle", "square", "triangle", "cross", "star", "heart")
_RENDER_SHAPE = np.array([render.SHAPE_NAMES.index(s) for s in SHAPES])
COLOURS = ("red", "green", "blue")
PALETTE_Cx3 = np.array([(220, 30, 30), (30, 170, 50), (40, 80, 235)], np.float32)
SIZES = ("small", "medium", "large")
RADII = np.array([0.10, 0.145, 0.19], np.float32)  # image fractions; a cell is 1/2 wide
FILLS = ("solid", "outlined")
_RENDER_FILL = np.array([render.FILL_NAMES.index(f) for f in FILLS])
CELLS = ("top left", "top right", "bottom left", "bottom right")  # the 2x2 grid in reading order
BACKGROUNDS = ("black", "gray", "white")
BACKGROUND_RGB = np.array([(15, 15, 15), (128, 128, 128), (240, 240, 240)], np.uint8)
COUNT_WORDS = ("one", "two", "three", "four")
COUNT_P = (0.04, 0.32, 0.32, 0.32)
MAX_OBJECTS = len(CELLS)
ATTRIBUTES = {"shape": SHAPES, "colour": COLOURS, "size": SIZES, "fill": FILLS}  # per object, caption order
JITTER, SHADE = 0.04, 0.15  # largest offset of a centre (image fractions), relative brightness change
PROMPTS_PER_CLASS = 16


@dataclasses.dataclass
class Scenes:
  """N scenes; object k sits in cell k and exists where present_NxK (objects in reading order)."""

  present_NxK: np.ndarray  # bool
  shape_NxK: np.ndarray
  colour_NxK: np.ndarray
  size_NxK: np.ndarray
  fill_NxK: np.ndarray
  offset_NxKx2: np.ndarray
  shade_NxK: np.ndarray
  background_N: np.ndarray

  def __len__(self) -> int:
    return len(self.background_N)

  def take(self, idx) -> Scenes:
    return Scenes(**{f.name: getattr(self, f.name)[idx] for f in dataclasses.fields(self)})

  @property
  def count_N(self) -> np.ndarray:
    return self.present_NxK.sum(axis=1)

  @property
  def labels_N(self) -> np.ndarray:
    """The first object's shape (a class label for supervised pretraining and linear probes)."""
    first = np.argmax(self.present_NxK, axis=1)
    return self.shape_NxK[np.arange(len(self)), first].astype(np.int32)


def sample(rng: np.random.Generator, n: int, *, count=None, **first) -> Scenes:
  """n scenes. `count` pins the number of objects; `first` pins attributes of the first object in reading
  order (shape, colour, size, fill as indices; cell as a cell index, meant with count=1): an int or [n]."""
  k = MAX_OBJECTS
  counts = rng.choice(k, n, p=COUNT_P) + 1 if count is None else np.broadcast_to(count, (n,))
  keys = rng.random((n, k))
  if "cell" in first:
    keys[np.arange(n), first.pop("cell")] = -1.0  # chosen first
  present = np.zeros((n, k), bool)
  np.put_along_axis(present, np.argsort(keys, axis=1), np.arange(k)[None, :] < counts[:, None], axis=1)
  attrs = {name: rng.integers(len(values), size=(n, k)) for name, values in ATTRIBUTES.items()}
  if unknown := set(first) - set(ATTRIBUTES):
    raise ValueError(f"cannot fix {sorted(unknown)}; fixable: count, cell, {sorted(ATTRIBUTES)}")
  first_k = np.argmax(present, axis=1)
  for name, value in first.items():
    attrs[name][np.arange(n), first_k] = value
  return Scenes(present_NxK=present, shape_NxK=attrs["shape"], colour_NxK=attrs["colour"],
                size_NxK=attrs["size"], fill_NxK=attrs["fill"],
                offset_NxKx2=rng.uniform(-JITTER, JITTER, (n, k, 2)).astype(np.float32),
                shade_NxK=rng.uniform(-SHADE, SHADE, (n, k)).astype(np.float32),
                background_N=rng.integers(len(BACKGROUNDS), size=n))


def render_scenes(scenes: Scenes, size: int) -> np.ndarray:
  """uint8 [N, size, size, 3]."""
  n, k = scenes.present_NxK.shape
  cell = np.arange(k)
  centre = (np.stack([cell % 2, cell // 2], axis=-1)[None] + 0.5) / 2 + scenes.offset_NxKx2
  radius = RADII[scenes.size_NxK]
  rgb = PALETTE_Cx3[scenes.colour_NxK] * (1.0 + scenes.shade_NxK)[..., None]
  background = np.broadcast_to(BACKGROUND_RGB[scenes.background_N][:, None, None, :], (n, size, size, 3))
  return render.render(render.Drawing(
      background_NxHxWx3=background, shape_NxK=_RENDER_SHAPE[scenes.shape_NxK],
      centre_NxKx2=centre.astype(np.float32), radius_NxK=radius, angle_NxK=np.zeros(radius.shape, np.float32),
      fill_NxK=_RENDER_FILL[scenes.fill_NxK], line_NxK=np.maximum(1.0, 0.22 * radius * size),
      rgb_NxKx3=np.clip(rgb, 0, 255).astype(np.uint8), active_NxK=scenes.present_NxK))


def describe_object(scenes: Scenes, i: int, k: int) -> str:
  words = [values[getattr(scenes, f"{name}_NxK")[i, k]] for name, values in ATTRIBUTES.items()]
  return " ".join(words[2:3] + words[1:2] + words[3:4] + words[:1]) + f" {CELLS[k]}"  # size colour fill shape


def caption(scenes: Scenes, i: int) -> str:
  """Scene i, completely: count, background, then every object in reading order (short: the text tower
  reads at most model.text.context tokens)."""
  objects = [describe_object(scenes, i, k) for k in np.flatnonzero(scenes.present_NxK[i])]
  count = len(objects)
  head = f"{COUNT_WORDS[count - 1]} shape{'s' if count > 1 else ''} on {BACKGROUNDS[scenes.background_N[i]]}"
  return f"{head}: " + ", ".join(objects)


def captions(scenes: Scenes, idx: np.ndarray) -> list[str]:
  return [caption(scenes, int(i)) for i in idx]


# --- claims and facts: what `python -m basic_core.data fn-rate` counts -------------------------------
# One bit per (cell, shape, colour, size, fill) object, per background and per count: a caption claims
# exactly the bits of its scene, read back from its words below.
_OBJECT_BITS = MAX_OBJECTS * len(SHAPES) * len(COLOURS) * len(SIZES) * len(FILLS)
NUM_FACTS = _OBJECT_BITS + len(BACKGROUNDS) + MAX_OBJECTS


def _object_bit(cell, shape, colour, size, fill):
  return (((cell * len(SHAPES) + shape) * len(COLOURS) + colour) * len(SIZES) + size) * len(FILLS) + fill


def facts(scenes: Scenes) -> np.ndarray:
  """bool [N, F]: the objects present (bound to their cells), the background and the count."""
  out = np.zeros((len(scenes), NUM_FACTS), bool)
  rows, cells = np.nonzero(scenes.present_NxK)
  out[rows, _object_bit(cells, scenes.shape_NxK[rows, cells], scenes.colour_NxK[rows, cells],
                        scenes.size_NxK[rows, cells], scenes.fill_NxK[rows, cells])] = True
  out[np.arange(len(scenes)), _OBJECT_BITS + scenes.background_N] = True
  out[np.arange(len(scenes)), _OBJECT_BITS + len(BACKGROUNDS) + scenes.count_N - 1] = True
  return out


_OBJECT_RE = re.compile(r"({}) ({}) ({}) ({}) ({})".format(
    *("|".join(v) for v in (SIZES, COLOURS, FILLS, SHAPES, CELLS))))
_HEAD_RE = re.compile(r"^({}) shapes? on ({}): ".format("|".join(COUNT_WORDS), "|".join(BACKGROUNDS)))


def claims(text: str) -> np.ndarray:
  """bool [F]: the facts a caption names, parsed from its words."""
  out = np.zeros(NUM_FACTS, bool)
  head = _HEAD_RE.match(text)
  if head:
    out[_OBJECT_BITS + len(BACKGROUNDS) + COUNT_WORDS.index(head.group(1))] = True
    out[_OBJECT_BITS + BACKGROUNDS.index(head.group(2))] = True
  for size, colour, fill, shape, cell in _OBJECT_RE.findall(text):
    out[_object_bit(CELLS.index(cell), SHAPES.index(shape), COLOURS.index(colour), SIZES.index(size),
                    FILLS.index(fill))] = True
  return out


# --- the world as the registry sees it ---------------------------------------------------------------
class ObjectsWorld:
  """Pool, held-out pairs and tasks, each from its own named random stream of data.seed."""

  num_classes = len(SHAPES)

  def __init__(self, seed: int, image_size: int, num_train: int, num_test: int, noise: float = 0.0):
    self.seed, self.image_size = seed, image_size
    self.train, self.test = (self._pairs(split, n, noise) for split, n in (("train", num_train),
                                                                             ("test", num_test)))

  def rng(self, stream: str) -> np.random.Generator:
    return np.random.default_rng([self.seed, zlib.crc32(f"objects/{stream}".encode())])

  def sample(self, stream: str, n: int, **fixed) -> Scenes:
    return sample(self.rng(stream), n, **fixed)

  def render(self, scenes: Scenes) -> np.ndarray:
    return render_scenes(scenes, self.image_size)

  def captions(self, scenes: Scenes, idx: np.ndarray) -> list[str]:
    return captions(scenes, idx)

  def _pairs(self, split: str, n: int, noise: float) -> PairSet:
    scenes = self.sample(split, n)
    return PairSet(images=lambda idx: self.render(scenes.take(idx)),
                   captions=lambda idx: captions(scenes, idx),
                   labels_N=scenes.labels_N, num_classes=self.num_classes,
                   caption_source_N=noisy_caption_sources(self.rng(f"{split}/noise"), n, noise),
                   describe=lambda i: dict(caption=caption(scenes, i)))

  def fresh(self, seed: int, noise: float = 0.0) -> FreshPairs:
    return FreshPairs(self, seed, noise)

  def claims_and_facts(self, stream: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    scenes = self.sample(stream, n)
    return np.stack([claims(t) for t in captions(scenes, np.arange(n))]), facts(scenes)

  def class_prompts(self, task: str, c: int, n: int = PROMPTS_PER_CLASS, **pinned) -> list[str]:
    """Class c of zero-shot task `task`: the captions of n scenes drawn with `pinned` fixed."""
    return captions(self.sample(f"task/{task}/prompts/{c}", n, **pinned), np.arange(n))

  def tasks(self, n: int) -> list[ZeroShotTask]:
    """shape, colour, size, fill and position of single objects, and the count of objects: n images each,
    labels cycling through the classes."""
    tasks = []
    for name, classes in (ATTRIBUTES | {"position": CELLS, "count": COUNT_WORDS}).items():
      labels = (np.arange(n) % len(classes)).astype(np.int32)
      pin = (lambda c: dict(count=c + 1)) if name == "count" else (
          lambda c, name=name: dict(count=1, **{"cell" if name == "position" else name: c}))
      scenes = self.sample(f"task/{name}", n, **pin(labels))
      prompts = [self.class_prompts(name, c, **pin(c)) for c in range(len(classes))]
      tasks.append(ZeroShotTask(name, "in_distribution", list(classes), [], self.render(scenes), labels,
                                class_prompts=prompts))
    return tasks


def build(config) -> ObjectsWorld:
  d = config.data
  return ObjectsWorld(d.seed, config.model.image.image_size, d.num_train, d.num_test, d.noise)


def corpus(seed: int, num: int) -> list[str]:
  world = ObjectsWorld(seed, 8, 0, 0)
  return captions(world.sample("corpus", num), np.arange(num))
