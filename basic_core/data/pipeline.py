"""Training batches in an order fixed by the seeds, resumable exactly, shardable across processes.

Stream position p holds example perm_e[p mod N] with e = p // N and perm_e a permutation drawn from
(data.seed, seed, e); from an unlimited source (the fresh stream, data/fresh.py) it holds pair p. A
global batch is B consecutive positions; process i takes the i-th contiguous slice, so the processes'
slices concatenate to the single-process batch. A sample that cannot be
decoded is replaced by substitutes drawn from (seeds, its position, attempt): every process, and a
resumed run, makes the same choice without coordination. The state is the next position and the
skip count, so a resumed run sees bit-identical batches. One batch is prepared ahead in a thread.
"""

from __future__ import annotations

import concurrent.futures
import zlib

import numpy as np

from basic_core.data.datasets import train_and_test
from basic_core.data.source import Source, warn_skipped

MAX_ATTEMPTS = 32  # substitutes tried for one position before the data is declared unusable
_STATE_VERSION = 1


class Pipeline:
  """Iterator of dict(image uint8 [B, H, W, 3], text int32 [B, L], label int32 [B], index int32 [B]) for
  this process; `index` is each row's pool index (the source's, substitutes included; SogCLR's per-pair
  estimates are looked up by it), absent from an unlimited stream, which has no pool."""

  def __init__(self, source: Source, tokenize, *, batch_size: int, seeds: tuple[int, ...],
               process_index: int = 0, process_count: int = 1):
    if batch_size % process_count:
      raise ValueError(f"batch size {batch_size} is not divisible by process_count {process_count}")
    self.unlimited = getattr(source, "unlimited", False)
    if not self.unlimited and batch_size > len(source):
      raise ValueError(f"batch size {batch_size} is a batch size the dataset cannot fill: "
                       f"it has {len(source)} training pairs")
    self.source, self._tokenize, self._seeds = source, tokenize, tuple(int(s) for s in seeds)
    self.batch_size, self.local_batch_size = batch_size, batch_size // process_count
    self._offset = process_index * self.local_batch_size
    self._position = 0
    self.skipped_samples = source.num_skipped
    self._perms: dict[int, np.ndarray] = {}
    self._warned: set[str] = set()
    self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="basic-data")
    self._ahead: tuple[int, concurrent.futures.Future] | None = None

  @property
  def num_classes(self) -> int:
    return self.source.num_classes

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._ahead is None or self._ahead[0] != self._position:
      self._prepare(self._position)
    batch, skipped = self._ahead[1].result()
    self._position += self.batch_size
    self.skipped_samples += skipped
    self._prepare(self._position)
    return batch

  def get_state(self) -> dict:
    return dict(version=_STATE_VERSION, position=self._position, skipped_samples=self.skipped_samples,
                num_examples=self._num_examples, seeds=list(self._seeds))

  def set_state(self, state: dict) -> None:
    expected = (_STATE_VERSION, self._num_examples, list(self._seeds))
    if (state.get("version"), state.get("num_examples"), state.get("seeds")) != expected:
      raise ValueError(f"data state {state} was saved for another dataset or seed "
                       f"(this one: {self._num_examples or 'an unlimited stream of'} examples, "
                       f"seeds {list(self._seeds)})")
    self._position, self.skipped_samples = int(state["position"]), int(state["skipped_samples"])

  @property
  def position(self) -> int:
    """Stream positions consumed so far (pairs seen, over all processes)."""
    return self._position

  @property
  def _num_examples(self) -> int | None:
    return None if self.unlimited else len(self.source)

  def indices(self, positions: np.ndarray) -> np.ndarray:
    """Source indices of stream positions (before any substitution of undecodable samples)."""
    positions = np.asarray(positions, np.int64)
    if self.unlimited:
      return positions
    epochs, offsets = np.divmod(positions, len(self.source))
    idx = np.empty_like(positions)
    for epoch in np.unique(epochs):
      idx[epochs == epoch] = self._permutation(int(epoch))[offsets[epochs == epoch]]
    return idx

  def seen_indices(self, n: int, upto: int | None = None) -> np.ndarray:
    """Up to n distinct source indices among the pairs at stream positions [0, upto) (default: seen so
    far), chosen at random but fixed by the seeds: the training pairs a run actually trained on."""
    upto = self._position if upto is None else upto
    rng = np.random.default_rng([*self._seeds, zlib.crc32(b"seen")])
    if not self.unlimited and upto >= len(self.source):  # every pair of the pool was seen
      return np.sort(rng.permutation(len(self.source))[:n])
    positions = rng.permutation(upto)[:n] if upto <= 1 << 24 else np.unique(rng.integers(upto, size=n))
    return np.sort(self.indices(positions))  # distinct: positions within one pass of the pool

  def close(self) -> None:
    self._executor.shutdown(wait=True, cancel_futures=True)

  def _prepare(self, position: int) -> None:
    self._ahead = (position, self._executor.submit(self._make, position))

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch not in self._perms:
      self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
      self._perms[epoch] = np.random.default_rng([*self._seeds, zlib.crc32(b"order"), epoch]).permutation(
          len(self.source))
    return self._perms[epoch]

  def _substitute(self, position: int, attempt: int) -> int:
    rng = np.random.default_rng([*self._seeds, zlib.crc32(b"substitute"), position, attempt])
    return int(rng.integers(len(self.source)))

  def _make(self, position: int) -> tuple[dict[str, np.ndarray], int]:
    """This process's slice of the global batch at `position`, and how many samples it skipped."""
    positions = position + self._offset + np.arange(self.local_batch_size)
    idx = self.indices(positions).copy()  # substitutes replace entries of it, never of `positions`
    loaded = self.source.load(idx)
    images, captions, labels = loaded.images_NxHxWx3, loaded.captions, loaded.labels_N
    failures, skipped, attempt = loaded.failures, 0, 0
    while failures:
      attempt += 1
      if attempt > MAX_ATTEMPTS:
        _, key, reason = failures[-1]
        raise ValueError(f"{MAX_ATTEMPTS} substitutes in a row could not be decoded (the last: {key}: "
                         f"{reason}); is the data corrupt?")
      self._warn(failures)
      skipped += len(failures)
      rows = [row for row, _, _ in failures]
      idx[rows] = [self._substitute(int(positions[r]), attempt) for r in rows]
      again = self.source.load(idx[rows])
      images[rows], labels[rows] = again.images_NxHxWx3, again.labels_N
      for j, row in enumerate(rows):
        captions[row] = again.captions[j]
      failures = [(rows[j], key, reason) for j, key, reason in again.failures]
    batch = dict(image=images, text=self._tokenize(captions), label=labels.astype(np.int32))
    if not self.unlimited:
      batch["index"] = idx.astype(np.int32)
    return batch, skipped

  def _warn(self, failures: list[tuple[int, str, str]]) -> None:
    new = [(key, reason) for _, key, reason in failures if key not in self._warned]
    self._warned.update(key for key, _ in new)
    warn_skipped("the training data", new)


def train_pipeline(config, tokenizer, *, process_index: int = 0, process_count: int = 1,
                   batch_size: int | None = None) -> Pipeline:
  """Batches of config.train.batch_size (or `batch_size`) pairs, this process's share of each."""
  train, _ = train_and_test(config)
  try:
    return Pipeline(train, tokenizer.encode, batch_size=batch_size or config.train.batch_size,
                    seeds=(config.data.seed, config.seed), process_index=process_index,
                    process_count=process_count)
  except ValueError as e:  # name the data, which the pipeline does not know
    raise ValueError(f"data.train={config.data.train!r}: {e}") from None
