"""The Ray backend: one line without Ray; --status from the output folder alone; a run that fails is
reported without stopping the others; a killed trainer is retried from its checkpoint; on a real
two-raylet cluster, a worker killed mid-run and then the driver killed, the re-run driver ends with the
local backend's results, row for row and bit for bit."""

import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from test_experiments import ROOT, _sweep_cmd

from basic_core.perf.xla_flags import child_env
from basic_core.workdir_lock import hold, holder
from experiments import ray_backend
from experiments.batch_size_sweep import main
from experiments.presets import PRESETS, Sweep
from experiments.runner import plan_runs

ENV = child_env(1)  # one device, as a sweep's trainers run outside the tests


def test_ray_backend_without_ray_says_how_to_install_in_one_line(tmp_path, capsys, monkeypatch):
  monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
  assert main(["--preset", "smoke", "--out", str(tmp_path / "out"), "--backend", "ray"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'pip install -e ".[cluster]"' in err[0], err
  assert not (tmp_path / "out").exists()


def test_status_reads_the_output_folder_and_starts_nothing(tmp_path, capsys):
  """done (eval.json), running (a live task holds the run's lock, or a local trainer its workdir's), failed
  (the driver's record), pending; a lock file left by a killed task is not held, so that run reads pending,
  with its checkpoint."""
  sweep = dataclasses.replace(PRESETS["smoke"], seeds=(0, 1))
  (tmp_path / "sweep.json").write_text(json.dumps(dataclasses.asdict(sweep)))
  ids = [r.run_id for r in plan_runs(sweep)]
  dirs = [tmp_path / "runs" / rid for rid in ids]
  for d in dirs:
    d.mkdir(parents=True)
  (dirs[0] / "eval.json").write_text("{}")
  (dirs[2].parent / f"{ids[2]}.failed.json").write_text(json.dumps(dict(error="run x failed: boom")))
  for d in dirs[3:5]:
    (d / "checkpoints" / "16").mkdir(parents=True)
  (dirs[4].parent / f"{ids[4]}.running").write_text("host gone, pid 1\n")  # its task was killed
  with hold(dirs[1].parent / f"{ids[1]}.running", wait=True), hold(dirs[5] / ".lock", wait=True):
    before = sorted(tmp_path.rglob("*"))
    assert main(["--out", str(tmp_path), "--status"]) == 0
    assert sorted(tmp_path.rglob("*")) == before
  lines = capsys.readouterr().out.strip().splitlines()
  states = dict(line.split()[:2] for line in lines[:-1])
  assert [states[rid] for rid in ids] == ["done", "running", "failed", "pending", "pending", "running"]
  assert f"pid {os.getpid()}" in lines[1] and "boom" in lines[2] and "resumes from step 16/" in lines[4]
  assert f"pid {os.getpid()}" in lines[5]
  assert lines[-1] == "1 done, 2 running, 1 failed, 2 pending"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_saved_sweep_reads_back_as_itself(name):
  """sweep.json (`dataclasses.asdict`) -> `Sweep.from_dict`: the same sweep, parts and margins included."""
  saved = json.loads(json.dumps(dataclasses.asdict(PRESETS[name])))
  assert Sweep.from_dict(saved) == PRESETS[name]


def _status_counts(out: Path) -> dict[str, int]:
  states = [state for _, state, _ in ray_backend.status(out)]
  return {s: states.count(s) for s in ray_backend.STATES}


def test_a_failing_run_is_reported_and_the_others_finish(tmp_path):
  """A workdir holding another config fails its run at once, every time: no retry, its error (the
  trainer's own line) on stderr and in --status, exit 1, and the other run's row in results.csv."""
  pytest.importorskip("ray")
  cmd = _sweep_cmd(tmp_path, "--batch-sizes", "64,256", "--seeds", "0", "--backend", "ray", "--jobs", "2")
  bad = tmp_path / "runs" / plan_runs(dataclasses.replace(PRESETS["smoke"], batch_sizes=(64,),
                                                          seeds=(0,)))[0].run_id
  bad.mkdir(parents=True)
  (bad / "config.json").write_text(json.dumps({"seed": 12345}))
  proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True)
  assert proc.returncode == 1, proc.stderr
  assert f"{bad.name}: run {bad.name} failed (exit 2)" in proc.stderr
  assert "holds a run of another config" in proc.stderr
  assert pd.read_csv(tmp_path / "results.csv")["batch_size"].tolist() == [256]
  assert _status_counts(tmp_path) == dict(done=1, running=0, failed=1, pending=0)
  assert (bad.parent / f"{bad.name}.log").read_text().count("[ray_backend") == 1  # not retried


def test_a_killed_trainer_is_retried_and_resumes_from_its_checkpoint(tmp_path):
  """A trainer killed by a signal (the OOM killer, say) is the machine's doing, not the run's: Ray retries
  the task, in the same worker, and the run resumes from its newest checkpoint."""
  pytest.importorskip("ray")
  cmd = _sweep_cmd(tmp_path, "--batch-sizes", "16", "--seeds", "0", "--backend", "ray", "--jobs", "1")
  driver = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  workdir, worker = _wait_for(lambda: _mid_run_worker(tmp_path), 300, "the run reached no second checkpoint")
  step = ray_backend._checkpoint_step(workdir)
  psutil.Process(worker).children()[0].kill()
  out, err = driver.communicate()
  assert driver.returncode == 0, err
  assert "RunKilled" in out and "will be retried" in out  # Ray's words (its log lines go to stdout)
  starts = _starts(workdir)
  assert len(starts) == 2 and f"pid {worker}," in starts[1], starts
  assert int(re.search(r"resuming from checkpoint step (\d+)", starts[1]).group(1)) >= step
  assert pd.read_csv(tmp_path / "results.csv")["run_id"].tolist() == [workdir.name]


def _free_ports(n: int) -> list[int]:
  with contextlib.ExitStack() as stack:
    socks = [stack.enter_context(socket.socket()) for _ in range(n)]
    for s in socks:
      s.bind(("127.0.0.1", 0))
    return [s.getsockname()[1] for s in socks]


def _node_ports(ports: list[int]) -> list[str]:
  """Ports of their own for the services of each raylet (two share this machine)."""
  names = ("node-manager", "object-manager", "dashboard-agent-listen", "dashboard-agent-grpc",
           "runtime-env-agent", "metrics-export")
  return [f"--{name}-port={port}" for name, port in zip(names, ports)]


@contextlib.contextmanager
def two_raylets(tmp: Path):
  """(address, logs folder) of a Ray head and a second node on this machine, one CPU each, each `ray start
  --block`; stopped by terminating exactly those two commands (each stops what it started), not by
  `ray stop`, which would stop every Ray on the machine."""
  ray = str(Path(sys.executable).with_name("ray"))
  port, *ports = _free_ports(13)
  common = ["--num-cpus=1", "--num-gpus=0", "--object-store-memory=100000000", "--disable-usage-stats",
            "--block"]
  address = f"127.0.0.1:{port}"
  # Ray's session folder holds unix sockets, whose paths must stay under 108 bytes: not in tmp_path.
  with tempfile.TemporaryDirectory(prefix="ray-", dir="/tmp") as short:
    nodes = [[ray, "start", "--head", f"--port={port}", f"--temp-dir={short}", "--include-dashboard=false",
              *_node_ports(ports[:6]), *common],
             [ray, "start", f"--address={address}", "--include-log-monitor=false", *_node_ports(ports[6:]),
              *common]]
    procs = []
    try:
      for i, cmd in enumerate(nodes):
        log = tmp / f"node{i}.log"
        procs.append(subprocess.Popen(cmd, env=ENV, stdout=log.open("w"), stderr=subprocess.STDOUT))
        _wait_for_cpus(address, i + 1, procs[-1], log)
      yield address, Path(short) / "session_latest" / "logs"
    finally:
      started = [c for p in procs for c in psutil.Process(p.pid).children(recursive=True)]
      for p in reversed(procs):
        p.terminate()
        p.wait(timeout=120)
      _, alive = psutil.wait_procs(started, timeout=60)
      for p in alive:
        p.kill()


def _wait_for_cpus(address: str, cpus: int, node: subprocess.Popen, log: Path) -> None:
  probe = (f"import ray; ray.init(address={address!r}, logging_level='ERROR'); "
           "print(int(ray.cluster_resources().get('CPU', 0)))")
  deadline = time.time() + 180
  while time.time() < deadline and node.poll() is None:
    with contextlib.suppress(subprocess.TimeoutExpired):
      proc = subprocess.run([sys.executable, "-c", probe], env=ENV, capture_output=True, text=True,
                            timeout=60)
      if proc.returncode == 0 and int(proc.stdout.split()[-1]) == cpus:
        return
    time.sleep(1)
  raise RuntimeError(f"the Ray cluster at {address} never had {cpus} CPUs:\n{log.read_text()[-3000:]}")


def _wait_for(condition, timeout: float, what: str):
  deadline = time.time() + timeout
  while time.time() < deadline:
    value = condition()
    if value:
      return value
    time.sleep(0.2)
  raise TimeoutError(what)


def _mid_run_worker(out: Path) -> tuple[Path, int] | None:
  """(workdir, Ray worker pid) of an N = 16 run (192 steps) being trained, with a checkpoint at step 16
  or later."""
  for lock in (out / "runs").glob("*.running"):
    task, workdir = holder(lock), lock.with_suffix("")
    if task and "-N16-" in workdir.name and ray_backend._checkpoint_step(workdir) >= 16:
      return workdir, int(task.rsplit("pid ", 1)[1])
  return None


def _starts(workdir: Path) -> list[str]:
  return [line for line in (workdir.parent / f"{workdir.name}.log").read_text().splitlines()
          if line.startswith("[ray_backend")]


@pytest.mark.slow
def test_worker_and_driver_killed_on_a_two_raylet_cluster(tmp_path):
  """The smoke sweep on the local backend (--jobs 2), then on a head and a second raylet (one CPU each):
  a Ray worker SIGKILLed mid-run is retried and resumes from its checkpoint; then the driver is SIGKILLed,
  --status soon shows no run running, and the re-run driver finishes the sweep. results.csv: the local
  backend's run IDs, once each, and the same metrics, bit for bit (the same trainers, the same threads)."""
  pytest.importorskip("ray")
  start = time.perf_counter()
  local = subprocess.run(_sweep_cmd(tmp_path / "local", "--jobs", "2"), cwd=ROOT, env=ENV,
                         capture_output=True, text=True)
  assert local.returncode == 0, local.stderr
  local_s, out = time.perf_counter() - start, tmp_path / "ray"
  with two_raylets(tmp_path) as (address, logs):
    cmd = _sweep_cmd(out, "--backend", "ray", "--address", address, "--max-retries", "2")
    driver = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    workdir, pid = _wait_for(lambda: _mid_run_worker(out), 600, "no run reached its second checkpoint")
    step, trainers = ray_backend._checkpoint_step(workdir), psutil.Process(pid).children()
    os.kill(pid, signal.SIGKILL)
    killed = time.time()
    print(f"SIGKILL to Ray worker pid {pid} running {workdir.name} at checkpoint step {step}")
    _, orphans = psutil.wait_procs(trainers, timeout=30)
    assert trainers and not orphans, "the trainer outlived its Ray worker"
    _wait_for(lambda: len(_starts(workdir)) == 2, 300, "the killed run was not retried")
    retried = time.time() - killed
    events = [json.loads(line)["message"] for f in logs.glob("events/event_RAYLET*.log")
              for line in f.read_text().splitlines() if f"Worker PID: {pid} " in line]
    time.sleep(2)  # for the driver to print what Ray told it
    os.kill(driver.pid, signal.SIGKILL)
    driver_out, driver_err = driver.communicate()
    killed = time.time()
    _wait_for(lambda: _status_counts(out)["running"] == 0, 60, "runs still running after the driver died")
    stale_s = time.time() - killed
    print(f"driver killed; --status shows no run running after {stale_s:.1f} s: {_status_counts(out)}")
    rerun = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
  ray_s = time.perf_counter() - start - local_s
  print("raylet event:", *events, "driver (killed):", *driver_err.strip().splitlines(),
        *driver_out.strip().splitlines(), "run log:", *_starts(workdir), sep="\n")
  print(f"retry started {retried:.1f} s after the kill; local backend {local_s:.0f} s, Ray backend with "
        f"both kills and the re-run {ray_s:.0f} s")
  resumed = int(re.search(r"resuming from checkpoint step (\d+)", _starts(workdir)[1]).group(1))
  assert resumed >= step
  final, reference = (pd.read_csv(d / "results.csv").sort_values("run_id").reset_index(drop=True)
                      for d in (out, tmp_path / "local"))
  assert final["run_id"].is_unique and list(final["run_id"]) == list(reference["run_id"])
  assert len(final) == len(plan_runs(PRESETS["smoke"]))
  pd.testing.assert_frame_equal(final, reference, check_exact=True)
  assert _status_counts(out)["done"] == len(final)
