"""The (G, m) grid in theory/'s linear-tower world, drawn from its CSV (`python -m theory.towers_grid`);
never from the grid's code, which needs JAX.

    python -m paper_figures.towers_figure --results paper_figures/data/towers_grid.csv \
        --out paper_figures/figures

towers_grid.png, against the group size G, one colour per pool size m, means over the seeds with 95% t
intervals (none for one seed). Top: the population (infinite-batch) loss relative to plain's at the largest
G run at every m (same seed and m), and the sample gap at G (held-out minus train grouped objective;
symlog scale), plain solid and SogCLR dashed; the plain estimator's measured sample gap
(markers; a mean <= 0 is left out) beside the bounds on it, log scale: Theorem 2's sample part (solid),
PAC-Bayes (A) with the "init" prior (dashed; a bound on E_Q of the gap, mean over seeds), the trivial w_G
(grey). Bottom: SogCLR minus plain, paired by seed, for the population loss and the sample gap; the
offset-free gap (held-out minus train pairs' infinite-batch losses, one scale for every G; symlog).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis import cli, stats  # noqa: E402
from paper_figures.axes import log2_batch_axis  # noqa: E402

PANELS = (
  ("infinite_batch_loss", "population loss $L_\\infty$ (nats)"),
  ("sample_gap", "sample gap at G: $L_G - \\hat L_G$ (nats)"),
  ("sample_gap_inf", "offset-free gap: held-out - train\ninfinite-batch loss (nats)"),
)
BOUNDS = (("theorem2_sample", "Theorem 2, sample part", "-"),
          ("pac_bayes_bound", "PAC-Bayes (A), init", "--"))
RESULT_COLUMNS = ("estimator", "group_size", "m", "seed", *(c for c, _ in PANELS), *(c for c, _, _ in BOUNDS),
                  "trivial_sample")
STYLES = {"plain": "-", "sogclr": "--"}
ESTIMATORS = tuple(STYLES)


def _pool_label(m: int) -> str:
  return f"m = 2^{int(np.log2(m))}"


def _line(ax, runs: pd.DataFrame, metric: str, colour, ls: str, dodge: float, label: str | None) -> None:
  """Mean over seeds per G with a 95% t interval."""
  table = stats.summarize(runs.dropna(subset=[metric]), [metric], by=("group_size",))
  y = table["mean"].to_numpy()
  err = np.nan_to_num(np.vstack([y - table["ci_low"], table["ci_high"] - y]), posinf=0.0)
  ax.errorbar(table["group_size"] * dodge, y, yerr=err, marker="o", ms=3, capsize=2, color=colour, ls=ls,
              label=label)


def bounds_panel(ax, df: pd.DataFrame, colours: dict) -> None:
  plain = df[df["estimator"] == "plain"]
  for m, runs in plain.groupby("m"):
    per_g = runs.groupby("group_size").mean(numeric_only=True)
    for column, _, ls in BOUNDS:
      ax.plot(per_g.index, per_g[column], ls=ls, color=colours[m], lw=1)
    gap = per_g["sample_gap"]
    ax.plot(gap.index[gap > 0], gap[gap > 0], "o", ms=4, color=colours[m])
  trivial = plain.groupby("group_size")["trivial_sample"].first()
  ax.plot(trivial.index, trivial, color="grey", lw=2, alpha=0.6)
  handles = [plt.Line2D([], [], color="k", ls=ls, label=name) for _, name, ls in BOUNDS]
  handles += [plt.Line2D([], [], color="grey", lw=2, alpha=0.6, label="trivial $w_G$"),
              plt.Line2D([], [], color="k", marker="o", ls="none", label="measured gap (plain, > 0)")]
  ax.legend(handles=handles, fontsize=7)
  ax.set_yscale("log")
  ax.set(ylabel="nats (log scale)", title="bounds on the sample gap vs the measured gap")


def paired_difference(df: pd.DataFrame, metric: str) -> pd.DataFrame:
  """SogCLR minus plain per (m, G, seed): the two share pool, initialisation and batch order."""
  wide = df.pivot_table(index=["m", "group_size", "seed"], columns="estimator", values=metric)
  return (wide["sogclr"] - wide["plain"]).rename(metric).dropna().reset_index()


def reference_group(df: pd.DataFrame) -> int:
  """The largest G that plain ran at every m: the population loss is drawn relative to it."""
  plain = df[df["estimator"] == "plain"]
  return max(set.intersection(*(set(runs["group_size"]) for _, runs in plain.groupby("m"))))


def relative(df: pd.DataFrame, metric: str, group: int) -> pd.DataFrame:
  """metric minus plain's at G = group of the same seed and m: the seed's pool and start cancel."""
  base = df[(df["estimator"] == "plain") & (df["group_size"] == group)].set_index(["m", "seed"])[metric]
  own = pd.MultiIndex.from_frame(df[["m", "seed"]])
  return df.assign(**{metric: df[metric].to_numpy() - base.reindex(own).to_numpy()}).dropna(subset=[metric])


def towers_figure(df: pd.DataFrame, path: Path) -> Path:
  ref = reference_group(df)
  pools = sorted(df["m"].unique())
  colours = dict(zip(pools, sns.color_palette("viridis", len(pools))))
  sizes = sorted(df["group_size"].unique())
  fig, axes = plt.subplots(2, 3, figsize=(16, 9))
  for ax, (metric, label) in zip((axes[0, 0], axes[0, 1], axes[1, 2]), PANELS):
    shown = relative(df, metric, ref) if metric == PANELS[0][0] else df
    for (m, estimator), runs in shown.groupby(["m", "estimator"]):
      dodge = 2.0 ** (0.04 if estimator == "sogclr" else -0.04)
      _line(ax, runs, metric, colours[m], STYLES[estimator], dodge,
            f"{_pool_label(m)}, {estimator}" if metric == PANELS[0][0] else None)
    ax.set(ylabel=label, title=label.split(":")[0].replace("\n", " "))
  for ax in (axes[0, 1], axes[1, 2]):  # gaps from 0.04 at m = 2^10 to 1e-4 at 2^20, of either sign
    ax.set_yscale("symlog", linthresh=1e-4)
  axes[0, 0].set(ylabel=f"$L_\\infty$ - plain's at G = {ref}\n(same seed and m; nats)",
                 title=f"population loss, relative to plain at G = {ref}")
  for ax, (metric, label) in zip(axes[1, :2], PANELS[:2]):
    if set(ESTIMATORS) <= set(df["estimator"]):
      for m, runs in paired_difference(df, metric).groupby("m"):
        _line(ax, runs, metric, colours[m], "-", 1.0, None)
    ax.axhline(0, color="grey", lw=0.8)
    title = label.split(":")[0].split("\n")[0]
    ax.set(ylabel="SogCLR - plain (nats, paired by seed)", title=f"{title}: SogCLR - plain")
  axes[0, 0].legend(fontsize=6, ncol=2)
  bounds_panel(axes[0, 2], df, colours)
  for ax in axes.ravel():
    log2_batch_axis(ax, sizes)
    ax.set_xlabel("contrastive group size G")
    ax.title.set_fontsize(9)
  seeds = df.groupby("group_size")["seed"].nunique()
  fig.suptitle(f"linear towers, plain vs SogCLR: {len(df)} runs, seeds per G {seeds.min()}-{seeds.max()}",
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=150)
  plt.close(fig)
  return path


def _cell(values) -> str:
  mean, lo, hi = stats.mean_ci(np.asarray(values))
  return f"{mean:+.5f}" + (f" ± {(hi - lo) / 2:.5f}" if np.isfinite(hi) else "")


def matrix(df: pd.DataFrame, metric: str) -> str:
  """A markdown table, rows m and columns G: mean over seeds ± the 95% t half-width, and the seeds."""
  sizes = sorted(df["group_size"].unique())
  lines = ["| m | " + " | ".join(f"G = {g}" for g in sizes) + " |", "|---" * (len(sizes) + 1) + "|"]
  for m, runs in df.groupby("m"):
    cells = {g: f"{_cell(r[metric])} ({len(r)})" for g, r in runs.groupby("group_size")}
    lines.append(f"| 2^{int(np.log2(m))} | " + " | ".join(cells.get(g, "") for g in sizes) + " |")
  return "\n".join(lines)


def tables(df: pd.DataFrame) -> str:
  """What theory/README.md quotes: plain's population loss and gaps, SogCLR - plain paired by seed, and
  the bounds on the sample gap (closed forms of (G, m); PAC-Bayes a median over seeds)."""
  plain = df[df["estimator"] == "plain"]
  ref = reference_group(df)
  parts = [("population loss L_inf, plain", matrix(plain, "infinite_batch_loss")),
           (f"population loss minus plain's at G = {ref} (same seed and m), plain",
            matrix(relative(plain, "infinite_batch_loss", ref), "infinite_batch_loss")),
           ("sample gap at G, plain", matrix(plain, "sample_gap")),
           ("offset-free gap, plain", matrix(plain, "sample_gap_inf"))]
  if set(ESTIMATORS) <= set(df["estimator"]):
    parts += [(f"{metric}, SogCLR - plain (paired)", matrix(paired_difference(df, metric), metric))
              for metric in ("infinite_batch_loss", "sample_gap")]
  columns = ["theorem2_sample", "pac_bayes_bound", "trivial_sample"]
  bounds = plain.groupby(["m", "group_size"])[columns].median().reset_index()
  lines = ["| m | G | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
  values = lambda r: " | ".join(f"{getattr(r, c):.4g}" for c in columns)
  lines += [f"| 2^{int(np.log2(r.m))} | {r.group_size} | {values(r)} |" for r in bounds.itertuples()]
  parts.append(("bounds on the sample gap (plain)", "\n".join(lines)))
  return "\n\n".join(f"{title}\n\n{text}" for title, text in parts)


def main(argv=None) -> int:
  parser = cli.Parser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--results", required=True, type=cli.csv_with(*RESULT_COLUMNS),
                      help="the grid's CSV (python -m theory.towers_grid)")
  parser.add_argument("--out", required=True, type=cli.out_dir)
  parser.add_argument("--tables", action="store_true", help="also print the README's tables (markdown)")
  args = parser.parse_args(argv)
  with cli.blame("--results"):
    results = pd.read_csv(args.results)
  args.out.mkdir(parents=True, exist_ok=True)
  print(towers_figure(results, args.out / "towers_grid.png"))
  if args.tables:
    print(tables(results))
  return 0


if __name__ == "__main__":
  raise SystemExit(cli.run(main))
