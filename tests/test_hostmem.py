"""Host memory: the huge-page malloc tunable comes from the environment (set by the Makefile, never by a
re-exec), and freed heap pages are handed back after compiling."""

import ctypes
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from basic_core import hostmem

ROOT = Path(__file__).resolve().parents[1]


def test_huge_page_malloc_reads_the_environment_and_nothing_sets_it():
  """The tunable is whatever the process started with: nothing in the package re-executes the process
  to add it (the entry points before 2026-11-27 did)."""
  show = "import basic_core.train; from basic_core import hostmem; print(hostmem.huge_page_malloc())"
  for tunables, expected in (("", "False"), ("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", "True")):
    env = {**os.environ, "GLIBC_TUNABLES": tunables}
    out = subprocess.run([sys.executable, "-c", show], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [expected]


def test_the_makefile_exports_the_tunable_and_writes_it_into_the_kernel_spec():
  makefile = (ROOT / "Makefile").read_text()
  assert re.search(rf"^export GLIBC_TUNABLES \?= {re.escape(hostmem.MALLOC_TUNABLE)}$", makefile, re.M)
  assert re.search(r"ipykernel install .*--env GLIBC_TUNABLES \$\(GLIBC_TUNABLES\)", makefile)


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
  hostmem.release_freed_memory()
  assert before - resident_mb() > 100
  libc.free(blocks[-1])
