"""XLA:CPU flags as data, without importing JAX: tests/conftest.py sets them before JAX starts.

FAST_COMPILE turns off LLVM's optimisation and XLA:CPU's fusion emitters. On tiny programs compiled once
and run a few steps (the memory check, the test suite) code generation is much of the time, and these
halve it (one compile-bound test: 28 to 14 CPU-s); temp bytes move by under 1% (plan_xla's docstring has
the numbers). Not for timing: the compiled code runs slower.
"""

from __future__ import annotations

import os

FAST_COMPILE = dict(xla_backend_optimization_level=0, xla_llvm_disable_expensive_passes=True,
                    xla_cpu_use_fusion_emitters=False)
FAST_COMPILE_FLAGS = " ".join(f"--{k}={str(v).lower()}" for k, v in FAST_COMPILE.items())
DEVICE_FLAG = "--xla_force_host_platform_device_count"


def child_env(devices: int) -> dict:
  """This environment with `devices` simulated CPU devices, every other XLA flag kept: for a process
  started from this one (a test's trainer runs on one device, as real runs do)."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_FLAG)]
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(flags + [f"{DEVICE_FLAG}={devices}"]))
