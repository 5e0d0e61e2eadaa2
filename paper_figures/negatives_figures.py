r"""Figures of a negatives sweep (G = pairs per softmax at a fixed optimizer batch), drawn from its
results.csv and probes.csv (and, for the theory figure, the bound JSONs below) only.

    python -m paper_figures.negatives_figures --results paper_figures/data/negatives_pilot.csv \
        --probes paper_figures/data/negatives_pilot_probes.csv --out paper_figures/figures

One column of panels per temperature, one colour per data mode (fresh pairs vs a pool of m pairs);
means over seeds with 95% t intervals (experiments/stats.py).

--bounds adds negatives_theory.png, theory against the sweep: the objective's bias against its
prediction kappa (1/G - 1/n) for every run, and the sample gap against the data-dependent bound of
theory/pac_bayes.py, from the JSON files of `python -m experiments.tiny_bound` on pilot runs:

    for d in runs/sweep-negatives-pilot/runs/s-m8192-N1024-G*-T0.07-s0-*; do
      g=$(basename $d | sed 's/.*-G\([0-9]*\)-.*/\1/')
      OPENBLAS_NUM_THREADS=1 python -m experiments.tiny_bound --workdir $d \
          --out paper_figures/data/negatives_pilot_bounds/G$g.json
    done
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from experiments import stats  # noqa: E402
from paper_figures.axes import log2_batch_axis  # noqa: E402

MODE_COLOURS = {"fresh": "tab:blue", "pool": "tab:orange"}


def _panels(df: pd.DataFrame, rows: int):
  temps = sorted(df["temperature"].unique())
  fig, axes = plt.subplots(rows, len(temps), figsize=(5.2 * len(temps), 3.8 * rows), squeeze=False)
  return fig, axes, temps


def _errorbars(ax, d: pd.DataFrame, metric: str, label: str, colour: str, **kw) -> None:
  table = stats.summarize(d, [metric], by=("group_size",))
  y = table["mean"].to_numpy()
  err = np.nan_to_num(np.vstack([y - table["ci_low"], table["ci_high"] - y]), posinf=0.0)
  ax.errorbar(table["group_size"], y, yerr=err, marker="o", capsize=3, label=label, color=colour, **kw)


def _panel_vs_g(ax, df: pd.DataFrame, series: list[tuple[str, str, dict]], ylabel: str, title: str) -> None:
  """One panel: every (metric, label, style) of `series` per data mode, against G on a log-2 axis."""
  for mode, d in df.groupby("data_mode"):
    for metric, label, style in series:
      _errorbars(ax, d, metric, f"{mode}{label}", MODE_COLOURS.get(mode), **style)
  ax.axhline(0, color="gray", lw=0.8)
  log2_batch_axis(ax, df["group_size"])
  ax.set(xlabel="pairs per softmax G (G - 1 negatives)", ylabel=ylabel, title=title)
  ax.title.set_fontsize(9)
  ax.legend(fontsize=7)


def _save(fig, path: Path) -> Path:
  fig.tight_layout()
  fig.savefig(path, dpi=150)
  plt.close(fig)
  return path


def gap_figure(df: pd.DataFrame, path: Path) -> Path:
  """gap_sample (at G) and gap_offset_all (infinite-batch estimate) vs G."""
  metrics = [(m, what) for m, what in (("gap_sample", "held-out - trained loss at G"),
                                       ("gap_offset_all", "same, infinite-batch estimate")) if m in df]
  fig, axes, temps = _panels(df, len(metrics))
  for col, temp in enumerate(temps):
    for row, (metric, what) in enumerate(metrics):
      _panel_vs_g(axes[row, col], df[df["temperature"] == temp], [(metric, "", {})], f"{metric} (nats)",
                  f"{what}, temperature {temp:g}")
  return _save(fig, path)


def bias_figure(df: pd.DataFrame, path: Path) -> Path:
  """The objective's bias L_G - L_n measured on held-out pairs, and theory's kappa (1/G - 1/n)."""
  fig, axes, temps = _panels(df, 1)
  series = [("bias", ": measured", {}), ("bias_predicted", ": kappa (1/G - 1/n)", dict(ls="--", mfc="none"))]
  for col, temp in enumerate(temps):
    _panel_vs_g(axes[0, col], df[df["temperature"] == temp], series,
                "held-out loss at G - log G - L_inf estimate (nats)",
                f"Bias of the G-pair objective (not overfitting), temperature {temp:g}")
  return _save(fig, path)


def iso_fit_figure(probes: pd.DataFrame, path: Path) -> Path:
  """gap_sample along training against the trained pairs' infinite-batch loss (lower = better fit)."""
  fig, axes, temps = _panels(probes, len(probes["data_mode"].unique()))
  palette = dict(zip(sorted(probes["group_size"].unique()),
                     sns.color_palette("viridis", probes["group_size"].nunique())))
  for row, (mode, d_mode) in enumerate(probes.groupby("data_mode")):
    for col, temp in enumerate(temps):
      ax = axes[row, col]
      for (g, _), run in d_mode[d_mode["temperature"] == temp].groupby(["group_size", "run_id"]):
        run = run.sort_values("step")
        ax.plot(run["train_loss_offset_all"], run["gap_sample"], marker=".", color=palette[g], alpha=0.8,
                label=f"G = {g}")
      handles, labels = ax.get_legend_handles_labels()
      unique = dict(zip(labels, handles))
      ax.legend(unique.values(), unique.keys(), fontsize=7)
      ax.invert_xaxis()  # training runs left to right
      ax.grid(alpha=0.3)
      ax.set(xlabel="trained pairs' infinite-batch loss estimate (fit)", ylabel="gap_sample (nats)",
             title=f"{mode}, temperature {temp:g}: gap at matched fit")
      ax.title.set_fontsize(9)
  return _save(fig, path)


def _bounds_table(bound_files: list[Path]) -> pd.DataFrame:
  """One row per experiments.tiny_bound JSON: G, temperature, data mode, trivial bound, both rules."""
  rows = []
  for path in bound_files:
    r = json.loads(Path(path).read_text())
    rows.append(dict(group_size=r["group_size"], temperature=r["run_config"]["model.temperature_init"],
                     data_mode="fresh" if r["run_config"]["data.fresh"] else "pool", gap=r["gap"],
                     trivial=r["trivial_bound"],
                     **{f"bound_{rule}": v["bound"] for rule, v in r["rules"].items()}))
  return pd.DataFrame(rows).sort_values("group_size")


def theory_figure(df: pd.DataFrame, bounds: pd.DataFrame, path: Path) -> Path:
  """Left: each run's objective bias against theory's kappa (1/G - 1/n). Right: the measured sample gap
  of the runs the bound was evaluated on (mean over seeds) against that bound and the trivial one."""
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
  d = df.dropna(subset=["bias", "bias_predicted"])
  for mode, marker in (("fresh", "o"), ("pool", "s")):
    runs = d[d["data_mode"] == mode]
    left.scatter(runs["bias_predicted"], runs["bias"], c=np.log2(runs["group_size"]), cmap="viridis",
                 marker=marker, s=22, label=f"{mode} pairs (colour: log2 G)")
  lims = np.array([d[["bias", "bias_predicted"]].min().min(), d[["bias", "bias_predicted"]].max().max()])
  left.plot(lims, lims, color="0.4", ls="--", lw=1, label="measured = predicted")
  left.set(xscale="log", yscale="log", xlabel="predicted kappa (1/G - 1/n) (nats)",
           ylabel="measured bias L_G - L_n (held-out, nats)",
           title="the objective's bias: Prop. 1 vs the sweep")
  left.legend(fontsize=7)
  for (temp, mode), sub in bounds.groupby(["temperature", "data_mode"]):
    runs = df[(df["temperature"] == temp) & (df["data_mode"] == mode)]
    _errorbars(right, runs, "gap_sample", f"measured gap_sample, {mode}, T = {temp:g}", MODE_COLOURS[mode])
    for col, style in (("bound_fidelity", "k-s"), ("bound_tightest", "k--^")):
      right.plot(sub["group_size"], sub[col], style, mfc="none",
                 label=f"PAC-Bayes bound, {col.split('_')[1]} Q (seed 0)")
    right.plot(sub["group_size"], sub["trivial"], ":", color="0.4", label="trivial bound w_G(beta)")
  right.set(yscale="log", ylabel="nats", title="the sample gap: data-dependent bound vs the sweep")
  log2_batch_axis(right, bounds["group_size"])
  right.set_xlabel("pairs per softmax G")
  right.legend(fontsize=7)
  for ax in (left, right):
    ax.grid(alpha=0.3)
    ax.title.set_fontsize(9)
  return _save(fig, path)


def draw_all(results_csv: Path, out_dir: Path, probes_csv: Path | None = None,
             bound_files: list[Path] = ()) -> list[Path]:
  df = pd.read_csv(results_csv)
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = [gap_figure(df, out_dir / "negatives_gap.png"), bias_figure(df, out_dir / "negatives_bias.png")]
  if probes_csv is not None and Path(probes_csv).exists():
    paths.append(iso_fit_figure(pd.read_csv(probes_csv), out_dir / "negatives_iso_fit.png"))
  if bound_files:
    paths.append(theory_figure(df, _bounds_table(bound_files), out_dir / "negatives_theory.png"))
  return paths


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--results", required=True, type=Path, help="a negatives sweep's results.csv")
  parser.add_argument("--probes", type=Path, help="its probes.csv (the iso-fit figure)")
  parser.add_argument("--bounds", type=Path, nargs="*", default=(),
                      help="experiments.tiny_bound JSON files of pilot runs (the theory figure)")
  parser.add_argument("--out", required=True, type=Path)
  args = parser.parse_args(argv)
  for path in draw_all(args.results, args.out, args.probes, args.bounds):
    print(path)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
