"""Test set-up: 8 simulated CPU devices for the sharding tests, set before JAX starts its backend; a tiny run
trained once per session for the tests that only read a workdir."""

import os
from pathlib import Path

import pytest

from basic_core.perf.xla_flags import DEVICE_FLAG, FAST_COMPILE_FLAGS

# XLA:CPU's code generation is much of the suite's time (hundreds of tiny programs, each run a few steps):
# every test, and every process a test starts (`xla_flags.child_env`), compiles with FAST_COMPILE. Tests
# check numbers, not speed; both sides of every comparison compile the same way.
os.environ.setdefault("XLA_FLAGS", f"{DEVICE_FLAG}=8 {FAST_COMPILE_FLAGS}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")  # for child processes (hostmem.py)
# Compiled programs shared by the pytest-xdist workers and the trainer / sweep processes the tests start:
# most tests compile the same tiny steps. Only programs that take over a second to compile are stored.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(Path(__file__).resolve().parents[1] / "runs" / "jax-cache-tests"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

import jax  # noqa: E402  (must follow the environment set-up above)

jax.config.update("jax_numpy_rank_promotion", "raise")

# A few steps of `tiny` (tests/test_train.py's quick variant): evaluation sets of 128 images in chunks of 64.
TINY_RUN = ["train.batch_size=32", "train.log_every=5", "train.checkpoint_every=5", "train.progress=False",
            "data.num_train=2000", "data.num_test=256", "eval.batch_size=64", "eval.num_pairs=256",
            "eval.num_images=128", "train.steps=5"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, worker_id):
  """A workdir of TINY_RUN trained once per test session, not once per pytest-xdist worker (the workers
  share their base temp folder's parent and take turns on a lock); its users only read it."""
  from basic_core import train  # imported here: most test sessions never train
  from basic_core.configs import get_config
  from basic_core.workdir_lock import hold

  shared = tmp_path_factory.getbasetemp()
  shared = shared.parent if worker_id != "master" else shared
  path = shared / "tiny_run"
  with hold(shared / "tiny_run.lock", wait=True):
    if not (path / "eval.json").exists():
      train.train(get_config("tiny", TINY_RUN), path)
  return path


def pytest_runtest_setup(item):
  """Fail a test marked xdist_group whose mark `--dist loadgroup` lost (loadgroup appends `@group` to its
  node id): its module's costly fixtures would be made once per worker, silently. pytest 9.2 with
  pytest-xdist 3.8 does that (pytest-xdist#1386); hence the pytest pin in pyproject.toml."""
  if (getattr(item.config.option, "loadgroup", False) and any(item.iter_markers("xdist_group"))
      and "@" not in item.nodeid.rsplit("]", 1)[-1]):
    pytest.fail("--dist loadgroup ignored this test's xdist_group mark: see pytest-xdist#1386 and the "
                "pytest pin in pyproject.toml", pytrace=False)
