"""An unlimited stream of a procedural world's training pairs, each drawn once (`data.fresh=true`).

With a pool of m pairs, a run of S steps at batch B sees every pair S B / m times, so anything that
changes S or B also changes how often a pair repeats. In the fresh stream, stream position p is pair p:
the scene in row p mod BLOCK of block p // BLOCK, a block being BLOCK scenes drawn from the world's
named random stream `train/fresh/<seed>/<block>` (the same distribution as the pool and the held-out
pairs, with whatever the world holds out of training left out). A run reads positions 0, 1, 2, ... once
each, so no pair repeats within a run. The pairs are a function of (data.seed, seed): runs that differ
only in another axis (the loss group size, say) see the same pairs in the same order, as with the pool;
the pipeline's position is the whole resume state.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from basic_core.data.source import Loaded, noisy_caption_sources

BLOCK = 4096  # scenes sampled at once; rendering is per requested pair


class Procedural(Protocol):
  """What a world gives the stream: named random streams of scenes, drawn into pixels and words."""
  image_size: int
  num_classes: int

  def rng(self, stream: str) -> np.random.Generator: ...

  def sample(self, stream: str, n: int): ...  # scenes with .take(idx) and .labels_N

  def render(self, scenes) -> np.ndarray: ...  # uint8 [n, H, W, 3]

  def captions(self, scenes, idx: np.ndarray) -> list[str]: ...


class FreshPairs:
  """A `Source` whose indices are stream positions (any non-negative integer)."""

  unlimited = True  # the pipeline reads positions directly, never a permutation of a pool
  num_skipped = 0

  def __init__(self, world: Procedural, seed: int, noise: float = 0.0, cached_blocks: int = 4):
    self.world, self.seed, self.noise, self.cached_blocks = world, seed, noise, cached_blocks
    self.num_classes = world.num_classes
    self._blocks: dict[int, tuple[object, np.ndarray]] = {}

  def __len__(self) -> int:
    raise TypeError("a fresh stream has no length: it never repeats a pair")

  def _block(self, b: int) -> tuple[object, np.ndarray]:
    if b not in self._blocks:
      if len(self._blocks) >= self.cached_blocks:
        self._blocks.pop(next(iter(self._blocks)))
      stream = f"train/fresh/{self.seed}/{b}"
      scenes = self.world.sample(stream, BLOCK)
      sources = noisy_caption_sources(self.world.rng(f"{stream}/noise"), BLOCK, self.noise)
      self._blocks[b] = (scenes, sources)
    return self._blocks[b]

  def load(self, idx: np.ndarray) -> Loaded:
    idx = np.asarray(idx, np.int64)
    if (idx < 0).any():
      raise IndexError("stream positions are non-negative")
    size = self.world.image_size
    images = np.zeros((len(idx), size, size, 3), np.uint8)
    captions, labels = [""] * len(idx), np.zeros(len(idx), np.int32)
    for b in np.unique(idx // BLOCK):
      rows = np.flatnonzero(idx // BLOCK == b)
      scenes, sources = self._block(int(b))
      within = idx[rows] % BLOCK
      images[rows] = self.world.render(scenes.take(within))
      labels[rows] = scenes.labels_N[within]
      for row, text in zip(rows, self.world.captions(scenes, sources[within])):
        captions[row] = text
    return Loaded(images, captions, labels, [])
