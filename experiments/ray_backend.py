"""A sweep's runs as Ray tasks, one task per run, on a cluster whose nodes all see the sweep's folder OUT.

Each task starts its run's trainer in a process of its own, as the local backend does (runner.py), in the
run's workdir under OUT: an interrupted run resumes from its own checkpoints wherever its next attempt
lands, and only the driver writes results.csv. A task whose worker dies (its trainer dies with it) or whose
trainer is killed is retried up to `max_retries` times; a run that fails by itself is recorded in
OUT/runs/<id>.failed.json and the others go on. While a task lives it holds OUT/runs/<id>.running locked:
the kernel drops the lock with the process, so `status` (which reads OUT and starts nothing) never calls a
killed run running.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import datetime
import json
import math
import os
import signal
import socket
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from basic_core.workdir_lock import hold, holder
from experiments import runner
from experiments.presets import Sweep

INSTALL = 'the Ray backend needs Ray, an optional extra: pip install -e ".[cluster]"'
STATES = ("done", "running", "failed", "pending")
_LOCAL_OBJECT_STORE = 2**27  # bytes: tasks pass run definitions only; results travel through OUT


class RunsFailed(RuntimeError):
  """Runs that failed for good (each also in OUT/runs/<id>.failed.json); every other run finished."""


class RayMissing(RuntimeError):
  """Ray is not installed: an optional extra, which the local backend does not need."""


def import_ray():
  """Ray, or RayMissing saying in one line how to install it."""
  try:
    import ray
  except ImportError:
    raise RayMissing(INSTALL) from None
  return ray


def _running_path(workdir: Path) -> Path:
  return workdir.parent / f"{workdir.name}.running"


def _failed_path(workdir: Path) -> Path:
  return workdir.parent / f"{workdir.name}.failed.json"


def _checkpoint_step(workdir: Path) -> int:
  """The newest checkpoint's step (orbax names its finished checkpoints by their step), 0 without one."""
  folder = workdir / "checkpoints"
  return max((int(p.name) for p in folder.iterdir() if p.name.isdigit()), default=0) if folder.exists() else 0


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_parent() -> None:
  """In the trainer, before it starts: SIGKILL when its Ray worker dies (PR_SET_PDEATHSIG), so that no
  orphaned trainer keeps training, and holding the workdir, while Ray retries the run."""
  _LIBC.prctl(1, signal.SIGKILL)


def _log(workdir: Path, line: str) -> None:
  with runner.run_log(workdir).open("a") as f:
    f.write(f"[ray_backend {datetime.datetime.now().isoformat(timespec='seconds')}] {line}\n")


def run_task(run: runner.Run, workdir: Path, jax_cache: str) -> None:
  """One run, in a Ray worker: its trainer in a child process (whose signal handlers need a main thread),
  the sweep's compiled-program cache unless the node sets its own."""
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", jax_cache)
  # Waits for the lock: a status probe holds it for microseconds, a second driver's task for as long as
  # the first driver's run of it lasts.
  with hold(_running_path(workdir), wait=True):
    if runner.is_finished(workdir):  # another driver's task finished it while this one waited
      return
    step = _checkpoint_step(workdir)
    _log(workdir, f"run starts on host {socket.gethostname()} in Ray worker pid {os.getpid()}, "
                  + (f"resuming from checkpoint step {step}" if step else "from scratch"))
    runner.run_subprocess(run, workdir, preexec_fn=_die_with_parent if _LIBC else None)


def _last_line(path: Path) -> str:
  lines = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
  return lines[-1] if lines else ""


@dataclasses.dataclass(frozen=True)
class RayBackend:
  """`runner.run_sweep(..., backend=RayBackend(...))`. `address`: "auto" or HOST:PORT of a running cluster,
  None to start a local Ray for the sweep with `jobs` x `cpus_per_run` CPUs (all of them when `jobs` is
  None). `jobs` also caps the runs in flight (None: as many as the cluster's resources allow)."""
  address: str | None = None
  jobs: int | None = None
  cpus_per_run: float = 1
  gpus_per_run: float = 0
  max_retries: int = 3

  def __call__(self, todo: list[runner.Run], out: Path, finished: Callable[[runner.Run], None]) -> None:
    ray = import_ray()
    cluster = dict(address=self.address) if self.address else dict(
        address="local", num_cpus=self.jobs and math.ceil(self.jobs * self.cpus_per_run),
        object_store_memory=_LOCAL_OBJECT_STORE, include_dashboard=False)
    with warnings.catch_warnings():  # Ray's tip that a future version will stop hiding GPUs from CPU tasks
      warnings.filterwarnings("ignore", "Tip: In future versions of Ray", FutureWarning)
      ray.init(**cluster)
    try:
      errors = self._run(ray, todo, out, finished)
    finally:
      ray.shutdown()
    if errors:
      raise RunsFailed(f"{len(errors)} run(s) failed, the others finished:"
                       + "".join(f"\n  {rid}: {error}" for rid, error in errors.items()))

  def _run(self, ray, todo, out, finished) -> dict[str, str]:
    task = ray.remote(run_task).options(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run,
                                        max_retries=self.max_retries, retry_exceptions=[runner.RunKilled])
    cache = os.environ["JAX_COMPILATION_CACHE_DIR"]  # runner.share_compiled_programs sets it
    queue, flying, errors = list(todo), {}, {}
    while queue or flying:
      while queue and len(flying) < (self.jobs or len(todo)):
        run = queue.pop(0)
        workdir = out / "runs" / run.run_id
        _failed_path(workdir).unlink(missing_ok=True)
        flying[task.remote(run, workdir, cache)] = run
      [ref], _ = ray.wait(list(flying))
      run = flying.pop(ref)
      try:
        ray.get(ref)
      except ray.exceptions.RayError as e:
        errors[run.run_id] = _record_failure(out / "runs" / run.run_id, e)
      else:
        finished(run)
    return errors


def _record_failure(workdir: Path, error: Exception) -> str:
  """The error of a run that failed for good, in one line (with the trainer's own last line), also
  written atomically to OUT/runs/<id>.failed.json for `status`."""
  cause = getattr(error, "cause", None) or error  # a RayTaskError wraps what the task raised
  text = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
  if isinstance(cause, runner.RunFailed):
    text += f": {_last_line(runner.run_log(workdir))}"
  path = _failed_path(workdir)
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(dict(error=text, time=datetime.datetime.now().isoformat(timespec="seconds"))))
  os.replace(tmp, path)
  return text


def status(out: Path) -> list[tuple[str, str, str]]:
  """(run id, state, detail) for every run of the sweep last started in OUT, read from OUT alone."""
  sweep = Sweep.from_dict(json.loads((out / "sweep.json").read_text()))
  rows = []
  for run in runner.plan_runs(sweep):
    workdir = out / "runs" / run.run_id
    step, steps = _checkpoint_step(workdir), run.config().train.steps
    # A Ray task holds <id>.running; a local run (or any trainer) holds the workdir's own lock. A holder
    # that has not written yet reads "" (held), not None.
    task = holder(_running_path(workdir))
    if task is None and workdir.is_dir():
      task = holder(workdir / ".lock")
    failed = _failed_path(workdir)
    if runner.is_finished(workdir):
      rows.append((run.run_id, "done", ""))
    elif task is not None:
      rows.append((run.run_id, "running", f"checkpoint step {step}/{steps}, {task or 'a Ray task'}"))
    elif failed.exists():
      rows.append((run.run_id, "failed", json.loads(failed.read_text())["error"]))
    else:
      rows.append((run.run_id, "pending", f"resumes from step {step}/{steps}" if step else ""))
  return rows


def print_status(out: Path) -> None:
  rows = status(out)
  width = max(len(rid) for rid, _, _ in rows)
  for rid, state, detail in rows:
    print(f"{rid:<{width}}  {state:<7}  {detail}".rstrip())
  counts = collections.Counter(state for _, state, _ in rows)
  print(", ".join(f"{counts[s]} {s}" for s in STATES))
