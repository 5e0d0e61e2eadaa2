"""What the pipeline reads from: random-access sets of image-caption pairs.

Random access by index is what makes the order a pure function of the seeds and the resume state a
single position. Built-in sets make pairs on demand (`PairSet`); real data keeps captions in memory
and reads image bytes per index (`EncodedPairs`), reporting undecodable samples instead of raising.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import NamedTuple, Protocol

import numpy as np

from basic_core.data import images as image_io

log = logging.getLogger(__name__)
WARN_LIMIT = 20  # skipped samples named one by one per report; the rest are counted


class Loaded(NamedTuple):
  images_NxHxWx3: np.ndarray  # uint8; rows of failed samples are zeros
  captions: list[str]
  labels_N: np.ndarray  # int32, -1 where unknown
  failures: list[tuple[int, str, str]]  # (row, sample key, reason) of samples that could not be used


class Source(Protocol):
  num_classes: int
  num_skipped: int  # samples dropped while the source was read (a real shard's empty captions...)

  def __len__(self) -> int: ...

  def load(self, idx: np.ndarray) -> Loaded: ...


def warn_skipped(where: str, skipped: list[tuple[str, str]]) -> None:
  """Logs skipped samples as (key, reason), naming up to WARN_LIMIT of them."""
  for key, reason in skipped[:WARN_LIMIT]:
    log.warning("skipped sample %s in %s: %s", key, where, reason)
  if len(skipped) > WARN_LIMIT:
    log.warning("skipped %d more samples in %s", len(skipped) - WARN_LIMIT, where)


def noisy_caption_sources(rng: np.random.Generator, n: int, noise: float) -> np.ndarray:
  """Whose caption each pair carries: its own, or with probability `noise` another random pair's."""
  own = np.arange(n)
  if noise <= 0 or n < 2:
    return own
  other = (own + rng.integers(1, n, size=n)) % n
  return np.where(rng.random(n) < noise, other, own)


@dataclasses.dataclass
class PairSet:
  """A split of a built-in set: images and captions made on demand from per-pair attributes."""

  images: Callable[[np.ndarray], np.ndarray]  # idx [B] -> uint8 [B, H, W, 3]
  captions: Callable[[np.ndarray], list[str]]  # idx [B] -> B clean captions
  labels_N: np.ndarray
  num_classes: int
  caption_source_N: np.ndarray  # from noisy_caption_sources
  describe: Callable[[int], dict]  # pair i's metadata, for export
  num_skipped: int = 0

  def __len__(self) -> int:
    return len(self.labels_N)

  def load(self, idx: np.ndarray) -> Loaded:
    return Loaded(self.images(idx), self.captions(self.caption_source_N[idx]), self.labels_N[idx], [])


@dataclasses.dataclass
class EncodedPairs:
  """Real pairs: keys, captions and labels in memory; image bytes read on demand."""

  keys: list[str]
  captions: list[str]
  labels_N: np.ndarray
  read: Callable[[int], bytes]  # index -> encoded image; OSError for a file that cannot be read
  image_size: int
  num_classes: int
  num_skipped: int = 0

  def __len__(self) -> int:
    return len(self.keys)

  def load(self, idx: np.ndarray) -> Loaded:
    out = np.zeros((len(idx), self.image_size, self.image_size, 3), np.uint8)
    failures = []
    for row, i in enumerate(idx):
      try:
        out[row] = image_io.decode(self.read(int(i)), self.image_size)
      except image_io.CorruptImage as e:
        failures.append((row, self.keys[i], str(e)))
    return Loaded(out, [self.captions[i] for i in idx], self.labels_N[idx], failures)

  def subset(self, idx: np.ndarray) -> EncodedPairs:
    idx = np.asarray(idx, np.int64)
    return dataclasses.replace(self, keys=[self.keys[i] for i in idx],
                               captions=[self.captions[i] for i in idx], labels_N=self.labels_N[idx],
                               read=lambda i: self.read(int(idx[i])))


def first_pairs(source: Source, n: int, tokenize: Callable[[list[str]], np.ndarray]) -> dict:
  """The usable pairs among the first n of a source, as model inputs: dict(image, text)."""
  return pairs(source, np.arange(min(n, len(source))), tokenize)


def pairs(source: Source, idx: np.ndarray, tokenize: Callable[[list[str]], np.ndarray]) -> dict:
  """The usable pairs among `idx` of a source, as model inputs: dict(image, text)."""
  loaded = source.load(idx)
  bad = {row for row, _, _ in loaded.failures}
  keep = [row for row in range(len(loaded.captions)) if row not in bad]
  return dict(image=loaded.images_NxHxWx3[keep], text=tokenize([loaded.captions[r] for r in keep]))
