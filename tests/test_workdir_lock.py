"""The one lock helper (basic_core/workdir_lock.py) that the trainer's workdir and the Ray backend's runs
take: a second holder is refused naming the first, and a file whose holder is gone is not held."""

import os
import re
import socket
import subprocess
import sys

import pytest

from basic_core.workdir_lock import WorkdirLocked, hold, hold_workdir, holder

ME = f"host {socket.gethostname()}, pid {os.getpid()}"


def test_a_second_writer_of_a_workdir_is_refused_and_told_who_holds_it(tmp_path):
  """flock locks belong to an open file, so a second open in this same process is refused too."""
  refused = pytest.raises(WorkdirLocked, match=re.escape(f"in use by another trainer ({ME})"))
  with hold_workdir(tmp_path / "run"):
    assert holder(tmp_path / "run" / ".lock") == ME
    with refused, hold_workdir(tmp_path / "run"):
      pass
  assert holder(tmp_path / "run" / ".lock") is None
  with hold_workdir(tmp_path / "run"):  # released on exit: the next trainer takes it
    pass


def test_a_lock_whose_holder_was_killed_is_not_held(tmp_path):
  lock = tmp_path / "run.running"
  code = ("import os, sys; from basic_core.workdir_lock import hold\n"
          "with hold(sys.argv[1], wait=True): os.kill(os.getpid(), 9)")
  proc = subprocess.run([sys.executable, "-c", code, str(lock)], capture_output=True, text=True)
  assert proc.returncode == -9, proc.stderr
  assert lock.read_text().startswith("host ") and holder(lock) is None
  with hold(lock, wait=False):
    assert holder(lock) == ME
  assert holder(tmp_path / "never") is None
