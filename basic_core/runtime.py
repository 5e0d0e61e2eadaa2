"""Process settings for XLA:CPU: a huge-page malloc tunable, and freeing the compiler's memory.

XLA:CPU takes each step's temporary buffers (gigabytes for a real model) from malloc. glibc serves
large blocks with freshly mapped 4 KiB pages, so every step page-faults through its whole working set:
on the peer-vit step (batch 256, 2 cores) that was 2.9 s of kernel time per ~9 s step. With glibc's
`glibc.malloc.hugetlb=1` tunable, malloc asks for transparent huge pages and the kernel time falls to
~0.45 s (step 9.3 s -> 7.1 s, measured in one session). glibc reads tunables only at process start, so
`reexec_with_malloc_tunables` re-executes the command once with the tunable set; child processes
inherit it. Call it only from `if __name__ == "__main__":`, never from library code (it replaces the
process). `BASIC_JAX_NO_REEXEC=1` turns it off.
"""

from __future__ import annotations

import ctypes
import os
import sys

MALLOC_TUNABLE = "glibc.malloc.hugetlb=1"


def reexec_with_malloc_tunables() -> None:
  """Re-executes this command with MALLOC_TUNABLE in GLIBC_TUNABLES, unless already set (or off)."""
  tunables = os.environ.get("GLIBC_TUNABLES", "")
  if (not sys.platform.startswith("linux") or MALLOC_TUNABLE in tunables
      or os.environ.get("BASIC_JAX_NO_REEXEC") == "1"):
    return
  env = {**os.environ, "GLIBC_TUNABLES": ":".join(filter(None, [tunables, MALLOC_TUNABLE]))}
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, env)


def release_freed_memory() -> None:
  """Hands the C heap's free pages back to the OS (glibc's `malloc_trim`); a no-op without glibc.

  Compiling a step leaves XLA's freed working memory mapped in glibc's heap, and the step's temporaries
  are then mapped beside it, so the process's peak RSS counts both. Call it right after compiling.
  Peer-vit steps (`bench compare`, 2026-11-23): peak RSS 3068 -> 2703 MB plain, 3520 -> 3105
  accumulated, 2561 -> 2131 accumulated with remat.
  """
  if sys.platform.startswith("linux"):
    try:
      ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
      pass
