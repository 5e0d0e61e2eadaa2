"""The trainer end to end: learning, exact resume after a kill, bad inputs, phase-1 pretraining + LiT."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from basic_core import checkpoint, data, train
from basic_core import state as state_lib
from basic_core.configs import ConfigError, get_config
from basic_core.perf.xla_flags import child_env
from basic_core.workdir_lock import WorkdirLocked, hold_workdir

ROOT = Path(__file__).resolve().parents[1]
# A small, quick variant of `tiny` for tests that only check plumbing.
# Its evaluation is the smallest that makes every number (a quarter of the trainer's time in a 40-step run).
QUICK = ["train.batch_size=32", "train.log_every=5", "train.checkpoint_every=10", "train.progress=False",
         "data.num_train=2000", "data.num_test=64", "eval.batch_size=32", "eval.num_pairs=64",
         "eval.num_images=32"]


def _params(workdir: Path, step: int | None = None):
  """Parameters of a workdir's checkpoint as flat numpy arrays."""
  _, restored, _, _ = state_lib.restore(workdir, step)
  return [np.asarray(x) for x in jax.tree.leaves(restored.state["params"])]


def _cli(workdir: Path, *extra: str, steps: int = 40) -> subprocess.Popen:
  """The trainer's command on QUICK + `extra`, without its final evaluation: these tests read checkpoints."""
  cmd = [sys.executable, "-m", "basic_core.train", "--config", "tiny", "--workdir", str(workdir),
         "--steps", str(steps), "--no-eval"] + [f"--set={s}" for s in QUICK + list(extra)]
  return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=child_env(1))


def test_tiny_memorises_a_small_training_set(tmp_path):
  """The quick learning check: on 64 pairs seen again and again, 30 steps take the loss from about log(32)
  to under a quarter of it (wrong or missing gradients leave it near log(32)). Learning that generalises,
  zero-shot above chance, needs 300 steps: the test below, in `make test-all`."""
  config = get_config("tiny", QUICK + ["data.num_train=64", "data.augment=False", "train.steps=30"])
  train.train(config, tmp_path, final_eval=False)
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  losses = [r["loss"] for r in records if "lr" in r]
  assert losses[0] > 0.8 * np.log(32) and losses[-1] < 0.25 * losses[0], losses


@pytest.mark.slow  # 300 steps: 60-75 s on a 2-core machine
def test_tiny_learns_and_beats_chance(tmp_path):
  """A few hundred steps of `tiny`: the loss falls clearly and zero-shot accuracy beats chance."""
  config = get_config("tiny", ["train.progress=False", "train.steps=300", "eval.num_pairs=256",
                               "eval.num_images=128", "data.num_test=256"])
  results = train.train(config, tmp_path)
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  losses = [r["loss"] for r in records if "loss" in r and "lr" in r]
  assert losses[-1] < 0.6 * losses[0], losses
  tasks = {t.name: t for t in data.eval_suite(config, data.get_tokenizer(config.data, 24)).tasks}
  for name, margin in (("colour", 0.4), ("count", 0.1)):
    chance = 1.0 / len(tasks[name].classnames)
    accuracy = results[f"zeroshot_{name}_top1"]
    assert accuracy > chance + margin, (name, accuracy, chance)


def test_metrics_schema_and_short_run(tmp_path):
  """Records every log_every steps and at the last; 5 steps, as the other quick runs (one compiled step)."""
  config = get_config("tiny", QUICK + ["train.steps=5", "train.log_every=2"])
  results = train.train(config, tmp_path)
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  step_records = [r for r in records if "lr" in r]
  assert [r["step"] for r in step_records] == [2, 4, 5]
  for key in ("step", "loss", "logit_scale", "lr", "grad_norm", "samples_per_s", "contrastive_batch_size"):
    assert key in step_records[0], key
  assert step_records[0]["contrastive_batch_size"] == 32
  assert "heldout_loss" in results and "gap_fixed_eval" in results
  assert any(k.startswith("zeroshot_") for k in results)
  assert list((tmp_path / "tb").iterdir()), "no TensorBoard event file"


def test_kill_and_resume_is_bit_identical(tmp_path):
  """SIGTERM mid-run, re-run the same command: final parameters equal an uninterrupted run exactly."""
  full, interrupted = tmp_path / "full", tmp_path / "interrupted"
  assert _cli(full).wait() == 0
  proc = _cli(interrupted)
  metrics = interrupted / "metrics.jsonl"
  deadline = time.time() + 120
  while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 1):
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)  # at once: the run must still be training (steps 5 to 40 are left)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 128 + signal.SIGTERM, err
  stopped_at = checkpoint.Checkpointer(interrupted, 5).latest_step()
  assert 0 < stopped_at < 40, stopped_at
  assert _cli(interrupted).wait() == 0
  for a, b in zip(_params(full, 40), _params(interrupted, 40)):
    np.testing.assert_array_equal(a, b)


def test_a_resumed_run_drops_the_records_it_will_redo(tmp_path):
  """Records past the restored step, and a line cut short by a kill, go before the run logs again."""
  lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in range(1, 6)] + ['{"step": 6, "lo']
  (tmp_path / "metrics.jsonl").write_text("\n".join(lines))
  train.MetricsWriter(tmp_path, resume_step=3).close()
  assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").open()] == [1, 2, 3]


@pytest.mark.parametrize("override,message", [
    ("model.text.layerz=4", "unknown config key 'model.text.layerz'"),
    ("model.text.heads=3", "not divisible by heads"),
    ("train.microbatch_size=24", "not divisible by train.microbatch_size"),
])
def test_bad_config_is_one_clear_message(tmp_path, override, message, capsys):
  argv = ["--config", "tiny", "--workdir", str(tmp_path), "--steps", "5"]
  assert train.main(argv + [f"--set={s}" for s in QUICK + [override]]) == 2
  err = capsys.readouterr().err
  assert message in err and "Traceback" not in err, err


def test_workdir_of_another_config_is_refused_and_kept(tmp_path):
  """A workdir of another config is refused, and so is one another trainer holds (one writer)."""
  train.train(get_config("tiny", QUICK + ["train.steps=5"]), tmp_path, final_eval=False)
  before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
  with pytest.raises(checkpoint.CheckpointError, match="another config.*model.embed_dim"):
    train.train(get_config("tiny", QUICK + ["train.steps=5", "model.embed_dim=32"]), tmp_path)
  with hold_workdir(tmp_path), pytest.raises(WorkdirLocked, match=f"pid {os.getpid()}"):
    train.train(get_config("tiny", QUICK + ["train.steps=5"]), tmp_path)
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before


def test_nan_loss_stops_without_touching_checkpoints(tmp_path):
  """The step whose loss is NaN is never saved; the checkpoints before it stay readable."""
  exploding = get_config("tiny", QUICK + ["train.steps=20", "optim.lr=1e30", "optim.clip_norm=0.0",
                                          "optim.warmup_steps=1", "train.checkpoint_every=1"])
  with pytest.raises(train.TrainingError, match=r"loss is (nan|-?inf) at step") as error:
    train.train(exploding, tmp_path)
  bad_step = int(re.search(r"at step (\d+)", str(error.value)).group(1))
  ckpt = checkpoint.Checkpointer(tmp_path, 5)
  assert ckpt.latest_step() == bad_step - 1
  ckpt.restore(state_lib.build(exploding).state)  # the last checkpoint is complete and restorable
  ckpt.close()


def test_pretrain_then_frozen_image_tower(tmp_path):
  """Phase 1 changes the image tower; with freeze_image=all phase 2 leaves it exactly as phase 1 did."""
  config = get_config("tiny", QUICK + ["train.steps=10", "pretrain.steps=20", "train.freeze_image=all"])
  train.train(config, tmp_path, final_eval=False)
  state = state_lib.build(config).state
  fresh = [np.asarray(x) for x in jax.tree.leaves(state["params"]["image"])]
  ckpt = checkpoint.Checkpointer(tmp_path, 5)
  after_pretrain = [np.asarray(x) for x in jax.tree.leaves(ckpt.restore(state, 0)[0]["params"]["image"])]
  final_state = ckpt.restore(state, 10)[0]
  final = [np.asarray(x) for x in jax.tree.leaves(final_state["params"]["image"])]
  text_0 = [np.asarray(x) for x in jax.tree.leaves(ckpt.restore(state, 0)[0]["params"]["text"])]
  text_10 = [np.asarray(x) for x in jax.tree.leaves(final_state["params"]["text"])]
  ckpt.close()
  assert any(not np.array_equal(a, b) for a, b in zip(fresh, after_pretrain)), "pretraining did nothing"
  for a, b in zip(after_pretrain, final):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(text_0, text_10)), "text tower did not train"


def test_evaluate_cli(tmp_path):
  """Scores a run trained without its final evaluation (no eval.json); also on a workdir written before the
  XLA:CPU knobs moved from `model.*` to `xla.*`."""
  assert train.train(get_config("tiny", QUICK + ["train.steps=5"]), tmp_path, final_eval=False) == dict(
      step=5, skipped_samples=0)
  assert not (tmp_path / "eval.json").exists()
  saved = json.loads((tmp_path / "config.json").read_text())
  saved["model"].update(saved.pop("xla"))  # the old layout
  (tmp_path / "config.json").write_text(json.dumps(saved))
  out = subprocess.run([sys.executable, "-m", "basic_core.evaluate", "--workdir", str(tmp_path), "--json"],
                       cwd=ROOT, capture_output=True, text=True, env=child_env(1))
  assert out.returncode == 0, out.stderr
  results = json.loads(out.stdout.strip().splitlines()[-1])
  assert results["step"] == 5 and 0 <= results["retrieval_i2t_r1"] <= 1
  assert json.loads((tmp_path / "eval.json").read_text())["step"] == 5


def test_config_errors_name_the_key():
  with pytest.raises(ConfigError, match="expects int"):
    get_config("tiny", ["train.batch_size=abc"])
  with pytest.raises(ConfigError, match="unknown config 'huge'"):
    get_config("huge")
  with pytest.raises(ConfigError, match="'model.dense_grad' moved to 'xla.dense_grad'"):
    get_config("tiny", ["model.dense_grad=autodiff"])
  with pytest.raises(ConfigError, match="xla.cpu_scheduler must be one of"):
    get_config("tiny", ["xla.cpu_scheduler=fast"])
  with pytest.raises(ConfigError, match="train.steps must be positive, got -5"):
    get_config("tiny", ["train.steps=-5"])


def test_a_run_that_could_not_be_evaluated_is_refused_before_training(tmp_path):
  with pytest.raises(ConfigError, match="only 64 usable held-out pairs for eval.batch_size=512"):
    train.train(get_config("tiny", QUICK + ["eval.batch_size=512"]), tmp_path / "run")
  assert not (tmp_path / "run").exists()


def _largest_array_file(step_dir: Path) -> Path:
  return max((p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in str(p)),
             key=lambda p: p.stat().st_size)


def _damage_array(step_dir: Path) -> None:
  """Truncates the largest array data file of a checkpoint's state to half its size."""
  biggest = _largest_array_file(step_dir)
  biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])


DAMAGE = (_damage_array,  # truncated array data
          lambda d: (d / "meta" / "metadata").write_bytes(b"\x84garbled"),  # corrupt metadata
          lambda d: _largest_array_file(d).unlink(),  # a missing array file
          lambda d: (d / "state" / "_METADATA").write_bytes(b""),  # empty array metadata
          lambda d: shutil.rmtree(d / "meta"))  # a missing item


@pytest.mark.parametrize("kinds", [pytest.param(2, id="two-kinds"),
                                   pytest.param(len(DAMAGE), id="all-kinds", marks=pytest.mark.slow)])
def test_damaged_checkpoints_are_set_aside_and_the_run_resumes_exactly(tmp_path, capsys, kinds):
  """Kinds of damage to the newest checkpoint, one after another: each is named, moved aside (never
  deleted), and the run resumes from the intact one, ending bit-identical to an uninterrupted run.
  With no intact checkpoint left, a clear error and nothing moved. (All five kinds: `-m slow`.)"""
  config = get_config("tiny", QUICK + ["train.steps=20"])
  train.train(config, tmp_path / "reference", final_eval=False)
  run = tmp_path / "run"
  train.train(config, run, final_eval=False)
  for damage in DAMAGE[:kinds]:
    damage(run / "checkpoints" / "20")
    train.train(config, run, final_eval=False)
    err = capsys.readouterr().err
    assert "checkpoint step 20" in err and "is damaged" in err and "resuming from step 10" in err, err
    for a, b in zip(_params(run, 20), _params(tmp_path / "reference", 20)):
      np.testing.assert_array_equal(a, b)
  names = ["10", "20", "damaged-20"] + [f"damaged-20-{k}" for k in range(2, kinds + 1)]
  assert sorted(p.name for p in (run / "checkpoints").iterdir()) == names
  for step in ("10", "20"):
    _damage_array(run / "checkpoints" / step)
  with pytest.raises(checkpoint.CheckpointError, match="no intact checkpoint.*nothing was moved"):
    train.train(config, run)
  assert sorted(p.name for p in (run / "checkpoints").iterdir()) == names


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0, reason="mounts a tmpfs")
def test_a_full_disk_keeps_the_last_checkpoint_and_the_rerun_resumes(tmp_path):
  """A 6 MB tmpfs holds two checkpoints of this run (about 2.9 MB each): the third write fails, its
  partial files are removed, the run stops naming the intact checkpoint; with space, the re-run resumes."""
  disk = tmp_path / "disk"
  disk.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)]).returncode:
    pytest.skip("cannot mount a tmpfs here")
  try:
    keep = "train.keep_checkpoints=5"
    proc = _cli(disk / "run", keep)
    _, err = proc.communicate(timeout=240)
    last = err.strip().splitlines()[-1]  # orbax's own logger prints its thread's traceback before it
    assert proc.returncode == 2 and last.startswith("error: could not write the checkpoint of step 20"), err
    assert "(step 10) is intact" in last, last
    assert sorted(p.name for p in (disk / "run" / "checkpoints").iterdir()) == ["0", "10"]
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    assert _cli(disk / "run", keep).wait() == 0
    assert checkpoint.Checkpointer(disk / "run", 5).latest_step() == 40
  finally:
    subprocess.run(["umount", "-l", str(disk)])
