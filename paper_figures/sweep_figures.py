"""Figures of a batch-size sweep, drawn only from its results.csv.

    python -m paper_figures.sweep_figures --results paper_figures/data/sweep_default.csv --out paper_figures

Means with 95% Student-t intervals over seeds (analysis/stats.py), contrastive batch size on a log
axis; the gap panels overlay the least-squares fit g = a + c / sqrt(N) (the bound's batch-term rate).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

from analysis import cli, stats  # noqa: E402
from paper_figures.axes import log2_batch_axis  # noqa: E402

GAP_LABELS = {
    "gap_sample": "held-out - trained loss at the run's own batch (final weights)",
    "gap_fixed_eval": "held-out - train loss at fixed eval batch",
    "gap_population": ("held-out L_inf est. - logged train loss + log N\n"
                       "(old design: carries the -kappa/N bias)"),
}


def _errorbars(ax, df: pd.DataFrame, metric: str, label: str, color=None) -> None:
  table = stats.summarize(df, [metric])
  x = table["batch_size"].to_numpy()
  y = table["mean"].to_numpy()
  err = np.vstack([y - table["ci_low"].to_numpy(), table["ci_high"].to_numpy() - y])
  ax.errorbar(x, y, yerr=np.nan_to_num(err, posinf=0.0), marker="o", capsize=3, label=label, color=color)


def gap_figure(df: pd.DataFrame, path: Path) -> Path:
  gaps = [g for g in GAP_LABELS if g in df]
  fig, axes = plt.subplots(1, len(gaps), figsize=(6 * len(gaps), 4.2), squeeze=False)
  sizes = sorted(df["batch_size"].unique())
  for ax, gap in zip(axes[0], gaps):
    _errorbars(ax, df, gap, "mean over seeds, 95% CI")
    fit = stats.trend(df, gap)
    grid = np.geomspace(min(sizes), max(sizes), 100)
    theory = fit["inverse_sqrt"]
    ax.plot(grid, theory["intercept"] + theory["slope"] / np.sqrt(grid), "--", color="gray",
            label=f"fit a + c/sqrt(N), c = {theory['slope']:.2f}")
    slope = fit["per_doubling"]
    ax.set(xlabel="contrastive batch size N (training)", ylabel="generalization gap (nats)",
           title=f"{GAP_LABELS[gap]}\n{slope['slope']:+.3f} per doubling "
                 f"[{slope['slope_ci_low']:+.3f}, {slope['slope_ci_high']:+.3f}]: {fit['verdict']}")
    ax.title.set_fontsize(9)
    log2_batch_axis(ax, sizes)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=150)
  plt.close(fig)
  return path


def accuracy_figure(df: pd.DataFrame, path: Path, *, robustness: bool) -> Path:
  cols = [c for c in stats.zeroshot_columns(df) if ("@" in c) == robustness and "mean" not in c]
  fig, ax = plt.subplots(figsize=(7.5, 4.5))
  palette = sns.color_palette("tab10", len(cols) + 1)
  for color, col in zip(palette, cols):
    _errorbars(ax, df, col, col.removeprefix("zeroshot_").removesuffix("_top1"), color)
  mean_col = "zeroshot_robustness_mean_top1" if robustness else "zeroshot_mean_top1"
  if mean_col in df:
    _errorbars(ax, df, mean_col, "mean", "black")
  log2_batch_axis(ax, df["batch_size"])
  ax.set(xlabel="contrastive batch size N (training)", ylabel="zero-shot top-1 accuracy",
         title="Zero-shot accuracy on the robustness sets" if robustness
         else "Zero-shot accuracy (built-in tasks)")
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=150)
  plt.close(fig)
  return path


def combined_figure(df: pd.DataFrame, path: Path) -> Path | None:
  """Gap and accuracy vs N per model size and training-set size (the combined-scaling panels)."""
  if df["model"].nunique() < 2 and df["num_train"].nunique() < 2:
    return None
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  for ax, metric, label in ((axes[0], "gap_fixed_eval", "gap at fixed eval batch (nats)"),
                            (axes[1], "zeroshot_mean_top1", "mean zero-shot top-1")):
    sns.lineplot(df, x="batch_size", y=metric, hue="model", style="num_train", marker="o",
                 errorbar=("ci", 95), ax=ax)
    log2_batch_axis(ax, df["batch_size"])
    ax.set(xlabel="contrastive batch size N", ylabel=label)
  axes[0].set_title("Combined scaling: model size (hue) x data size (style) x batch size")
  fig.tight_layout()
  fig.savefig(path, dpi=150)
  plt.close(fig)
  return path


def draw_all(results_csv: Path, out_dir: Path) -> list[Path]:
  df = stats.add_means(pd.read_csv(results_csv))
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = [gap_figure(df, out_dir / "gap_vs_batch.png"),
           accuracy_figure(df, out_dir / "zeroshot_vs_batch.png", robustness=False)]
  if any("@" in c for c in stats.zeroshot_columns(df)):
    paths.append(accuracy_figure(df, out_dir / "robustness_vs_batch.png", robustness=True))
  combined = combined_figure(df, out_dir / "combined_scaling.png")
  return paths + ([combined] if combined else [])


def main(argv=None) -> int:
  parser = cli.Parser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--results", required=True, help="a sweep's results.csv",
                      type=cli.csv_with("batch_size", "seed", "model", "num_train"))
  parser.add_argument("--out", required=True, type=cli.out_dir)
  args = parser.parse_args(argv)
  with cli.blame("--results"):
    paths = draw_all(args.results, args.out)
  for p in paths:
    print(p)
  return 0


if __name__ == "__main__":
  raise SystemExit(cli.run(main))
