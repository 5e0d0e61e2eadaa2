"""Host memory of XLA:CPU processes: the huge-page malloc setting, and freeing the compiler's memory.

XLA:CPU takes each step's temporary buffers (gigabytes for a real model) from malloc. glibc serves
large blocks with freshly mapped 4 KiB pages, so every step page-faults through its whole working set:
on the peer-vit step (batch 256, 2 cores) that was 2.9 s of kernel time per ~9 s step. With glibc's
`glibc.malloc.hugetlb=1` tunable, malloc asks for transparent huge pages and the kernel time falls to
~0.45 s (step 9.3 s -> 7.1 s, measured in one session). glibc reads tunables only when a process
starts, so the setting must be in the environment before Python starts; this project never re-executes
a process to set it. One mechanism sets it everywhere: the Makefile exports `GLIBC_TUNABLES` to every
target (training, sweeps, benchmarks, tests, notebooks), and `make setup` writes it into the venv's
Jupyter kernel spec. Run by hand, prefix the command with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`
(README, "Environment"). Without it everything works, only slower; `huge_page_malloc()` says which.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys

MALLOC_TUNABLE = "glibc.malloc.hugetlb=1"


def huge_page_malloc() -> bool:
  """Whether this process started with the huge-page malloc tunable (benchmarks record it)."""
  return MALLOC_TUNABLE in os.environ.get("GLIBC_TUNABLES", "")


def release_freed_memory() -> None:
  """Hands the C heap's free pages back to the OS (glibc's `malloc_trim`); a no-op without glibc.

  Compiling a step leaves XLA's freed working memory mapped in glibc's heap, and the step's temporaries
  are then mapped beside it, so the process's peak RSS counts both. Call it right after compiling.
  Peer-vit steps (`bench compare`, 2026-11-23): peak RSS 3068 -> 2703 MB plain, 3520 -> 3105
  accumulated, 2561 -> 2131 accumulated with remat.
  """
  if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError, AttributeError):  # not glibc
      ctypes.CDLL("libc.so.6").malloc_trim(0)
