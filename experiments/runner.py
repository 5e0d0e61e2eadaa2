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

import jax
import pandas as pd
import tqdm

from basic_core import train
from basic_core.configs import get_config, loss_group_size, microbatching, resolve_group_size
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
  group_size: int = 0  # loss.group_size (0 = the whole batch)
  data_mode: str = "pool"
  temperature: float = 0.0  # 0 = learned
  world: str = "scenes"
  estimator: str = "plain"
  queue_size: int = 0

  def config(self):
    return get_config(self.config_name, self.overrides)

  @property
  def run_id(self) -> str:
    """`[world-]model-m<pool>-N<batch>[-G<group>][-fresh][-T<temperature>][-<estimator>]-s<seed>-<hash>`
    (the world named unless it is the first one, scenes; the estimator unless it is plain)."""
    digest = hashlib.sha1(self.config().to_json().encode()).hexdigest()[:8]
    extra = ((f"-G{self.group_size}" if self.group_size else "")
             + ("-fresh" if self.data_mode == "fresh" else "")
             + (f"-T{self.temperature:g}" if self.temperature else "")
             + ("" if self.estimator == "plain" else f"-{self.estimator}")
             + (f"{self.queue_size}" if self.estimator == "queue" else ""))
    pool = "" if self.data_mode == "fresh" else f"-m{self.num_train}"
    world = "" if self.world == "scenes" else f"{self.world}-"
    return f"{world}{self.model}{pool}-N{self.batch_size}{extra}-s{self.seed}-{digest}"


def plan_runs(sweep: Sweep) -> list[Run]:
  """Every run of the grid and of its parts, checked before anything starts (bad sizes fail here, not
  mid-sweep)."""
  runs = []
  base = get_config(sweep.config, sweep.overrides)
  # Seeds outermost: a sweep stopped early has every condition for its first seeds (a balanced design).
  grid = itertools.product(sweep.seeds, sweep.models, sweep.data_modes, sweep.num_train, sweep.temperatures,
                           sweep.batch_sizes, sweep.group_sizes)
  for seed, model, mode, num_train, temperature, batch, group in grid:
    if mode == "fresh" and num_train != sweep.num_train[0]:
      continue  # a fresh stream has no pool size: one run, not one per m
    m = num_train or base.data.num_train
    if mode == "pool" and batch > m:
      raise ValueError(f"sweep {sweep.name!r}: contrastive batch {batch} exceeds the {m} training "
                       "pairs (a batch the dataset cannot fill)")
    steps = sweep.steps if sweep.budget == "steps" else max(1, math.ceil(sweep.samples / batch))
    micro = min(batch, sweep.max_microbatch)
    overrides = sweep.overrides + MODEL_SIZES[model] + (
        f"data.num_train={m}", f"train.batch_size={batch}",
        f"train.microbatch_size={0 if micro == batch else micro}", f"train.steps={steps}",
        f"optim.warmup_steps={max(1, round(sweep.warmup_frac * steps))}", f"seed={seed}",
        f"train.checkpoint_every={min(steps, base.train.checkpoint_every)}",
        f"train.log_every={max(1, min(steps // 4, base.train.log_every))}",
        f"loss.group_size={group}", f"data.fresh={mode == 'fresh'}", f"data.world={sweep.world}")
    if sweep.data_seed_per_seed:
      overrides += (f"data.seed={seed}",)
    queue = max(0, sweep.queue_total - resolve_group_size(group, batch)) if sweep.estimator == "queue" else 0
    if sweep.estimator != "plain":
      overrides += (f"loss.estimator={sweep.estimator}", f"loss.queue_size={queue}")
    if temperature:
      overrides += (f"model.temperature_init={temperature}", "model.learn_temperature=False")
    run = Run(model, m, batch, seed, overrides, sweep.config, group, mode, temperature, sweep.world,
              sweep.estimator, queue)
    run.config()  # validates every override now
    runs.append(run)
  # Seeds outermost across the parts too: a sweep stopped early has every arm for its first seeds.
  return sorted(runs + [run for part in sweep.parts for run in plan_runs(part)], key=lambda r: r.seed)


def is_finished(workdir: Path) -> bool:
  return (workdir / "eval.json").exists()


def _records(workdir: Path) -> list[dict]:
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def logged_train_loss(workdir: Path) -> float:
  """Mean logged training loss over the last quarter of the run's logs: single batches, augmentation on,
  weights still moving. A progress indicator, not a measurement at final weights (see eval.json)."""
  losses = [r["loss"] for r in _records(workdir) if "lr" in r]
  tail = losses[-max(1, len(losses) // 4):]
  return sum(tail) / len(tail)


def result_row(run: Run, workdir: Path) -> dict:
  """The tidy row of a finished run: coordinates, budget, and every metric of its final evaluation
  (final weights, no augmentation, the run's own temperature; basic_core/evaluate.py)."""
  config = run.config()
  evaluation = json.loads((workdir / "eval.json").read_text())
  n = run.batch_size
  row = dict(run_id=run.run_id, world=run.world, model=run.model, num_train=run.num_train, batch_size=n,
             seed=run.seed, data_mode=run.data_mode, temperature=run.temperature, estimator=run.estimator,
             queue_size=run.queue_size,
             microbatch_size=microbatching(config.train)[0], steps=config.train.steps,
             samples_seen=config.train.steps * n, lr=config.optim.lr,
             logged_train_loss=logged_train_loss(workdir))
  row.update({k: v for k, v in evaluation.items() if k != "step"})
  return row


def probe_rows(run: Run, workdir: Path) -> list[dict]:
  """The run's along-training probes (eval.probe_every), one tidy row per probe."""
  coords = dict(run_id=run.run_id, world=run.world, batch_size=run.batch_size,
                group_size=loss_group_size(run.config()),
                seed=run.seed, data_mode=run.data_mode, temperature=run.temperature, estimator=run.estimator,
                queue_size=run.queue_size, num_train=run.num_train)
  return [coords | {k.removeprefix("probe_"): v for k, v in r.items() if k.startswith("probe_")}
          | dict(step=r["step"], logit_scale=r["logit_scale"])
          for r in _records(workdir) if any(k.startswith("probe_") for k in r)]


def share_compiled_programs(folder: Path) -> None:
  """JAX's persistent compilation cache for this process and the runs it starts, unless one is set: the
  runs of a sweep differ in seeds and sizes far more often than in shapes, so most compile once."""
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", jax.config.jax_compilation_cache_dir)


def _run_in_process(run: Run, workdir: Path) -> None:
  train.train(run.config(), workdir)


class RunFailed(RuntimeError):
  """A run's training process exited with an error: running it again fails the same way."""


class RunKilled(RunFailed):
  """A run's training process was killed by a signal: the machine's doing, a re-run resumes it."""


def run_log(workdir: Path) -> Path:
  """Where a training process started for the run in `workdir` writes its output."""
  return workdir.parent / f"{workdir.name}.log"


def run_subprocess(run: Run, workdir: Path, preexec_fn=None) -> None:
  cmd = [sys.executable, "-m", "basic_core.train", "--config", run.config_name, "--workdir",
         str(workdir)] + [f"--set={o}" for o in run.overrides]
  log = run_log(workdir)
  with log.open("a") as f:
    proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, preexec_fn=preexec_fn,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
  if proc.returncode:
    killed = proc.returncode < 0 or proc.returncode > 128  # a signal, or the trainer stopped by one
    raise (RunKilled if killed else RunFailed)(f"run {run.run_id} failed (exit {proc.returncode}); "
                                               f"see {log}")


def _write_atomically(df: pd.DataFrame, path: Path) -> None:
  tmp = path.with_suffix(".csv.tmp")
  df.to_csv(tmp, index=False)
  os.replace(tmp, path)


def write_results(runs: list[Run], out: Path) -> pd.DataFrame:
  """Rebuilds OUT/results.csv (and OUT/probes.csv, when runs probe) from the finished runs of this grid,
  atomically."""
  done = [r for r in runs if is_finished(out / "runs" / r.run_id)]
  df = pd.DataFrame([result_row(r, out / "runs" / r.run_id) for r in done])
  _write_atomically(df, out / "results.csv")
  probes = [row for r in done for row in probe_rows(r, out / "runs" / r.run_id)]
  if probes:
    _write_atomically(pd.DataFrame(probes), out / "probes.csv")
  return df


def run_sweep(sweep: Sweep, out: Path, *, jobs: int = 1, progress: bool = True,
              backend=None) -> pd.DataFrame:
  """Runs what is not finished yet (resuming what was interrupted), then returns results.csv.

  `backend(todo, out, finished)`, when given, runs the unfinished runs elsewhere and calls `finished(run)`
  in this thread as each one ends (experiments/ray_backend.py); else they run here, `jobs` at a time."""
  out = Path(out)
  runs = plan_runs(sweep)
  (out / "runs").mkdir(parents=True, exist_ok=True)
  share_compiled_programs(out / "jax-cache")
  (out / "sweep.json").write_text(json.dumps(dataclasses.asdict(sweep), indent=2))
  todo = [r for r in runs if not is_finished(out / "runs" / r.run_id)]
  bar = tqdm.tqdm(total=len(runs), initial=len(runs) - len(todo), desc=f"sweep {sweep.name}",
                  disable=not progress, dynamic_ncols=True)

  def finished(run: Run):
    write_results(runs, out)
    bar.update(1)
    bar.set_postfix_str(run.run_id)

  if backend is not None:
    backend(todo, out, finished)
  elif jobs == 1:  # in this process (and its main thread, where the trainer's signal handlers work)
    for run in todo:
      _run_in_process(run, out / "runs" / run.run_id)
      finished(run)
  else:  # one training process per run, `jobs` at a time
    with ThreadPoolExecutor(max_workers=jobs) as pool:
      futures = [pool.submit(run_subprocess, r, out / "runs" / r.run_id) for r in todo]
      for run, future in zip(todo, futures):
        future.result()
        finished(run)
  bar.close()
  return write_results(runs, out)
