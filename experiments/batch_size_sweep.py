"""Contrastive batch-size and negatives sweeps: does seeing more negatives give a smaller generalization gap?

    python -m experiments.batch_size_sweep --preset negatives-smoke --out runs/sweep-negatives-smoke
    python -m experiments.batch_size_sweep --preset negatives-pilot --out runs/sweep-negatives-pilot
    python -m experiments.batch_size_sweep --preset default --out runs/sweep-default
    python -m experiments.batch_size_sweep --preset default --out /shared/sweep --backend ray --address auto
    python -m experiments.batch_size_sweep --out /shared/sweep --status

Writes OUT/results.csv (one row per run), OUT/probes.csv (along-training probes, when the preset has
them), OUT/summary.json (fits with intervals and verdict sentences) and, unless --no-figures, the
figures in OUT/figures. Re-running skips finished runs and resumes interrupted ones. Presets, and the
confound each design carries: experiments/presets.py. The Ray backend (runs on a cluster, retried when a
worker dies) and --status: experiments/ray_backend.py.

Every metric is measured at the run's final weights, without augmentation, at the run's own temperature,
on >= eval.num_pairs held-out pairs and as many pairs the run trained on (basic_core/evaluate.py):
  gap_sample      held-out - trained loss, both at the run's own G (loss.group_size, or the batch);
  gap_offset_all  held-out - trained infinite-batch loss estimates (all n pairs as one batch - log n);
  gap_fixed_eval  held-out - trained loss at the fixed eval.batch_size;
  bias            held-out loss at G - log G - the held-out infinite-batch estimate: the objective's own
                  dependence on G (theory/README.md, Proposition 1), present for any fixed model.
Results of sweeps run before 2026-11-27 also carry `gap_population`: the held-out infinite-batch estimate
minus the mean LOGGED training loss over the last quarter of training (single batches, augmentation on,
weights still moving), offset by log N; it contains the -kappa/N objective bias by construction, so its
trend in N is that bias, not generalization.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pandas as pd

from analysis import cli, stats
from analysis.stats import add_means
from basic_core.workdir_lock import WorkdirLocked
from experiments import mechanism, negatives, ray_backend
from experiments.presets import PRESETS
from experiments.runner import plan_runs, run_sweep, write_results

GAPS = ("gap_sample", "gap_offset_all", "gap_fixed_eval", "gap_population")


def summarize_sweep(df: pd.DataFrame, out: Path, summary_path: Path | None = None) -> dict:
  """OUT/summary.csv (means with intervals per batch size) and the trend fits, written to summary_path
  (default OUT/summary.json)."""
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
    for metric in (m for m in GAPS + ("zeroshot_mean_top1", "zeroshot_robustness_mean_top1") if m in group):
      keys = keys if isinstance(keys, tuple) else (keys,)
      trends.append(dict(zip(by[:-1], keys), **stats.trend(group, metric)))
  summary = dict(runs=len(df), batch_sizes=sorted(df["batch_size"].unique().tolist()),
                 seeds=sorted(df["seed"].unique().tolist()), trends=trends)
  (summary_path or out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
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
  parser = cli.Parser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--preset", help=f"one of {', '.join(PRESETS)} (required unless --status)")
  parser.add_argument("--out", required=True, type=cli.out_dir)
  parser.add_argument("--jobs", type=cli.number(int, gt=0),
                      help="runs at once: parallel processes (default 1); with --backend ray, at most this "
                      "many in flight (default: as the cluster allows) and the CPUs of a local Ray started "
                      "for the sweep (times --cpus-per-run)")
  parser.add_argument("--batch-sizes", type=cli.ints(ge=1), help="override the preset's, e.g. 16,64,256")
  parser.add_argument("--seeds", type=cli.ints(ge=0), help="override the preset's, e.g. 0,1,2")
  parser.add_argument("--no-figures", action="store_true")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  parser.add_argument("--backend", choices=("local", "ray"), default="local",
                      help="local: this machine (default); ray: one Ray task per run (pip install -e "
                      "'.[cluster]'; OUT on a filesystem every node sees)")
  parser.add_argument("--address", help="Ray cluster to use: auto (the one this node is in) or HOST:PORT; "
                      "default: a local Ray started for the sweep")
  parser.add_argument("--cpus-per-run", type=cli.number(float, gt=0), default=1,
                      help="Ray resource request (default 1)")
  parser.add_argument("--gpus-per-run", type=cli.number(float, ge=0), default=0,
                      help="Ray resource request (default 0)")
  parser.add_argument("--max-retries", type=cli.number(int, ge=0), default=3,
                      help="Ray: retries of a run whose worker or trainer was killed (default 3)")
  parser.add_argument("--results", type=cli.csv_with("batch_size", "seed"),
                      help="analyse this results.csv (e.g. a committed one) instead of running a sweep: "
                      "OUT/summary.csv and --summary")
  parser.add_argument("--summary", type=cli.out_file, help="with --results: write the summary JSON here "
                      "(default OUT/summary.json)")
  parser.add_argument("--collect", action="store_true",
                      help="rebuild OUT/results.csv and probes.csv from the preset's finished runs in OUT "
                      "(e.g. records restored from another sweep that shares runs); run nothing")
  parser.add_argument("--status", action="store_true",
                      help="print done / running / failed / pending per run of OUT's sweep; start nothing")
  args = parser.parse_args(argv)
  if args.status:
    if not (args.out / "sweep.json").exists():
      print(f"error: no sweep was started in {args.out} (no sweep.json)", file=sys.stderr)
      return 2
    ray_backend.print_status(args.out)
    return 0
  if args.results:
    with cli.blame("--results"):
      df = pd.read_csv(args.results)
    args.out.mkdir(parents=True, exist_ok=True)
    print_report(df, summarize_sweep(df, args.out, args.summary))
    return 0
  if args.preset is None:
    parser.error("--preset is required (unless --status or --results)")
  if args.preset not in PRESETS:
    print(f"error: unknown preset {args.preset!r}; presets: {', '.join(PRESETS)}", file=sys.stderr)
    return 2
  sweep = PRESETS[args.preset]
  try:
    for field in ("batch_sizes", "seeds"):
      value = getattr(args, field)
      if value:
        sweep = dataclasses.replace(sweep, **{field: value})
    if args.collect:
      print(f"{len(write_results(plan_runs(sweep), args.out))} finished runs in {args.out / 'results.csv'}")
      return 0
    backend = None
    if args.backend == "ray":
      ray_backend.import_ray()  # before anything is written
      backend = ray_backend.RayBackend(address=args.address, jobs=args.jobs, cpus_per_run=args.cpus_per_run,
                                       gpus_per_run=args.gpus_per_run, max_retries=args.max_retries)
    df = run_sweep(sweep, args.out, jobs=args.jobs or 1, progress=not args.quiet, backend=backend)
  except (ValueError, WorkdirLocked, ray_backend.RayMissing, ConnectionError) as e:  # (no Ray at --address)
    print(f"error: {e}", file=sys.stderr)
    return 2
  except ray_backend.RunsFailed as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  if any(part.estimator != "plain" for part in sweep.parts):
    return report_mechanism(df, args.out, sweep, figures=not args.no_figures)
  if len(sweep.group_sizes) > 1:
    return report_negatives(df, args.out, sweep, figures=not args.no_figures)
  summary = summarize_sweep(df, args.out)
  print_report(df, summary)
  if not args.no_figures:
    from paper_figures import sweep_figures
    for path in sweep_figures.draw_all(args.out / "results.csv", args.out / "figures"):
      print(f"figure: {path}")
  return 0


def report_negatives(df: pd.DataFrame, out: Path, sweep, *, figures: bool) -> int:
  """summary.json, the verdicts and the figures of a sweep over loss group sizes G, with the analysis
  choices its preset fixed (margins, matched-fit level)."""
  probes_csv = out / "probes.csv"
  probes = pd.read_csv(probes_csv) if probes_csv.exists() else None
  summary = negatives.write_summary(df, probes, out / "summary.json", margins=dict(sweep.margins),
                                    iso_fit_level=sweep.iso_fit_level)
  negatives.print_report(summary, df)
  if figures:
    from paper_figures import negatives_figures
    for path in negatives_figures.draw_all(out / "results.csv", out / "figures", probes_csv,
                                           out / "summary.json"):
      print(f"figure: {path}")
  return 0


def report_mechanism(df: pd.DataFrame, out: Path, sweep, *, figures: bool) -> int:
  """summary.json, the recovered fractions, the verdicts and the figure of a sweep that sets debiased
  estimators at small G against plain G (experiments/mechanism.py)."""
  summary = mechanism.summarize(df, dict(sweep.margins))
  (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
  mechanism.print_report(summary, df)
  if figures:
    from paper_figures import mechanism_figure
    (out / "figures").mkdir(exist_ok=True)
    print(f"figure: {mechanism_figure.mechanism_figure(df, summary, out / 'figures' / 'mechanism.png')}")
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
