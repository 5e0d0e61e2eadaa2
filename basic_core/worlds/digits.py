"""Real pixels: scikit-learn's 1,797 scanned handwritten digits (8x8) as an image-caption set.

Shipped inside scikit-learn, so at least one experiment runs on real images with no download.
Digits are upsampled (bilinear) to the model's size as dark ink on white, with templated captions.
"""

from __future__ import annotations

import functools
import random
import zlib

import numpy as np
from sklearn.datasets import load_digits

from basic_core.data.source import PairSet, noisy_caption_sources
from basic_core.data.tasks import ZeroShotTask

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
NUM_TEST = 297  # of 1,797: 1,500 train pairs
TEMPLATES = ("a handwritten {}.", "the digit {}.", "a scan of the number {}.", "a photo of a handwritten {}.")
_CAPTIONS = ("a handwritten {w}", "the digit {d}", "handwritten digit {w}", "a scanned {w}", "the number {w}",
             "{d}", "a photo of the number {d}", "a low resolution scan of a handwritten {w}", "digit: {w}",
             "number {d}, handwritten", "{w}", "a {w} written by hand")


def upsample(images_Nx8x8: np.ndarray, size: int) -> np.ndarray:
  """Bilinear (pixel-centre aligned) upsampling of values 0..16 -> uint8 RGB [N, size, size, 3], ink dark."""
  src = images_Nx8x8.shape[1]
  pos = np.clip((np.arange(size) + 0.5) * src / size - 0.5, 0, src - 1)
  lo = np.floor(pos).astype(int)
  hi = np.minimum(lo + 1, src - 1)
  w_Sx8 = np.zeros((size, src))
  np.add.at(w_Sx8, (np.arange(size), lo), 1 - (pos - lo))
  np.add.at(w_Sx8, (np.arange(size), hi), pos - lo)
  ink = np.einsum("hi,nij,wj->nhw", w_Sx8, images_Nx8x8, w_Sx8) / 16.0
  gray = np.round(255 * (1 - ink)).astype(np.uint8)
  return np.repeat(gray[..., None], 3, axis=3)


@functools.lru_cache(maxsize=4)
def _scans(image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 images [1797, S, S, 3], int32 labels), read-only and shared."""
  data = load_digits()
  images, labels = upsample(data.images, image_size), data.target.astype(np.int32)
  images.flags.writeable = labels.flags.writeable = False
  return images, labels


class Digits:
  """Train / test splits (fixed by seed) of the digits as pairs, and their zero-shot task data."""

  num_classes = len(WORDS)

  def __init__(self, seed: int, image_size: int, noise: float = 0.0):
    self.images, self.labels_N = _scans(image_size)
    rng = np.random.default_rng([seed, zlib.crc32(b"digits")])
    order = rng.permutation(len(self.labels_N))
    self.caption_seeds_N = rng.integers(2**62, size=len(order))
    self.test_idx, train_idx = order[:NUM_TEST], order[NUM_TEST:]
    self.train = self._pairs(train_idx, noisy_caption_sources(rng, len(train_idx), noise))
    self.test = self._pairs(self.test_idx, noisy_caption_sources(rng, NUM_TEST, noise))

  @property
  def image_size(self) -> int:
    return self.images.shape[1]

  def tasks(self, n: int) -> list[ZeroShotTask]:
    """One task: which digit, on the first n held-out scans."""
    idx = self.test_idx[:n]
    return [ZeroShotTask("digit", "in_distribution", list(WORDS), list(TEMPLATES), self.images[idx],
                         self.labels_N[idx])]

  def caption(self, i: int) -> str:
    r = random.Random(int(self.caption_seeds_N[i]))
    label = int(self.labels_N[i])
    return r.choice(_CAPTIONS).format(w=WORDS[label], d=label)

  def _pairs(self, members: np.ndarray, caption_source_N: np.ndarray) -> PairSet:
    return PairSet(images=lambda idx: self.images[members[idx]],
                   captions=lambda idx: [self.caption(int(i)) for i in members[idx]],
                   labels_N=self.labels_N[members], num_classes=self.num_classes,
                   caption_source_N=caption_source_N,
                   describe=lambda i: dict(sklearn_index=int(members[i])))


def build(config) -> Digits:
  return Digits(config.data.seed, config.model.image.image_size, config.data.noise)


def corpus(seed: int, num: int) -> list[str]:
  """Every scan's caption and every prompt (the set is small: `num` does not apply)."""
  sets = Digits(seed, 8)
  prompts = [t.format(w) for t in TEMPLATES for w in WORDS]
  return [sets.caption(i) for i in range(len(sets.labels_N))] + prompts
