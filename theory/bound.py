"""Every constant and term of the bound in theory/README.md, as plain functions of (m, N, beta, delta).

Notation: m training pairs, contrastive batch size N (N divides m), inverse temperature beta,
similarities in [-1, 1], so every exp(beta s) lies in [a, b] = [e^-beta, e^beta].
Lemma 1, Proposition 1, Corollary 1 and Theorem 1 refer to theory/README.md.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def log_lipschitz(beta: float) -> float:
  """Lipschitz constant of log on [e^-beta, e^beta]: 1/u at the left end, e^beta."""
  return float(np.exp(beta))


def exp_lipschitz(beta: float) -> float:
  """Lipschitz constant of t -> exp(beta t) on [-1, 1]: beta e^beta."""
  return float(beta * np.exp(beta))


def own_row_range(n: int, beta: float) -> float:
  """Range of one anchor's row term log((1/N) sum_j exp(beta (s_ij - s_ii))) over all inputs."""
  return float(np.log1p((n - 1) * np.exp(2 * beta)) - np.log1p((n - 1) * np.exp(-2 * beta)))


def other_row_change(n: int, beta: float) -> float:
  """Most one row's log-mean can move when one of its N terms changes: log(1 + (e^{2 beta} - 1)/N)."""
  return float(np.log1p(np.expm1(2 * beta) / n))


def bounded_difference_constant(n: int, beta: float) -> float:
  """c_N(beta): m * max |change of L^_N| when one of the m pairs is replaced (Lemma 1).

  Own row: own_row_range; each of the other N - 1 rows: other_row_change; both divided by N for
  the mean over the batch, times N/m for the mean over batches. Same value for 'i2t', 't2i', 'sym'.
  """
  return own_row_range(n, beta) + (n - 1) * other_row_change(n, beta)


def c_bar(beta: float) -> float:
  """N-free bounded-difference constant of the uniform deviation: c-bar = 4 beta + e^{2 beta} - 1 (Theorem 1).

  It dominates bounded_difference_constant(N, beta) for every N (checked in theory/symbolic.py). Not
  c_1: that is bounded_difference_constant(1, beta) = 0 (a batch of one pair has a constant loss).
  """
  return float(4 * beta + np.expm1(2 * beta))


def bias_bound(n: int, beta: float) -> float:
  """Upper bound on |L_N - L_inf| for one fixed model (Proposition 1): O(1/N).

  L_N - L_inf = rho/N - v_N with rho in [e^{-2 beta} - 1, e^{2 beta} - 1] and
  0 <= v_N <= ((N - 1) K1 + K2) / (2 N^2), K1 = 4 e^beta sinh^2(beta/2), K2 = 4 e^{2 beta} sinh^2(beta).
  """
  k1 = 4 * np.exp(beta) * np.sinh(beta / 2)**2
  k2 = 4 * np.exp(2 * beta) * np.sinh(beta)**2
  v_max = ((n - 1) * k1 + k2) / (2 * n**2)
  return float(max(np.expm1(2 * beta) / n, -np.expm1(-2 * beta) / n + v_max))


def bias_remainder_constant(beta: float) -> float:
  """C_2(beta) with |L_N - L_inf - kappa / N| <= C_2 / N^2 for every N >= 1 and model (Proposition 1).

  With K = e^{2 beta} - 1 (every weight w = exp(beta s) / Z(x) lies in [e^{-2 beta}, e^{2 beta}], so
  |w - 1| <= K) and t = M_1 / Z(x_1) - 1 >= e^{-2 beta} - 1: the second-order moments leave
  |J - E a^2 / 2| <= K^2 / 2, |E t^3| <= 4 K^3 / N^2 and E t^4 <= 5 K^4 / N^2, and the Taylor remainder
  of log(1 + t) after t^3 / 3 is at most e^{2 beta} t^4 / 4 (README, proof of Proposition 1).
  """
  k = np.expm1(2 * beta)
  return float(k**2 / 2 + 4 * k**3 / 3 + 5 * np.exp(2 * beta) * k**4 / 4)


def capped_bias_bound(n: int, beta: float) -> float:
  """min(B_N, 2 beta): log M_1 and log Z(x_1) both lie in [-beta, beta], and B_N exceeds 2 beta at small N."""
  return min(bias_bound(n, beta), 2 * beta)


def mcdiarmid_deviation(c: float, m: int, delta: float, two_sided: bool = True) -> float:
  """t with P(deviation >= t) <= delta for a function with bounded differences c/m (McDiarmid)."""
  return float(c * np.sqrt(np.log((2 if two_sided else 1) / delta) / (2 * m)))


def fixed_model_terms(m: int, n: int, beta: float, delta: float,
                      two_sided: bool = True) -> dict[str, float]:
  """Terms of the fixed-model bound (Corollary 1): |L_inf - L^_N| <= bias + concentration w.p. 1-delta."""
  terms = {"bias": capped_bias_bound(n, beta),
           "concentration": mcdiarmid_deviation(bounded_difference_constant(n, beta), m, delta,
                                                two_sided)}
  return terms | {"total": sum(terms.values())}


@dataclasses.dataclass(frozen=True)
class Complexity:
  """Rademacher complexities in the form C / sqrt(n) (Theorem 1).

  sim:   R_n{(x, y) -> s_theta(x, y)} <= sim / sqrt(n)
  tower: E sup_theta |(1/n) sum_k sigma_k f_theta(x_k)|_2 <= tower / sqrt(n), same for g_theta.
  """
  sim: float
  tower: float


def uniform_terms(m: int, n: int, beta: float, delta: float, complexity: Complexity,
                  two_sided: bool = True) -> dict[str, float]:
  """Terms of Theorem 1: with probability >= 1 - delta, for all theta,
  L_inf - L^_N (or |L_inf - L^_N| when two_sided) <= total.

  rademacher:     2 R_m, R_m = beta (sim + e^{2 beta} tower) / sqrt(m)
  concentration:  c_bar(beta) sqrt(ln(k/delta) / (2m)), k = 2 if two_sided else 1
  batch_uniform:  2 beta e^{2 beta} tower sqrt(N-1) / N  (a proof artifact: one supremum per anchor)
  batch_positive: (e^{2 beta} - 1) / N                    (the positive inside the mean: bias)
  """
  lip = log_lipschitz(beta) * exp_lipschitz(beta)  # beta e^{2 beta}: log of a mean of exp(beta s)
  terms = {
      "rademacher": 2 * (beta * complexity.sim + lip * complexity.tower) / np.sqrt(m),
      "concentration": mcdiarmid_deviation(c_bar(beta), m, delta, two_sided),
      "batch_uniform": 2 * lip * complexity.tower * np.sqrt(n - 1) / n,
      "batch_positive": log_lipschitz(beta) * 2 * np.sinh(beta) / n,  # e^beta (b - a) / N
  }
  return {k: float(v) for k, v in terms.items()} | {"total": float(sum(terms.values()))}
