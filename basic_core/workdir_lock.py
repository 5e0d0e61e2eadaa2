"""One writer per workdir: an exclusive OS lock held by the trainer for its whole run.

`fcntl.flock` on DIR/.lock: the kernel releases it when the holding process exits, however it exits
(SIGKILL included), so a killed run never leaves a stale lock. The holder writes its host and pid into
the file, so a refused second trainer can say who holds the workdir. Only process 0 of a multi-process
run takes it (the processes of one run share the workdir). POSIX only: on other systems it is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

try:
  import fcntl
except ImportError:  # not POSIX
  fcntl = None


class WorkdirLocked(RuntimeError):
  """Another live process is training in this workdir; the message names it."""


@contextlib.contextmanager
def hold_workdir(workdir: Path) -> Iterator[None]:
  """Holds DIR/.lock exclusively for the body; raises WorkdirLocked at once if another process does."""
  if fcntl is None:
    yield
    return
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  with (workdir / ".lock").open("a+") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or "an unknown process"
      raise WorkdirLocked(f"workdir {workdir} is in use by another trainer ({holder}); wait for it to "
                          "finish or stop it, or use another --workdir") from None
    try:
      f.seek(0)
      f.truncate()
      f.write(f"host {socket.gethostname()}, pid {os.getpid()}\n")
      f.flush()
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)
