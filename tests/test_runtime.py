"""Process settings: the entry points' one-time re-exec with glibc's huge-page malloc tunable, and
handing freed heap pages back after compiling."""

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from basic_core import runtime

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


def resident_mb() -> float:
  return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_release_freed_memory_returns_freed_heap_pages():
  libc = ctypes.CDLL("libc.so.6")
  libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
  size = 64 * 1024  # below glibc's mmap threshold: served from the heap, as compiler memory is
  blocks = [libc.malloc(size) for _ in range(3200)]  # 200 MiB
  for p in blocks:
    ctypes.memset(p, 1, size)
  for p in blocks[:-1]:  # the last block pins the heap top, so free() alone cannot shrink the heap
    libc.free(p)
  before = resident_mb()
  runtime.release_freed_memory()
  assert before - resident_mb() > 100
  libc.free(blocks[-1])
