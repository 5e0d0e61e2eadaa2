"""The mechanism experiment's figure, drawn from its results.csv and summary.json (`python -m
experiments.mechanism --summary`); never from the trainer or the analysis code.

    python -m paper_figures.mechanism_figure --results paper_figures/data/mechanism.csv \
        --summary paper_figures/data/mechanism_summary.json --out paper_figures/figures

mechanism.png: per arm (estimator x data mode; plain is the line, a debiased estimator its points) against
G, means over seeds with 95% t intervals: the population loss (the primary outcome), the primary gap,
zero-shot and retrieval; last panel, from the summary, the fraction of the plain G -> largest-G change in the
population loss that each debiased arm recovers, with Fieller's 95% interval (an unbounded one drawn as an
arrow-less marker at the estimate and said in the label).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import cli, stats  # noqa: E402
from paper_figures.negatives_figures import _errorbars, _save, _style, arm_colours  # noqa: E402

PANELS = (
    ("heldout_loss_offset_all", "population objective: held-out\ninfinite-batch loss estimate (nats)"),
    ("gap_offset_all", "primary gap: held-out - trained\ninfinite-batch loss estimates (nats)"),
    ("zeroshot_mean_top1", "zero-shot: top-1,\nmean over the tasks"),
    ("retrieval_i2t_r1", "retrieval: image-to-text R@1\nover the held-out pairs"),
)
RESULT_COLUMNS = ("estimator", "data_mode", "group_size", "seed") + tuple(m for m, _ in PANELS[:2])
SUMMARY_KEYS = ("recovered", "primary", "conclusive_half_width")


def arm_label(estimator: str, mode: str, runs: pd.DataFrame) -> str:
  queue = int(runs["queue_size"].max()) if "queue_size" in runs else 0
  extra = f" (G + Q = {queue + int(runs['group_size'].min())})" if estimator == "queue" and queue else ""
  return f"{estimator}, {mode}{extra}"


def recovered_panel(ax, summary: dict, colours: dict) -> None:
  rows = [r for r in summary["recovered"] if r["metric"] == summary["primary"]]
  for i, r in enumerate(rows):
    label = f"{r['estimator']}, {r['data_mode']}"
    colour = colours.get(label)
    if r["bounded"]:
      err = [[r["ratio"] - r["ci_low"]], [r["ci_high"] - r["ratio"]]]
      ax.errorbar([i], [r["ratio"]], yerr=err, marker="o", capsize=3, color=colour)
    else:
      ax.plot([i], [r["ratio"]] if np.isfinite(r["ratio"]) else [0], "x", color=colour)
  ax.set_xticks(range(len(rows)), [f"{r['estimator']}\nG={r['group_size']}"
                                   + ("" if r["bounded"] else "\n(no interval)") for r in rows], fontsize=7)
  ax.set_xlim(-0.5, max(len(rows), 1) - 0.5)
  for y, text in ((0, "plain at its G"), (1, "plain at the largest G")):
    ax.axhline(y, color="grey", lw=0.8, ls="--")
    ax.text(-0.45, y, text, fontsize=7, ha="left", va="bottom", color="grey")
  ax.set(ylabel="fraction recovered (95% Fieller CI)",
         title=f"recovered: share of the plain G -> largest G\nchange in {summary['primary']}")
  ax.title.set_fontsize(9)


def mechanism_figure(df: pd.DataFrame, summary: dict | None, path: Path) -> Path:
  df = stats.add_means(df)
  groups = [(arm_label(e, m, runs), e, runs) for (e, m), runs in df.groupby(["estimator", "data_mode"])]
  colours = arm_colours([f"{e}, {m}" for e, m in df.groupby(["estimator", "data_mode"]).groups])
  sizes = sorted(df["group_size"].unique())
  panels = [p for p in PANELS if p[0] in df]
  fig, grid = plt.subplots(2, 3, figsize=(13, 8))
  axes = grid.ravel()
  for ax in axes[len(panels) + (summary is not None):]:
    ax.axis("off")
  for ax, (metric, label) in zip(axes, panels):
    for i, (name, estimator, runs) in enumerate(groups):
      colour = colours[name.split(" (")[0]]
      _errorbars(ax, runs, metric, name, colour, dodge=2.0 ** ((i - len(groups) / 2) * 0.05),
                 ls="-" if estimator == "plain" else "none")
    _style(ax, sizes, label.split(":")[0], label)
  axes[0].legend(fontsize=7)
  if summary is not None:
    recovered_panel(axes[len(panels)], summary, colours)
  return _save(fig, path)


def read_summary(path: Path) -> dict:
  summary = json.loads(Path(path).read_text())
  if missing := [k for k in SUMMARY_KEYS if k not in summary]:
    raise KeyError(missing[0])
  return summary


def main(argv=None) -> int:
  parser = cli.Parser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--results", required=True, type=cli.csv_with(*RESULT_COLUMNS),
                      help="the mechanism sweep's results.csv")
  parser.add_argument("--summary", type=cli.existing_file, help="its summary.json (the recovered panel)")
  parser.add_argument("--out", required=True, type=cli.out_dir)
  args = parser.parse_args(argv)
  with cli.blame("--results"):
    results = pd.read_csv(args.results)
  with cli.blame("--summary"):
    summary = read_summary(args.summary) if args.summary else None
  args.out.mkdir(parents=True, exist_ok=True)
  print(mechanism_figure(results, summary, args.out / "mechanism.png"))
  return 0


if __name__ == "__main__":
  raise SystemExit(cli.run(main))
