"""Figures and the CSVs they are drawn from.

  python -m theory.figures --out theory/figures/ [--quick] [--redraw]

- linear_towers_sweep.csv, bound_vs_gap.png: Theorem 1 next to the measured gap of trained
  norm-constrained linear towers, at two training-set sizes m.
- linear_towers_sweep_fit.png: evaluate_sweep's 1/sqrt(N) and 1/N fits to those gaps.
- batch_bias.csv, batch_bias.png: Proposition 1 by Monte Carlo: bias ~ 1/N, spread ~ 1/sqrt(N).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from paper_figures.axes import log2_batch_axis  # noqa: E402
from theory import check, fits, linear_towers, montecarlo, sweep, synthetic  # noqa: E402

SWEEPS = (linear_towers.SweepConfig(m=1024, batch_sizes=(2, 8, 32, 128, 512, 1024)),
          linear_towers.SweepConfig(m=8192, batch_sizes=(2, 8, 32, 128, 512, 2048)))
QUICK_SWEEPS = tuple(dataclasses.replace(c, m=c.m // 8, batch_sizes=(4, 32, 128), seeds=(0, 1),
                                         steps=40, n_test=2048, n_sigma=32) for c in SWEEPS)


def plot_bound_vs_gap(df: pd.DataFrame, out_path: str) -> None:
  """Top: bound and its parts vs |measured gap| (log-log). Bottom: the signed gap and its split."""
  ms = sorted(df.m.unique())
  fig, axes = plt.subplots(2, len(ms), figsize=(5.2 * len(ms) + 2.6, 7.5), squeeze=False, sharex=True)
  for col, m in enumerate(ms):
    g = df[df.m == m].groupby("batch_size")
    mean = g.mean(numeric_only=True)
    n = mean.index.to_numpy()
    top, bottom = axes[0, col], axes[1, col]
    top.plot(n, mean.bound_total, "k-o", label="bound (Theorem 1)")
    top.plot(n, mean.bound_batch_uniform + mean.bound_batch_positive, "C0--",
             label="bound: batch terms (N)")
    top.plot(n, mean.bound_rademacher + mean.bound_concentration, "C1--",
             label="bound: sample terms (m)")
    abs_gap = df[df.m == m].assign(abs_gap=lambda d: d.gap.abs()).groupby("batch_size").abs_gap
    top.errorbar(n, abs_gap.mean(), yerr=abs_gap.std().fillna(0), fmt="s", color="C3",
                 capsize=3, label="|measured gap| (mean, sd over seeds)")
    top.plot(n, mean.bias_bound_fixed_model, "C2:", label="bias bound (Prop. 1): bounds |gap_batch|")
    top.set(yscale="log", ylabel="nats",
            title=f"m = {m}, beta = {mean.beta.iloc[0]:g}, D = {mean.embed_dim.iloc[0]:g}")
    for name, color in (("gap", "C3"), ("gap_batch", "C0"), ("gap_sample", "C1")):
      bottom.errorbar(n, mean[name], yerr=g[name].std().fillna(0), fmt="o-", color=color,
                      capsize=3, label=name)
    bottom.axhline(0, color="0.5", lw=0.8)
    bottom.set(xlabel="contrastive batch size N", ylabel="L_inf - L^_N and its parts (nats)")
    log2_batch_axis(bottom, df.batch_size)  # the x axis is shared: this labels the top row too
    top.grid(alpha=0.3)
    bottom.legend(fontsize=7, loc="lower right")
  axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
  fig.suptitle("gap = L_inf - L^_N = gap_batch (L_inf - L_N) + gap_sample (L_N - L^_N)", fontsize=9)
  fig.tight_layout()
  fig.savefig(out_path, dpi=150)
  plt.close(fig)


def _fit_label(fit: dict, fit_from: int) -> str:
  lo, hi = fit["slope_ci"]
  return f"fit over N >= {fit_from}: N^{fit['slope']:.3f} (95% CI {lo:.3f}, {hi:.3f})"


def plot_batch_bias(table: pd.DataFrame, kappa: float, fit_from: int, out_path: str) -> None:
  """Bias and spread of l_N vs N with power-law fits, the delta-method line and the bounds."""
  t = table[table.batch_size >= fit_from]
  n_all = table.batch_size.to_numpy(float)
  fig, (ax_b, ax_s) = plt.subplots(1, 2, figsize=(10, 4))
  fit_b = fits.loglog_slope(t.batch_size, t.bias, t.bias_se)
  fit_s = fits.loglog_slope(t.batch_size, t.loss_sd, t.loss_sd_se)
  ax_b.errorbar(n_all, table.bias, yerr=2 * table.bias_se, fmt="o", color="k",
                label="Monte Carlo L_N - L_inf (+-2 s.e.)")
  ax_b.plot(n_all, np.exp(fit_b["intercept"]) * n_all**fit_b["slope"], "C0-",
            label=_fit_label(fit_b, fit_from))
  ax_b.plot(n_all, kappa / n_all, "C1--", label=f"delta method kappa/N, kappa = {kappa:.3f}")
  ax_b.plot(n_all, table.bias_bound, "C2:", label="bias bound (Prop. 1)")
  ax_b.set(yscale="log", xlabel="contrastive batch size N", ylabel="L_N - L_inf (nats)")
  ax_s.errorbar(n_all, table.loss_sd, yerr=2 * table.loss_sd_se, fmt="o", color="k",
                label="Monte Carlo sd(l_N)")
  ax_s.plot(n_all, np.exp(fit_s["intercept"]) * n_all**fit_s["slope"], "C0-",
            label=_fit_label(fit_s, fit_from))
  ax_s.plot(n_all, table.efron_stein_sd, "C2:", label="Efron-Stein bound c_N / sqrt(2N)")
  ax_s.set(yscale="log", xlabel="contrastive batch size N", ylabel="sd of l_N (nats)")
  for ax in (ax_b, ax_s):
    log2_batch_axis(ax, n_all)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out_path, dpi=150)
  plt.close(fig)


def batch_bias_table(settings: check.Settings) -> pd.DataFrame:
  """montecarlo.batch_bias on the default world, with the delta-method constant kappa (and its s.e.)."""
  rng = np.random.default_rng(0)
  world = montecarlo.default_world()
  table = montecarlo.batch_bias(world, settings.beta, list(settings.batch_sizes), settings.trials, rng)
  kappa = synthetic.delta_method_terms(world, *montecarlo.identity_towers(world), settings.beta,
                                       50 * settings.trials, rng)
  return table.assign(kappa=kappa["kappa"], kappa_se=kappa["kappa_se"])


def draw(folder: str, fit_from: int) -> None:
  """The three PNGs in `folder`, from its two CSVs."""
  sweep_csv = os.path.join(folder, "linear_towers_sweep.csv")
  plot_bound_vs_gap(pd.read_csv(sweep_csv), os.path.join(folder, "bound_vs_gap.png"))
  sweep.plot_sweep(sweep_csv, os.path.join(folder, "linear_towers_sweep_fit.png"),
                   ["gap", "gap_batch", "gap_sample"], by=("m",))
  table = pd.read_csv(os.path.join(folder, "batch_bias.csv"))
  plot_batch_bias(table, table.kappa.iloc[0], fit_from, os.path.join(folder, "batch_bias.png"))


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument("--out", default="theory/figures")
  parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test, seconds)")
  parser.add_argument("--redraw", action="store_true", help="only redraw the PNGs from the CSVs in --out")
  args = parser.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  settings = check.QUICK if args.quick else check.FULL
  if not args.redraw:
    start = time.perf_counter()
    pd.concat([linear_towers.run_sweep(c) for c in (QUICK_SWEEPS if args.quick else SWEEPS)]).to_csv(
        os.path.join(args.out, "linear_towers_sweep.csv"), index=False)
    print(f"linear towers: {time.perf_counter() - start:.0f} s", flush=True)
    batch_bias_table(settings).to_csv(os.path.join(args.out, "batch_bias.csv"), index=False)
    print(f"total: {time.perf_counter() - start:.0f} s", flush=True)
  draw(args.out, settings.fit_from)


if __name__ == "__main__":
  main()
