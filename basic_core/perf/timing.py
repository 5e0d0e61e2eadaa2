"""Timing the train step on a shared machine: random batches, quiet-step timing, the matmul roof.

On a shared 2-core machine another busy process makes 2-thread steps several times slower, so a step
counts only when the rest of the machine stayed quiet while it ran (`Quiet`), as the OpenCLIP peer
harness does. Step FLOP/s are read against the roof of one large square matmul on the same machine.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import jax
import numpy as np


def random_batch(config, n: int, seed: int = 0) -> dict:
  """`n` random pairs shaped like `config`'s: [n, S, S, 3] uint8 images, [n, L] int32 padded tokens."""
  rng = np.random.default_rng(seed)
  size, length = config.model.image.image_size, config.model.text.context
  text_NxL = rng.integers(1, config.model.text.vocab_size, size=(n, length), dtype=np.int32)
  lengths_N = rng.integers(4, length + 1, size=n)
  text_NxL[np.arange(length)[None, :] >= lengths_N[:, None]] = 0
  return dict(image=rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8), text=text_NxL)


class Quiet:
  """Per call, the CPU time OTHER processes used (/proc/stat's busy time minus our own CPU time)."""

  def __init__(self, threshold: float = 0.05):
    self.threshold = threshold  # in cores: calls during which others used more do not count

  @staticmethod
  def _sample():
    with open("/proc/stat") as f:
      fields = [float(x) for x in f.readline().split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # minus idle and iowait
    own = sum(os.times()[:2])
    return busy / os.sysconf("SC_CLK_TCK"), own, time.perf_counter()

  def measure(self, fn) -> tuple[float, float]:
    """(seconds, other processes' CPU in cores) of one call."""
    b0, o0, t0 = self._sample()
    fn()
    b1, o1, t1 = self._sample()
    return t1 - t0, max(b1 - b0 - (o1 - o0), 0.0) / (t1 - t0)


class StepTimes(NamedTuple):
  clean: list[float]  # the last `steps` quiet step times (all times when too few were quiet)
  contended: bool  # fewer than `steps` quiet steps within `max_steps`
  everything: list[float]  # every timed step, quiet or not


def time_steps(step, state, batch, *, steps: int, warmup: int, max_steps: int) -> StepTimes:
  """Runs `warmup` untimed steps, then timed ones until `steps` were quiet or `max_steps` ran.

  `step` donates its state, so `state` is used up.
  """
  quiet = Quiet()
  holder = {"state": state}

  def one():
    holder["state"], metrics = step(holder["state"], batch)
    jax.block_until_ready(metrics["loss"])

  for _ in range(warmup):
    one()
  clean, everything = [], []
  while len(clean) < steps and len(everything) < max_steps:
    seconds, others = quiet.measure(one)
    everything.append(seconds)
    if others <= quiet.threshold:
      clean.append(seconds)
  return StepTimes((clean or everything)[-steps:], len(clean) < steps, everything)


def matmul_roof_gflop_per_s(n: int = 2048, repeats: int = 5, dtype=jax.numpy.float32) -> float:
  """Best GFLOP/s of one n x n x n XLA matmul in `dtype` on the default device: a practical ceiling."""
  a_NxN = jax.random.normal(jax.random.key(0), (n, n), dtype)
  matmul = jax.jit(lambda a: a @ a)
  jax.block_until_ready(matmul(a_NxN))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(matmul(a_NxN))
    best = min(best, time.perf_counter() - t0)
  return 2 * n**3 / best / 1e9
