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
STEPS, EVERY = 60, 10
EXTRA = ("train.log_every=1", f"train.checkpoint_every={EVERY}", "train.eval_every=30")


def _last_logged_step(workdir: Path) -> int:
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return 0
  steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if '"lr"' in line]
  return max(steps, default=0)


def kill_and_rerun(run: Path, kills: int, rng: random.Random) -> list[dict]:
  """Up to `kills` SIGKILLs at random moments, each followed by a re-run; returns what each kill left."""
  log = []
  for _ in range(kills):
    proc = _cli(run, *EXTRA, steps=STEPS)
    time.sleep(rng.uniform(0.5, 12.0))
    if proc.poll() is not None:  # finished before the kill
      break
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    latest = checkpoint.Checkpointer(run, 5).latest_step() if (run / "checkpoints").exists() else None
    log.append(dict(reached=_last_logged_step(run), checkpoint=latest))
  assert _cli(run, *EXTRA, steps=STEPS).wait() == 0
  return log


@pytest.mark.slow
def test_random_kills_of_the_trainer(tmp_path):
  reference = tmp_path / "reference"
  assert _cli(reference, *EXTRA, steps=STEPS).wait() == 0
  log = kill_and_rerun(tmp_path / "run", TRAINER_KILLS, random.Random(0))
  for kill in log:  # what a re-run redoes: the logged steps after its checkpoint
    assert kill["reached"] - (kill["checkpoint"] or 0) <= EVERY, log
  for a, b in zip(_params(tmp_path / "run", STEPS), _params(reference, STEPS)):
    np.testing.assert_array_equal(a, b)
  ours, theirs = (json.loads((d / "eval.json").read_text()) for d in (tmp_path / "run", reference))
  assert ours == theirs
  print(f"{len(log)} kills at steps {[k['reached'] for k in log]}")


@pytest.mark.slow
def test_random_kills_of_the_sweep_driver(tmp_path):
  rng = random.Random(1)
  cmd = _sweep_cmd(tmp_path, "--batch-sizes", "16,64,256", "--seeds", "0")
  kills = 0
  for _ in range(SWEEP_KILLS):
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(1.0, 20.0))
    if proc.poll() is not None:
      break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills += 1
    if (tmp_path / "results.csv").exists():
      df = pd.read_csv(tmp_path / "results.csv")
      assert df["run_id"].is_unique and not df.isna().all(axis=1).any()
  assert subprocess.run(cmd, cwd=ROOT, capture_output=True).returncode == 0
  final = pd.read_csv(tmp_path / "results.csv")
  assert sorted(final["batch_size"]) == [16, 64, 256] and final["run_id"].is_unique
  print(f"{kills} kills of the sweep driver")
