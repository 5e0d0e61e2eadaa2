r"""PAC-Bayes bounds on the sample gap L_N - L^_N of the contrastive objective, and their values on
linear towers. Theorem 1 (README) is uniform over a model class and loose by 35x to 4000x; these bounds
are data-dependent: they pay KL(Q || P) for a posterior Q around the trained weights instead.

    OPENBLAS_NUM_THREADS=1 python -m theory.pac_bayes --out theory/figures/   # 13 min wall, 610 s CPU
    OPENBLAS_NUM_THREADS=1 python -m theory.pac_bayes --out /tmp/pb --quick   # 35 s: one seed, m = 1024

Times measured on the project's shared 2-core CPU with other jobs running. One BLAS thread matters here:
with the default thread pool, the towers' small matrix products ran 10x to 200x slower on the loaded box.
The full run is m in {1024, 8192} x N in {2, 8, 32, 128, 512, 2048} (N = 1024 for m = 1024) x 3 seeds x
2 priors x 2 rules for sigma, one CSV row each (columns: `evaluate_run`); training the towers at N = 512
and 2048 is most of the time.

Setting (README section 1). S = m i.i.d. pairs cut by a fixed partition into n = m/N batches S_1..S_n;
the batches are i.i.d., the anchors inside a batch are not. For a predictor theta, l_b(theta) is the
symmetric batch loss l_N(S_b) (offset by log N), L^_N = (1/n) sum_b l_b and L_N = E l_N(S') for a
fresh batch S', so E_S L^_N = L_N. The sample gap is F(theta, S) = L_N(theta) - L^_N(theta), and for a
distribution Q over predictors, gap(Q) = E_Q F. Every row term of a batch loss is
log((1/N) sum_j e^{beta (s_ij - s_ii)}) with N - 1 exponents in [-2 beta, 2 beta] and one 0, so
l_N(S) lies in [lo_N, hi_N] = [log((1 + (N-1) e^{-2 beta}) / N), log((1 + (N-1) e^{2 beta}) / N)],
an interval of width w_N = bound.own_row_range(N, beta): |gap| <= w_N for every predictor (the
"trivial bound").

Posterior and prior. Q = N(theta_hat, sigma^2 I), P = N(theta_0, sigma^2 I), so
KL(Q || P) = |theta_hat - theta_0|^2 / (2 sigma^2); theta_0 must not depend on S, and sigma comes from
the fixed grid SIGMAS. The predictor of a parameter vector theta is a fixed map of theta chosen so that
|s| <= 1 for every theta (spectral projection for linear towers; unit-norm embeddings for the trained
model), hence the ranges above hold for every sample of Q.

Proofs, step by step.

(G) Change of measure [DV75; McA99; Alq21, Lemma 2.2 and Thm 2.1]. For P, Q with KL(Q||P) < inf and
  measurable f, E_Q f <= KL(Q||P) + ln E_P e^f (Donsker-Varadhan). If E_S e^{f(theta, S)} <= 1 for every
  fixed theta, then with probability >= 1 - delta over S, simultaneously for all Q:
  E_Q f(theta, S) <= KL(Q||P) + ln(1/delta). Proof: P does not depend on S, so by Tonelli
  E_S E_P e^f = E_P E_S e^f <= 1; by Markov, P_S(E_P e^f > 1/delta) <= delta; outside that event apply
  Donsker-Varadhan. Everything below is (G) with a suitable f, plus a union bound over finite grids.

(A) Bounded differences ("mcdiarmid"), with the better of two martingales, as in Theorem 2 (README).
  Fix theta. Pairs: replacing one of the m pairs changes only its batch's l_b, by at most c_N / N
  (Lemma 1, README), so L^_N = (1/n) sum_b l_b moves by at most c_N / m; Hoeffding's lemma on the Doob
  martingale of L^_N over the m pairs [McD89; BLM13, proof of Thm 6.2] gives
  E_S e^{lambda (L_N - L^_N)} <= e^{lambda^2 c_N^2 / (8m)} (mean zero since E L^_N = L_N). Batches: the
  n = m/N batches are independent and each l_b lies in an interval of width w_N, so the martingale over
  the batches gives the same with sum_b (w_N / n)^2 = (sqrt(N) w_N)^2 / m in place of c_N^2 / m. Both
  hold for every theta, so c = c*_N = min(c_N, sqrt(N) w_N) = lse_bound.concentration_constant, fixed by
  (N, beta) before the data (2.83 instead of c_N = 3.43 at beta = 1, N = 2; 257 instead of 1534 at
  beta = 14, N = 64). So f = lambda F - lambda^2 c^2 / (8m) satisfies (G); a union bound over
  lambda_j = 2^j sqrt(8m) / c, j < LAMBDA_GRID (fixed before the data), gives w.p. >= 1 - delta, for all Q,
      gap(Q) <= min_j (KL + ln(LAMBDA_GRID / delta)) / lambda_j + lambda_j c^2 / (8m).
  At KL = 0 this is about c sqrt(ln(LAMBDA_GRID / delta) / (2m)): the worst-case constant c*_N (about
  4 beta + e^{2 beta} - 1 for large N, and growing like sqrt(N) before that) sets a floor that no
  posterior can remove.

(B) Batch-level PAC-Bayes-kl [See02; Mau04]. Fix theta; X_b = (l_b - lo_N) / w_N in [0, 1] are n i.i.d.
  variables with mean mu and empirical mean mu^. Maurer's lemma (the [0,1] case is dominated by the
  Bernoulli case, convexity of x -> e^{n kl}) gives E e^{n kl(mu^ || mu)} <= xi(n) = sum_k C(n, k)
  (k/n)^k (1 - k/n)^{n-k} (exactly the Bernoulli value, <= 2 sqrt(n) for n >= 8) [Mau04, Thm 1].
  So f = n kl(mu^ || mu) - ln xi(n) satisfies (G); kl is jointly convex [CT06, Thm 2.7.2], so by Jensen
      kl(E_Q mu^ || E_Q mu) <= eps = (KL + ln(xi(n) / delta)) / n   for all Q, w.p. >= 1 - delta,
  i.e. E_Q mu <= kl^{-1}(E_Q mu^, eps) := max{q : kl(E_Q mu^ || q) <= eps}, inverted by bisection
  (`kl_upper`). With E_Q mu^ in [p-, p+] (Monte Carlo, below), gap(Q) <= w_N sup_{p in [p-, p+]}
  (kl^{-1}(p, eps) - p). kl^{-1}(., eps) is nondecreasing (kl(. || q) decreases on [0, q]), so on each
  of `pieces` sub-intervals [a, a'] the sup is at most kl^{-1}(a', eps) - a: a rigorous, slightly
  conservative sup. It adapts to the level of the loss: near the ends of [lo_N, hi_N] it is ~ eps.

(C) Batch-level un-expected Bernstein ("bernstein"), variance-adaptive. Lemma [FGL15; MGG19]: for
  xi >= -1 and 0 <= lam < 1, exp(lam xi - psi(lam) xi^2) <= 1 + lam xi, psi(u) = -ln(1 - u) - u.
  Proof: h(xi) = ln(1 + lam xi) - lam xi + psi(lam) xi^2 has h(0) = 0, h(-1) = 0 and
  h'(xi) = xi (2 psi(lam) - lam^2 / (1 + lam xi)). As psi(lam) >= lam^2 / 2, h' > 0 for xi > 0; on
  [-1, 0) the bracket increases in xi and is >= 0 at 0, so h first increases then decreases between
  h(-1) = h(0) = 0. Hence h >= 0, which is the claim. Consequence: if Z <= b almost surely and
  0 < eta < 1/b, take xi = -Z / b, lam = eta b: E exp(-eta Z - psi(eta b) Z^2 / b^2) <= 1 - eta E Z
  <= e^{-eta E Z}. For fixed theta put Z_b = l_b - c <= hi_N - c =: b (i.i.d. over batches); the
  product over batches gives (G) with f = sum_b [eta (E Z - Z_b) - psi(eta b) Z_b^2 / b^2], and
  E Z - Z^ = L_N - L^_N, so w.p. >= 1 - delta, for all Q,
      gap(Q) <= psi(eta b) / (eta b^2) E_Q V^_c + (KL + ln(1/delta)) / (n eta),  V^_c = (1/n) sum_b Z_b^2.
  When V^_c is small this is about sqrt(2 V^_c (KL + ln(1/delta)) / n): the spread of the batch losses,
  not their range, sets it. Union bound over the shifts c_i = lo_N + (i + 1/2) w_N / SHIFT_GRID and over
  eta b = 0.9 2^{-j}, j < ETA_GRID.

(MC) Monte Carlo of E_Q [DR17]. The kl and Bernstein bounds need E_Q L^_N and E_Q V^_c, which are
  estimated with independent draws: batch b gets its own draws theta_{b,k} ~ Q, so the values
  l_b(theta_{b,k}) are independent given S (not identically distributed), with average mean E_Q L^_N.
  The lemma of (C) applies to each value (Z_i = X_i - c <= b), the product over independent values and
  Markov give, w.p. >= 1 - delta over the draws, for a shift c and an eta fixed before them:
      mean_i E X_i <= mean_i X_i + psi(eta b) / (eta b^2) mean_i Z_i^2 + ln(1/delta) / (M eta)
  (`mean_upper`; `mean_lower` is the same for -X). The draws are split in halves: the first half fixes
  the shifts (and the Bernstein shift c), the second half gives the bound, so each shift is independent
  of the values it is used with.

Union bound (the ledger). delta is split equally over the sigma grid (times `n_choices` for any other
grid, e.g. of temperatures, or of priors: the linear-tower evaluation quotes the better of the "init"
and "half" priors, so each spends delta / 2), then over the active families; inside "kl" and
"bernstein" a share MC_SHARE goes to the Monte Carlo bounds (halved between the two sides of E_Q L^_N
for kl), the rest to (G), and the grids above divide their share again. The families are fixed by
(m, N) alone: the batch-level ones need n >= MIN_BATCHES batches. The reported bound is the minimum over
families, valid with probability >= 1 - delta over S and the draws, simultaneously for every sigma,
whichever sigma is reported (sigma may be chosen from the data: `choose_sigmas`).

Data-dependent prior [DHGAR21]. Split S by a fixed rule into S1 and S2; train the prior mean theta_0 on
S1 only; evaluate everything above on S2 (m = |S2|). Given S1, S2 is i.i.d. and P does not depend on
it, so the bound holds w.p. >= 1 - delta over S2 for every S1, hence over S. It covers
E_Q[L_N - L^_N(S2)]: the gap of Q measured on S2 only, where Q may depend on all of S (here its mean is
trained from theta_0 on S1 u S2, so S2 is genuinely training data for Q). Reporting the smaller of the
"init" and "half" bounds is a choice between two bounds made after seeing both, so each is computed at
delta / 2 (LinearConfig.priors enters n_choices): then both hold together w.p. >= 1 - delta.

References. [Alq21] P. Alquier, User-friendly introduction to PAC-Bayes bounds, arXiv 2110.11216.
[BLM13] Boucheron, Lugosi, Massart, Concentration Inequalities, 2013. [CT06] Cover, Thomas, Elements of
Information Theory, 2nd ed. [DHGAR21] Dziugaite, Hsu, Gharbieh, Arpino, Roy, On the role of data in
PAC-Bayes bounds, AISTATS 2021. [DR17] Dziugaite, Roy, Computing nonvacuous generalization bounds for
deep (stochastic) neural networks, UAI 2017. [DV75] Donsker, Varadhan, Asymptotic evaluation of certain
Markov process expectations, CPAM 1975. [FGL15] Fan, Grama, Liu, Exponential inequalities for
martingales with applications, EJP 2015. [Mau04] A. Maurer, A note on the PAC Bayesian theorem,
arXiv cs/0411099. [McA99] D. McAllester, PAC-Bayesian model averaging, COLT 1999. [McD89] C. McDiarmid,
On the method of bounded differences, 1989. [MGG19] Mhammedi, Grunwald, Guedj, PAC-Bayes un-expected
Bernstein inequality, NeurIPS 2019. [See02] M. Seeger, PAC-Bayesian generalisation error bounds for
Gaussian process classification, JMLR 2002.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd
from scipy import special

from analysis import cli
from theory import bound, empirical, linear_towers, lse_bound, montecarlo, synthetic

SIGMAS = tuple(float(1e-3 * 2 ** (j / 2)) for j in range(24))  # posterior / prior scale grid, 0.001..2.9
LAMBDA_GRID = 24  # (A): lambda_j = 2^j sqrt(8m) / c
ETA_GRID = 16  # (C) and (MC): eta b = 0.9 * 2^-j
SHIFT_GRID = 32  # (C): shifts c_i = lo + (i + 1/2) w / SHIFT_GRID
MIN_BATCHES = 32  # the batch-level families need at least this many batches
MC_SHARE = 0.25  # of a batch-level family's delta, for its Monte Carlo bounds
FAMILIES = ("mcdiarmid", "kl", "bernstein")


def batch_loss_range(n: int, beta: float) -> tuple[float, float]:
  """[lo_N, hi_N]: every batch loss l_N(S), whatever the embeddings with |s| <= 1 (module docstring)."""
  return (
    float(np.log1p((n - 1) * np.exp(-2 * beta)) - np.log(n)),
    float(np.log1p((n - 1) * np.exp(2 * beta)) - np.log(n)),
  )


def kl_bernoulli(p, q) -> np.ndarray:
  """kl(p || q) between Bernoulli means, with 0 log 0 = 0 (inf where q is 0 or 1 and p is not)."""
  p, q = np.asarray(p, float), np.asarray(q, float)
  return special.xlogy(p, p) - special.xlogy(p, q) + special.xlogy(1 - p, 1 - p) - special.xlogy(1 - p, 1 - q)


def kl_upper(p, eps, iters: int = 80) -> np.ndarray:
  """max{q >= p : kl(p || q) <= eps} by bisection; returns the bracket's upper end (never too small)."""
  p = np.asarray(p, float)
  lo, hi = p.copy(), np.ones_like(p)
  for _ in range(iters):
    mid = (lo + hi) / 2
    inside = kl_bernoulli(p, mid) <= eps
    lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
  return hi


def kl_lower(p, eps, iters: int = 80) -> np.ndarray:
  """min{q <= p : kl(p || q) <= eps}, the mirror image of kl_upper (bracket's lower end)."""
  return 1 - kl_upper(1 - np.asarray(p, float), eps, iters)


def maurer_xi(n: int) -> float:
  """xi(n) = sum_k C(n, k) (k/n)^k (1 - k/n)^(n-k) = E exp(n kl(mu^ || mu)) for n Bernoulli draws."""
  k = np.arange(n + 1)
  log_terms = (
    special.gammaln(n + 1)
    - special.gammaln(k + 1)
    - special.gammaln(n - k + 1)
    + special.xlogy(k, k / n)
    + special.xlogy(n - k, 1 - k / n)
  )
  return float(np.exp(special.logsumexp(log_terms)))


def psi(u) -> np.ndarray:
  """-ln(1 - u) - u, the un-expected Bernstein function of (C) (>= u^2 / 2)."""
  u = np.asarray(u, float)
  return -np.log1p(-u) - u


def _eta_grid() -> np.ndarray:
  return 0.9 * 2.0 ** -np.arange(ETA_GRID)


def mcdiarmid_gap(kl: float, m: int, c: float, delta: float) -> float:
  """(A): min over lambda_j = 2^j sqrt(8m)/c of (KL + ln(J/delta)) / lambda_j + lambda_j c^2 / (8m).

  c is c*_N (lse_bound.concentration_constant) in _family_gaps."""
  scale, grid = c / np.sqrt(8 * m), 2.0 ** np.arange(LAMBDA_GRID)
  return float(scale * np.min((kl + np.log(LAMBDA_GRID / delta)) / grid + grid))


def kl_gap(
  kl: float, n: int, lo: float, hi: float, mean_lo: float, mean_hi: float, delta: float, pieces: int = 64
) -> float:
  """(B): w sup over E_Q L^_N in [mean_lo, mean_hi] of kl^{-1}(p, eps) - p, p the rescaled loss."""
  width = hi - lo
  eps = (kl + np.log(maurer_xi(n) / delta)) / n
  edges = np.linspace(*np.clip([(mean_lo - lo) / width, (mean_hi - lo) / width], 0, 1), pieces + 1)
  return float(width * np.max(kl_upper(edges[1:], eps) - edges[:-1]))


def bernstein_gap(kl: float, n: int, b: float, second_moment: float, delta: float) -> float:
  """(C) for one shift c (b = hi - c, second_moment >= E_Q V^_c): min over the eta grid."""
  u = _eta_grid()
  return float(np.min(psi(u) * second_moment / u + b**2 * (kl + np.log(ETA_GRID / delta)) / (n * u)) / b)


def mean_upper(values, hi: float, center: float, delta: float) -> float:
  """(MC): upper confidence bound on the average mean of independent values <= hi (center fixed before
  the values were drawn)."""
  z = np.ravel(values) - center
  b = max(hi - center, 1e-12 * (1 + abs(hi)))
  u = _eta_grid()
  slack = np.min(psi(u) * np.mean(z**2) / u + b**2 * np.log(ETA_GRID / delta) / (z.size * u)) / b
  return float(center + z.mean() + slack)


def mean_lower(values, lo: float, center: float, delta: float) -> float:
  """(MC): lower confidence bound on the average mean of independent values >= lo."""
  return -mean_upper(-np.asarray(values), -lo, -center, delta)


@dataclasses.dataclass(frozen=True)
class Problem:
  """What one bound is about, fixed before the data: the m pairs it is evaluated on, cut into batches of
  N, the inverse temperature, the confidence, and how many such bounds share delta (the sigma grid
  times any other grid, e.g. of temperatures)."""

  m: int
  batch_size: int
  beta: float
  delta: float = 0.05
  n_choices: int = len(SIGMAS)

  @property
  def n_batches(self) -> int:
    if self.m % self.batch_size:
      raise ValueError(f"batch size {self.batch_size} does not divide the sample size {self.m}")
    return self.m // self.batch_size

  @property
  def families(self) -> tuple[str, ...]:
    return FAMILIES if self.n_batches >= MIN_BATCHES else FAMILIES[:1]

  @property
  def family_delta(self) -> float:
    return self.delta / (self.n_choices * len(self.families))

  @property
  def loss_range(self) -> tuple[float, float]:
    return batch_loss_range(self.batch_size, self.beta)

  def shift(self, center: float) -> float:
    """The grid shift of (C) nearest to `center`."""
    lo, hi = self.loss_range
    step = (hi - lo) / SHIFT_GRID
    return lo + (np.clip(np.floor((center - lo) / step), 0, SHIFT_GRID - 1) + 0.5) * step


def _family_gaps(
  problem: Problem, kl: float, train_lo: float, train_hi: float, shift: float, second_moment: float
) -> dict[str, float]:
  """Each active family's bound on gap(Q), given E_Q L^_N in [train_lo, train_hi] and
  E_Q V^_shift <= second_moment; the shares of delta are the ledger's (module docstring)."""
  d = problem.family_delta
  gaps = {
    "mcdiarmid": mcdiarmid_gap(
      kl, problem.m, lse_bound.concentration_constant(problem.batch_size, problem.beta), d
    )
  }
  if len(problem.families) > 1:
    lo, hi = problem.loss_range
    gaps["kl"] = kl_gap(kl, problem.n_batches, lo, hi, train_lo, train_hi, d * (1 - MC_SHARE))
    gaps["bernstein"] = bernstein_gap(
      kl, problem.n_batches, hi - shift, second_moment, d * (1 - MC_SHARE) / SHIFT_GRID
    )
  return gaps


def _summary(problem: Problem, gaps: dict[str, float]) -> dict:
  best = min(gaps, key=gaps.get)
  return {f"bound_{k}": gaps.get(k, np.nan) for k in FAMILIES} | {
    "bound": gaps[best],
    "bound_family": best,
    "families": "+".join(problem.families),
  }


def certify(problem: Problem, kl: float, losses_BxK: np.ndarray | None = None) -> dict:
  """The bound on gap(Q), valid w.p. >= 1 - delta (module docstring).

  losses_BxK: l_b(theta_{b,k}) for independent draws theta_{b,k} ~ Q, K >= 2 per batch (the
  batch-level families need them; `None` when only (A) is active). Also returns the Monte Carlo
  interval of E_Q L^_N and `range_bound` = hi - its lower end, what the range alone says.
  """
  if len(problem.families) == 1:
    return _summary(problem, _family_gaps(problem, kl, np.nan, np.nan, np.nan, np.nan)) | {
      "train_loss_q_lower": np.nan,
      "train_loss_q_upper": np.nan,
      "range_bound": np.nan,
    }
  if (
    losses_BxK is None
    or losses_BxK.shape != (problem.n_batches, losses_BxK.shape[1])
    or losses_BxK.shape[1] < 2
  ):
    raise ValueError(f"need per-batch draws of shape ({problem.n_batches}, K >= 2)")
  lo, hi = problem.loss_range
  first, second = np.split(losses_BxK[:, : losses_BxK.shape[1] // 2 * 2], 2, axis=1)
  center, d_mc = float(first.mean()), problem.family_delta * MC_SHARE
  train_lo = mean_lower(second, lo, center, d_mc / 2)
  train_hi = mean_upper(second, hi, center, d_mc / 2)
  c = problem.shift(center)
  second_moment = mean_upper(
    (second - c) ** 2, max(hi - c, c - lo) ** 2, float(((first - c) ** 2).mean()), d_mc
  )
  gaps = _family_gaps(problem, kl, train_lo, train_hi, c, second_moment)
  return _summary(problem, gaps) | {
    "train_loss_q_lower": train_lo,
    "train_loss_q_upper": train_hi,
    "range_bound": hi - train_lo,
  }


def estimate(problem: Problem, kl: float, losses_BxK: np.ndarray) -> dict:
  """`certify` with plug-in Monte Carlo estimates (no slack): only to choose sigma, never to report.

  losses_BxK may share one draw per column (l_b(theta_k) for all b), which is cheaper."""
  center = float(losses_BxK.mean())
  c = problem.shift(center) if len(problem.families) > 1 else np.nan
  gaps = _family_gaps(problem, kl, center, center, c, float(((losses_BxK - c) ** 2).mean()))
  return _summary(problem, gaps) | {"train_loss_q": center}


def choose_sigmas(scan: pd.DataFrame, train_loss: float, fidelity: float) -> dict[str, float]:
  """Two data-dependent choices of sigma from a scan of the grid (columns sigma, train_loss_q, bound):

  'fidelity': the smallest estimated bound among the sigmas whose Q keeps at least 1 - fidelity of the
    trained model's margin below chance (the offset loss of equal similarities is 0), so the bound is
    about a Q that still resembles theta_hat (the smallest sigma if none does);
  'tightest': the smallest estimated bound, however close to chance Q is.
  Both are covered by the union bound over the grid.
  """
  close = scan[scan["train_loss_q"] <= train_loss * (1 - fidelity)]
  pick = lambda rows: float(rows.loc[rows["bound"].idxmin(), "sigma"])
  return {"fidelity": pick(close) if len(close) else float(scan["sigma"].min()), "tightest": pick(scan)}


# ---------------------------------------------------------------------------------------------------
# Linear towers (README section 4): theta = (W, V), predictor (Pi W, Pi V) with Pi the spectral projection.


@dataclasses.dataclass(frozen=True)
class LinearConfig:
  """The PAC-Bayes evaluation on linear towers; world, model and training are linear_towers.SweepConfig."""

  ms: tuple[int, ...] = (1024, 8192)
  batch_sizes: tuple[int, ...] = (2, 8, 32, 128, 512, 2048)
  seeds: tuple[int, ...] = (0, 1, 2)
  priors: tuple[str, ...] = ("init", "half")
  mc_values: int = 8192  # Monte Carlo values per half (draws per batch: 2 ceil(mc_values / n))
  pilot_draws: int = 2  # per sigma of the scan
  eval_draws: int = 4  # for the measured E_Q losses
  fidelity: float = 0.1
  finetune_steps: int = 50  # 'half' prior: steps from theta_S1 on S, at lr / 10
  sweep: linear_towers.SweepConfig = linear_towers.SweepConfig()


def project_stack(w_KxDxd: np.ndarray) -> np.ndarray:
  """linear_towers.project_spectral of each matrix of a stack (clip singular values at 1)."""
  u, s, vt = np.linalg.svd(w_KxDxd, full_matrices=False)
  return (u * np.minimum(s, 1.0)[..., None, :]) @ vt


def sample_towers(
  w_Dxdx: np.ndarray, v_Dxdy: np.ndarray, sigma: float, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
  """count predictors of Q = N((W, V), sigma^2 I), each through the spectral projection."""
  noisy = [p + sigma * rng.normal(size=(count, *p.shape)) for p in (w_Dxdx, v_Dxdy)]
  return project_stack(noisy[0]), project_stack(noisy[1])


def losses_per_batch_draw(w, v, sigma: float, x_mxdx: np.ndarray, y_mxdy: np.ndarray, n: int, beta: float,
                          draws: int, rng: np.random.Generator) -> np.ndarray:
  """[B, draws]: l_b under independent draws of Q for every batch and column (what `certify` needs)."""
  b_count = len(x_mxdx) // n
  x_BxNxd, y_BxNxd = x_mxdx.reshape(b_count, n, -1), y_mxdy.reshape(b_count, n, -1)
  out = np.empty((b_count, draws))
  for k in range(draws):
    w_B, v_B = sample_towers(w, v, sigma, b_count, rng)
    img_BxNxD = np.einsum("bni,bdi->bnd", x_BxNxd, w_B)
    txt_BxNxD = np.einsum("bni,bdi->bnd", y_BxNxd, v_B)
    out[:, k] = empirical.batch_losses(np.einsum("bnd,bkd->bnk", img_BxNxD, txt_BxNxD), beta)
  return out


def losses_per_draw(w, v, sigma: float, x_mxdx: np.ndarray, y_mxdy: np.ndarray, n: int, beta: float,
                    draws: int, rng: np.random.Generator) -> np.ndarray:
  """[B, draws]: l_b of every batch under one shared draw of Q per column (for scans, not bounds)."""
  w_K, v_K = sample_towers(w, v, sigma, draws, rng)
  return np.stack(
    [empirical.batch_loss_values(x_mxdx @ wk.T, y_mxdy @ vk.T, n, beta) for wk, vk in zip(w_K, v_K)], axis=1
  )


def population_loss(
  world: synthetic.PairWorld, w, v, beta: float, x_test, y_test, n: int, rng: np.random.Generator
) -> float:
  """L_N of fixed towers as in linear_towers.run_sweep: exact L_inf (Monte Carlo over anchors) plus the
  control-variate batch bias on held-out pairs."""
  l_inf, _ = synthetic.symmetric_infinite_batch_loss(world, w, v, beta, len(x_test), rng)
  _, bias = montecarlo.batch_statistics(world, w, v, beta, x_test, y_test, n, "sym")
  return float(l_inf + bias.mean())


def finetune(w_Dxdx, v_Dxdy, x_mxdx, y_mxdy, n: int, beta: float, steps: int, lr: float):
  """linear_towers.train's projected heavy-ball descent, started from given towers."""
  params, velocity = [w_Dxdx, v_Dxdy], [np.zeros_like(w_Dxdx), np.zeros_like(v_Dxdy)]
  for _ in range(steps):
    grads = linear_towers.gradients(*params, x_mxdx, y_mxdy, n, beta)
    velocity = [0.9 * vel - lr * g for vel, g in zip(velocity, grads)]
    params = [linear_towers.project_spectral(p + vel) for p, vel in zip(params, velocity)]
  return params[0], params[1]


def fit(prior: str, x_mxdx, y_mxdy, n: int, seed: int, cfg: LinearConfig):
  """(prior mean, posterior mean, pairs the bound is evaluated on) for one prior:

  'init': the posterior mean is linear_towers.train on S, trained as the README sweep trains it; the
    prior mean is its initialisation, drawn from a generator seeded by (seed, N) only, so it does not
    depend on S (linear_towers.train with 0 steps).
  'half': the prior mean is linear_towers.train on the first half S1; the posterior mean is fine-tuned
    from it on all of S; the bound is evaluated on the second half S2 [DHGAR21].
  """
  s = cfg.sweep
  train = lambda x, y, steps: linear_towers.train(
    x, y, n, s.beta, s.embed_dim, steps, s.lr, np.random.default_rng([seed, n])
  )
  if prior == "init":
    return train(x_mxdx, y_mxdy, 0), train(x_mxdx, y_mxdy, s.steps), (x_mxdx, y_mxdy)
  if prior == "half":
    half = len(x_mxdx) // 2
    w1, v1 = train(x_mxdx[:half], y_mxdy[:half], s.steps)
    mean = finetune(w1, v1, x_mxdx, y_mxdy, n, s.beta, cfg.finetune_steps, s.lr / 10)
    return (w1, v1), mean, (x_mxdx[half:], y_mxdy[half:])
  raise ValueError(f"prior must be 'init' or 'half', got {prior!r}")


def evaluate_run(
  world: synthetic.PairWorld, x, y, x_test, y_test, n: int, seed: int, prior: str, cfg: LinearConfig
) -> list[dict]:
  """One row per sigma rule: the bound on gap(Q) next to the measured gaps of theta_hat and of Q.

  gap_theta = L_N(theta_hat) - L^_N(theta_hat) on the bound's pairs; gap_q = the same averaged over
  eval_draws draws of Q (with its standard error); trivial_bound = w_N; ratio_* = bound / gap.
  """
  beta, rng = cfg.sweep.beta, np.random.default_rng([seed, n, 7])
  (w0, v0), (w, v), (xb, yb) = fit(prior, x, y, n, seed, cfg)
  problem = Problem(len(xb), n, beta, cfg.sweep.delta, n_choices=len(SIGMAS) * len(cfg.priors))
  dist2 = float(((w - w0) ** 2).sum() + ((v - v0) ** 2).sum())
  train_loss = empirical.train_objective(xb @ w.T, yb @ v.T, n, beta)
  test_loss = population_loss(world, w, v, beta, x_test, y_test, n, rng)
  scan = []
  for sig in SIGMAS:
    pilot_BxK = losses_per_draw(w, v, sig, xb, yb, n, beta, cfg.pilot_draws, rng)
    scan.append({"sigma": sig} | estimate(problem, dist2 / (2 * sig**2), pilot_BxK))
  scan, rows = pd.DataFrame(scan), []
  for rule, sigma in choose_sigmas(scan, train_loss, cfg.fidelity).items():
    kl = dist2 / (2 * sigma**2)
    draws = 2 * -(-cfg.mc_values // problem.n_batches)
    losses = (
      losses_per_batch_draw(w, v, sigma, xb, yb, n, beta, draws, rng) if len(problem.families) > 1 else None
    )
    cert = certify(problem, kl, losses)
    w_K, v_K = sample_towers(w, v, sigma, cfg.eval_draws, rng)
    q_train = np.array([empirical.train_objective(xb @ a.T, yb @ b.T, n, beta) for a, b in zip(w_K, v_K)])
    q_test = np.array([population_loss(world, a, b, beta, x_test, y_test, n, rng) for a, b in zip(w_K, v_K)])
    gap_q = q_test - q_train
    rows.append(
      {
        "m": len(x),
        "batch_size": n,
        "seed": seed,
        "prior": prior,
        "sigma_rule": rule,
        "sigma": sigma,
        "kl": kl,
        "m_bound": problem.m,
        "n_batches": problem.n_batches,
        "n_choices": problem.n_choices,
        "beta": beta,
        "train_loss": train_loss,
        "test_loss": test_loss,
        "gap_theta": test_loss - train_loss,
        "train_loss_q": q_train.mean(),
        "test_loss_q": q_test.mean(),
        "gap_q": gap_q.mean(),
        "gap_q_se": gap_q.std(ddof=1) / np.sqrt(len(gap_q)),
        **cert,
        "trivial_bound": bound.own_row_range(n, beta),
        "ratio_theta": cert["bound"] / (test_loss - train_loss),
        "ratio_q": cert["bound"] / gap_q.mean(),
      }
    )
  return rows


def run(cfg: LinearConfig) -> pd.DataFrame:
  """Every (m, N, seed, prior) of the config; N > m is replaced by m, and 'half' needs N <= m / 2."""
  world, rows = cfg.sweep.world(), []
  for m in cfg.ms:
    for seed in cfg.seeds:
      rng = np.random.default_rng(seed)
      x, y = synthetic.sample_pairs(world, m, rng)
      x_test, y_test = synthetic.sample_pairs(world, cfg.sweep.n_test, rng)
      for n in sorted({min(size, m) for size in cfg.batch_sizes}):
        for prior in cfg.priors:
          if prior == "init" or 2 * n <= m:
            rows += evaluate_run(world, x, y, x_test, y_test, n, seed, prior, cfg)
  return pd.DataFrame(rows)


def table(df: pd.DataFrame) -> str:
  """Markdown: medians over seeds of the bound, the measured gaps and their ratio, per cell."""
  cols = [
    "sigma",
    "kl",
    "bound",
    "gap_theta",
    "gap_q",
    "ratio_theta",
    "train_loss",
    "train_loss_q",
    "trivial_bound",
  ]
  keys = ["prior", "sigma_rule", "m", "batch_size"]
  med = df.groupby(keys)[cols].median().reset_index()
  fam = df.groupby(keys)["bound_family"].agg(lambda s: s.mode().iloc[0]).reset_index(drop=True)
  lines = ["| " + " | ".join(keys + cols + ["family"]) + " |", "|---" * (len(keys) + len(cols) + 1) + "|"]
  for (_, r), f in zip(med.iterrows(), fam):
    lines.append("| " + " | ".join([str(r[k]) for k in keys] + [f"{r[c]:.4g}" for c in cols] + [f]) + " |")
  return "\n".join(lines)


QUICK = LinearConfig(ms=(1024,), batch_sizes=(2, 32, 512), seeds=(0,))


def main(argv=None) -> int:
  parser = cli.Parser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", type=cli.out_dir, required=True, help="folder for pac_bayes_linear_towers.csv")
  parser.add_argument("--quick", action="store_true", help="one seed, m = 1024, three batch sizes")
  args = parser.parse_args(argv)
  start = time.time()
  df = run(QUICK if args.quick else LinearConfig())
  args.out.mkdir(parents=True, exist_ok=True)
  df.to_csv(args.out / "pac_bayes_linear_towers.csv", index=False)
  print(table(df))
  print(f"\n{len(df)} rows in {time.time() - start:.0f} s -> {args.out / 'pac_bayes_linear_towers.csv'}")
  return 0


if __name__ == "__main__":
  raise SystemExit(cli.run(main))
