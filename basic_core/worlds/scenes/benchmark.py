"""The built-in benchmark's splits, all fixed by data.seed.

Train pairs; held-out pairs from the same distribution (generalisation gap); and one colour per
shape never shown with it in training, in images or captions (zero-shot composition). Each use
draws from its own named random stream, so adding a task never changes the training data.
"""

from __future__ import annotations

import zlib

import numpy as np

from basic_core.data.source import PairSet, noisy_caption_sources
from basic_core.worlds.scenes import captions as C
from basic_core.worlds.scenes import scenes as S


class ScenesBenchmark:

  def __init__(self, seed: int, image_size: int, num_train: int, num_test: int, noise: float = 0.0):
    self.seed, self.image_size = seed, image_size
    self.heldout_Px2 = S.heldout_pairs(seed)
    self.allowed_SxC = S.allowed_table(self.heldout_Px2)
    self.scenes = {"train": self.sample("train", num_train), "test": self.sample("test", num_test)}
    self.train, self.test = (self._pairs(split, noise) for split in ("train", "test"))

  @classmethod
  def from_config(cls, config) -> ScenesBenchmark:
    d = config.data
    return cls(d.seed, config.model.image.image_size, d.num_train, d.num_test, d.noise)

  def rng(self, stream: str) -> np.random.Generator:
    return np.random.default_rng([self.seed, zlib.crc32(stream.encode())])

  def sample(self, stream: str, n: int, dist: S.Distribution | None = None, allowed_SxC=None,
             **fixed) -> S.Scenes:
    allowed = self.allowed_SxC if allowed_SxC is None else allowed_SxC
    return S.sample(self.rng(stream), n, allowed, dist or S.Distribution(), **fixed)

  def _pairs(self, split: str, noise: float) -> PairSet:
    scenes = self.scenes[split]
    return PairSet(images=lambda idx: S.render_scenes(scenes.take(idx), self.image_size),
                   captions=lambda idx: C.captions(scenes, idx), labels_N=scenes.labels_N,
                   num_classes=S.NUM_CLASSES,
                   caption_source_N=noisy_caption_sources(self.rng(f"{split}/noise"), len(scenes), noise),
                   describe=lambda i: dict(scene=scenes.record(i)))
