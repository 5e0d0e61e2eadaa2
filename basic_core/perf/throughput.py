"""Steady-state samples/s of the train step in the three modes of the OpenCLIP comparison, one process
per mode: a process's peak RSS only grows, so modes measured in one process would share it.

`bench throughput` and `bench compare` run this internal entry once per mode, in a fresh process:

    python -m basic_core.perf.throughput MODE --config peer-vit [--set KEY=VALUE] [--batch N]
        [--remat POLICY] [--steps 5] [--warmup 2] [--max-steps 12]

It prints one JSON object (`row`) on its last line, with the matmul roof measured in the same process.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import jax

from basic_core import hostmem
from basic_core import state as state_lib
from basic_core.configs import get_config, microbatching
from basic_core.models.layers import REMAT_POLICIES
from basic_core.perf import compiled as compiled_lib
from basic_core.perf import timing

MODES = {  # name -> (microbatches K, remat): the OpenCLIP peer harness's three settings
    "plain": (1, "dots_saveable"),  # keeps matmul outputs, recomputes cheap elementwise ops
    "accumulate": (4, "dots_saveable"),
    "accumulate+remat": (4, "full"),  # OpenCLIP's --grad-checkpointing counterpart
}


@dataclasses.dataclass(frozen=True)
class Settings:
  """What is measured, the same for every mode: a preset, its overrides, and how long to time it."""
  config: str
  overrides: tuple[str, ...] = ()
  batch: int | None = None  # global batch; default: the config's, x K when accumulating
  remat: str | None = None  # overrides every mode's remat policy
  steps: int = 5
  warmup: int = 2
  max_steps: int = 12


def mode_config(settings: Settings, name: str):
  """The config of mode `name`: the batch split in K microbatches, the mode's remat policy."""
  k, remat = MODES[name]
  base = get_config(settings.config, settings.overrides)
  batch = settings.batch or base.train.batch_size * k
  return compiled_lib.with_overrides(base, train__batch_size=batch,
                                     train__microbatch_size=batch // k if k > 1 else 0,
                                     model__remat=settings.remat or remat)


def row(config, *, steps: int, warmup: int, max_steps: int) -> dict:
  """`config`'s step measured in this process: compile time, step times, FLOPs, peak RSS.

  `model_flops_per_sample` is the training arithmetic of the model itself (the plain step without
  recomputation); `hw_flops_per_sample` is what this step executes (plus the caching forward pass of
  accumulation and any remat recomputation). Both come from XLA's cost analysis of the unrolled step.
  """
  n = config.train.batch_size
  # the batch is put on the device once, as the trainer's prefetch would have it there (on a GPU a
  # host batch would cross PCIe inside every timed step)
  state, batch = state_lib.build(config).state, jax.device_put(timing.random_batch(config, n))
  t0 = time.perf_counter()
  compiled = compiled_lib.lower_step(config).compile()
  compile_s = time.perf_counter() - t0
  hostmem.release_freed_memory()  # as the trainer does after compiling
  memory = compiled_lib.compiled_memory(compiled)
  times = timing.time_steps(compiled, state, batch, steps=steps, warmup=warmup, max_steps=max_steps)
  peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before any other compile
  median = statistics.median(times.clean)
  model_flops = compiled_lib.model_flops(config) / n
  hw_flops = compiled_lib.step_flops(config) / n
  return dict(
      config=config.name, batch=n, microbatch=microbatching(config.train)[0], remat=config.model.remat,
      step_s_median=median, step_s_min=min(times.clean), step_s_max=max(times.clean),
      step_s_all=times.everything, samples_per_s=n / median, compile_s=compile_s,
      model_flops_per_sample=model_flops, hw_flops_per_sample=hw_flops,
      model_gflop_per_s=model_flops * n / median / 1e9, hw_gflop_per_s=hw_flops * n / median / 1e9,
      temp_bytes=memory["temp_bytes"], peak_bytes=memory["peak_bytes"], peak_rss_mb=peak_rss_mb,
      contended=times.contended,
      malloc_tunables=os.environ.get("GLIBC_TUNABLES", ""), huge_page_malloc=hostmem.huge_page_malloc(),
      devices=str(jax.devices()[0].device_kind), jax_version=jax.__version__)


def run_json(cmd: list[str]) -> dict:
  """Runs a benchmark process and returns the JSON object on the last line of its output."""
  out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def command(settings: Settings, name: str) -> list[str]:
  """The command line of this module's entry measuring mode `name` under `settings`."""
  s = settings
  cmd = [sys.executable, "-m", "basic_core.perf.throughput", name, "--config", s.config, "--steps",
         str(s.steps), "--warmup", str(s.warmup), "--max-steps", str(s.max_steps)]
  cmd += [f"--set={o}" for o in s.overrides] + (["--remat", s.remat] if s.remat else [])
  return cmd + (["--batch", str(s.batch)] if s.batch else [])


def measure(settings: Settings, name: str) -> dict:
  """Mode `name` measured in a fresh process (`row`, with its name and the machine's matmul roof)."""
  return run_json(command(settings, name))


def summary(r: dict) -> str:
  """One measured mode as a line of text."""
  share = r["hw_gflop_per_s"] / r["matmul_roof_gflop_per_s"]
  return (f"{r['name']:<18} batch {r['batch']:>5} micro {r['microbatch']:>5} {r['remat']:<14} "
          f"{r['samples_per_s']:8.1f} samples/s  step {r['step_s_median']:.3f} s  "
          f"{r['hw_gflop_per_s']:6.1f} GFLOP/s ({share:.0%} of matmul)  RSS {r['peak_rss_mb']:.0f} MB"
          f"{'  (contended)' if r['contended'] else ''}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The options that pick what is measured (`Settings` less the timing), shared with `bench`."""
  parser.add_argument("--config", default="peer-vit")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  parser.add_argument("--batch", type=int,
                      help="global batch (default: the config's, x4 when accumulating)")
  parser.add_argument("--remat", choices=tuple(REMAT_POLICIES), help="override every mode's remat policy")


def settings_from(args: argparse.Namespace) -> Settings:
  return Settings(args.config, tuple(args.set), args.batch, args.remat, args.steps, args.warmup,
                  args.max_steps)


def parser() -> argparse.ArgumentParser:
  """The internal entry's arguments: one mode, and `Settings`."""
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("mode", choices=tuple(MODES))
  add_arguments(p)
  p.add_argument("--steps", type=int, default=Settings.steps)
  p.add_argument("--warmup", type=int, default=Settings.warmup)
  p.add_argument("--max-steps", type=int, default=Settings.max_steps)
  return p


def main(argv=None) -> int:
  args = parser().parse_args(argv)
  s = settings_from(args)
  measured = row(mode_config(s, args.mode), steps=s.steps, warmup=s.warmup, max_steps=s.max_steps)
  roof = timing.matmul_roof_gflop_per_s()
  print(json.dumps(dict(name=args.mode, **measured, matmul_roof_gflop_per_s=roof)), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
