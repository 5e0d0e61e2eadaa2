"""The loss quantities of the bound, computed from embeddings.

Conventions: img_mxD[i] and txt_mxD[i] are a positive pair; rows are unit vectors (the bound only
needs |<f, g>| <= 1). `direction` is 'i2t' (softmax over texts; the half the theorem is written
for), 't2i' (softmax over images) or 'sym' (their mean: the CLIP/ALIGN/BASIC objective). Every loss
is offset by log N so that losses at different batch sizes share the limit L_inf:

  l_N(S) = (1/N) sum_i [ -beta s_ii + log( (1/N) sum_j exp(beta s_ij) ) ]

- train_objective:      L^_N, the mean of l_N over the m/N consecutive batches of the sample.
- population_loss:      an estimate of L_N = E l_N from a held-out sample, by random re-batching.
- infinite_batch_loss:  an estimate of L_inf that uses every other pair as a negative.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

DIRECTIONS = ("i2t", "t2i", "sym")


def logsumexp(a: np.ndarray, axis: int = -1) -> np.ndarray:
  """log sum exp along one axis, max-shifted (scipy.special.logsumexp is ~20x slower here)."""
  shift = a.max(axis, keepdims=True)
  return np.log(np.exp(a - shift).sum(axis)) + np.squeeze(shift, axis)


def row_losses(sims_BxNxN: np.ndarray, beta: float) -> np.ndarray:
  """Per-anchor image-to-text loss, offset by log N: row i is -beta s_ii + log mean_j exp(beta s_ij)."""
  logits = beta * sims_BxNxN
  n = sims_BxNxN.shape[-1]
  return logsumexp(logits) - np.log(n) - np.diagonal(logits, axis1=-2, axis2=-1)


def by_direction(direction: str, i2t, t2i):
  """Mean of the halves `direction` asks for; i2t and t2i are zero-argument callables."""
  if direction not in DIRECTIONS:
    raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
  halves = {"i2t": (i2t,), "t2i": (t2i,), "sym": (i2t, t2i)}[direction]
  return sum(half() for half in halves) / len(halves)


def batch_losses(sims_BxNxN: np.ndarray, beta: float, direction: str = "sym") -> np.ndarray:
  """l_N of each of B batches; text-to-image is image-to-text on the transposed similarities."""
  return by_direction(direction, lambda: row_losses(sims_BxNxN, beta).mean(-1),
                      lambda: row_losses(np.swapaxes(sims_BxNxN, -1, -2), beta).mean(-1))


def batched_sims(img_mxD: np.ndarray, txt_mxD: np.ndarray, batch_size: int,
                 max_entries: int = 1 << 22) -> Iterator[np.ndarray]:
  """Similarity blocks of the consecutive batches, a few batches at a time to bound memory."""
  m, dim = img_mxD.shape
  if m % batch_size:
    raise ValueError(f"batch size {batch_size} does not divide the sample size {m}")
  img_BxNxD = img_mxD.reshape(-1, batch_size, dim)
  txt_BxNxD = txt_mxD.reshape(-1, batch_size, dim)
  step = max(1, max_entries // batch_size**2)
  for b in range(0, len(img_BxNxD), step):
    yield np.einsum("bnd,bkd->bnk", img_BxNxD[b:b + step], txt_BxNxD[b:b + step])


def batch_loss_values(img_mxD: np.ndarray, txt_mxD: np.ndarray, batch_size: int, beta: float,
                      direction: str = "sym") -> np.ndarray:
  """l_N of each of the m/N consecutive batches (pairs 0..N-1, N..2N-1, ...)."""
  return np.concatenate([batch_losses(s, beta, direction)
                         for s in batched_sims(img_mxD, txt_mxD, batch_size)])


def train_objective(img_mxD: np.ndarray, txt_mxD: np.ndarray, batch_size: int, beta: float,
                    direction: str = "sym") -> float:
  """L^_N: the training objective at contrastive batch size N, on a fixed partition of the sample."""
  return float(batch_loss_values(img_mxD, txt_mxD, batch_size, beta, direction).mean())


def population_loss(img_mxD: np.ndarray, txt_mxD: np.ndarray, batch_size: int, beta: float,
                    rng: np.random.Generator, n_shuffles: int = 4,
                    direction: str = "sym") -> tuple[float, float]:
  """Estimate of L_N = E l_N from a held-out sample: (mean, standard error).

  Each shuffle cuts the sample into m/N independent batches; more shuffles lower the variance. The
  standard error is that of one shuffle (batches within a shuffle are i.i.d.), so it is conservative.
  """
  values = [batch_loss_values(img_mxD[p], txt_mxD[p], batch_size, beta, direction)
            for p in (rng.permutation(len(img_mxD)) for _ in range(n_shuffles))]
  return float(np.mean(values)), float(values[0].std(ddof=1) / np.sqrt(len(values[0])))


def _leave_one_out_i2t(img_nxD: np.ndarray, txt_nxD: np.ndarray, beta: float,
                       chunk_rows: int) -> np.ndarray:
  """Per-anchor -beta s_ii + log mean_{j != i} exp(beta s_ij), streamed over row chunks."""
  n = len(img_nxD)
  out = np.empty(n)
  for start in range(0, n, chunk_rows):
    rows = np.arange(start, min(start + chunk_rows, n))
    logits = beta * img_nxD[rows] @ txt_nxD.T
    positives = logits[np.arange(len(rows)), rows].copy()
    logits[np.arange(len(rows)), rows] = -np.inf
    out[rows] = logsumexp(logits, axis=1) - np.log(n - 1) - positives
  return out


def infinite_batch_loss(img_nxD: np.ndarray, txt_nxD: np.ndarray, beta: float,
                        direction: str = "sym", chunk_rows: int = 1024) -> tuple[float, float]:
  """Pool estimator of L_inf: each anchor's negatives are the other n - 1 pairs' embeddings.

  Returns (estimate, standard error over anchors; approximate, as anchors share the pool). The
  positive is excluded, so only the Jensen term biases it: E estimate - L_inf is about
  -E[sigma^2(x) / (2 Z(x)^2)] / (n - 1), i.e. O(1/n); use a held-out sample much larger than N.
  """
  per_anchor_n = by_direction(direction,
                              lambda: _leave_one_out_i2t(img_nxD, txt_nxD, beta, chunk_rows),
                              lambda: _leave_one_out_i2t(txt_nxD, img_nxD, beta, chunk_rows))
  return float(per_anchor_n.mean()), float(per_anchor_n.std(ddof=1) / np.sqrt(len(per_anchor_n)))
