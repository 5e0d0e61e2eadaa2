"""Analysis of the mechanism experiment (issue 28): does a debiased estimator at a small G recover what a
large G gives at fixed data and steps? numpy / pandas / scipy only.

    python -m experiments.mechanism --results paper_figures/data/mechanism.csv --preset mechanism \
        --summary paper_figures/data/mechanism_summary.json          # experiments/README.md's section

Arms = estimator x data mode: plain on fresh pairs and on the pool (the testbed grid's runs, G = 4 .. 1024),
SogCLR on the pool and a queue on fresh pairs (small G). Every seed draws its own data, evaluation pairs
and initialisation and shares them across all arms, so every comparison is paired by seed.

- Recovered fraction (`recovered`): for a debiased arm at G, per seed a_s = plain_G - debiased_G and
  b_s = plain_G - plain_Gmax, in the same data mode (Gmax: the largest plain G); the fraction mean a / mean b
  with Fieller's 95% interval (`analysis.stats.paired_ratio`). 1: the debiased small G gives all of what
  the large G gives; 0: none of it. Conclusive (either way) when the interval is bounded and its half-width
  is at most `CONCLUSIVE_HALF_WIDTH`. Primary outcome: the population loss `heldout_loss_offset_all`; the
  others are reported the same way.
- Paired differences (`differences`): debiased at G minus plain at G, and minus plain at Gmax, per outcome,
  a mean over seeds with its t interval.
- Slopes per doubling of G in every arm (one intercept per seed; `analysis.verdicts.slope_per_doubling`).
- The gradient bias at the final weights (`--gradients`, rows of experiments/gradient_bias.py per run and G,
  `make mechanism-gradients`): `gradient_rel_bias`, |E g_G - g_inf| / |g_inf| of the plain G-pair gradient
  at the run's own G, and `gradient_ratio`, its measured / first-order-predicted ratio; reported like the
  other outcomes (means, differences, slopes) but outside the headline family. For a debiased arm this is
  the plain estimator's bias at the weights it reached, not its own estimator's bias.
- Verdicts: the differences and the slopes of the headline outcomes are one family, Holm-corrected.
  Equivalence is claimed only for slopes, within the preset's margins; no margin was declared for a
  difference between arms, so a difference is either shown (higher / lower) or not shown.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis import cli, stats, verdicts
from experiments.negatives import HEADLINE, preset_choices
from experiments.presets import PRESETS

ARM = ("estimator", "data_mode")
PRIMARY = "heldout_loss_offset_all"
CONCLUSIVE_HALF_WIDTH = 0.15  # the target for the recovered fraction's 95% interval
GRADIENT = ("gradient_rel_bias", "gradient_ratio")
RESULT_COLUMNS = ("estimator", "data_mode", "group_size", "seed", "queue_size", PRIMARY, "gap_offset_all")


def arm_name(estimator: str, data_mode: str) -> str:
  return f"{estimator}, {data_mode}"


def by_seed(df: pd.DataFrame, estimator: str, data_mode: str, group_size: int, metric: str) -> pd.Series:
  """One arm's metric at one G, indexed by seed (the unit every comparison pairs on)."""
  rows = df[(df.estimator == estimator) & (df.data_mode == data_mode) & (df.group_size == group_size)]
  return rows.groupby("seed")[metric].mean()


def paired(x: pd.Series, y: pd.Series) -> tuple[np.ndarray, np.ndarray]:
  """x and y on the seeds both have."""
  seeds = x.index.intersection(y.index)
  return x[seeds].to_numpy(float), y[seeds].to_numpy(float)


def debiased_cells(df: pd.DataFrame) -> list[tuple[str, str, int]]:
  """(estimator, data mode, G) of every debiased arm's group size that has a plain baseline."""
  cells = df[df.estimator != "plain"][["estimator", "data_mode", "group_size"]].drop_duplicates()
  plain = set(map(tuple, df[df.estimator == "plain"][["data_mode", "group_size"]].to_numpy().tolist()))
  return sorted((e, m, int(g)) for e, m, g in cells.to_numpy().tolist() if (m, g) in plain)


def largest_plain_g(df: pd.DataFrame, data_mode: str) -> int:
  return int(df[(df.estimator == "plain") & (df.data_mode == data_mode)].group_size.max())


def recovered(df: pd.DataFrame, metric: str) -> list[dict]:
  """The fraction of plain G -> Gmax's change in `metric` that the debiased estimator gives at G."""
  out = []
  for estimator, mode, g in debiased_cells(df):
    g_max = largest_plain_g(df, mode)
    plain_g, deb, large = (by_seed(df, e, mode, gg, metric) for e, gg in (("plain", g), (estimator, g),
                                                                           ("plain", g_max)))
    seeds = plain_g.index.intersection(deb.index).intersection(large.index)
    if not len(seeds):
      continue
    a_S = (plain_g[seeds] - deb[seeds]).to_numpy(float)
    b_S = (plain_g[seeds] - large[seeds]).to_numpy(float)
    r = stats.paired_ratio(a_S, b_S)
    half = (r["ci_high"] - r["ci_low"]) / 2
    out.append(dict(estimator=estimator, data_mode=mode, group_size=g, large_group_size=g_max, metric=metric,
                    seeds=len(seeds), gain_plain=float(b_S.mean()), gain_debiased=float(a_S.mean()), **r,
                    conclusive=bool(r["bounded"] and half <= CONCLUSIVE_HALF_WIDTH)))
  return out


def difference(x: np.ndarray, y: np.ndarray) -> dict:
  """mean(x - y) over paired seeds with a t interval, in the estimate format verdicts.judge reads."""
  d = x - y
  n = len(d)
  mean, lo, hi = stats.mean_ci(d) if n else (float("nan"),) * 3
  se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
  p = float(2 * sps.t.sf(abs(mean / se), n - 1)) if n > 1 and se > 0 else float("nan")
  return dict(slope=float(mean), se=se, dof=n - 1, ci_low=float(lo), ci_high=float(hi), p_value=p, runs=2 * n,
              seeds=n)


def differences(df: pd.DataFrame, metrics: tuple[str, ...]) -> list[dict]:
  """Debiased at G minus plain at G and minus plain at Gmax, per metric (paired by seed)."""
  out = []
  for estimator, mode, g in debiased_cells(df):
    for ref in (g, largest_plain_g(df, mode)):
      for metric in metrics:
        x, y = paired(by_seed(df, estimator, mode, g, metric), by_seed(df, "plain", mode, ref, metric))
        out.append(dict(difference(x, y), metric=metric, arm=f"{estimator} G={g} vs plain G={ref} ({mode})",
                        estimator=estimator, data_mode=mode, group_size=g, reference_group_size=ref,
                        unit=f"({estimator} G={g} minus plain G={ref})", words=("higher", "lower"),
                        margin=None))  # the preset's margins are per doubling of G: slopes only
  return out


def with_gradients(results: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
  """`GRADIENT` columns from experiments/gradient_bias.py's rows, read at each run's own G (the newest step
  measured per run)."""
  own = rows.sort_values("step").drop_duplicates(["run", "group_size"], keep="last")
  own = own.rename(columns={"run": "run_id", "rel_bias": GRADIENT[0],
                            "ratio_measured_predicted": GRADIENT[1]})
  return results.merge(own[["run_id", "group_size", *GRADIENT]], on=["run_id", "group_size"], how="left")


def summarize(results: pd.DataFrame, margins: dict[str, float] | None = None) -> dict:
  """Every number of the analysis, and the verdicts of the headline differences and slopes as one family
  (the gradient columns, where present, are reported beside it)."""
  df = stats.add_means(results)
  metrics = tuple(m for m in HEADLINE if m in df)
  extra = tuple(m for m in GRADIENT if m in df and df[m].notna().any())
  arms, family = [], []
  for keys, group in df.groupby(list(ARM), sort=True):
    arm = dict(zip(ARM, keys))
    slopes = {m: verdicts.slope_per_doubling(group, m) for m in metrics + extra}
    means = {int(g): {m: stats.mean_ci(runs[m].dropna().to_numpy(float)) for m in metrics + extra}
             for g, runs in group.groupby("group_size")}
    arms.append(arm | dict(name=arm_name(*keys), runs=len(group), seeds=int(group.seed.nunique()),
                           queue_size=sorted(group.queue_size.unique().tolist()), slopes=slopes, means=means))
    family += [dict(arm=arm_name(*keys), **slopes[m]) for m in metrics]
  family += differences(df, metrics)
  judged = verdicts.judge(family, margins or {})
  gradient = [d for d in differences(df, extra) if d["seeds"]]
  fractions = [r for m in metrics for r in recovered(df, m)]
  return dict(runs=len(df), arms=arms, recovered=fractions, judged=judged, gradient_differences=gradient,
              verdicts=[f"{j['arm']}: {j['verdict']}" for j in judged],
              answer=[answer(r) for r in fractions if r["metric"] == PRIMARY],
              family=dict(tests=judged[0]["tests_in_family"] if judged else 0, alpha=verdicts.ALPHA),
              conclusive_half_width=CONCLUSIVE_HALF_WIDTH, primary=PRIMARY)


def answer(r: dict) -> str:
  """The recovered fraction as a sentence that says no more than its interval."""
  head = (f"{r['estimator']} at G = {r['group_size']} ({r['data_mode']}) recovers "
          f"{100 * r['ratio']:.0f}% of the {r['metric']} change from plain G = {r['group_size']} "
          f"to G = {r['large_group_size']}")
  n = f"{r['seeds']} seed{'s' if r['seeds'] != 1 else ''}"
  if r["seeds"] < 2:
    return f"{head}: {n}, no interval, no claim"
  if not r["bounded"]:
    return f"{head}, but with {n} the plain gain is not told apart from 0: no interval, no claim"
  ci = f"95% CI {100 * r['ci_low']:.0f}% to {100 * r['ci_high']:.0f}%, {n}"
  # An interval outside [0, 1] says the side even when it is too wide to say how much.
  side = ("; the whole interval is below 0: worse than plain at the same G" if r["ci_high"] < 0 else
          f"; the whole interval is above 100%: better than plain G = {r['large_group_size']}"
          if r["ci_low"] > 1 else "")
  return f"{head} ({ci}; {'conclusive' if r['conclusive'] else 'not conclusive'} at half-width "\
         f"<= {100 * CONCLUSIVE_HALF_WIDTH:.0f} points{side})"


def means_table(results: pd.DataFrame) -> str:
  """Markdown: per arm and G, the mean over seeds of each headline metric."""
  df = stats.add_means(results)
  cols = [m for m in HEADLINE + GRADIENT if m in df and df[m].notna().any()]
  lines = ["| arm | G | Q | runs | " + " | ".join(cols) + " |", "|---" * (4 + len(cols)) + "|"]
  for (estimator, mode, g), runs in df.groupby(["estimator", "data_mode", "group_size"], sort=True):
    lines.append(f"| {arm_name(estimator, mode)} | {int(g)} | {int(runs.queue_size.max())} | {len(runs)} | "
                 + " | ".join(f"{runs[c].mean():.4f}" for c in cols) + " |")
  return "\n".join(lines)


GEOMETRY = ("image_effective_rank", "text_effective_rank", "positive_cosine", "negative_cosine",
            "negative_cosine_sd", "i2t_r1")
QUEUE_GEOMETRY = ("negative_cosine", "queue_negative_cosine", "queue_minus_current_lme")  # queue runs only


def geometry_table(results: pd.DataFrame, rows: pd.DataFrame, columns: tuple[str, ...] = GEOMETRY) -> str:
  """Markdown: per arm and G, the mean over seeds and the range of the held-out embeddings' geometry
  (`rows`: experiments/embedding_geometry.py's JSON rows, the newest step of each run); only the arms
  whose runs have every one of `columns`."""
  newest = rows.sort_values("step").groupby("run").tail(1)
  df = results.merge(newest, left_on="run_id", right_on="run", suffixes=("", "_geometry"))
  df = df[df.reindex(columns=list(columns)).notna().all(axis=1)]
  lines = ["| arm | G | Q | runs | " + " | ".join(columns) + " |", "|---" * (4 + len(columns)) + "|"]
  for (estimator, mode, g), runs in df.groupby(["estimator", "data_mode", "group_size"], sort=True):
    cells = [f"{runs[c].mean():.3f} ({runs[c].min():.3f} to {runs[c].max():.3f})" for c in columns]
    lines.append(f"| {arm_name(estimator, mode)} | {int(g)} | {int(runs.queue_size.max())} | {len(runs)} | "
                 + " | ".join(cells) + " |")
  return "\n".join(lines)


def recovered_table(summary: dict) -> str:
  """Markdown: every recovered fraction with its interval."""
  lines = ["| estimator | data | G | outcome | seeds | recovered | 95% CI | conclusive |", "|---" * 8 + "|"]
  for r in summary["recovered"]:
    ci = f"{r['ci_low']:.2f} to {r['ci_high']:.2f}" if r["bounded"] else "unbounded"
    lines.append(f"| {r['estimator']} | {r['data_mode']} | {r['group_size']} | {r['metric']} | "
                 f"{r['seeds']} | {r['ratio']:.2f} | {ci} | {'yes' if r['conclusive'] else 'no'} |")
  return "\n".join(lines)


def print_report(summary: dict, results: pd.DataFrame) -> None:
  print(means_table(results), recovered_table(summary), sep="\n\n")
  print(f"\nVerdicts ({summary['family']['tests']} tests, Holm-adjusted at family-wise {verdicts.ALPHA:g}):")
  print("\n".join(f"- {v}" for v in summary["verdicts"]))
  print("\nThe answer (primary outcome):")
  print("\n".join(f"- {a}" for a in summary["answer"]))


def main(argv=None) -> int:
  parser = cli.Parser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--results", required=True, type=cli.csv_with(*RESULT_COLUMNS),
                      help="the mechanism sweep's results.csv")
  parser.add_argument("--preset", choices=sorted(PRESETS), help="the preset whose margins apply")
  parser.add_argument("--gradients", type=cli.existing_file,
                      help="experiments.gradient_bias JSON rows of the runs (make mechanism-gradients)")
  parser.add_argument("--summary", type=cli.out_file, help="write the summary JSON here")
  args = parser.parse_args(argv)
  with cli.blame("--results"):
    results = pd.read_csv(args.results)
  if args.gradients and args.gradients.stat().st_size:
    with cli.blame("--gradients"):
      results = with_gradients(results, pd.read_json(args.gradients, lines=True))
  summary = summarize(results, preset_choices(args.preset).get("margins"))
  if args.summary:
    args.summary.write_text(json.dumps(summary, indent=2, default=float))
  print_report(summary, results)
  return 0


if __name__ == "__main__":
  raise SystemExit(cli.run(main))
