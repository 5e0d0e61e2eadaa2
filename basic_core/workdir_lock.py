"""One writer per workdir: an exclusive OS lock held by the trainer for its whole run; and the lock itself
(`hold`, `holder`), which the sweep's Ray backend also takes on each run it trains.

`fcntl.flock` on DIR/.lock: the kernel releases it when the holding process exits, however it exits
(SIGKILL included), so a killed run never leaves a stale lock. The holder writes its host and pid into
the file, so a refused second trainer can say who holds the workdir. Only process 0 of a multi-process
run takes it (the processes of one run share the workdir). POSIX only: on other systems `hold_workdir`
is a no-op.
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
def hold(path: Path, *, wait: bool) -> Iterator[None]:
  """Holds `path` exclusively for the body, with this host and pid written in it. Without `wait`, raises
  BlockingIOError at once if another process holds it."""
  with Path(path).open("a+") as f:
    fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    try:
      f.seek(0)
      f.truncate()
      f.write(f"host {socket.gethostname()}, pid {os.getpid()}\n")
      f.flush()
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def holder(path: Path) -> str | None:
  """What the live holder of `path` wrote ("host H, pid P"; "" before it has), or None if no process
  holds it: a file left by a killed process is not held."""
  if not path.exists():
    return None
  with path.open() as f:
    try:
      fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
      return f.read().strip()
  return None


@contextlib.contextmanager
def hold_workdir(workdir: Path) -> Iterator[None]:
  """Holds DIR/.lock exclusively for the body; raises WorkdirLocked at once if another process does."""
  if fcntl is None:
    yield
    return
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  with contextlib.ExitStack() as stack:
    try:
      stack.enter_context(hold(workdir / ".lock", wait=False))
    except BlockingIOError:
      who = holder(workdir / ".lock") or "an unknown process"
      raise WorkdirLocked(f"workdir {workdir} is in use by another trainer ({who}); wait for it to "
                          "finish or stop it, or use another --workdir") from None
    yield
