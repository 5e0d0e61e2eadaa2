"""Random SIGKILLs (slow stress tests): the trainer killed at random moments (start-up, steps, checkpoint
writes, evaluation) and re-run each time ends bit-identical to an uninterrupted run, never redoing more
than one checkpoint interval; the sweep driver killed at random moments never leaves results.csv
partial or duplicated."""

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_experiments import _sweep_cmd
from test_train import ROOT, _cli, _params

from basic_core import checkpoint

TRAINER_KILLS, SWEEP_KILLS = 20, 10
STEPS, EVERY = 300, 10
EXTRA = ("train.log_every=1", f"train.checkpoint_every={EVERY}", "train.eval_every=100")


def _last_logged_step(workdir: Path) -> int:
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return 0
  steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if '"lr"' in line]
  return max(steps, default=0)


def _finished_cleanly(proc: subprocess.Popen) -> None:
  _, err = proc.communicate()
  assert proc.returncode == 0 and "Traceback" not in err, err


def _timed_reference(workdir: Path) -> tuple[float, float]:
  """(start-up seconds until the first logged step, total seconds) of an uninterrupted run, timed on a
  second run so that, like the re-runs, it finds the compiled programs in the cache."""
  for attempt in (workdir.with_name("warm-up"), workdir):
    start = time.perf_counter()
    proc = _cli(attempt, *EXTRA, steps=STEPS)
    while _last_logged_step(attempt) == 0 and proc.poll() is None:
      time.sleep(0.02)
    startup = time.perf_counter() - start
    _finished_cleanly(proc)
  return startup, time.perf_counter() - start


def _latest(run: Path) -> int | None:
  return checkpoint.Checkpointer(run, 5).latest_step() if (run / "checkpoints").exists() else None


def _wait_for_training(run: Path, proc: subprocess.Popen, resumed_from: int, launched: float) -> None:
  """Until the re-run logs a step past its checkpoint (it has restored, compiled and trained)."""
  path = run / "metrics.jsonl"
  while proc.poll() is None and not (path.exists() and path.stat().st_mtime > launched
                                     and _last_logged_step(run) > resumed_from):
    time.sleep(0.01)


def kill_and_rerun(run: Path, kills: int, rng: random.Random, startup: float, total: float) -> list[dict]:
  """`kills` SIGKILLs, each followed by a re-run. About a third land at a random moment of start-up
  (imports, restore, compile); the others at a random moment within three checkpoint intervals after
  the re-run's first step (steps, checkpoint writes, evaluations), timed by progress rather than the
  clock, so a loaded machine moves them nowhere else. Returns what each kill left: the last logged step,
  the newest checkpoint, whether a checkpoint was half-written, and whether it came in start-up."""
  log = []
  seconds_per_step = (total - startup) / STEPS
  for _ in range(kills):
    resumed_from = _latest(run) or 0
    half_written = set((run / "checkpoints").glob("*.orbax-checkpoint-tmp*"))
    launched = time.time()
    proc = _cli(run, *EXTRA, steps=STEPS)
    if rng.random() < 0.3:  # within the shortest start-up seen so far (re-runs find a warm cache)
      time.sleep(rng.uniform(0.0, 0.8 * startup))
    else:
      _wait_for_training(run, proc, resumed_from, launched)
      startup = min(startup, time.time() - launched)
      time.sleep(rng.uniform(0.0, 3 * EVERY * seconds_per_step))
    if proc.poll() is not None:  # finished before the kill: it must have finished well
      _finished_cleanly(proc)
      break
    metrics = run / "metrics.jsonl"  # start-up: this re-run has not logged a step past its checkpoint
    in_startup = not metrics.exists() or metrics.stat().st_mtime <= launched or (
        _last_logged_step(run) <= resumed_from)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    latest = _latest(run)
    partial = bool(set((run / "checkpoints").glob("*.orbax-checkpoint-tmp*")) - half_written)
    log.append(dict(reached=_last_logged_step(run), checkpoint=latest, mid_write=partial,
                    resumed_from=resumed_from, in_startup=in_startup))
  _finished_cleanly(_cli(run, *EXTRA, steps=STEPS))
  return log


@pytest.mark.slow
def test_random_kills_of_the_trainer(tmp_path):
  reference = tmp_path / "reference"
  startup, total = _timed_reference(reference)
  log = kill_and_rerun(tmp_path / "run", TRAINER_KILLS, random.Random(0), startup, total)
  print(f"reference: start-up {startup:.1f} s of {total:.1f} s; {len(log)} kills at steps "
        f"{[k['reached'] for k in log]}; {sum(k['in_startup'] for k in log)} in start-up (before "
        f"the re-run's first step), "
        f"{sum(k['mid_write'] for k in log)} with a checkpoint half-written")
  assert len(log) == TRAINER_KILLS, log
  for kill in log:  # what a re-run redoes: the logged steps after its checkpoint
    assert kill["reached"] - (kill["checkpoint"] or 0) <= EVERY, log
  assert 0 < sum(k["in_startup"] for k in log) <= TRAINER_KILLS // 2, log
  for a, b in zip(_params(tmp_path / "run", STEPS), _params(reference, STEPS)):
    np.testing.assert_array_equal(a, b)
  ours, theirs = (json.loads((d / "eval.json").read_text()) for d in (tmp_path / "run", reference))
  assert ours == theirs
  ours, theirs = ([(r["step"], r.get("loss")) for r in map(json.loads, (d / "metrics.jsonl").open())]
                  for d in (tmp_path / "run", reference))
  assert ours == theirs  # each step logged once, with the uninterrupted run's loss


def _sweep(out: Path) -> subprocess.Popen:
  cmd = _sweep_cmd(out, "--batch-sizes", "16,64,256", "--seeds", "0")
  return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_random_kills_of_the_sweep_driver(tmp_path):
  """Kills at random moments within the first third of an uninterrupted sweep's time; the re-runs carry
  on, and the final results.csv equals the uninterrupted sweep's in every metric."""
  start = time.perf_counter()
  _finished_cleanly(_sweep(tmp_path / "reference"))
  total = time.perf_counter() - start
  rng, out, kills = random.Random(1), tmp_path / "killed", 0
  for _ in range(SWEEP_KILLS):
    proc = _sweep(out)
    time.sleep(rng.uniform(1.0, total / 3))
    if proc.poll() is not None:
      _finished_cleanly(proc)
      break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills += 1
    if (out / "results.csv").exists():
      df = pd.read_csv(out / "results.csv")
      assert df["run_id"].is_unique and not df.isna().all(axis=1).any()
  _finished_cleanly(_sweep(out))
  print(f"{kills} kills of the sweep driver (uninterrupted sweep: {total:.1f} s)")
  assert kills == SWEEP_KILLS
  final, reference = (pd.read_csv(d / "results.csv").sort_values("run_id").reset_index(drop=True)
                      for d in (out, tmp_path / "reference"))
  assert final["run_id"].is_unique and list(final["run_id"]) == list(reference["run_id"])
  metrics = [c for c in reference.columns if any(k in c for k in ("loss", "gap", "top1"))]
  pd.testing.assert_frame_equal(final[metrics], reference[metrics])
