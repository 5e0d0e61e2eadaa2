"""Analysis of the negatives sweeps (G = pairs per softmax at a fixed optimizer batch): numbers first,
then verdict sentences licensed by intervals (analysis/verdicts.py). numpy / pandas / scipy only.

    python -m experiments.negatives --results paper_figures/data/negatives_grid.csv \
        --probes paper_figures/data/negatives_grid_probes.csv --preset negatives \
        --summary paper_figures/data/negatives_grid_summary.json   # experiments/README.md's tables

One arm = world x data mode x pool size x temperature; within an arm, runs sharing a seed share data,
evaluation draws and initialisation across G (paired), so every slope has one intercept per seed.

- Outcomes per arm (`OUTCOMES`): the primary gap `gap_offset_all` (held-out - trained infinite-batch loss
  estimates, on one scale for every G), the population objective `heldout_loss_offset_all`, zero-shot
  (mean and per task) and retrieval R@1; `gap_sample` (at the run's own G, whose scale grows like log G)
  and `bias` are secondary columns. Slope per doubling of G with a 95% interval.
- Matched fit (`iso_fit_slopes`): the primary gap read along training (probes.csv) where the trained
  pairs' infinite-batch loss `train_loss_offset_all` reaches a level, at every level of a fixed ladder;
  the preset declares which level is primary (`iso_fit_level`) before the runs.
- Proposition 1 out of sample (`bias_check`): measured L_G - L_n/2 on one half of the held-out pairs over
  kappa (1/G - 2/n) with kappa from the other half, per G, and the same on the untrained model.
- Verdicts: the headline slopes of every arm are one family, Holm-corrected; equivalence only within the
  preset's margins, with 3+ seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import cli, stats, verdicts
from experiments.presets import PRESETS

ARM = ("world", "data_mode", "num_train", "temperature")
PRIMARY_GAP = "gap_offset_all"
FIT_MEASURE = "train_loss_offset_all"  # comparable across G: every run's trained pairs, one batch of n
ISO_METRIC = f"{PRIMARY_GAP} at matched fit"
HEADLINE = (PRIMARY_GAP, "heldout_loss_offset_all", "zeroshot_mean_top1", "retrieval_i2t_r1")
SECONDARY = ("gap_sample", "gap_fixed_eval", "bias", "retrieval_t2i_r1")
ISO_LADDER = tuple(np.round(np.linspace(0.1, 0.9, 9), 2))  # fractions of the fit range every run shares


def arms(df: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
  """(coordinates, runs) per arm; older results without a `world` column are the scenes world's."""
  df = df.assign(world=df.get("world", "scenes"))
  return [(dict(zip(ARM, keys)), group) for keys, group in df.groupby(list(ARM), sort=True)]


def arm_name(arm: dict) -> str:
  pool = "fresh" if arm["data_mode"] == "fresh" else f"pool m={int(arm['num_train'])}"
  temperature = "learned T" if not arm["temperature"] else f"T={arm['temperature']:g}"
  return f"{arm['world']}, {pool}, {temperature}"


def iso_fit_slopes(probes: pd.DataFrame, metric: str = PRIMARY_GAP,
                   ladder: tuple[float, ...] = ISO_LADDER) -> list[dict]:
  """Slope per doubling of G of `metric` at matched training fit, per arm and level of the ladder.

  The fit range is the span of FIT_MEASURE that every run of the arm passes through; a level f of the
  ladder is the point low + f (high - low), where each run's metric is linearly interpolated (probes in
  order of the fit measure)."""
  out = []
  for arm, group in arms(probes):
    runs = [r.sort_values(FIT_MEASURE) for _, r in group.groupby("run_id") if len(r) >= 2]
    if len(runs) < 2:
      continue
    low = max(r[FIT_MEASURE].min() for r in runs)
    high = min(r[FIT_MEASURE].max() for r in runs)
    if not low < high:
      continue
    for fraction in ladder:
      level = low + fraction * (high - low)
      rows = [dict(seed=r["seed"].iloc[0], group_size=r["group_size"].iloc[0],
                   **{metric: np.interp(level, r[FIT_MEASURE], r[metric])}) for r in runs]
      slope = verdicts.slope_per_doubling(pd.DataFrame(rows), metric)
      out.append(arm | dict(fraction=float(fraction), fit_level=float(level), **slope))
  return out


def bias_check(df: pd.DataFrame) -> list[dict]:
  """Per G: measured / predicted bias with a 95% interval over runs, out of sample (kappa from one half of
  the held-out pairs, the bias measured on the other), for the trained model and the untrained control,
  and in sample (kappa and bias from the same pairs: close to 1 for any fixed embeddings)."""
  rows = []
  for g, runs in df.groupby("group_size"):
    row = dict(group_size=int(g), runs=len(runs))
    for name, (measured, predicted) in {"split": ("bias_split", "bias_predicted_split"),
                                        "control": ("control_bias_split", "control_bias_predicted_split"),
                                        "same_pairs": ("bias", "bias_predicted")}.items():
      if measured in runs and runs[measured].notna().any():
        ratio, lo, hi = stats.mean_ci((runs[measured] / runs[predicted]).dropna().to_numpy())
        row[name] = dict(ratio=ratio, ci=(lo, hi), agrees=bool(lo <= 1.0 <= hi))
    rows.append(row)
  return rows


def outcome_metrics(df: pd.DataFrame) -> list[str]:
  tasks = [c for c in stats.zeroshot_columns(df) if c != "zeroshot_mean_top1"]
  return [m for m in HEADLINE + SECONDARY if m in df] + tasks


def finding(arm_claims: dict[str, str]) -> str:
  """The candidate finding of the testbed issue, tested head on per arm: more negatives improve the
  population objective and zero-shot at fixed data and steps, without changing the primary gap."""
  parts = {"population loss falls": arm_claims.get("heldout_loss_offset_all") == "shrinks",
           "zero-shot rises": arm_claims.get("zeroshot_mean_top1") == "grows",
           "the primary gap stays within its margin": arm_claims.get(PRIMARY_GAP) == "equivalent"}
  held = [k for k, v in parts.items() if v]
  if any(arm_claims.get(m) in (None, "no interval") for m in HEADLINE[:3]):
    return "not testable here: no interval (one seed, or a metric missing)"
  if all(parts.values()):
    return "supported: " + ", ".join(held)
  missing = [k for k, v in parts.items() if not v]
  return ("not shown: " + ", ".join(missing) + " (not licensed at the adjusted level)"
          + (f"; shown: {', '.join(held)}" if held else ""))


def summarize(results: pd.DataFrame, probes: pd.DataFrame | None = None, *,
              margins: dict[str, float] | None = None, iso_fit_level: float = 0.5) -> dict:
  """Every number of the analysis per arm, and the verdicts of the headline slopes as one family."""
  margins = margins or {}
  df = stats.add_means(results)
  iso = iso_fit_slopes(probes) if probes is not None and len(probes) else []
  groups, family = [], []
  for arm, group in arms(df):
    slopes = {m: verdicts.slope_per_doubling(group, m) for m in outcome_metrics(group)}
    groups.append(arm | dict(name=arm_name(arm), runs=len(group), seeds=int(group["seed"].nunique()),
                             slopes=slopes, bias_check=bias_check(group)))
    family += [dict(arm=arm_name(arm), **slopes[m]) for m in HEADLINE if m in slopes]
    family += [{**i, "arm": arm_name(arm), "metric": ISO_METRIC} for i in iso
               if all(i[k] == arm[k] for k in ARM) and np.isclose(i["fraction"], iso_fit_level)]
  family_margins = dict(margins)
  if PRIMARY_GAP in margins:  # the same quantity, read at matched fit
    family_margins[ISO_METRIC] = margins[PRIMARY_GAP]
  judged = verdicts.judge(family, family_margins)
  sentences = [f"{j['arm']}: {j['verdict']}" for j in judged]
  findings = {}
  for g in groups:
    claims = {j["metric"]: j["claim"] for j in judged if j["arm"] == g["name"]}
    findings[g["name"]] = finding(claims)
  return dict(runs=len(df), groups=groups, iso_fit=iso, iso_fit_level=iso_fit_level, margins=margins,
              verdicts=sentences, judged=judged, findings=findings,
              family=dict(tests=judged[0]["tests_in_family"] if judged else 0, alpha=verdicts.ALPHA))


# The columns this analysis reads: a results.csv / probes.csv without them is refused before it starts.
RESULT_COLUMNS = ("data_mode", "num_train", "temperature", "seed", "group_size", "gap_sample", "bias",
                  "bias_predicted")
PROBE_COLUMNS = ("data_mode", "num_train", "temperature", "run_id", "seed", "group_size", FIT_MEASURE)
TABLE_METRICS = (PRIMARY_GAP, "heldout_loss_offset_all", "zeroshot_mean_top1", "retrieval_i2t_r1",
                 "gap_sample", "bias")


def means_table(results: pd.DataFrame) -> str:
  """Markdown: per arm and G, the mean over seeds of each headline metric."""
  rows = []
  for arm, group in arms(stats.add_means(results)):
    cols = [m for m in TABLE_METRICS if m in group]
    for g, runs in group.groupby("group_size"):
      rows.append((arm_name(arm), int(g), len(runs), {c: runs[c].mean() for c in cols}))
  cols = [m for m in TABLE_METRICS if any(m in r[3] for r in rows)]
  lines = ["| arm | G | runs | " + " | ".join(cols) + " |", "|---" * (3 + len(cols)) + "|"]
  lines += [f"| {name} | {g} | {n} | " + " | ".join(f"{v[c]:.4f}" for c in cols) + " |"
            for name, g, n, v in rows]
  return "\n".join(lines)


def write_summary(results: pd.DataFrame, probes: pd.DataFrame | None, path: Path, **choices) -> dict:
  summary = summarize(results, probes, **choices)
  path.write_text(json.dumps(summary, indent=2, default=float))
  return summary


def preset_choices(name: str | None) -> dict:
  """The analysis choices a preset fixed before its runs (margins, primary matched-fit level)."""
  if name is None:
    return {}
  sweep = PRESETS[name]
  return dict(margins=dict(sweep.margins), iso_fit_level=sweep.iso_fit_level)


def print_report(summary: dict, results: pd.DataFrame) -> None:
  print(means_table(results))
  print()
  family = summary["family"]
  print(f"Verdicts ({family['tests']} tests, Holm-adjusted at family-wise {family['alpha']:g}):")
  for sentence in summary["verdicts"]:
    print(f"- {sentence}")
  print()
  for name, text in summary["findings"].items():
    print(f"- {name}: more negatives improve the population objective and zero-shot without changing the "
          f"gap: {text}")


def main(argv=None) -> int:
  parser = cli.Parser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--results", required=True, type=cli.csv_with(*RESULT_COLUMNS),
                      help="a negatives sweep's results.csv")
  parser.add_argument("--probes", type=cli.csv_with(*PROBE_COLUMNS), help="its probes.csv")
  parser.add_argument("--preset", choices=sorted(PRESETS),
                      help="the preset whose analysis choices (margins, matched-fit level) apply")
  parser.add_argument("--summary", type=cli.out_file, help="write the summary JSON here")
  args = parser.parse_args(argv)
  with cli.blame("--results"):
    results = pd.read_csv(args.results)
  with cli.blame("--probes"):
    probes = pd.read_csv(args.probes) if args.probes else None
  choices = preset_choices(args.preset)
  summary = (write_summary(results, probes, args.summary, **choices) if args.summary
             else summarize(results, probes, **choices))
  print_report(summary, results)
  return 0


if __name__ == "__main__":
  raise SystemExit(cli.run(main))
