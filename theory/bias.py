"""The batch bias L_N - L_inf in a world a user names, measured and predicted (Proposition 1).

  python -m theory.bias --dim D --beta B --noise S --batches 2,16,64,256,1024 [--json]

World: pairs on the sphere S^{D-1}, x uniform and y = normalize(x + S g) with g ~ N(0, I_D); the
similarity is s = <x, y> and B the inverse temperature. Both marginals are uniform, so the
partition function Z = E_y' exp(B <x, y'>) does not depend on x and has a closed form, and
everything Proposition 1 needs is a one-dimensional integral over the law of s:

  L_inf = -B E s + log Z(B)                                   the infinite-batch loss
  kappa = rho - J,  rho = E exp(B s) / Z - 1,  J = (Z(2B) / Z(B)^2 - 1) / 2     N (L_N - L_inf) -> kappa
  tau^2 = B^2 Var(s)                                          N Var(l_N) -> tau^2 (Hajek projection)

Measured: per batch, d_N = (1/N) sum_i log(M_i / Z) = l_N - (1/N) sum_i [-B s_ii + log Z] has mean
exactly L_N - L_inf and a spread O(1/N), so its relative error does not grow with N. A pilot of
batches sizes a fresh, independent set, and the interval is a t-interval on the fresh set alone.

Checked (pass_rates, check_pass_rates, constant_checks): the intercepts of N * bias and N Var(l_N)
on (1, 1/N) match kappa and tau^2 in six worlds at beta = 2, 5, 10, for >= 19 of 20 seeds each,
while kappa := rho (Jensen term dropped) and 2 tau^2 fail on the same data.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import integrate, special, stats

from experiments.stats import line_fit, mean_ci
from theory.empirical import logsumexp


@dataclasses.dataclass(frozen=True)
class World:
  """x uniform on S^{dim-1}, y = normalize(x + noise g); similarity <x, y> at inverse temperature beta."""

  dim: int
  beta: float
  noise: float

  def __post_init__(self):
    # beta <= 300 keeps every exp(beta (s - 1)) >= exp(-600) representable (see batch_values).
    if self.dim < 2 or not 0 < self.beta <= 300 or self.noise <= 0:
      raise ValueError(f"need dim >= 2, 0 < beta <= 300 and noise > 0, got {self}")

  def label(self) -> str:
    return f"D={self.dim} beta={self.beta:g} noise={self.noise:g}"


def log_partition(dim: int, beta: float) -> float:
  """log Z(beta) = log E exp(beta <x, y'>), y' uniform on S^{D-1}.

  Z = Gamma(D/2) (2/beta)^{D/2-1} I_{D/2-1}(beta), which the power series of I_nu turns into
  0F1(; D/2; beta^2 / 4). That form stays finite where the Bessel route does not: ive(D/2 - 1, beta)
  underflows to 0 once D >= 256 at beta <= 1 (D = 512 at beta = 10), and for beta <= 600 (Z(2 beta)
  at the largest allowed beta) Z <= e^600 does not overflow. Both agree to 1e-13 where both work.
  """
  return float(np.log(special.hyp0f1(dim / 2, beta**2 / 4)))


def sample_pairs(
  world: World, shape: tuple[int, ...], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
  """Positive pairs (x, y), each of shape (*shape, dim), unit rows."""
  x = rng.standard_normal((*shape, world.dim))
  x /= np.linalg.norm(x, axis=-1, keepdims=True)
  y = x + world.noise * rng.standard_normal(x.shape)
  return x, y / np.linalg.norm(y, axis=-1, keepdims=True)


# --- the law of s, by quadrature -------------------------------------------------------------------


@functools.cache
def _legendre(nodes: int) -> tuple[np.ndarray, np.ndarray]:
  """Gauss-Legendre nodes and weights on [-1, 1] (an eigenproblem: worth computing once)."""
  return np.polynomial.legendre.leggauss(nodes)


def _log_radial(dim: int, a_T: np.ndarray, nodes: int) -> np.ndarray:
  """log int_0^inf r^{D-1} exp(-(r - a)^2 / 2) dr for each a, by Gauss-Legendre around the mode.

  The integrand is log-concave with curvature <= -1, so beyond 14 of its mode it is below exp(-98)
  of its peak: a fixed window [mode - 14, mode + 14] cut at 0 holds all of it.
  """
  a_Tx1 = np.asarray(a_T, float)[..., None]
  k = dim - 1
  root = np.sqrt(a_Tx1**2 + 4 * k)
  # The positive root of r^2 - a r - k, written without cancellation for either sign of a.
  mode = np.where(a_Tx1 >= 0, (a_Tx1 + root) / 2, 2 * k / (root - a_Tx1))
  lo, hi = np.maximum(mode - 14.0, 0.0), mode + 14.0
  x_K, w_K = _legendre(nodes)
  r_TxK = lo + (hi - lo) * (x_K + 1) / 2
  log_terms = special.xlogy(k, r_TxK) - (r_TxK - a_Tx1) ** 2 / 2 + np.log(w_K * (hi - lo) / 2)
  return logsumexp(log_terms)


def log_angle_density(world: World, theta_T: np.ndarray, nodes: int = 96) -> np.ndarray:
  """log density of the angle theta = arccos <x, y> of a positive pair, on [0, pi].

  y is the direction of z = x / noise + g. In polar coordinates z = r y, so y has surface density
  (2 pi)^{-D/2} e^{-sin^2(theta) / (2 noise^2)} int_0^inf r^{D-1} e^{-(r - cos(theta)/noise)^2/2} dr,
  and the angle carries the area |S^{D-2}| sin^{D-2}(theta) of its level set. In theta (rather than
  s = cos theta) the density has no endpoint singularity for any D >= 2.
  """
  d = world.dim
  theta_T = np.asarray(theta_T, float)
  sin_T = np.sin(theta_T)
  log_area = np.log(2) + (d - 1) / 2 * np.log(np.pi) - special.gammaln((d - 1) / 2)
  return (
    log_area
    - d / 2 * np.log(2 * np.pi)
    + special.xlogy(d - 2, sin_T)
    - sin_T**2 / (2 * world.noise**2)
    + _log_radial(d, np.cos(theta_T) / world.noise, nodes)
  )


def one_minus_s(theta_T: np.ndarray) -> np.ndarray:
  """1 - cos(theta) = 2 sin^2(theta / 2), without the cancellation near theta = 0 (small noise)."""
  return 2 * np.sin(np.asarray(theta_T) / 2) ** 2


def log_expectation(
  world: World, log_f: Callable[[np.ndarray], np.ndarray], nodes: int = 96, epsrel: float = 1e-10
) -> tuple[float, float]:
  """log E f(s) over positive pairs for f >= 0 given as log f(1 - s): (value, relative error estimate).

  The integrand is peaked when the noise is small or f = exp(-beta (1 - s)) with a large beta, so a
  grid (geometric near theta = 0) locates its mode and the points where it has fallen by e, e^5,
  e^15, e^40; adaptive quadrature gets them as breakpoints, on the integrand divided by its peak.
  """
  grid_G = np.concatenate([np.geomspace(1e-9, 1.0, 300), np.linspace(1.0, np.pi - 1e-9, 300)[1:]])
  log_g = lambda theta: log_angle_density(world, theta, nodes) + log_f(one_minus_s(theta))  # noqa: E731
  values_G = log_g(grid_G)
  peak = values_G.max()
  points = {float(grid_G[values_G.argmax()])}
  for drop in (1, 5, 15, 40):
    inside = grid_G[values_G >= peak - drop]
    points |= {float(inside.min()), float(inside.max())}
  integrand = lambda theta: float(np.exp(log_g(np.array([theta]))[0] - peak))  # noqa: E731
  value, error = integrate.quad(
    integrand, 0.0, np.pi, points=sorted(points - {0.0, np.pi}), epsabs=0.0, epsrel=epsrel, limit=500
  )
  return float(peak + np.log(value)), float(error / value)


def constants(world: World, nodes: int = 96, epsrel: float = 1e-10) -> dict[str, float]:
  """Every constant of Proposition 1 in this world, exact or by quadrature (no Monte Carlo).

  mass is the quadrature of the density itself (1 up to the quadrature error): a check on the rest;
  a moment whose error estimate exceeds 1e-6 raises instead of passing as exact.
  Moments are of w = 1 - s (>= 0 and small for small noise), Var s = E (w - E w)^2 directly, and
  E exp(beta s) = exp(beta) E exp(-beta w), so nothing overflows or cancels.
  """
  b = world.beta

  def moment(log_f):
    value, error = log_expectation(world, log_f, nodes, epsrel)
    if not error < 1e-6:  # the checks treat the constants as exact
      raise ArithmeticError(f"quadrature did not converge in {world}: relative error {error:.2g}")
    return value

  mass = np.exp(moment(np.zeros_like))
  mean_w = np.exp(moment(np.log))
  var_s = np.exp(moment(lambda w: 2 * np.log(np.abs(w - mean_w))))
  log_mean_exp = b + moment(lambda w: -b * w)
  log_z = log_partition(world.dim, b)
  rho = float(np.expm1(log_mean_exp - log_z))
  jensen = float(np.expm1(log_partition(world.dim, 2 * b) - 2 * log_z) / 2)
  return {
    "mass": float(mass),
    "mean_sim": float(1 - mean_w),
    "var_sim": float(var_s),
    "log_mean_exp": float(log_mean_exp),
    "log_z": log_z,
    "l_inf": float(-b * (1 - mean_w) + log_z),
    "rho": rho,
    "jensen": jensen,
    "kappa": rho - jensen,
    "tau2": float(b**2 * var_s),
  }


# --- Monte Carlo of l_N and d_N ---------------------------------------------------------------------


def batch_values(
  world: World, n: int, n_batches: int, rng: np.random.Generator, log_z: float, max_entries: int = 1 << 21
) -> tuple[np.ndarray, np.ndarray]:
  """(d_N, l_N) of n_batches fresh batches of n pairs, a few batches at a time to bound memory.

  log M_i = beta + log mean_j exp(beta (s_ij - 1)): s <= 1 fixes the shift that empirical.logsumexp
  would search for (a pass less over the N x N block), and beta <= 300 rules out underflow. The
  similarities come from einsum's own loops, as in empirical.batched_sims: a batched BLAS matmul is
  faster on an idle machine but its threads spin on a loaded one (10-50x slower on 2 shared cores).
  """
  chunk = max(1, max_entries // (n * max(n, world.dim)))
  d_B, l_B = np.empty(n_batches), np.empty(n_batches)
  for start in range(0, n_batches, chunk):
    rows = slice(start, min(start + chunk, n_batches))
    x_bxNxD, y_bxNxD = sample_pairs(world, (rows.stop - rows.start, n), rng)
    sims_bxNxN = np.einsum("bnd,bkd->bnk", x_bxNxD, y_bxNxD)
    positive_bxN = np.diagonal(sims_bxNxN, axis1=-2, axis2=-1).copy()
    sims_bxNxN -= 1
    sims_bxNxN *= world.beta
    log_m_bxN = np.log(np.exp(sims_bxNxN, out=sims_bxNxN).mean(-1)) + world.beta
    d_B[rows] = (log_m_bxN - log_z).mean(-1)
    l_B[rows] = (log_m_bxN - world.beta * positive_bxN).mean(-1)
  return d_B, l_B


@dataclasses.dataclass(frozen=True)
class Sampling:
  """How `measure` samples at one N: interval level, pilot size, fresh-sample bounds and budget.

  budget caps the fresh batches at budget / (N (N + D)): a batch costs its similarity block and
  its samples, so the cap bounds the time at every N.
  """

  level: float = 0.95
  pilot: int = 100
  min_batches: int = 100
  budget: int = 1 << 30


def measure(
  world: World, n: int, rng: np.random.Generator, log_z: float, target_se: float, sampling: Sampling
) -> dict:
  """Bias and spread at batch size n, two-stage: the pilot only sizes the fresh sample.

  The pilot's sd(d_N) gives the number of fresh batches that reaches `target_se` for the bias, within
  the sampling's bounds. The pilot is then discarded, so the sample size is independent of the fresh
  batches and the t-interval on them is an ordinary one (no optional stopping). Spread: N Var(l_N),
  with the standard error of a sample variance, sd of the squared deviations / sqrt(count).
  """
  pilot_d, _ = batch_values(world, n, sampling.pilot, rng, log_z)
  cap = max(sampling.min_batches, sampling.budget // (n * (n + world.dim)))
  count = int(np.clip(np.ceil((pilot_d.std(ddof=1) / target_se) ** 2), sampling.min_batches, cap))
  d_B, l_B = batch_values(world, n, count, rng, log_z)
  bias, lo, hi = mean_ci(d_B, sampling.level)
  dev2_B = (l_B - l_B.mean()) ** 2
  se = d_B.std(ddof=1) / np.sqrt(count)
  n_var, n_var_se = n * l_B.var(ddof=1), n * dev2_B.std(ddof=1) / np.sqrt(count)
  return dict(
    n=n, bias=bias, se=float(se), ci_low=lo, ci_high=hi, n_batches=count, n_var=n_var, n_var_se=n_var_se
  )


def bias_table(
  world: World,
  c: dict[str, float],
  batch_sizes: list[int],
  rng: np.random.Generator,
  rel_se: float,
  sampling: Sampling,
) -> pd.DataFrame:
  """One row per N: the measured bias and its interval next to kappa / N (and N Var(l_N) next to tau^2).

  c = constants(world). The target standard error is rel_se |kappa| / N: the same relative precision
  at every N, which the control variate makes affordable (its spread is O(1/N) too).
  """
  extra = dict(kappa=c["kappa"], tau2=c["tau2"], level=sampling.level)
  rows = [
    measure(world, n, rng, c["log_z"], rel_se * abs(c["kappa"]) / n, sampling)
    | extra
    | {"predicted": c["kappa"] / n}
    for n in batch_sizes
  ]
  return pd.DataFrame(rows)


# --- robust checks of the two constants -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CheckPlan:
  """Worlds, seeds and precision of the pass-rate run (FULL for the report, QUICK for the tests)."""

  worlds: tuple[World, ...]
  seeds: int
  rel_se: float = 0.2  # per-N target s.e. of N * bias, as a fraction of the Jensen term J
  points: int = 4  # batch sizes N_min, 2 N_min, ..., fitted
  span: float = 8.0  # N_min = smallest power of two >= span * max(1 + rho, 1 + 2 J)
  level: float = 0.999  # per seed: a right constant then passes >= 19 of 20 seeds w.p. > 0.999 (binomial)
  # A 50-batch pilot sizes the fresh sample to within ~20%; 200 fresh batches or more keep the
  # sample variance's own standard error honest.
  sampling: Sampling = Sampling(level=0.99, pilot=50, min_batches=200, budget=1 << 31)


# beta in {2, 5, 10} over dimensions 4..64 and noises 0.5..2, chosen so that the batch sizes stay
# below ~1000 (N_min grows with the weights' moments, which explode at beta = 10 in small dimension:
# D = 16, beta = 10 has 1 + 2 J = 27) and both effects are resolvable (J >= 0.13); the signs of
# kappa differ (D = 64, beta = 10, noise 2 has kappa < 0: a small batch is optimistic there).
WORLDS = (
  World(4, 2.0, 1.0),
  World(16, 2.0, 0.5),
  World(16, 5.0, 1.0),
  World(64, 5.0, 0.5),
  World(64, 10.0, 1.0),
  World(64, 10.0, 2.0),
)
FULL = CheckPlan(WORLDS, seeds=20)
QUICK = CheckPlan((WORLDS[0], WORLDS[2], WORLDS[5]), seeds=5, points=3, rel_se=0.3)

# What each fitted intercept (kappa or tau2) is compared with: the right constants, and broken ones
# (the Jensen term dropped, the spread doubled) whose pass rate must collapse on the same data.
RIGHT = {
  "sphere_bias_constant": ("kappa", lambda c: c["kappa"]),
  "sphere_spread_constant": ("tau2", lambda c: c["tau2"]),
}
BROKEN = {
  "sphere_broken_bias_no_jensen": ("kappa", lambda c: c["rho"]),
  "sphere_broken_spread_doubled": ("tau2", lambda c: 2 * c["tau2"]),
}


def fit_batch_sizes(c: dict[str, float], span: float, points: int) -> list[int]:
  """N_min, ..., 2^(points-1) N_min with N_min the smallest power of two >= span * max(1 + rho, 1 + 2 J).

  N (L_N - L_inf) = E N log(1 + A / N), A = (w_pos - 1) + sum_j (w_j - 1) with weights w = exp(beta s) / Z,
  is a series in 1/N whose terms carry the moments of the positive's weight (mean 1 + rho) and of
  the negatives' (E w^2 = 1 + 2 J, then higher): it behaves like kappa + c_2 / N only once N is well
  above both. Below that the higher-order terms show: at D = 64, beta = 10, noise 2 (kappa = -0.80),
  N * bias is -0.25, -0.47, -0.65, -0.71 at N = 2, 8, 32, 64, far from a line in 1/N until N ~ 64.
  span = 8 puts N_min at 16 or 32 in the worlds at beta <= 5 and at 64 at beta = 10.
  """
  scale = span * max(1 + c["rho"], 1 + 2 * c["jensen"])
  n_min = max(2, 1 << int(np.ceil(np.log2(scale))))
  return [n_min << k for k in range(points)]


def measure_world(
  world: World, plan: CheckPlan, rng: np.random.Generator, c: dict[str, float]
) -> pd.DataFrame:
  """The plan's batch sizes for one world and one seed, at a precision set by the Jensen term."""
  return pd.DataFrame(
    [
      measure(world, n, rng, c["log_z"], plan.rel_se * c["jensen"] / n, plan.sampling)
      for n in fit_batch_sizes(c, plan.span, plan.points)
    ]
  )


def fitted_constants(table: pd.DataFrame, level: float) -> dict[str, float]:
  """Intercepts of N * bias and N Var(l_N) on (1, 1/N), weighted least squares with their s.e.

  line_fit inflates the covariance by the reduced chi^2 when it exceeds 1, so curvature the model
  misses widens the interval rather than failing the check. Inside the plan's range the 1/N^2 term
  is below the errors (see fit_batch_sizes), so the data do not call for it.
  """
  n = table.n.to_numpy(float)
  bias = line_fit(1 / n, n * table.bias, n * table.se, level)
  spread = line_fit(1 / n, table.n_var, table.n_var_se, level)
  return {
    "kappa": bias["intercept"],
    "kappa_se": bias["intercept_se"],
    "kappa_chi2": bias["chi2_reduced"],
    "tau2": spread["intercept"],
    "tau2_se": spread["intercept_se"],
    "tau2_chi2": spread["chi2_reduced"],
  }


def verdicts(
  fit: dict[str, float], c: dict[str, float], level: float, world: World, candidates: dict
) -> list[dict]:
  """One check dict per candidate: does the predicted constant lie in the intercept's interval?

  The quadrature's error (~1e-10) is negligible next to the Monte Carlo one, so the combined
  standard error is the intercept's; z is the normal quantile (the per-N errors are known).
  """
  z = stats.norm.ppf(0.5 + level / 2)
  out = []
  for name, (which, predict) in candidates.items():
    predicted = predict(c)
    out.append(
      {
        "name": name,
        "world": world.label(),
        "passed": bool(abs(fit[which] - predicted) <= z * fit[f"{which}_se"]),
        "fitted": fit[which],
        "fitted_se": fit[f"{which}_se"],
        "predicted": predicted,
        "chi2_reduced": fit[f"{which}_chi2"],
      }
    )
  return out


def constant_checks(world: World, plan: CheckPlan, rng: np.random.Generator) -> list[dict]:
  """N * bias -> kappa and N Var(l_N) -> tau^2 in one world, one seed (the two real checks)."""
  c = constants(world)
  fit = fitted_constants(measure_world(world, plan, rng, c), plan.level)
  return verdicts(fit, c, plan.level, world, RIGHT)


def pass_rates(plan: CheckPlan, rng: np.random.Generator) -> pd.DataFrame:
  """Fraction of seeds each candidate passes, per world; each seed is an independent child Generator.

  Every candidate is judged on the same fits, so a broken constant is refuted by the very data
  that confirm the right one. The median reduced chi^2 of the fits says whether the data ask for
  a 1/N^2 term (it stays near 1 when they do not).
  """
  rows = []
  for world, world_rng in zip(plan.worlds, rng.spawn(len(plan.worlds))):
    c = constants(world)
    results = [
      verdicts(
        fitted_constants(measure_world(world, plan, seed_rng, c), plan.level),
        c,
        plan.level,
        world,
        RIGHT | BROKEN,
      )
      for seed_rng in world_rng.spawn(plan.seeds)
    ]
    for name in RIGHT | BROKEN:
      runs = [r for seed in results for r in seed if r["name"] == name]
      rows.append(
        {
          "world": world.label(),
          "check": name,
          "pass_rate": float(np.mean([r["passed"] for r in runs])),
          "median_fitted_se": float(np.median([r["fitted_se"] for r in runs])),
          "median_chi2_reduced": float(np.median([r["chi2_reduced"] for r in runs])),
          "seeds": plan.seeds,
          "batch_sizes": fit_batch_sizes(c, plan.span, plan.points),
          "kappa": c["kappa"],
          "rho": c["rho"],
          "jensen": c["jensen"],
          "tau2": c["tau2"],
        }
      )
  return pd.DataFrame(rows)


def check_pass_rates(
  plan: CheckPlan, rng: np.random.Generator, min_rate: float = 0.95, max_broken_rate: float = 0.2
) -> list[dict]:
  """Check dicts: each real check passes in >= min_rate of seeds in every world, and each broken
  constant passes in at most max_broken_rate of them, pooled over worlds."""
  rates = pass_rates(plan, rng)
  out = []
  for name, group in rates.groupby("check", sort=False):
    broken = name in BROKEN
    per_world = dict(zip(group.world, group.pass_rate))
    passed = group.pass_rate.mean() <= max_broken_rate if broken else (group.pass_rate >= min_rate).all()
    out.append(
      {
        "name": f"{name}_pass_rate",
        "passed": bool(passed),
        "seeds": plan.seeds,
        "min_rate": float(group.pass_rate.min()),
        "mean_rate": float(group.pass_rate.mean()),
        "per_world": per_world,
      }
    )
  return out


# --- command line -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument("--dim", type=int, required=True, help="dimension D of the sphere's ambient space")
  parser.add_argument("--beta", type=float, required=True, help="inverse temperature")
  parser.add_argument("--noise", type=float, required=True, help="S in y = normalize(x + S g)")
  parser.add_argument("--batches", default="2,16,64,256,1024", help="comma-separated batch sizes N")
  parser.add_argument("--json", action="store_true", help="one JSON object per N and line")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals")
  parser.add_argument(
    "--rel-se",
    type=float,
    default=0.05,
    help="target standard error of the bias, as a fraction of |kappa| / N",
  )
  parser.add_argument(
    "--budget", type=float, default=2.0**30, help="at most this many entries per N, a batch costing N (N + D)"
  )
  args = parser.parse_args(argv)
  world = World(args.dim, args.beta, args.noise)
  start = time.perf_counter()
  c = constants(world)
  sizes = [int(n) for n in args.batches.split(",")]
  sampling = Sampling(level=args.level, budget=int(args.budget))
  table = bias_table(world, c, sizes, np.random.default_rng(args.seed), args.rel_se, sampling)
  if args.json:
    for row in table.to_dict("records"):
      print(json.dumps({k: v.item() if isinstance(v, np.generic) else v for k, v in row.items()}), flush=True)
    return
  print(
    f"{world.label()}: L_inf={c['l_inf']:.6g} rho={c['rho']:.4g} J={c['jensen']:.4g} "
    f"kappa={c['kappa']:.4g} tau^2={c['tau2']:.4g}"
  )
  print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
  print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
  main()
