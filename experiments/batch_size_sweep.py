"""The contrastive batch-size sweep: does a larger contrastive batch give a smaller generalization gap?

    python -m experiments.batch_size_sweep --preset smoke --out runs/sweep-smoke
    python -m experiments.batch_size_sweep --preset default --out runs/sweep-default --jobs 1

Writes OUT/results.csv (one row per run), OUT/summary.csv (mean and 95% interval per batch size),
OUT/summary.json (trend fits and verdicts) and, unless --no-figures, the figures in OUT/figures.
Re-running skips finished runs and resumes interrupted ones. Presets: experiments/presets.py.

Gap definitions (both per run, both with the run's own final weights):
  gap_fixed_eval  = held-out loss - loss on training pairs, both at the FIXED eval batch size
                    (eval.batch_size), so runs trained at different N are compared like with like.
  gap_population  = (held-out loss over all held-out pairs as one batch - log n_heldout), an estimate
                    of the infinite-batch loss L_inf, minus (training objective at the run's own
                    batch N - log N), the offset training objective L^_N of theory/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import pandas as pd

from experiments import stats
from experiments.presets import PRESETS
from experiments.runner import run_sweep
from experiments.stats import add_means

GAPS = ("gap_fixed_eval", "gap_population")


def summarize_sweep(df: pd.DataFrame, out: Path) -> dict:
  df = add_means(df)
  metrics = [m for m in GAPS + ("heldout_loss", "train_loss_at_eval_batch", "zeroshot_mean_top1",
                                "zeroshot_robustness_mean_top1", "retrieval_i2t_r1", "retrieval_t2i_r1")
             if m in df]
  by = tuple(c for c in ("model", "num_train") if df[c].nunique() > 1) + ("batch_size",)
  table = stats.summarize(df, metrics, by=by)
  table.to_csv(out / "summary.csv", index=False)
  groups = [((), df)] if len(by) == 1 else list(df.groupby(list(by[:-1])))
  trends = []
  for keys, group in groups:
    if group["batch_size"].nunique() < 2:
      continue
    for metric in (m for m in GAPS + ("zeroshot_mean_top1",) if m in group):
      keys = keys if isinstance(keys, tuple) else (keys,)
      trends.append(dict(zip(by[:-1], keys), **stats.trend(group, metric)))
  summary = dict(runs=len(df), batch_sizes=sorted(df["batch_size"].unique().tolist()),
                 seeds=sorted(df["seed"].unique().tolist()), trends=trends)
  (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
  return summary


def print_report(df: pd.DataFrame, summary: dict) -> None:
  df = add_means(df)
  cols = [c for c in ("gap_fixed_eval", "gap_population", "heldout_loss", "zeroshot_mean_top1") if c in df]
  print(df.groupby("batch_size")[cols].agg(["mean", "std"]).round(4).to_string())
  for t in summary["trends"]:
    fit = t["per_doubling"]
    where = ", ".join(f"{k}={t[k]}" for k in ("model", "num_train") if k in t)
    print(f"{t['metric']}{' (' + where + ')' if where else ''}: {fit['slope']:+.4f} per doubling of N "
          f"[95% CI {fit['slope_ci_low']:+.4f}, {fit['slope_ci_high']:+.4f}] -> {t['verdict']}")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--preset", required=True, help=f"one of {', '.join(PRESETS)}")
  parser.add_argument("--out", required=True, type=Path)
  parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (default 1)")
  parser.add_argument("--batch-sizes", help="override the preset's, e.g. 16,64,256")
  parser.add_argument("--seeds", help="override the preset's, e.g. 0,1,2")
  parser.add_argument("--no-figures", action="store_true")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  args = parser.parse_args(argv)
  if args.preset not in PRESETS:
    print(f"error: unknown preset {args.preset!r}; presets: {', '.join(PRESETS)}", file=sys.stderr)
    return 2
  sweep = PRESETS[args.preset]
  try:
    for field in ("batch_sizes", "seeds"):
      value = getattr(args, field)
      if value:
        sweep = dataclasses.replace(sweep, **{field: tuple(int(x) for x in value.split(","))})
    df = run_sweep(sweep, args.out, jobs=args.jobs, progress=not args.quiet)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  summary = summarize_sweep(df, args.out)
  print_report(df, summary)
  if not args.no_figures:
    from paper_figures import sweep_figures
    for path in sweep_figures.draw_all(args.out / "results.csv", args.out / "figures"):
      print(f"figure: {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
