"""Monte Carlo checks of Proposition 1 (batch bias), Lemma 1 (bounded differences) and Corollary 1.

The fixed model is the identity towers on an aligned vMF world (theory/synthetic.py), where
log Z(x) is exact, so the batch bias L_N - L_inf can be estimated with a control variate: per
batch, d_N = l_N - (1/N) sum_i [-beta s_ii + log Z(x_i)] has mean exactly L_N - L_inf but a
standard deviation O(1/N) instead of O(1/sqrt(N)), so its relative error does not grow with N.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from theory import bound, empirical, synthetic


def default_world() -> synthetic.PairWorld:
  """The fixed model of the checks and figures: identity towers on 8 aligned vMF clusters in R^16."""
  return synthetic.make_world(np.random.default_rng(0), 8, 16, 16, 16.0, 16.0, aligned=True)


def identity_towers(world: synthetic.PairWorld) -> tuple[np.ndarray, np.ndarray]:
  """W = V = I: the samples are the embeddings."""
  dim = world.centres_x_Cxdx.shape[1]
  return np.eye(dim), np.eye(dim)


def batch_statistics(world: synthetic.PairWorld, w_Dxdx: np.ndarray, v_Dxdy: np.ndarray, beta: float,
                     x_mxdx: np.ndarray, y_mxdy: np.ndarray, batch_size: int,
                     direction: str = "i2t") -> tuple[np.ndarray, np.ndarray]:
  """(l_N, d_N) of the consecutive batches of the given pairs under linear towers (W, V).

  d_N = l_N - (1/N) sum_i [-beta s_ii + log Z(anchor_i)] uses the exact partition function, so
  its mean is exactly L_N - L_inf while its spread is O(1/N); text-to-image anchors are the y's.
  """
  def half(sims_BxNxN, anchors, world_, w_, v_):
    rows_BxN = empirical.row_losses(sims_BxNxN, beta)
    oracle_BxN = (-beta * np.diagonal(sims_BxNxN, axis1=1, axis2=2)
                  + synthetic.log_partition(world_, w_, v_, beta, anchors).reshape(rows_BxN.shape))
    return np.stack([rows_BxN.mean(1), (rows_BxN - oracle_BxN).mean(1)])

  out, start = [], 0
  for sims in empirical.batched_sims(x_mxdx @ w_Dxdx.T, y_mxdy @ v_Dxdy.T, batch_size):
    rows = slice(start, start + sims.shape[0] * batch_size)
    out.append(empirical.by_direction(
        direction, lambda sims=sims, rows=rows: half(sims, x_mxdx[rows], world, w_Dxdx, v_Dxdy),
        lambda sims=sims, rows=rows: half(np.swapaxes(sims, 1, 2), y_mxdy[rows], world.swapped(),
                                          v_Dxdy, w_Dxdx)))
    start = rows.stop
  losses, controlled = np.concatenate(out, axis=1)
  return losses, controlled


def batch_bias(world: synthetic.PairWorld, beta: float, batch_sizes: list[int], n_batches: int,
               rng: np.random.Generator) -> pd.DataFrame:
  """Per N: bias L_N - L_inf (control variate) and spread sd(l_N), each with its standard error,
  next to the bias bound (Proposition 1) and the Efron-Stein bound sd(l_N) <= c_N / sqrt(2N)."""
  w, v = identity_towers(world)
  rows = []
  for n in batch_sizes:
    per_chunk = max(1, (1 << 17) // n)  # batches sampled at a time, to bound memory
    parts = [batch_statistics(world, w, v, beta, *synthetic.sample_pairs(world, b * n, rng), n)
             for b in (min(per_chunk, n_batches - s) for s in range(0, n_batches, per_chunk))]
    losses, controlled = (np.concatenate(p) for p in zip(*parts))
    sd = losses.std(ddof=1)
    rows.append({"batch_size": n, "n_batches": n_batches, "bias": controlled.mean(),
                 "bias_se": controlled.std(ddof=1) / np.sqrt(n_batches), "loss_sd": sd,
                 "loss_sd_se": sd / np.sqrt(2 * (n_batches - 1)),
                 "bias_bound": bound.bias_bound(n, beta),
                 "efron_stein_sd": bound.bounded_difference_constant(n, beta) / np.sqrt(2 * n)})
  return pd.DataFrame(rows)


def cluster_bias_exact(n: int, beta: float, n_clusters: int) -> float:
  """Exact L_N - L_inf for a similarity in {-1, +1}: +1 within a cluster, -1 across clusters.

  Pairs share a uniform cluster, so each of the N - 1 negatives matches with probability 1/K and
  the batch mean is a binomial mixture. As K and N grow the bias approaches (e^{2 beta} - 1)/N,
  Proposition 1's first-order bound, which shows that constant cannot be improved in general.
  """
  p = 1.0 / n_clusters
  matches = np.arange(n)
  log_mean = np.log((np.exp(beta) * (1 + matches) + np.exp(-beta) * (n - 1 - matches)) / n)
  return float(stats.binom.pmf(matches, n - 1, p) @ log_mean
               - np.log(p * np.exp(beta) + (1 - p) * np.exp(-beta)))


def cluster_constants(beta: float, n_clusters: int) -> dict[str, float]:
  """kappa and the second-order constant kappa_2 of L_N - L_inf = kappa / N + kappa_2 / N^2 + O(1/N^3) in
  the cluster world of cluster_bias_exact (README, proof of Proposition 1).

  Every weight w = exp(beta s) / Z is e^{+-beta} / Z: the positive's is e^beta / Z = 1 + rho, a negative's
  has variance s2 = 2 J and third central moment m3. The expansion of E log(1 + t) through t^4 gives
  kappa_2 = J - rho^2 / 2 + rho s2 + m3 / 3 - 3 s2^2 / 4 (the t^5 and later terms are O(1/N^3)).
  """
  p = 1.0 / n_clusters
  z = p * np.exp(beta) + (1 - p) * np.exp(-beta)
  high, low = np.exp(beta) / z - 1, np.exp(-beta) / z - 1  # a negative's w - 1 (mean 0)
  s2, m3 = p * high**2 + (1 - p) * low**2, p * high**3 + (1 - p) * low**3
  rho = high  # the positive is always in its own cluster
  kappa2 = s2 / 2 - rho**2 / 2 + rho * s2 + m3 / 3 - 3 * s2**2 / 4
  return {"rho": float(rho), "jensen": float(s2 / 2), "kappa": float(rho - s2 / 2), "kappa2": float(kappa2)}


def replace_one_pair_ratios(rng: np.random.Generator, m: int, n: int, beta: float, dim: int,
                            trials: int) -> np.ndarray:
  """m |change of L^_N| / c_N when one pair is replaced by a fresh one, per trial and direction.

  Lemma 1 says every entry is <= 1. Embeddings are uniform on S^{dim-1}; small dim gives
  similarities near +-1, where the constant is closest to tight.
  """
  def unit(k):
    z = rng.normal(size=(k, dim))
    return z / np.linalg.norm(z, axis=1, keepdims=True)
  img, txt = unit(m), unit(m)
  before = [empirical.train_objective(img, txt, n, beta, d) for d in empirical.DIRECTIONS]
  ratios = np.empty((trials, len(empirical.DIRECTIONS)))
  for t in range(trials):
    k = rng.integers(m)
    img2, txt2 = img.copy(), txt.copy()
    img2[k], txt2[k] = unit(1)[0], unit(1)[0]
    after = [empirical.train_objective(img2, txt2, n, beta, d) for d in empirical.DIRECTIONS]
    ratios[t] = m * np.abs(np.subtract(after, before)) / bound.bounded_difference_constant(n, beta)
  return ratios


def extremal_replacement_ratio(n: int, beta: float) -> float:
  """m |change of L^_N| / c_N for a near-worst replacement (image-to-text, m = N, dimension 1).

  Every other x is +1 and every other y is -1; pair 0 goes from (+1, -1) to (-1, +1). Each other
  row's log-mean then moves by exactly log(1 + (e^{2 beta} - 1)/N), and the replaced row climbs to
  the top of its range, so the ratio shows how much slack c_N leaves.
  """
  img, txt = np.ones((n, 1)), -np.ones((n, 1))
  img2, txt2 = img.copy(), txt.copy()
  img2[0], txt2[0] = -1.0, 1.0
  change = (empirical.train_objective(img2, txt2, n, beta, "i2t")
            - empirical.train_objective(img, txt, n, beta, "i2t"))
  return float(n * abs(change) / bound.bounded_difference_constant(n, beta))


def fixed_model_coverage(world: synthetic.PairWorld, beta: float, m: int, n: int, delta: float,
                         trials: int, n_anchors: int, rng: np.random.Generator) -> dict:
  """Fraction of fresh training sets with |L_inf - L^_N| <= the Corollary 1 bound (symmetric loss).

  Also reports the empirical (1 - delta) quantile of |L_inf - L^_N|, to show how loose it is.
  """
  w, v = identity_towers(world)
  l_inf, l_inf_se = synthetic.symmetric_infinite_batch_loss(world, w, v, beta, n_anchors, rng)
  devs = np.array([l_inf - empirical.train_objective(*synthetic.sample_pairs(world, m, rng), n, beta)
                   for _ in range(trials)])
  total = bound.fixed_model_terms(m, n, beta, delta)["total"]
  quantile = float(np.quantile(np.abs(devs), 1 - delta))
  return {"coverage": float(np.mean(np.abs(devs) <= total)), "bound": total,
          "abs_dev_quantile": quantile, "bound_over_quantile": total / quantile,
          "mean_dev": float(devs.mean()), "sd_dev": float(devs.std(ddof=1)),
          "l_inf": l_inf, "l_inf_se": l_inf_se, "trials": trials}
