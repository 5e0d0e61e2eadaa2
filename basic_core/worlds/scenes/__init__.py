"""The scenes world: 1-3 objects on a 3x3 grid, alt-text-like captions that name a few attributes.

Its captions are often true of many scenes ("three shapes"): at large contrastive groups most rows share
their group with an image their caption describes (`python -m basic_core.data fn-rate`). Kept as it is,
so its committed results stay reproducible; `objects` is the world whose negatives are negatives.
"""

from __future__ import annotations

import numpy as np

from basic_core.worlds.fresh import FreshPairs
from basic_core.worlds.scenes import captions as C
from basic_core.worlds.scenes import scenes as S
from basic_core.worlds.scenes import tasks as T
from basic_core.worlds.scenes.benchmark import ScenesBenchmark

# The facts a caption can claim, one bit each: attribute values present in a scene, and its count.
FACTS = ([("shape", s) for s in S.SHAPES] + [("colour", c) for c in S.COLOURS]
         + [("size", s) for s in S.SIZES] + [("fill", f) for f in S.FILLS]
         + [("position", p) for p in S.POSITIONS] + [("background", b) for b in S.BACKGROUNDS]
         + [("count", n) for n in range(1, S.MAX_OBJECTS + 1)])
_BIT = {fact: i for i, fact in enumerate(FACTS)}


def facts(scenes: S.Scenes) -> np.ndarray:
  """bool [N, F]: which facts hold in each scene (every value present in some object; the count)."""
  out = np.zeros((len(scenes), len(FACTS)), bool)
  rows = np.arange(len(scenes))
  per_object = (("shape", S.SHAPES, scenes.shape_NxK), ("colour", S.COLOURS, scenes.colour_NxK),
                ("size", S.SIZES, scenes.size_NxK), ("fill", S.FILLS, scenes.fill_NxK),
                ("position", S.POSITIONS, scenes.cell_NxK))
  for k in range(S.MAX_OBJECTS):
    on = rows[scenes.active_NxK[:, k]]
    for attribute, names, values in per_object:
      bits = np.array([_BIT[(attribute, name)] for name in names])
      out[on, bits[values[on, k]]] = True
  out[rows, np.array([_BIT[("background", b)] for b in S.BACKGROUNDS])[scenes.background_N]] = True
  out[rows, np.array([_BIT[("count", n)] for n in range(1, S.MAX_OBJECTS + 1)])[scenes.count_N - 1]] = True
  return out


def claims(text: str) -> np.ndarray:
  """bool [F]: the facts a caption names (parsed back from its words by `captions.mentions`)."""
  out = np.zeros(len(FACTS), bool)
  for attribute, values in C.mentions(text).items():
    for value in values:
      out[_BIT[(attribute, value)]] = True
  return out


class ScenesWorld(ScenesBenchmark):
  """The benchmark as the registry sees it: splits, tasks, the fresh stream, claims and facts."""

  num_classes = S.NUM_CLASSES

  def render(self, scenes: S.Scenes) -> np.ndarray:
    return S.render_scenes(scenes, self.image_size)

  def captions(self, scenes: S.Scenes, idx: np.ndarray) -> list[str]:
    return C.captions(scenes, idx)

  def tasks(self, n: int):
    return T.scene_tasks(self, n)

  def fresh(self, seed: int, noise: float = 0.0) -> FreshPairs:
    return FreshPairs(self, seed, noise)

  def claims_and_facts(self, stream: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(claims [n, F], facts [n, F]) of n fresh pairs from a named random stream."""
    scenes = self.sample(stream, n)
    return np.stack([claims(t) for t in C.captions(scenes, np.arange(n))]), facts(scenes)


def build(config) -> ScenesWorld:
  return ScenesWorld.from_config(config)


def corpus(seed: int, num: int) -> list[str]:
  scenes = ScenesBenchmark(seed, 8, num, 0).scenes["train"]
  return C.captions(scenes, np.arange(num)) + T.prompts()
