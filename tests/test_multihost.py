"""Two processes x 4 simulated CPU devices (jax.distributed on 127.0.0.1, gloo collectives) reproduce one
process with 8 devices: same losses, and an orbax checkpoint of arrays split across the processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from basic_core import checkpoint, data, sharding
from basic_core import state as state_lib
from basic_core import step as step_lib
from basic_core.configs import get_config, microbatching
from basic_core.perf.xla_flags import FAST_COMPILE_FLAGS

# One xdist worker runs this module (make test: --dist loadgroup): its two runs, made once.
pytestmark = pytest.mark.xdist_group("multihost")

ROOT = Path(__file__).resolve().parents[1]
# FSDP over data x model = all 8 devices: every parameter is split across both processes.
SETTINGS = ["train.batch_size=16", "train.microbatch_size=8", "train.log_every=1",
            "train.checkpoint_every=2", "train.progress=False", "mesh.data=2", "mesh.model=4",
            "mesh.rules='fsdp'", "model.image.vit.layers=1", "model.text.layers=1", "data.num_train=256",
            "data.num_test=64", "eval.batch_size=32", "eval.num_pairs=64", "eval.num_images=32"]


def _launch(workdir: Path, steps: int) -> None:
  cmd = [sys.executable, "scripts/launch_local.py", "--num-processes", "2", "--devices-per-process", "4",
         "--timeout", "400", "--", sys.executable, "-m", "basic_core.train", "--config", "tiny",
         "--workdir", str(workdir), "--steps", str(steps)] + [f"--set={s}" for s in SETTINGS]
  run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "XLA_FLAGS": FAST_COMPILE_FLAGS})  # launch_local sets devices
  assert run.returncode == 0, run.stdout[-4000:]


def _losses(workdir: Path) -> list[float]:
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [r["loss"] for r in records if "lr" in r]


@pytest.fixture(scope="module")
def reference():
  """One process, 8 devices, the same mesh and data: losses of 4 steps, the parameters after 3, and the
  final state (a restore target with the shardings of this process)."""
  config = get_config("tiny", SETTINGS)
  mesh = sharding.make_mesh(config.mesh)
  built = state_lib.build(config, mesh=mesh)  # as the trainer builds it
  batch_sharding = sharding.batch_sharding(mesh)
  pipeline = data.train_pipeline(config, data.get_tokenizer(config.data, config.model.text.context))
  batches = [sharding.put_batch(next(pipeline), batch_sharding) for _ in range(4)]
  pipeline.close()
  step = step_lib.make_train_step(built.fns, built.tx, config.loss, seed=config.seed,
                                  microbatches=microbatching(config.train)[1])
  step = step_lib.jit_train_step(step, built.sharding, batch_sharding, xla=config.xla)
  step = step.lower(built.state, batches[0]).compile()
  state, losses, params_after_3 = built.state, [], None
  for s, batch in enumerate(batches):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
    if s == 2:
      params_after_3 = sharding.to_host(state["params"])
  return np.array(losses), params_after_3, state


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("multihost")
  _launch(workdir, steps=3)
  return workdir


def test_two_processes_reproduce_one_process_and_checkpoint_across_them(reference, two_processes):
  ref_losses, ref_params, target = reference
  np.testing.assert_allclose(_losses(two_processes), ref_losses[:3], rtol=1e-5)
  # The step-3 checkpoint holds arrays that were split across the two processes; read it in one.
  ckpt = checkpoint.Checkpointer(two_processes, 2)
  restored, meta = ckpt.restore(target, 3)
  ckpt.close()
  assert meta["data"]["position"] == 3 * 16
  flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])
  got, want = flat(sharding.to_host(restored["params"])), flat(ref_params)
  assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want)


@pytest.mark.slow
def test_two_processes_resume_from_their_checkpoint(reference, two_processes):
  """A second 2-process launch restores the step-3 checkpoint collectively and continues exactly."""
  _launch(two_processes, steps=4)
  np.testing.assert_allclose(_losses(two_processes), reference[0], rtol=1e-5)
