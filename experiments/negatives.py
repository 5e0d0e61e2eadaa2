"""Analysis of the negatives sweeps (G = pairs per softmax at a fixed optimizer batch): numbers first,
then verdict sentences generated from their intervals. numpy / pandas / scipy only (no JAX).

    python -m experiments.negatives --results paper_figures/data/negatives_pilot.csv \
        --probes paper_figures/data/negatives_pilot_probes.csv \
        --summary paper_figures/data/negatives_pilot_summary.json   # the README's table and verdicts

Per group of runs (data mode x temperature):
- `slope_per_doubling`: metric = a_seed + b log2 G + noise, one intercept per seed (runs sharing a seed
  share data order and initialisation across G: a paired design, so b is estimated from within-seed
  differences), b with its 95% t interval;
- `iso_fit_slopes`: the same slope for gap_sample read along training (probes.csv) at matched fit, the
  trained pairs' infinite-batch loss estimate (`train_loss_offset_all`, comparable across G), linearly
  interpolated per run;
- `bias_check`: the measured objective bias (held-out loss at G - log G - L_n estimate) over theory's
  first-order kappa (1/G - 1/n), per G with a 95% interval over seeds (1 = agreement; below 1 at small
  G, where kappa / G is not small and the O(1/G^2) terms of Proposition 1 count).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import stats

GROUPS = ("data_mode", "temperature")
SLOPE_METRICS = ("gap_sample", "gap_offset_all", "gap_fixed_eval", "bias", "heldout_loss_offset_all",
                 "zeroshot_mean_top1")
CONCLUSIVE_HALF_WIDTH = 0.01  # nats per doubling of G: the pilot's target precision


def slope_per_doubling(df: pd.DataFrame, metric: str, level: float = 0.95) -> dict:
  """b in metric = a_seed + b log2(group_size): estimate, 95% interval, and a verdict."""
  d = df[["seed", "group_size", metric]].dropna()
  seeds = np.unique(d["seed"], return_inverse=True)[1]
  design = np.column_stack([np.eye(seeds.max() + 1)[seeds], np.log2(d["group_size"].to_numpy(float))])
  fit = stats.least_squares(design, d[metric].to_numpy(float), level=level)
  slope, se, (lo, hi) = stats.combination(fit, np.eye(design.shape[1])[-1])
  return dict(metric=metric, slope=slope, se=se, ci_low=lo, ci_high=hi, runs=len(d),
              seeds=int(seeds.max() + 1), group_sizes=sorted(d["group_size"].unique().tolist()),
              verdict=verdict(metric, slope, lo, hi))


def verdict(metric: str, slope: float, lo: float, hi: float) -> str:
  """A sentence that says no more than the interval does."""
  span = f"{slope:+.4f} per doubling of G (95% CI {lo:+.4f} to {hi:+.4f})"
  if hi < 0:
    return f"{metric} shrinks as the negatives double: {span}"
  if lo > 0:
    return f"{metric} grows as the negatives double: {span}"
  if hi - lo <= 2 * CONCLUSIVE_HALF_WIDTH:
    return f"{metric} does not change with G by more than {max(-lo, hi):.3f} nats per doubling: {span}"
  return f"not shown either way for {metric} (interval too wide): {span}"


def iso_fit_slopes(probes: pd.DataFrame, levels: int = 5, metric: str = "gap_sample") -> list[dict]:
  """Slope per doubling of G of `metric` at matched training fit, per group and fit level.

  Fit levels are spread over the range of `train_loss_offset_all` that every run of the group passes
  through; each run's metric is interpolated there (probes are in step order; the fit measure falls
  with training, so it is sorted before interpolating).
  """
  out = []
  for keys, group in probes.groupby(list(GROUPS)):
    runs = [r.sort_values("train_loss_offset_all") for _, r in group.groupby("run_id") if len(r) >= 2]
    if len(runs) < 2:
      continue
    low = max(r["train_loss_offset_all"].min() for r in runs)
    high = min(r["train_loss_offset_all"].max() for r in runs)
    if not low < high:
      continue
    for fit_level in np.linspace(low, high, levels):
      rows = [dict(seed=r["seed"].iloc[0], group_size=r["group_size"].iloc[0],
                   value=np.interp(fit_level, r["train_loss_offset_all"], r[metric])) for r in runs]
      slope = slope_per_doubling(pd.DataFrame(rows).rename(columns={"value": metric}), metric)
      out.append(dict(zip(GROUPS, keys), train_loss_offset_all=float(fit_level), **slope))
  return out


def bias_check(df: pd.DataFrame) -> dict:
  """Per G: mean measured and predicted bias, and measured / predicted with a 95% interval over runs;
  `agrees_at`: the G whose interval holds 1 (theory's first order is right there)."""
  d = df[["bias", "bias_predicted", "group_size"]].dropna()
  rows = []
  for g, runs in d.groupby("group_size"):
    ratio, lo, hi = stats.mean_ci((runs["bias"] / runs["bias_predicted"]).to_numpy())
    rows.append(dict(group_size=int(g), bias=float(runs["bias"].mean()),
                     bias_predicted=float(runs["bias_predicted"].mean()), ratio=ratio, ratio_ci=(lo, hi)))
  agrees = [r["group_size"] for r in rows
            if np.isfinite(r["ratio_ci"]).all() and r["ratio_ci"][0] <= 1.0 <= r["ratio_ci"][1]]
  return dict(per_group_size=rows, agrees_at=agrees)


def summarize(results: pd.DataFrame, probes: pd.DataFrame | None = None) -> dict:
  """Every number of the analysis, per data mode and temperature, and the verdict sentences."""
  df = stats.add_means(results)
  groups = []
  for keys, group in df.groupby(list(GROUPS)):
    slopes = {m: slope_per_doubling(group, m) for m in SLOPE_METRICS if m in group}
    groups.append(dict(zip(GROUPS, keys), runs=len(group), slopes=slopes, bias_check=bias_check(group)))
  iso = iso_fit_slopes(probes) if probes is not None and len(probes) else []
  sentences = []
  for g in groups:
    where = f"{g['data_mode']}, temperature {g['temperature']:g}"
    sentences.append(f"{where}: {g['slopes']['gap_sample']['verdict']}")
    matched = [i for i in iso if (i["data_mode"], i["temperature"]) == (g["data_mode"], g["temperature"])]
    if matched:  # the best fit every run of the group reached
      best = min(matched, key=lambda i: i["train_loss_offset_all"])
      sentences.append(f"{where}, at matched fit (trained pairs' L_inf estimate "
                       f"{best['train_loss_offset_all']:.3f}): {best['verdict']}")
    check = g["bias_check"]
    ratios = ", ".join(f"G={r['group_size']}: {r['ratio']:.2f} "
                       f"[{r['ratio_ci'][0]:.2f}, {r['ratio_ci'][1]:.2f}]" for r in check["per_group_size"])
    agree = ", ".join(map(str, check["agrees_at"])) or "no G"
    sentences.append(f"{where}: objective bias measured / kappa (1/G - 1/n) = {ratios}; theory's first "
                     f"order is within the 95% interval at G = {agree}")
  return dict(runs=len(df), groups=groups, iso_fit=iso, verdicts=sentences)


def gap_sample_slopes(summary: dict) -> dict:
  """{data_mode: {temperature: slope of gap_sample per doubling of G, with its interval}}: the
  headline numbers of the pilot's summary file."""
  out: dict = {}
  for g in summary["groups"]:
    s = g["slopes"]["gap_sample"]
    out.setdefault(g["data_mode"], {})[f"{g['temperature']:g}"] = dict(
        slope=s["slope"], ci_low=s["ci_low"], ci_high=s["ci_high"],
        half_width=(s["ci_high"] - s["ci_low"]) / 2)
  return out


TABLE_METRICS = ("gap_sample", "gap_offset_all", "bias", "bias_predicted", "heldout_loss_offset_all",
                 "zeroshot_mean_top1")


def means_table(results: pd.DataFrame) -> str:
  """Markdown: per data mode, temperature and G, the mean over seeds of each headline metric."""
  df = stats.add_means(results)
  cols = [m for m in TABLE_METRICS if m in df]
  table = df.groupby(["data_mode", "temperature", "group_size"])[cols].mean().reset_index()
  lines = ["| data | temperature | G | " + " | ".join(cols) + " |", "|---" * (3 + len(cols)) + "|"]
  for _, r in table.iterrows():
    values = " | ".join(f"{r[c]:.4f}" for c in cols)
    lines.append(f"| {r['data_mode']} | {r['temperature']:g} | {int(r['group_size'])} | {values} |")
  return "\n".join(lines)


def write_summary(results: pd.DataFrame, probes: pd.DataFrame | None, path: Path) -> dict:
  summary = summarize(results, probes)
  summary["gap_sample_per_doubling"] = gap_sample_slopes(summary)
  path.write_text(json.dumps(summary, indent=2, default=float))
  return summary


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--results", required=True, type=Path, help="a negatives sweep's results.csv")
  parser.add_argument("--probes", type=Path, help="its probes.csv")
  parser.add_argument("--summary", type=Path, help="write the summary JSON here")
  args = parser.parse_args(argv)
  results = pd.read_csv(args.results)
  probes = pd.read_csv(args.probes) if args.probes and args.probes.exists() else None
  summary = write_summary(results, probes, args.summary) if args.summary else summarize(results, probes)
  print(means_table(results))
  print()
  for sentence in summary["verdicts"]:
    print(f"- {sentence}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
