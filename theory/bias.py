"""The batch bias L_N - L_inf in a world a user names, measured and predicted (Proposition 1), and with
--gradient the bias of the loss's gradient against its first order (Proposition 2, theory/gradient.py).

  python -m theory.bias --dim D --beta B --noise S --batches 2,16,64,256,1024 [--json]
  python -m theory.bias --gradient --dim D --beta B --noise S --batches 4,16,64,256,1024 [--json]

World (theory/sphere.py): pairs on the sphere S^{D-1}, x uniform and y = normalize(x + S g) with
g ~ N(0, I_D); the similarity is s = <x, y> and B the inverse temperature. Both marginals are uniform,
so the partition function Z = E_y' exp(B <x, y'>) does not depend on x and has a closed form, and
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
import json
import time

import numpy as np
import pandas as pd
from scipy import stats

from analysis import cli
from analysis.stats import line_fit, mean_ci
from theory import gradient
from theory.sphere import World, constants, fit_batch_sizes, sample_pairs

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
  parser = cli.Parser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument("--dim", type=cli.number(int, ge=2), required=True,
                      help="dimension D of the sphere's ambient space")
  parser.add_argument("--beta", type=cli.number(float, gt=0, le=300), required=True,
                      help="inverse temperature")
  parser.add_argument("--noise", type=cli.number(float, gt=0), required=True,
                      help="S in y = normalize(x + S g)")
  parser.add_argument("--batches", type=cli.ints(ge=2), default="2,16,64,256,1024",
                      help="comma-separated batch sizes N")
  parser.add_argument("--json", action="store_true", help="one JSON object per N and line")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--level", type=cli.number(float, gt=0, lt=1), default=0.95,
                      help="confidence level of the intervals")
  parser.add_argument(
    "--rel-se",
    type=cli.number(float, gt=0),
    default=0.05,
    help="target standard error of the bias, as a fraction of |kappa| / N",
  )
  parser.add_argument(
    "--budget", type=cli.number(float, gt=0), default=2.0**30,
    help="at most this many entries per N, a batch costing N (N + D)"
  )
  parser.add_argument(
    "--gradient",
    action="store_true",
    help="the gradient bias (theory/gradient.py): per N, |E g_N - g_inf| / |g_inf| and 1 - cos against\n"
    "the first order alpha / N, with intervals over replicates; g w.r.t. the embeddings of fixed anchors",
  )
  parser.add_argument("--anchors", type=cli.number(int, gt=0), default=4, help="--gradient: anchor pairs K")
  parser.add_argument("--replicates", type=cli.number(int, ge=2), default=10,
                      help="--gradient: replicates per interval")
  args = parser.parse_args(argv)
  world = World(args.dim, args.beta, args.noise)
  start = time.perf_counter()
  c = constants(world)
  sizes = list(args.batches)
  rng = np.random.default_rng(args.seed)
  if args.gradient:
    table = gradient.table(world, sizes, rng, args.anchors, args.replicates, int(args.budget), args.level)
    header = f"{world.label()}: rho={c['rho']:.4g} J={c['jensen']:.4g}, {args.anchors} anchors, gradient bias"
  else:
    sampling = Sampling(level=args.level, budget=int(args.budget))
    table = bias_table(world, c, sizes, rng, args.rel_se, sampling)
    header = (
      f"{world.label()}: L_inf={c['l_inf']:.6g} rho={c['rho']:.4g} J={c['jensen']:.4g} "
      f"kappa={c['kappa']:.4g} tau^2={c['tau2']:.4g}"
    )
  if args.json:
    for row in table.to_dict("records"):
      print(json.dumps({k: v.item() if isinstance(v, np.generic) else v for k, v in row.items()}), flush=True)
    return
  print(header)
  if args.gradient:
    print(gradient.text_table(table))
  else:
    print(table.to_string(index=False, float_format="{:.4g}".format))
  print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
  raise SystemExit(cli.run(main))
