r"""Figures of a negatives sweep (G = pairs per softmax at a fixed optimizer batch), drawn from its
results.csv, probes.csv and summary.json (`python -m experiments.negatives --summary`), and of the worlds'
false-negative rates (`make fn-rates`); never from the trainer or the analysis code itself.

    python -m paper_figures.negatives_figures --results paper_figures/data/negatives_grid.csv \
        --probes paper_figures/data/negatives_grid_probes.csv \
        --summary paper_figures/data/negatives_grid_summary.json \
        --fn-rates paper_figures/data/false_negatives.jsonl --out paper_figures/figures

- negatives_outcomes.png: per arm (world x data x pool size x temperature, one colour each) against G, means
  over seeds with 95% t intervals: the primary gap, the population loss, the secondary gap at the run's
  own G, zero-shot, retrieval, and per-task zero-shot of one arm against chance; the legends carry each
  arm's slope per doubling from the summary.
- negatives_iso_fit.png (summary): the primary gap's slope per doubling of G at every level of the
  matched-fit ladder, per arm, the preset's primary level marked; with probes, the curves behind it.
- negatives_bias.png (summary): measured / predicted bias per G, out of sample (split halves), on the
  untrained control, and in sample (same pairs).
- false_negatives.png (--fn-rates): the share of pairs whose group holds another image their caption
  describes truly, per world, against G.
- negatives_theory.png (--bounds, the old pilot's files): every run's bias against kappa (1/G - 1/n) and
  the sample gap against the data-dependent bound of theory/pac_bayes.py, from the JSON files of
  `python -m experiments.tiny_bound` on pilot runs:

    for d in runs/sweep-negatives-pilot/runs/s-m8192-N1024-G*-T0.07-s0-*; do
      g=$(basename $d | sed 's/.*-G\([0-9]*\)-.*/\1/')
      OPENBLAS_NUM_THREADS=1 python -m experiments.tiny_bound --workdir $d \
          --out paper_figures/data/negatives_pilot_bounds/G$g.json
    done
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis import cli, stats  # noqa: E402
from paper_figures.axes import log2_batch_axis  # noqa: E402

ARM = ("world", "data_mode", "num_train", "temperature")  # experiments/negatives.py's arms
PRIMARY_GAP, FIT_MEASURE = "gap_offset_all", "train_loss_offset_all"
OUTCOMES = (
    (PRIMARY_GAP, "primary gap: held-out - trained\ninfinite-batch loss estimates (nats)"),
    ("heldout_loss_offset_all", "population objective: held-out\ninfinite-batch loss estimate (nats)"),
    ("gap_sample", "secondary: held-out - trained loss at the\nrun's own G (nats; its scale grows with G)"),
    ("zeroshot_mean_top1", "zero-shot top-1, mean over the\nin-distribution tasks"),
    ("retrieval_i2t_r1", "image-to-text R@1 over the\nheld-out pairs"),
)
# Chance = 1 / classes of each zero-shot task, as data (figures never import basic_core): the objects world's
# SHAPES, COLOURS, SIZES, FILLS, CELLS and COUNT_WORDS (basic_core/worlds/objects.py), the scenes world's
# CLASSNAMES (basic_core/worlds/scenes/tasks.py).
CHANCE = {"objects": dict(shape=1 / 6, colour=1 / 3, size=1 / 3, fill=1 / 2, position=1 / 4, count=1 / 4),
          "scenes": dict(shape=1 / 8, colour=1 / 9, size=1 / 3, fill=1 / 4, position=1 / 9, count=1 / 3,
                         shape_colour=1 / 72, shape_colour_heldout=1 / 72)}
CHECKS = {  # bias_check's ratios in summary.json: colour, legend
    "split": ("tab:blue", "out of sample: kappa from one half, the bias measured on the other"),
    "control": ("0.45", "negative control: the untrained model, same split"),
    "same_pairs": ("tab:orange", "in sample: kappa and bias from the same pairs (near 1 for any model)"),
}
MODE_COLOURS = {"fresh": "tab:blue", "pool": "tab:orange"}  # the theory figure's two data modes
G_LABEL = "pairs per softmax G (G - 1 negatives)"


def with_world(df: pd.DataFrame) -> pd.DataFrame:
  """Older results without a `world` column are the scenes world's (as experiments/negatives.py says)."""
  return df if "world" in df else df.assign(world="scenes")


def arm_name(arm: dict) -> str:
  """experiments.negatives.arm_name, restated here because figures never import experiments
  (tests/test_negatives.py keeps the two equal)."""
  pool = "fresh" if arm["data_mode"] == "fresh" else f"pool m={int(arm['num_train'])}"
  temperature = "learned T" if not arm["temperature"] else f"T={arm['temperature']:g}"
  return f"{arm['world']}, {pool}, {temperature}"


def arms(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
  """(name, runs) per arm, in experiments.negatives' order."""
  return [(arm_name(dict(zip(ARM, keys))), group)
          for keys, group in with_world(df).groupby(list(ARM), sort=True)]


def arm_colours(names: list[str]) -> dict[str, tuple]:
  return dict(zip(names, sns.color_palette("tab10", len(names))))


def _dodge(i: int, k: int, step: float = 0.07) -> float:
  """A factor on G that spreads k series' error bars apart on the log-2 axis."""
  return 2.0 ** ((i - (k - 1) / 2) * step)


def _errorbars(ax, runs: pd.DataFrame, metric: str, label: str, colour, dodge: float = 1.0, **kw) -> None:
  """Mean over runs per G with a 95% t interval (none for one run)."""
  table = stats.summarize(runs.dropna(subset=[metric]), [metric], by=("group_size",))
  y = table["mean"].to_numpy()
  err = np.nan_to_num(np.vstack([y - table["ci_low"], table["ci_high"] - y]), posinf=0.0)
  ax.errorbar(table["group_size"] * dodge, y, yerr=err, marker="o", ms=4, capsize=2, label=label,
              color=colour, **kw)


def _slope_text(slope: dict | None) -> str:
  if slope is None or not np.isfinite(slope["slope"]):
    return ""
  if not np.isfinite(slope["ci_low"]):
    return f": {slope['slope']:+.3g}/doubling (one seed: no interval)"
  return f": {slope['slope']:+.3g}/doubling [{slope['ci_low']:+.3g}, {slope['ci_high']:+.3g}]"


def _style(ax, sizes, title: str, ylabel: str) -> None:
  log2_batch_axis(ax, sizes)
  ax.set(xlabel=G_LABEL, ylabel=ylabel, title=title)
  ax.title.set_fontsize(9)


def _save(fig, path: Path, rect=(0, 0, 1, 1)) -> Path:
  fig.tight_layout(rect=rect)
  fig.savefig(path, dpi=150)
  plt.close(fig)
  return path


def task_arm(df: pd.DataFrame) -> tuple[str, pd.DataFrame]:
  """The arm whose per-task zero-shot is drawn: the objects world's fresh arm at a frozen temperature, else
  the first fresh arm, else the first arm."""
  named = arms(df)
  first = lambda keep: next((a for a in named if keep(a[1].iloc[0])), None)
  return (first(lambda r: r["world"] == "objects" and r["data_mode"] == "fresh" and r["temperature"])
          or first(lambda r: r["data_mode"] == "fresh") or named[0])


def _tasks_panel(ax, df: pd.DataFrame) -> None:
  name, runs = task_arm(df)
  world = runs["world"].iloc[0]
  # The arm's own world's tasks: a results table of two worlds has the other's columns empty here.
  tasks = [c for c in stats.zeroshot_columns(runs)
           if "@" not in c and "mean" not in c and runs[c].notna().any()]
  palette = sns.color_palette("Set2", len(tasks))
  for i, (column, colour) in enumerate(zip(tasks, palette)):
    task = column[len("zeroshot_"):-len("_top1")]
    chance = CHANCE.get(world, {}).get(task)
    label = task if chance is None else f"{task} (chance {chance:.3g})"
    _errorbars(ax, runs, column, label, colour, _dodge(i, len(tasks), 0.05))
    if chance is not None:
      ax.axhline(chance, color=colour, ls="--", lw=1)
  _style(ax, runs["group_size"], f"zero-shot top-1 per task, {name}\n(dashed: chance = 1 / classes)",
         "top-1 accuracy")
  ax.legend(fontsize=6, ncols=2, loc="best")


def outcomes_figure(df: pd.DataFrame, summary: dict | None, path: Path) -> Path:
  """The outcomes per arm against G; legends give each arm's slope per doubling from the summary."""
  df = stats.add_means(with_world(df))
  named = arms(df)
  colours = arm_colours([n for n, _ in named])
  slopes = {g["name"]: g["slopes"] for g in summary["groups"]} if summary else {}
  fig, axes = plt.subplots(2, 3, figsize=(16.5, 10.5))
  for ax, (metric, what) in zip(axes.flat, OUTCOMES):
    if metric not in df:
      ax.set_axis_off()
      continue
    for i, (name, runs) in enumerate(named):
      _errorbars(ax, runs, metric, name + _slope_text(slopes.get(name, {}).get(metric)), colours[name],
                 _dodge(i, len(named)))
    _style(ax, df["group_size"], what, metric)
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.17), frameon=False)
  _tasks_panel(axes.flat[len(OUTCOMES)], df)
  fig.suptitle("Outcomes per arm against G at a fixed optimizer batch, steps and data: means over seeds with "
               "95% t intervals; legends: slope per doubling of G [95% CI], one intercept per seed")
  return _save(fig, path)


def iso_fit_figure(summary: dict, probes: pd.DataFrame | None, path: Path) -> Path:
  """Left: the primary gap's slope per doubling of G at every level of the matched-fit ladder, per arm.
  Then, with probes, one panel per arm: the primary gap along training against the fit measure, per run."""
  ladder = pd.DataFrame(summary["iso_fit"])
  ladder["name"] = [arm_name(row) for row in ladder[list(ARM)].to_dict("records")]
  names = list(dict.fromkeys(ladder["name"]))
  colours = arm_colours([g["name"] for g in summary["groups"]])
  curves = arms(probes) if probes is not None else []
  cols = min(3, 1 + len(curves))
  rows = -(-(1 + len(curves)) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 4.4 * rows), squeeze=False)
  ax = axes.flat[0]
  level = summary["iso_fit_level"]
  for i, name in enumerate(names):
    d = ladder[ladder["name"] == name].sort_values("fraction")
    y = d["slope"].to_numpy()
    err = np.nan_to_num(np.vstack([y - d["ci_low"], d["ci_high"] - y]), nan=0.0)
    ax.errorbar(d["fraction"] + 0.008 * (i - (len(names) - 1) / 2), y, yerr=err, marker="o", ms=4,
                capsize=2, color=colours.get(name, "0.3"), label=name)
  ax.axhline(0, color="gray", lw=0.8)
  ax.axvline(level, color="k", ls=":", label=f"primary level {level:g} (fixed in the preset)")
  ax.set(xlabel="matched-fit level f: the trained pairs' loss at low + f (high - low)\nof the range every "
                "run of the arm passes (small f: better fit)",
         ylabel=f"slope of {PRIMARY_GAP} per doubling of G (nats)",
         title="the primary gap at matched fit, every level of the ladder\n(95% intervals; none: one seed)")
  ax.title.set_fontsize(9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=6)
  for ax, (name, runs) in zip(axes.flat[1:], curves):
    sizes = sorted(runs["group_size"].unique())
    palette = dict(zip(sizes, sns.color_palette("viridis", len(sizes))))
    for (g, _), run in runs.groupby(["group_size", "run_id"]):
      run = run.sort_values("step")
      ax.plot(run[FIT_MEASURE], run[PRIMARY_GAP], marker=".", color=palette[g], alpha=0.7, label=f"G = {g}")
    for _, row in ladder[ladder["name"] == name].iterrows():
      primary = np.isclose(row["fraction"], level)
      ax.axvline(row["fit_level"], color="k" if primary else "0.8", ls=":" if primary else "-", lw=0.8)
    handles = dict(zip(*ax.get_legend_handles_labels()[::-1]))
    ax.legend(handles.values(), handles.keys(), fontsize=6)
    ax.invert_xaxis()  # training runs left to right
    ax.grid(alpha=0.3)
    ax.set(xlabel=f"{FIT_MEASURE} (fit of the trained pairs)", ylabel=f"{PRIMARY_GAP} (nats)",
           title=f"{name}: probes along training\n(grey: ladder levels; dotted: primary)")
    ax.title.set_fontsize(9)
  for ax in axes.flat[1 + len(curves):]:
    ax.set_axis_off()
  return _save(fig, path)


def bias_figure(summary: dict, path: Path) -> Path:
  """Per arm and G: measured / predicted bias with its 95% interval over runs, for each check present."""
  groups = [g for g in summary["groups"] if g["bias_check"]]
  cols = min(3, len(groups))
  rows = -(-len(groups) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(max(5.6 * cols, 9.0), 4.2 * rows + 1.6), squeeze=False)
  legend = {}
  for ax, group in zip(axes.flat, groups):
    per_g = group["bias_check"]
    present = [c for c in CHECKS if any(c in row for row in per_g)]
    points = [np.array([1.0])]
    for i, check in enumerate(present):
      rows_c = [(row["group_size"], row[check]) for row in per_g if check in row]
      g = np.array([r[0] for r in rows_c], float)
      y = np.array([r[1]["ratio"] for r in rows_c], float)
      lo, hi = (np.array([r[1]["ci"][k] for r in rows_c], float) for k in (0, 1))
      err = np.nan_to_num(np.vstack([y - lo, hi - y]), posinf=0.0, nan=0.0)
      colour, label = CHECKS[check]
      if not np.isfinite(lo).any():
        label += " (one seed: no interval)"
      legend[label] = ax.errorbar(g * _dodge(i, len(present)), y, yerr=err, marker="o", ms=4, capsize=2,
                                  color=colour)
      points.append(y)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ys = np.concatenate(points)  # the view holds every ratio and 1; intervals beyond it are cut by the frame
    ax.set_ylim(min(0.0, np.nanmin(ys)) - 0.1, max(2.0, np.nanmax(ys)) + 0.1)
    _style(ax, [row["group_size"] for row in per_g], group["name"], "measured / predicted bias")
  for ax in axes.flat[len(groups):]:
    ax.set_axis_off()
  fig.legend(legend.values(), legend.keys(), loc="lower center", fontsize=8, frameon=False)
  fig.suptitle(textwrap.fill(
      "Proposition 1: the G-pair objective's bias measured, over its prediction kappa (1/G - 2/n) out of "
      "sample and kappa (1/G - 1/n) in sample; means over seeds with 95% intervals. 1 inside an interval is "
      "agreement, which checks the proposition for a fixed model (the untrained control is one too); it "
      "shows nothing about learning.", int(14 * fig.get_figwidth())), fontsize=10)
  return _save(fig, path, rect=(0, 0.9 / fig.get_figheight(), 1, 1))


def false_negatives_figure(rates: pd.DataFrame, path: Path) -> Path:
  """The false-negative rate per world against G; a rate of 0 is drawn at its upper 95% bound (v)."""
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  for world, d in rates.sort_values("group_size").groupby("world"):
    lo, hi = np.array(d["ci95"].tolist(), float).T
    rate = d["rate"].to_numpy(float)
    found = rate > 0
    line = ax.errorbar(d["group_size"][found], rate[found], yerr=[rate[found] - lo[found],
                       hi[found] - rate[found]], marker="o", ms=4, capsize=2, label=world)
    if (~found).any():
      ax.plot(d["group_size"][~found], hi[~found], "v", color=line[0].get_color(), mfc="none",
              label=f"{world}: none found (upper 95% bound)")
  ax.axhline(0.01, color="k", ls="--", lw=0.8, label="1% (the testbed's target at G = 4,096)")
  ax.set_yscale("log")
  _style(ax, rates["group_size"], "false negatives: pairs whose group holds another image\n"
         "that their caption describes truly (sampled)", "false-negative rate")
  ax.legend(fontsize=7)
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
  """Left: each run's objective bias against theory's kappa (1/G - 1/n) (in sample: kappa and the bias from
  the same pairs). Right: the measured sample gap of the runs the bound was evaluated on (mean over seeds)
  against that bound and the trivial one."""
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
           title="the objective's bias: Prop. 1 vs the sweep (same pairs)")
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


# What each input must hold: a file without it is refused before anything is drawn.
RESULT_COLUMNS = ("data_mode", "num_train", "temperature", "group_size", "seed", PRIMARY_GAP)
PROBE_COLUMNS = ("data_mode", "num_train", "temperature", "group_size", "run_id", "step", FIT_MEASURE,
                 PRIMARY_GAP)
SUMMARY_KEYS = ("groups", "iso_fit", "iso_fit_level")
FN_RATE_KEYS = ("world", "group_size", "rate", "ci95")


def read_summary(path: Path) -> dict:
  """summary.json of experiments.negatives (its current schema: a missing key is an error)."""
  summary = json.loads(Path(path).read_text())
  if missing := [k for k in SUMMARY_KEYS if k not in summary]:
    raise KeyError(missing[0])
  return summary


def read_fn_rates(path: Path) -> pd.DataFrame:
  """The rows of `python -m basic_core.data fn-rate --json`, one JSON object a line."""
  rates = pd.read_json(path, lines=True)
  return rates[list(FN_RATE_KEYS)]


def draw(results: pd.DataFrame, out_dir: Path, probes: pd.DataFrame | None = None,
         summary: dict | None = None, bounds: pd.DataFrame | None = None,
         fn_rates: pd.DataFrame | None = None) -> list[Path]:
  """Every figure whose inputs are given; the paths drawn."""
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = [outcomes_figure(results, summary, out_dir / "negatives_outcomes.png")]
  if summary is not None and summary["iso_fit"]:
    paths.append(iso_fit_figure(summary, probes, out_dir / "negatives_iso_fit.png"))
  if summary is not None and any(g["bias_check"] for g in summary["groups"]):
    paths.append(bias_figure(summary, out_dir / "negatives_bias.png"))
  if bounds is not None and len(bounds):
    paths.append(theory_figure(results, bounds, out_dir / "negatives_theory.png"))
  if fn_rates is not None and len(fn_rates):
    paths.append(false_negatives_figure(fn_rates, out_dir / "false_negatives.png"))
  return paths


def draw_all(results_csv: Path, out_dir: Path, probes_csv: Path | None = None,
             summary_json: Path | None = None, bound_files: list[Path] = (),
             fn_rates: Path | None = None) -> list[Path]:
  """`draw` from files; an input that is None or absent skips the figures that need it."""
  present = lambda p: p is not None and Path(p).exists()
  return draw(pd.read_csv(results_csv), Path(out_dir),
              probes=pd.read_csv(probes_csv) if present(probes_csv) else None,
              summary=read_summary(summary_json) if present(summary_json) else None,
              bounds=_bounds_table(bound_files) if bound_files else None,
              fn_rates=read_fn_rates(fn_rates) if present(fn_rates) else None)


def fn_table(rates: pd.DataFrame) -> str:
  """Markdown: the false-negative rate (%) with its 95% interval per G (rows) and world (columns)."""
  worlds = sorted(rates["world"].unique())
  cell = lambda r: f"{100 * r['rate']:.2f} [{100 * r['ci95'][0]:.2f}, {100 * r['ci95'][1]:.2f}]"  # noqa: E731
  head = "| G | " + " | ".join(f"{w} (%, 95% CI)" for w in worlds) + " |"
  lines = [head, "|---:" * (1 + len(worlds)) + "|"]
  for g, rows in rates.groupby("group_size"):
    by_world = {r["world"]: cell(r) for _, r in rows.iterrows()}
    lines.append(f"| {g:,} | " + " | ".join(by_world.get(w, "") for w in worlds) + " |")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = cli.Parser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--results", required=True, type=cli.csv_with(*RESULT_COLUMNS),
                      help="a negatives sweep's results.csv")
  parser.add_argument("--probes", type=cli.csv_with(*PROBE_COLUMNS),
                      help="its probes.csv (the curves of the matched-fit figure)")
  parser.add_argument("--summary", type=cli.existing_file,
                      help="its summary.json from experiments.negatives (the matched-fit and bias figures)")
  parser.add_argument("--fn-rates", type=cli.existing_file,
                      help="false-negative rates, JSON lines of `python -m basic_core.data fn-rate --json`")
  parser.add_argument("--bounds", type=cli.existing_file, nargs="*", default=(),
                      help="experiments.tiny_bound JSON files of pilot runs (the theory figure)")
  parser.add_argument("--out", required=True, type=cli.out_dir)
  args = parser.parse_args(argv)
  with cli.blame("--results"):
    results = pd.read_csv(args.results)
  with cli.blame("--probes"):
    probes = pd.read_csv(args.probes) if args.probes else None
  with cli.blame("--summary"):
    summary = read_summary(args.summary) if args.summary else None
  with cli.blame("--fn-rates"):
    fn_rates = read_fn_rates(args.fn_rates) if args.fn_rates else None
  with cli.blame("--bounds"):
    bounds = _bounds_table(args.bounds) if args.bounds else None
  for path in draw(results, args.out, probes, summary, bounds, fn_rates):
    print(path)
  return 0


if __name__ == "__main__":
  raise SystemExit(cli.run(main))
