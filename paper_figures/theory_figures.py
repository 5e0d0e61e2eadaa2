r"""Figures of the theory, drawn only from CSVs: theory/ computes the tables, this module draws them.

    python -m paper_figures.theory_figures --data theory/figures --out theory/figures
    python -m paper_figures.theory_figures --results paper_figures/data/sweep_default.csv \
        --out paper_figures/figures

--data: a folder with the two CSVs of `python -m theory.tables`; draws
- bound_vs_gap.png: Theorems 1 and 2 next to the measured gap of trained norm-constrained linear towers;
- linear_towers_sweep_fit.png: evaluate_sweep's 1/sqrt(N) and 1/N fits to those gaps;
- batch_bias.png: Proposition 1 by Monte Carlo: N * bias -> kappa, sqrt(N) * spread under its bound.
--results: a batch-size sweep's results.csv; draws gap_vs_theory_rates.png, the same rate fits to its gaps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import cli  # noqa: E402
from analysis.stats import line_fit  # noqa: E402
from paper_figures.axes import log2_batch_axis  # noqa: E402
from theory import check, linear_towers, lse_bound, sweep  # noqa: E402

RATE_LABELS = {"inv_sqrt": "a + b/sqrt(N)", "inv": "a + b/N"}


def plot_bound_vs_gap(df: pd.DataFrame, out_path: str | Path,
                      input_dim: int = linear_towers.SweepConfig.input_dim) -> None:
  """Top: Theorems 1 and 2, Theorem 1's parts and the trivial bound vs |measured gap| (log-log).
  Bottom: the signed gap and its split into the objective's bias and the sample gap."""
  ms = sorted(df.m.unique())
  fig, axes = plt.subplots(2, len(ms), figsize=(5.2 * len(ms) + 2.6, 7.5), squeeze=False, sharex=True)
  for col, m in enumerate(ms):
    g = df[df.m == m].groupby("batch_size")
    mean = g.mean(numeric_only=True)
    n = mean.index.to_numpy()
    top, bottom = axes[0, col], axes[1, col]
    top.plot(n, mean.bound_total, "k-o", label="bound (Theorem 1)")
    top.plot(n, mean.bound_batch_uniform + mean.bound_batch_positive, "C0--",
             label="Theorem 1: batch terms (bias + proof artifact)")
    top.plot(n, mean.bound_rademacher + mean.bound_concentration, "C1--",
             label="Theorem 1: sample terms (m)")
    abs_gap = df[df.m == m].assign(abs_gap=lambda d: d.gap.abs()).groupby("batch_size").abs_gap
    top.errorbar(n, abs_gap.mean(), yerr=abs_gap.std().fillna(0), fmt="s", color="C3",
                 capsize=3, label="|measured gap| (mean, sd over seeds)")
    theorem2 = [lse_bound.n_free_terms(m, k, r.beta, r.delta, r.embed_dim, input_dim, input_dim)["total"]
                for k, r in mean.iterrows()]
    top.plot(n, theorem2, "k--s", mfc="none", label="bound (Theorem 2, N-free complexity)")
    top.axhline(4 * mean.beta.iloc[0], color="0.5", ls=":", label="trivial bound 4 beta")
    top.plot(n, np.minimum(mean.bias_bound_fixed_model, 2 * mean.beta), "C2:",
             label="min(B_N, 2 beta) (Prop. 1): bounds |gap_batch|")
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


def plot_batch_bias(table: pd.DataFrame, kappa: float, fit_from: int, out_path: str | Path) -> None:
  """N * bias against the delta-method constant kappa (what theory.check tests, with the fit
  kappa + kappa_2 / N over N >= fit_from), and sqrt(N) * sd(l_N) under its Efron-Stein bound."""
  n_all = table.batch_size.to_numpy(float)
  t = table[table.batch_size >= fit_from]
  fit = line_fit(1 / t.batch_size.to_numpy(float), (t.batch_size * t.bias).to_numpy(),
                 (t.batch_size * t.bias_se).to_numpy())
  fig, (ax_b, ax_s) = plt.subplots(1, 2, figsize=(10, 4))
  ax_b.errorbar(n_all, n_all * table.bias, yerr=2 * n_all * table.bias_se, fmt="o", color="k",
                label="Monte Carlo N (L_N - L_inf) (+-2 s.e.)")
  ax_b.axhline(kappa, color="C1", ls="--", label=f"delta method kappa = {kappa:.3f}")
  n_fit = n_all[n_all >= fit_from]
  ax_b.plot(n_fit, fit["intercept"] + fit["slope"] / n_fit, "C0-",
            label=f"fit kappa + kappa_2/N over N >= {fit_from}: kappa = {fit['intercept']:.3f} "
                  f"+- {fit['intercept_se']:.3f}")
  ax_b.set(xlabel="contrastive batch size N", ylabel="N (L_N - L_inf) (nats)",
           title="the objective's bias, times N (Prop. 1: -> kappa)")
  ax_s.errorbar(n_all, np.sqrt(n_all) * table.loss_sd, yerr=2 * np.sqrt(n_all) * table.loss_sd_se, fmt="o",
                color="k", label="Monte Carlo sqrt(N) sd(l_N)")
  ax_s.plot(n_all, np.sqrt(n_all) * table.efron_stein_sd, "C2:", label="Efron-Stein bound c_N / sqrt(2)")
  ax_s.set(yscale="log", xlabel="contrastive batch size N", ylabel="sqrt(N) sd of l_N (nats)",
           title="spread of one batch's loss, times sqrt(N)")
  for ax in (ax_b, ax_s):
    log2_batch_axis(ax, n_all)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out_path, dpi=150)
  plt.close(fig)


def plot_rate_fits(results_csv_path: str | Path, out_path: str | Path, columns: list[str] | None = None,
                   by: tuple[str, ...] = ()) -> None:
  """Measured gap vs N (log x): runs, mean +- standard error per N, and both fitted rate curves of
  theory.sweep (the supported one solid). One panel per gap column, one row per group of `by`."""
  df = pd.read_csv(results_csv_path)
  columns = columns or sweep.gap_columns(df)
  groups = sweep.split_by(df, by)
  fig, axes = plt.subplots(len(groups), len(columns), figsize=(4.5 * len(columns), 3.6 * len(groups)),
                           squeeze=False)
  for (key, group), row in zip(groups, axes):
    for ax, col in zip(row, columns):
      d = group[["batch_size", col]].dropna()
      fit = sweep.fit_column(group, col)
      per_n = d.groupby("batch_size")[col].agg(["mean", "sem"]).reset_index()
      ax.scatter(d["batch_size"], d[col], s=8, color="0.6", label="runs")
      ax.errorbar(per_n["batch_size"], per_n["mean"], yerr=per_n["sem"].fillna(0), fmt="o",
                  color="k", capsize=3, label="mean +- s.e.")
      grid = np.geomspace(d["batch_size"].min(), d["batch_size"].max(), 200)
      for name, p in sweep.RATES.items() if "inv_a" in fit else ():
        ax.plot(grid, fit[f"{name}_a"] + fit[f"{name}_b"] * grid**-p,
                "-" if fit["supported"] == name else "--",
                label=f"{RATE_LABELS[name]} (w={fit[f'{name}_akaike_weight']:.2f})")
      where = " ".join(f"{k}={v}" for k, v in key.items())
      log2_batch_axis(ax, d["batch_size"])
      ax.set(xlabel="contrastive batch size N", ylabel=f"{col} (nats)",
             title=f"{where} {col}: supported = {fit['supported']}".strip())
      ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out_path, dpi=150)
  plt.close(fig)


def draw_theory(data: Path, out: Path, fit_from: int) -> list[Path]:
  """The three PNGs in `out`, from the two CSVs of `python -m theory.tables` in `data`."""
  out.mkdir(parents=True, exist_ok=True)
  paths = [out / "bound_vs_gap.png", out / "linear_towers_sweep_fit.png", out / "batch_bias.png"]
  towers_csv = data / "linear_towers_sweep.csv"
  plot_bound_vs_gap(pd.read_csv(towers_csv), paths[0])
  plot_rate_fits(towers_csv, paths[1], ["gap", "gap_batch", "gap_sample"], by=("m",))
  table = pd.read_csv(data / "batch_bias.csv")
  plot_batch_bias(table, table.kappa.iloc[0], fit_from, paths[2])
  return paths


def main(argv: list[str] | None = None) -> int:
  parser = cli.Parser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--data", type=cli.existing_dir,
                      help="a folder with linear_towers_sweep.csv and batch_bias.csv")
  source.add_argument("--results", type=cli.csv_with("batch_size"), help="a batch-size sweep's results.csv")
  parser.add_argument("--out", required=True, type=cli.out_dir)
  parser.add_argument("--fit-from", type=cli.number(int, ge=2), default=check.FULL.fit_from,
                      help="smallest N in the kappa fit (default: the full run's)")
  args = parser.parse_args(argv)
  if args.data:
    with cli.blame("--data"):
      paths = draw_theory(args.data, args.out, args.fit_from)
  else:
    args.out.mkdir(parents=True, exist_ok=True)
    paths = [args.out / "gap_vs_theory_rates.png"]
    with cli.blame("--results"):
      plot_rate_fits(args.results, paths[0])
  for p in paths:
    print(p)
  return 0


if __name__ == "__main__":
  raise SystemExit(cli.run(main))
