"""The entry points' one-time re-exec that sets glibc's huge-page malloc tunable."""

import os
import subprocess
import sys

SHOW = ("from basic_core import runtime; import os, sys; runtime.reexec_with_malloc_tunables(); "
        "print(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])")


def run(env_changes):
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  env.update(env_changes)
  return subprocess.run([sys.executable, "-c", SHOW, "a", "b"], env=env, capture_output=True,
                        text=True, check=True).stdout.strip()


def test_reexec_adds_the_tunable_and_keeps_the_arguments():
  assert run({}) == "glibc.malloc.hugetlb=1 ['a', 'b']"
  assert run({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}) == (
      "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1 ['a', 'b']")


def test_reexec_can_be_turned_off():
  assert run({"BASIC_JAX_NO_REEXEC": "1"}) == "None ['a', 'b']"
