"""Runs a sweep's grid resumably and idempotently, and gathers one tidy row per finished run.

Each run has its own workdir `OUT/runs/<run id>`, where the id ends in a hash of the run's full config:
a finished run (its `eval.json` exists) is skipped, an interrupted one resumes from its checkpoints
(basic_core.train does that), and a changed sweep definition gets new ids instead of mixing results.
`results.csv` is rebuilt from the finished runs of the current grid after every run and replaced
atomically, so killing the sweep at any moment never leaves duplicate or partial rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import tqdm

from basic_core import train
from basic_core.configs import get_config, microbatching
from experiments.presets import MODEL_SIZES, Sweep


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of a sweep: the swept coordinates and the config overrides they imply."""
  model: str
  num_train: int
  batch_size: int
  seed: int
  overrides: tuple[str, ...]
  config_name: str

  def config(self):
    return get_config(self.config_name, self.overrides)

  @property
  def run_id(self) -> str:
    digest = hashlib.sha1(self.config().to_json().encode()).hexdigest()[:8]
    return f"{self.model}-m{self.num_train}-N{self.batch_size}-s{self.seed}-{digest}"


def plan_runs(sweep: Sweep) -> list[Run]:
  """Every run of the grid, checked before anything starts (bad sizes fail here, not mid-sweep)."""
  runs = []
  base = get_config(sweep.config, sweep.overrides)
  for model, num_train, batch, seed in itertools.product(sweep.models, sweep.num_train,
                                                         sweep.batch_sizes, sweep.seeds):
    m = num_train or base.data.num_train
    if batch > m:
      raise ValueError(f"sweep {sweep.name!r}: contrastive batch {batch} exceeds the {m} training "
                       "pairs (a batch the dataset cannot fill)")
    steps = sweep.steps if sweep.budget == "steps" else max(1, math.ceil(sweep.samples / batch))
    micro = min(batch, sweep.max_microbatch)
    overrides = sweep.overrides + MODEL_SIZES[model] + (
        f"data.num_train={m}", f"train.batch_size={batch}",
        f"train.microbatch_size={0 if micro == batch else micro}", f"train.steps={steps}",
        f"optim.warmup_steps={max(1, round(sweep.warmup_frac * steps))}", f"seed={seed}",
        f"train.checkpoint_every={min(steps, base.train.checkpoint_every)}",
        f"train.log_every={max(1, min(steps // 4, base.train.log_every))}")
    run = Run(model, m, batch, seed, overrides, sweep.config)
    run.config()  # validates every override now
    runs.append(run)
  return runs


def is_finished(workdir: Path) -> bool:
  return (workdir / "eval.json").exists()


def train_objective(workdir: Path) -> float:
  """Mean training loss (the run's own batch size, augmentation on) over its last quarter of logs."""
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  losses = [r["loss"] for r in records if "lr" in r]
  tail = losses[-max(1, len(losses) // 4):]
  return sum(tail) / len(tail)


def result_row(run: Run, workdir: Path) -> dict:
  """The tidy row of a finished run: coordinates, budget, losses, both gaps, every accuracy."""
  config = run.config()
  evaluation = json.loads((workdir / "eval.json").read_text())
  objective = train_objective(workdir)
  n = run.batch_size
  row = dict(run_id=run.run_id, model=run.model, num_train=run.num_train, batch_size=n, seed=run.seed,
             microbatch_size=microbatching(config.train)[0], steps=config.train.steps,
             samples_seen=config.train.steps * n, lr=config.optim.lr,
             train_objective=objective, train_objective_offset=objective - math.log(n))
  row.update({k: v for k, v in evaluation.items() if k != "step"})
  # Gap 2: estimated infinite-batch held-out loss minus the training objective, both offset by log N.
  row["gap_population"] = row["heldout_loss_offset_all"] - row["train_objective_offset"]
  return row


def _run_in_process(run: Run, workdir: Path) -> None:
  train.train(run.config(), workdir)


def _run_subprocess(run: Run, workdir: Path) -> None:
  cmd = [sys.executable, "-m", "basic_core.train", "--config", run.config_name, "--workdir",
         str(workdir)] + [f"--set={o}" for o in run.overrides]
  log = workdir.parent / f"{run.run_id}.log"
  with log.open("a") as f:
    proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
  if proc.returncode:
    raise RuntimeError(f"run {run.run_id} failed (exit {proc.returncode}); see {log}")


def write_results(runs: list[Run], out: Path) -> pd.DataFrame:
  """Rebuilds OUT/results.csv from the finished runs of this grid, atomically."""
  rows = [result_row(r, out / "runs" / r.run_id) for r in runs if is_finished(out / "runs" / r.run_id)]
  df = pd.DataFrame(rows)
  tmp = out / "results.csv.tmp"
  df.to_csv(tmp, index=False)
  os.replace(tmp, out / "results.csv")
  return df


def run_sweep(sweep: Sweep, out: Path, *, jobs: int = 1, progress: bool = True) -> pd.DataFrame:
  """Runs what is not finished yet (resuming what was interrupted), then returns results.csv."""
  out = Path(out)
  runs = plan_runs(sweep)
  (out / "runs").mkdir(parents=True, exist_ok=True)
  (out / "sweep.json").write_text(json.dumps(dataclasses.asdict(sweep), indent=2))
  todo = [r for r in runs if not is_finished(out / "runs" / r.run_id)]
  bar = tqdm.tqdm(total=len(runs), initial=len(runs) - len(todo), desc=f"sweep {sweep.name}",
                  disable=not progress, dynamic_ncols=True)

  def finished(run: Run):
    write_results(runs, out)
    bar.update(1)
    bar.set_postfix_str(run.run_id)

  if jobs == 1:  # in this process (and its main thread, where the trainer's signal handlers work)
    for run in todo:
      _run_in_process(run, out / "runs" / run.run_id)
      finished(run)
  else:  # one training process per run, `jobs` at a time
    with ThreadPoolExecutor(max_workers=jobs) as pool:
      futures = [pool.submit(_run_subprocess, r, out / "runs" / r.run_id) for r in todo]
      for run, future in zip(todo, futures):
        future.result()
        finished(run)
  bar.close()
  return write_results(runs, out)
