"""The tables behind the theory figures (section 6 of theory/README.md).

  python -m theory.tables --out theory/figures [--quick]

- linear_towers_sweep.csv: Theorem 1 next to the measured gap of trained norm-constrained linear
  towers, at two training-set sizes m.
- batch_bias.csv: Proposition 1 by Monte Carlo: bias ~ 1/N, spread ~ 1/sqrt(N), and the delta-method
  constant kappa.

The PNGs are drawn from these files by `python -m paper_figures.theory_figures`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import numpy as np
import pandas as pd

from theory import check, linear_towers, montecarlo, synthetic

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


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument("--out", default="theory/figures")
  parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test, seconds)")
  args = parser.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  start = time.perf_counter()
  pd.concat([linear_towers.run_sweep(c) for c in (QUICK_SWEEPS if args.quick else SWEEPS)]).to_csv(
      os.path.join(args.out, "linear_towers_sweep.csv"), index=False)
  print(f"linear towers: {time.perf_counter() - start:.0f} s", flush=True)
  batch_bias_table(check.QUICK if args.quick else check.FULL).to_csv(
      os.path.join(args.out, "batch_bias.csv"), index=False)
  print(f"total: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
  main()
