"""The tables behind the theory figures (section 6 of theory/README.md).

  python -m theory.tables --out theory/figures [--quick]

- linear_towers_sweep.csv: Theorem 1 next to the measured gap of trained norm-constrained linear
  towers, at two training-set sizes m.
- batch_bias.csv: Proposition 1 by Monte Carlo: bias ~ 1/N, spread ~ 1/sqrt(N), and the delta-method
  constant kappa.
- looseness.csv (from linear_towers_sweep.csv, seconds): each bound's parts over the measured part they
  bound, median over seeds per (m, N): Theorem 1's batch terms / |gap_batch| and sample terms /
  |gap_sample|, min(B_N, 2 beta) / |gap_batch|, Theorem 2's sample part / |gap_sample| and total / |gap|.
- temperature.csv (closed forms, instant): Theorem 1, Theorem 2, min(B_N, 2 beta) and the trivial 4 beta
  at inverse temperatures up to the logit scales the sweeps learn (11 to 16).

`--only looseness,temperature` rebuilds just those (the first needs linear_towers_sweep.csv).

The PNGs are drawn from these files by `python -m paper_figures.theory_figures`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import numpy as np
import pandas as pd

from analysis import cli
from theory import bound, check, linear_towers, lse_bound, montecarlo, synthetic

SWEEPS = (linear_towers.SweepConfig(m=1024, batch_sizes=(2, 8, 32, 128, 512, 1024)),
          linear_towers.SweepConfig(m=8192, batch_sizes=(2, 8, 32, 128, 512, 2048)))
QUICK_SWEEPS = tuple(dataclasses.replace(c, m=c.m // 8, batch_sizes=(4, 32, 128), seeds=(0, 1),
                                         steps=40, n_test=2048, n_sigma=32) for c in SWEEPS)


def batch_bias_table(settings: check.Settings) -> pd.DataFrame:
  """montecarlo.batch_bias on the default world, with the delta-method constant kappa (and its s.e.)."""
  rng = np.random.default_rng(0)
  world = montecarlo.default_world()
  table = montecarlo.batch_bias(world, settings.beta, list(settings.batch_sizes), settings.trials, rng)
  kappa = synthetic.delta_method_terms(world, *montecarlo.identity_towers(world), settings.beta,
                                       50 * settings.trials, rng)
  return table.assign(kappa=kappa["kappa"], kappa_se=kappa["kappa_se"])


def looseness_table(runs: pd.DataFrame, input_dim: int = linear_towers.SweepConfig.input_dim) -> pd.DataFrame:
  """Bound part / measured part it bounds, per run, then the median over seeds per (m, N)."""
  theorem2 = pd.DataFrame([lse_bound.n_free_terms(r.m, r.batch_size, r.beta, r.delta, r.embed_dim,
                                                  input_dim, input_dim) for r in runs.itertuples()])
  ratios = pd.DataFrame({
      "m": runs.m, "batch_size": runs.batch_size,
      "theorem1_batch_over_gap_batch": (runs.bound_batch_uniform + runs.bound_batch_positive)
      / runs.gap_batch.abs(),
      "theorem1_sample_over_gap_sample": (runs.bound_rademacher + runs.bound_concentration)
      / runs.gap_sample.abs(),
      "capped_bias_over_gap_batch": np.minimum(runs.bias_bound_fixed_model, 2 * runs.beta)
      / runs.gap_batch.abs(),
      "theorem2_sample_over_gap_sample": (theorem2.lipschitz + theorem2.concentration)
      / runs.gap_sample.abs(),
      "theorem1_total_over_gap": runs.bound_total / runs.gap.abs(),
      "theorem2_total_over_gap": theorem2.total / runs.gap.abs(),
      "theorem1_total": runs.bound_total, "theorem2_total": theorem2.total, "trivial": 4 * runs.beta})
  return ratios.groupby(["m", "batch_size"]).median().reset_index()


def temperature_table(betas=(1, 2, 5, 10, 11, 14, 16), batch_sizes=(16, 1024)) -> pd.DataFrame:
  """Theorem 1 and 2 (linear towers of the full sweep, m = 8192) against the trivial 4 beta."""
  towers = linear_towers.SweepConfig()
  comp = linear_towers.complexity(towers.embed_dim, towers.input_dim, towers.input_dim)
  return pd.DataFrame([
      {"beta": b, "batch_size": n, "m": towers.m,
       "theorem1_total": bound.uniform_terms(towers.m, n, b, towers.delta, comp)["total"],
       "theorem2_total": lse_bound.n_free_terms(towers.m, n, b, towers.delta, towers.embed_dim,
                                                towers.input_dim, towers.input_dim)["total"],
       "capped_bias": bound.capped_bias_bound(n, b), "bias_bound": bound.bias_bound(n, b), "trivial": 4 * b}
      for b in betas for n in batch_sizes])


def main(argv: list[str] | None = None) -> None:
  parser = cli.Parser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument("--out", type=cli.out_dir, default="theory/figures")
  parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test, seconds)")
  tables = ("linear_towers_sweep", "batch_bias", "looseness", "temperature")
  parser.add_argument("--only", type=cli.choices(*tables), default=",".join(tables),
                      help="comma-separated tables to (re)build")
  args = parser.parse_args(argv)
  only = set(args.only)
  os.makedirs(args.out, exist_ok=True)
  path = lambda name: os.path.join(args.out, f"{name}.csv")  # noqa: E731
  start = time.perf_counter()
  if "linear_towers_sweep" in only:
    pd.concat([linear_towers.run_sweep(c) for c in (QUICK_SWEEPS if args.quick else SWEEPS)]).to_csv(
        path("linear_towers_sweep"), index=False)
    print(f"linear towers: {time.perf_counter() - start:.0f} s", flush=True)
  if "batch_bias" in only:
    batch_bias_table(check.QUICK if args.quick else check.FULL).to_csv(path("batch_bias"), index=False)
  if "looseness" in only:
    looseness_table(pd.read_csv(path("linear_towers_sweep"))).to_csv(path("looseness"), index=False)
  if "temperature" in only:
    temperature_table().to_csv(path("temperature"), index=False)
  print(f"total: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
  raise SystemExit(cli.run(main))
