"""Run every check of the theory package.

  python -m theory.check [--json] [--trials N] [--quick]

--quick uses small sizes (the tests run it); --trials sets the Monte Carlo repetitions (batches per
N, training sets, pair replacements). With --json each check prints one JSON object per line, with
at least `name`, `passed` and the numbers behind the verdict. Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
from scipy import stats

from analysis import cli
from analysis.stats import line_fit
from theory import (
  bias,
  bound,
  empirical,
  gradient,
  linear_towers,
  lse_bound,
  montecarlo,
  sweep,
  symbolic,
  synthetic,
)


@dataclasses.dataclass(frozen=True)
class Settings:
  """Sizes of one run; QUICK for the tests, FULL for the README's numbers."""
  trials: int
  batch_sizes: tuple[int, ...]  # batch-bias Monte Carlo
  m: int  # training pairs in the fixed-model coverage check
  pool: int  # sample size of the L_inf pool-estimator check
  sweep: linear_towers.SweepConfig
  worlds: bias.CheckPlan  # the sphere worlds of the N * bias -> kappa and N * Var -> tau^2 pass rates
  gradient: gradient.GradientPlan  # the sphere worlds of N * (gradient bias) -> alpha (Proposition 2)
  fit_from: int = 8  # smallest N in the kappa fit of the vMF world: below it the next-order terms show
  level: float = 0.99  # confidence level of every interval a check tests
  beta: float = 2.0  # the Monte Carlo world's inverse temperature
  delta: float = 0.05


QUICK = Settings(trials=300, batch_sizes=(2, 4, 8, 16, 32, 64, 128, 256), m=1024, pool=4096,
                 sweep=linear_towers.SweepConfig(m=512, batch_sizes=(4, 32, 128), seeds=(0, 1),
                                                 steps=60, n_test=4096, n_sigma=64), worlds=bias.QUICK,
                 gradient=gradient.QUICK)
FULL = Settings(trials=2000, batch_sizes=(2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), m=4096,
                pool=16384, sweep=linear_towers.SweepConfig(), worlds=bias.FULL, gradient=gradient.FULL,
                fit_from=16)


def check_bounded_differences(s: Settings, rng: np.random.Generator) -> list[dict]:
  """Lemma 1 on random replacements (must never exceed c_N) and on a near-worst configuration."""
  configs = [(n, b, dim) for n in (2, 16, 64) for b in (0.5, 2.0) for dim in (1, 3)]
  per_config = max(2, s.trials // len(configs))
  ratios = np.concatenate([montecarlo.replace_one_pair_ratios(rng, 128, n, b, dim, per_config)
                           for n, b, dim in configs])
  extremal = [montecarlo.extremal_replacement_ratio(n, b) for n in (2, 16, 256) for b in (0.5, 2.0)]
  return [{"name": "bounded_differences_random", "passed": bool(ratios.max() <= 1 + 1e-9),
           "max_ratio": float(ratios.max()), "median_ratio": float(np.median(ratios)),
           "replacements": int(ratios.size)},
          {"name": "bounded_differences_extremal",
           "passed": bool(min(extremal) >= 0.5 and max(extremal) <= 1 + 1e-9),
           "min_ratio": min(extremal), "max_ratio": max(extremal)}]


def check_batch_bias(s: Settings, rng: np.random.Generator) -> list[dict]:
  """Proposition 1 in the vMF world: |bias| below its bound, sd below Efron-Stein, N * bias -> kappa.

  Free power-law fits are not tested: over a finite range of N they are pre-asymptotic and fail in
  some worlds; the constants are (here and in bias.check_pass_rates' worlds)."""
  world = montecarlo.default_world()
  sharp = [montecarlo.cluster_bias_exact(n, b, k) / bound.bias_bound(n, b)
           for n in (2, 16, 256, 4096) for b in (0.5, 2.0) for k in (2, 10, 10**6)]
  table = montecarlo.batch_bias(world, s.beta, list(s.batch_sizes), s.trials, rng)
  kappa = synthetic.delta_method_terms(world, *montecarlo.identity_towers(world), s.beta,
                                       50 * s.trials, rng)
  t = table[table.batch_size >= s.fit_from]
  n, bias, bias_se = t.batch_size.to_numpy(float), t.bias.to_numpy(), t.bias_se.to_numpy()
  z = stats.norm.ppf(0.5 + s.level / 2)
  within = bool((table.bias.abs() <= table.bias_bound + z * table.bias_se).all()
                and (table.loss_sd <= table.efron_stein_sd).all())
  # O(1/N^2) remainder, exactly: N^2 (L_N - L_inf) - N kappa stays below C_2 and tends to kappa_2.
  second = []
  for b in (0.5, 2.0):
    for k in (2, 10):
      c = montecarlo.cluster_constants(b, k)
      scaled = [n * n * montecarlo.cluster_bias_exact(n, b, k) - n * c["kappa"] for n in (64, 1024, 16384)]
      second.append({"beta": b, "clusters": k, "kappa2": c["kappa2"], "scaled_remainder": scaled,
                     "remainder_constant": bound.bias_remainder_constant(b)})
  out = [{"name": "bias_within_bound", "passed": within,
          "max_abs_bias_over_bound": float((table.bias.abs() / table.bias_bound).max()),
          "max_sd_over_efron_stein": float((table.loss_sd / table.efron_stein_sd).max())},
         {"name": "bias_bound_sharp", "passed": bool(max(np.abs(sharp)) <= 1 and max(sharp) >= 0.95),
          "max_exact_bias_over_bound": float(max(sharp))},
         {"name": "bias_second_order",
          "passed": all(max(map(abs, r["scaled_remainder"])) <= r["remainder_constant"]
                        and abs(r["scaled_remainder"][-1] - r["kappa2"]) <= 2e-3 * max(1, abs(r["kappa2"]))
                        for r in second),
          "max_relative_error_at_16384": max(abs(r["scaled_remainder"][-1] - r["kappa2"])
                                             / max(1, abs(r["kappa2"])) for r in second),
          "worlds": second}]
  # N * bias = kappa + kappa_2 / N: the intercept is the delta-method constant.
  scaled = line_fit(1 / n, n * bias, n * bias_se, s.level)
  diff_se = np.hypot(scaled["intercept_se"], kappa["kappa_se"])
  out.append({"name": "bias_delta_method_constant",
              "passed": bool(abs(scaled["intercept"] - kappa["kappa"]) <= z * diff_se),
              "kappa_fitted": scaled["intercept"], "kappa_fitted_se": scaled["intercept_se"],
              "kappa_predicted": kappa["kappa"], "kappa_predicted_se": kappa["kappa_se"],
              "rho": kappa["rho"], "jensen": kappa["jensen"]})
  out[0]["table"] = table.to_dict("list")
  return out


def check_estimators(s: Settings, rng: np.random.Generator) -> list[dict]:
  """empirical.infinite_batch_loss and empirical.population_loss agree with the exact L_inf and
  L_N = L_inf + (control-variate bias); the pool estimator up to its O(1/n) Jensen bias."""
  world = montecarlo.default_world()
  w, v = montecarlo.identity_towers(world)
  z = stats.norm.ppf(0.5 + s.level / 2)
  exact, exact_se = synthetic.infinite_batch_loss(world, w, v, s.beta, 1 << 16, rng)
  pool, pool_se = empirical.infinite_batch_loss(*synthetic.sample_pairs(world, s.pool, rng), s.beta, "i2t")
  jensen = synthetic.delta_method_terms(world, w, v, s.beta, 1 << 14, rng)["jensen"] / (s.pool - 1)
  pool_tolerance = z * np.hypot(exact_se, pool_se) + jensen
  n = 32
  _, bias = montecarlo.batch_statistics(world, w, v, s.beta, *synthetic.sample_pairs(world, 1 << 16, rng), n)
  l_n = exact + bias.mean()
  estimate, estimate_se = empirical.population_loss(*synthetic.sample_pairs(world, s.pool, rng), n,
                                                    s.beta, rng, direction="i2t")
  l_n_tolerance = z * np.sqrt(exact_se**2 + bias.var(ddof=1) / len(bias) + estimate_se**2)
  return [{"name": "pool_estimator_matches_exact", "passed": bool(abs(pool - exact) <= pool_tolerance),
           "exact": exact, "pool": pool, "tolerance": float(pool_tolerance), "pool_size": s.pool},
          {"name": "population_loss_matches_exact",
           "passed": bool(abs(estimate - l_n) <= l_n_tolerance), "batch_size": n,
           "exact": float(l_n), "estimate": estimate, "tolerance": float(l_n_tolerance)}]


def check_fixed_model_coverage(s: Settings, rng: np.random.Generator) -> list[dict]:
  """Corollary 1 holds with probability >= 1 - delta (binomial slack for finitely many trials)."""
  res = montecarlo.fixed_model_coverage(montecarlo.default_world(), s.beta, s.m, 32, s.delta, s.trials,
                                        1 << 16, rng)
  slack = stats.norm.ppf(s.level) * np.sqrt(s.delta * (1 - s.delta) / s.trials)
  return [{"name": "fixed_model_coverage", "passed": bool(res["coverage"] >= 1 - s.delta - slack),
           "promised": 1 - s.delta, **res}]


def check_gradient(s: Settings, rng: np.random.Generator) -> list[dict]:
  """linear_towers.gradients against central differences of empirical.train_objective."""
  x, y = synthetic.sample_pairs(s.sweep.world(), 256, rng)
  w, v = (linear_towers.project_spectral(rng.normal(size=(8, 16))) for _ in range(2))
  grads = linear_towers.gradients(w, v, x, y, 32, s.beta)
  objective = lambda w_, v_: empirical.train_objective(x @ w_.T, y @ v_.T, 32, s.beta)  # noqa: E731
  errors = []
  for i, g in enumerate(grads):
    e = rng.normal(size=g.shape)
    shift = [np.zeros_like(w), np.zeros_like(v)]
    shift[i] = 1e-6 * e
    numeric = (objective(w + shift[0], v + shift[1]) - objective(w - shift[0], v - shift[1])) / 2e-6
    errors.append(abs(numeric - (g * e).sum()) / abs(numeric))
  return [{"name": "linear_towers_gradient", "passed": bool(max(errors) < 1e-5),
           "max_relative_error": float(max(errors))}]


def check_linear_towers(s: Settings, rng: np.random.Generator) -> list[dict]:
  """Trained norm-constrained linear towers: Theorem 1 and Proposition 1 hold, complexities too."""
  df = linear_towers.run_sweep(s.sweep)
  z = stats.norm.ppf(0.5 + s.level / 2)
  per_n = df.groupby("batch_size")[["gap", "gap_batch", "gap_sample", "bound_total"]].mean()
  return [
      {"name": "linear_towers_bound", "passed": bool((df.gap.abs() <= df.bound_total).all()),
       "coverage": float((df.gap.abs() <= df.bound_total).mean()),
       "bound_ratio_min": float(df.bound_ratio.min()),
       "bound_ratio_median": float(df.bound_ratio.median()), "runs": len(df),
       "per_batch_size": per_n.reset_index().to_dict("list")},
      {"name": "linear_towers_bias_within_bound",
       "passed": bool((df.gap_batch.abs()
                       <= df.bias_bound_fixed_model + z * df.batch_bias_se.fillna(0)).all()),
       "max_abs_gap_batch_over_bound": float((df.gap_batch.abs() / df.bias_bound_fixed_model).max())},
      lse_bound.check_linear_towers_sweep(s.sweep, df),
      {"name": "linear_towers_complexity",
       "passed": bool((df.complexity_sim_hat <= df.complexity_sim + z * df.complexity_sim_hat_se).all()
                      and (df.complexity_tower_hat
                           <= df.complexity_tower + z * df.complexity_tower_hat_se).all()),
       "sim_hat_over_closed_form": float((df.complexity_sim_hat / df.complexity_sim).max()),
       "tower_hat_over_closed_form": float((df.complexity_tower_hat / df.complexity_tower).max())}]


def check_sweep_evaluation(s: Settings, rng: np.random.Generator, tmp_csv: str) -> list[dict]:
  """evaluate_sweep tells 1/sqrt(N) from 1/N, and finds no rate in a flat sweep."""
  verdicts = {}
  for label, exponent, effect in (("inv_sqrt", 0.5, 0.2), ("inv", 1.0, 0.2), ("none", 1.0, 0.0)):
    sweep.simulate_sweep_csv(tmp_csv, rng, exponent, effect=effect)
    verdicts[label] = sweep.evaluate_sweep(tmp_csv).iloc[0]["supported"]
  return [{"name": "sweep_identifies_rate", "passed": all(k == v for k, v in verdicts.items()),
           "verdicts": verdicts}]


def run(s: Settings, report: Callable[[dict], None], tmp_csv: str) -> bool:
  """Run every check, report each result as it comes; True if all passed."""
  all_passed = True
  jobs = [lambda st, rng: symbolic.run_all(), check_bounded_differences, check_batch_bias,
          check_estimators, check_fixed_model_coverage, check_gradient, check_linear_towers,
          lambda st, rng: check_sweep_evaluation(st, rng, tmp_csv),
          lambda st, rng: lse_bound.run_all(rng, st.trials),
          lambda st, rng: bias.check_pass_rates(st.worlds, rng),
          lambda st, rng: gradient.check(st.gradient, rng)]
  for seed, job in enumerate(jobs):  # one Generator per job: results do not depend on the order
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    results = job(s, rng)
    for r in results:
      r["seconds"] = round(time.perf_counter() - start, 3)
      all_passed &= bool(r["passed"])
      report(r)
  return all_passed


def _jsonable(x):
  if isinstance(x, (np.floating, np.integer, np.bool_)):
    return x.item()
  if isinstance(x, (tuple, np.ndarray)):
    return list(x)
  raise TypeError(f"cannot serialise {type(x)}")


def summary_line(r: dict) -> str:
  """'PASS  name  number=value ...': a check's verdict and the scalar numbers behind it."""
  numbers = {k: v for k, v in r.items() if isinstance(v, (int, float)) and k != "passed"}
  return (f"{'PASS' if r['passed'] else 'FAIL'}  {r['name']:<36} "
          + " ".join(f"{k}={v:.4g}" for k, v in numbers.items()))


def main(argv: list[str] | None = None) -> int:
  parser = cli.Parser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument("--json", action="store_true", help="one JSON object per check and line")
  parser.add_argument("--trials", type=cli.number(int, ge=2),
                      help="Monte Carlo repetitions (default 300 quick, 2000 full)")
  parser.add_argument("--quick", action="store_true", help="small sizes, for tests (seconds)")
  args = parser.parse_args(argv)
  s = QUICK if args.quick else FULL
  if args.trials:
    s = dataclasses.replace(s, trials=args.trials)

  def report(r: dict) -> None:
    print(json.dumps(r, default=_jsonable) if args.json else summary_line(r), flush=True)

  with tempfile.TemporaryDirectory() as tmp:
    ok = run(s, report, f"{tmp}/results.csv")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(cli.run(main))
