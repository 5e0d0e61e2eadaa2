"""The built-in benchmark's world: scenes of 1-3 objects described by seven attributes.

The attribute space (8 shapes x 9 colours x 3 sizes x 4 fills x 9 positions x 4 backgrounds x 3
counts) is large enough that two random scenes differ in several attributes, so pairs differing in
only one attribute (hard negatives) are common only in large contrastive batches. Scenes are
sampled in bulk from an explicit numpy Generator and rendered by `render.py`.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from basic_core.worlds import render

SHAPES = render.SHAPE_NAMES
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "pink", "cyan", "brown")
PALETTE_Cx3 = np.array([(220, 30, 30), (30, 170, 50), (40, 80, 235), (240, 220, 30), (140, 50, 190),
                        (250, 140, 20), (250, 135, 195), (40, 220, 230), (135, 80, 35)], np.float32)
SIZES = ("small", "medium", "large")
RADII = np.array([0.095, 0.13, 0.17], np.float32)  # image fractions; a grid cell is 1/3 wide
FILLS = render.FILL_NAMES
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom",
             "bottom right")  # the 3x3 grid in reading order
BACKGROUNDS = ("black", "gray", "white", "noisy")
BACKGROUND_RGB_3x3 = np.array([(10, 10, 10), (128, 128, 128), (245, 245, 245)], np.uint8)
NOISY = BACKGROUNDS.index("noisy")
MAX_OBJECTS = 3
NUM_CLASSES = len(SHAPES) * len(COLOURS)  # label = shape x colour of the first object in reading order
NOISE_VARIANTS = 16
_FIXABLE = ("count", "background", "shape", "colour", "size", "fill", "cell")


@dataclasses.dataclass(frozen=True)
class Distribution:
  """How scenes are drawn; the robustness suite shifts some of these."""

  count_p: tuple[float, ...] = (0.45, 0.3, 0.25)
  size_p: tuple[float, ...] = (1 / 3, 1 / 3, 1 / 3)
  repeat_p: float = 0.3  # multi-object scenes whose objects are all alike ("three red stars")
  jitter: float = 0.035  # largest offset of an object's centre from its cell's centre
  shade: float = 0.15  # largest relative change of an object's brightness


@dataclasses.dataclass
class Scenes:
  """N scenes; object slots beyond `count_N` hold valid but unused values."""

  count_N: np.ndarray
  shape_NxK: np.ndarray
  colour_NxK: np.ndarray
  size_NxK: np.ndarray
  fill_NxK: np.ndarray
  cell_NxK: np.ndarray  # distinct cells, active objects in reading order
  offset_NxKx2: np.ndarray
  shade_NxK: np.ndarray
  background_N: np.ndarray
  variant_N: np.ndarray  # which noise texture a noisy background uses
  caption_seed_N: np.ndarray

  def __len__(self) -> int:
    return len(self.count_N)

  def take(self, idx) -> Scenes:
    return Scenes(**{f.name: getattr(self, f.name)[idx] for f in dataclasses.fields(self)})

  @property
  def active_NxK(self) -> np.ndarray:
    return np.arange(MAX_OBJECTS)[None, :] < self.count_N[:, None]

  @property
  def labels_N(self) -> np.ndarray:
    return (self.shape_NxK[:, 0] * len(COLOURS) + self.colour_NxK[:, 0]).astype(np.int32)

  def record(self, i: int) -> dict:
    """Scene i in words (for export and inspection)."""
    objects = [dict(shape=SHAPES[self.shape_NxK[i, k]], colour=COLOURS[self.colour_NxK[i, k]],
                    size=SIZES[self.size_NxK[i, k]], fill=FILLS[self.fill_NxK[i, k]],
                    position=POSITIONS[self.cell_NxK[i, k]]) for k in range(self.count_N[i])]
    return dict(count=int(self.count_N[i]), background=BACKGROUNDS[self.background_N[i]], objects=objects)


def class_name(label: int) -> str:
  """'red circle' for the label of a red circle."""
  return f"{COLOURS[label % len(COLOURS)]} {SHAPES[label // len(COLOURS)]}"


def heldout_pairs(seed: int) -> np.ndarray:
  """(shape, colour) pairs never shown in training: one colour per shape, distinct colours. [S, 2]"""
  colours = np.random.default_rng([seed, 0xC0]).permutation(len(COLOURS))[: len(SHAPES)]
  return np.stack([np.arange(len(SHAPES)), colours], axis=1)


def allowed_table(excluded_Px2: np.ndarray) -> np.ndarray:
  """bool [S, C]: which (shape, colour) pairs may appear."""
  table = np.ones((len(SHAPES), len(COLOURS)), bool)
  table[excluded_Px2[:, 0], excluded_Px2[:, 1]] = False
  return table


def sample(rng: np.random.Generator, n: int, allowed_SxC: np.ndarray,
           dist: Distribution = Distribution(), **fixed) -> Scenes:
  """n scenes. `fixed` pins scene attributes (count, background) or the first object's (shape,
  colour, size, fill, cell) to an int or an [n] array; pinning `cell` is meant for count 1."""
  if unknown := set(fixed) - set(_FIXABLE):
    raise ValueError(f"cannot fix {sorted(unknown)}; fixable: {_FIXABLE}")
  k = MAX_OBJECTS
  count = rng.choice(len(dist.count_p), n, p=dist.count_p) + 1
  cell_keys = rng.random((n, len(POSITIONS)))
  attrs = dict(shape=rng.integers(len(SHAPES), size=(n, k)), colour=rng.integers(len(COLOURS), size=(n, k)),
               size=rng.choice(len(SIZES), (n, k), p=dist.size_p), fill=rng.integers(len(FILLS), size=(n, k)))
  repeat = rng.random(n) < dist.repeat_p
  scenes = Scenes(
      count_N=count, shape_NxK=attrs["shape"], colour_NxK=attrs["colour"], size_NxK=attrs["size"],
      fill_NxK=attrs["fill"], cell_NxK=np.zeros((n, k), np.int64),
      offset_NxKx2=rng.uniform(-dist.jitter, dist.jitter, (n, k, 2)).astype(np.float32),
      shade_NxK=rng.uniform(-dist.shade, dist.shade, (n, k)).astype(np.float32),
      background_N=rng.integers(len(BACKGROUNDS), size=n), variant_N=rng.integers(NOISE_VARIANTS, size=n),
      caption_seed_N=rng.integers(2**62, size=n))
  if "count" in fixed:
    scenes.count_N = np.broadcast_to(fixed["count"], (n,)).copy()
  if "background" in fixed:
    scenes.background_N = np.broadcast_to(fixed["background"], (n,)).copy()
  if "cell" in fixed:
    cell_keys[np.arange(n), fixed["cell"]] = -1.0  # chosen first
  for name in ("shape", "colour", "size", "fill"):
    if name in fixed:
      attrs[name][:, 0] = fixed[name]
  _reject_disallowed(rng, attrs["shape"], attrs["colour"], allowed_SxC,
                     fixed_colour="colour" in fixed, fixed_shape="shape" in fixed)
  repeat &= scenes.count_N > 1
  for a in attrs.values():
    a[repeat, 1:] = a[repeat, :1]
  active = scenes.active_NxK
  cells = np.argsort(cell_keys, axis=1)[:, :k]
  scenes.cell_NxK = np.sort(np.where(active, cells, cells + len(POSITIONS)), axis=1) % len(POSITIONS)
  return scenes


def _reject_disallowed(rng, shape_NxK, colour_NxK, allowed_SxC, *, fixed_colour, fixed_shape):
  """Redraws colours (or, where the first object's colour is pinned, shapes) of disallowed pairs."""
  if fixed_colour and fixed_shape and not allowed_SxC[shape_NxK[:, 0], colour_NxK[:, 0]].all():
    raise ValueError("a fixed (shape, colour) pair is not allowed in this split")
  while (bad := ~allowed_SxC[shape_NxK, colour_NxK]).any():
    redraw_shape = np.zeros_like(bad)
    redraw_shape[:, 0] = fixed_colour
    for target, cardinality, where in ((colour_NxK, len(COLOURS), bad & ~redraw_shape),
                                       (shape_NxK, len(SHAPES), bad & redraw_shape)):
      target[where] = rng.integers(cardinality, size=int(where.sum()))


@functools.lru_cache(maxsize=4)
def _noise_bank(size: int) -> np.ndarray:
  """Grey static textures for the 'noisy' background (a fixed bank, shared by every seed)."""
  grey = np.random.default_rng(0x5EED).integers(70, 180, (NOISE_VARIANTS, size, size, 1), dtype=np.uint8)
  bank = np.repeat(grey, 3, axis=3)
  bank.flags.writeable = False
  return bank


def backgrounds(background_N: np.ndarray, variant_N: np.ndarray, size: int) -> np.ndarray:
  """uint8 [N, size, size, 3] backgrounds of the in-distribution kinds."""
  plain = BACKGROUND_RGB_3x3[np.minimum(background_N, len(BACKGROUND_RGB_3x3) - 1)]
  out = np.broadcast_to(plain[:, None, None, :], (len(background_N), size, size, 3)).copy()
  noisy = np.flatnonzero(background_N == NOISY)
  out[noisy] = _noise_bank(size)[variant_N[noisy]]
  return out


def to_drawing(scenes: Scenes, size: int) -> render.Drawing:
  centre = (np.stack([scenes.cell_NxK % 3, scenes.cell_NxK // 3], axis=-1) + 0.5) / 3 + scenes.offset_NxKx2
  radius = RADII[scenes.size_NxK]
  rgb = PALETTE_Cx3[scenes.colour_NxK] * (1.0 + scenes.shade_NxK)[..., None]
  return render.Drawing(
      background_NxHxWx3=backgrounds(scenes.background_N, scenes.variant_N, size),
      shape_NxK=scenes.shape_NxK, centre_NxKx2=centre.astype(np.float32), radius_NxK=radius,
      angle_NxK=np.zeros(radius.shape, np.float32), fill_NxK=scenes.fill_NxK,
      line_NxK=np.maximum(1.0, 0.25 * radius * size), rgb_NxKx3=np.clip(rgb, 0, 255).astype(np.uint8),
      active_NxK=scenes.active_NxK)


def render_scenes(scenes: Scenes, size: int) -> np.ndarray:
  """uint8 [N, size, size, 3]."""
  return render.render(to_drawing(scenes, size))
