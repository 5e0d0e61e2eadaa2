"""Test set-up: 8 simulated CPU devices for the sharding tests, set before JAX starts its backend."""

import os
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")  # for child processes (hostmem.py)
# Compiled programs shared by the pytest-xdist workers and the trainer / sweep processes the tests start:
# most tests compile the same tiny steps. Only programs that take over a second to compile are stored.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(Path(__file__).resolve().parents[1] / "runs" / "jax-cache-tests"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

import jax  # noqa: E402  (must follow the environment set-up above)

jax.config.update("jax_numpy_rank_promotion", "raise")
