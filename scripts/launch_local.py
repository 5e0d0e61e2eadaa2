"""Start N processes of one command on this machine as a multi-host JAX job (CPU collectives), for testing.

    python scripts/launch_local.py --num-processes 2 --devices-per-process 4 -- \
        python -m basic_core.train --config tiny --workdir runs/mh

Each process gets BASIC_COORDINATOR=127.0.0.1:PORT (a free port), BASIC_NUM_PROCESSES, BASIC_PROCESS_ID
(read by basic_core.distributed) and XLA_FLAGS simulating its devices. Output lines are prefixed with
the process id. The launcher waits for all of them; if one fails the others are stopped, and the exit
status is the first failure's (0 when all succeed).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(base: dict, *, port: int, num_processes: int, process_id: int, devices: int) -> dict:
  flags = [f for f in base.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  return {**base, "BASIC_COORDINATOR": f"127.0.0.1:{port}", "BASIC_NUM_PROCESSES": str(num_processes),
          "BASIC_PROCESS_ID": str(process_id), "JAX_PLATFORMS": "cpu",
          "XLA_FLAGS": " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])}


def _relay(process: subprocess.Popen, prefix: str) -> None:
  for line in process.stdout:
    sys.stdout.write(f"{prefix}{line}")
    sys.stdout.flush()


def launch(command: list[str], num_processes: int, devices_per_process: int,
           timeout: float | None = None) -> int:
  """Runs `command` as processes 0..N-1 and returns the first non-zero exit status, else 0."""
  port = free_port()
  processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=process_env(os.environ, port=port, num_processes=num_processes,
                                                process_id=i, devices=devices_per_process))
               for i in range(num_processes)]
  relays = [threading.Thread(target=_relay, args=(p, f"[{i}] "), daemon=True)
            for i, p in enumerate(processes)]
  for relay in relays:
    relay.start()
  deadline = None if timeout is None else time.monotonic() + timeout
  status = 0
  while any(p.poll() is None for p in processes):
    failed = [p.returncode for p in processes if p.returncode not in (None, 0)]
    expired = deadline is not None and time.monotonic() > deadline
    if failed or expired:
      status = failed[0] if failed else 124
      for p in processes:
        if p.poll() is None:
          p.terminate()
      break
    time.sleep(0.2)
  for p in processes:
    p.wait()
  for relay in relays:
    relay.join()
  return status or next((p.returncode for p in processes if p.returncode), 0)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--num-processes", type=int, default=2)
  parser.add_argument("--devices-per-process", type=int, default=4)
  parser.add_argument("--timeout", type=float, help="seconds before all processes are stopped (exit 124)")
  parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
  args = parser.parse_args(argv)
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  if not command:
    parser.error("no command given (put it after --)")
  return launch(command, args.num_processes, args.devices_per_process, args.timeout)


if __name__ == "__main__":
  sys.exit(main())
