"""The scale plan checked by XLA: the real accumulated train step compiled ahead of time for the plan's
data x model mesh of simulated CPU devices, and its memory per device beside the formula's.

    python -m basic_core.plan --config basic-s --mesh data=8,model=1 --batch 65536 --microbatch 512 \
        --measure [--json]
    python -m basic_core.perf.plan_xla --config basic-s --data 8 --model 1 [--set KEY=VALUE ...]

The second line is the child process the first one starts when this process has fewer devices than
data x model: the simulated device count (`--xla_force_host_platform_device_count`) is read when JAX
starts its backend, so it is set in the child's environment. With enough CPU devices (the tests have 8)
the step is compiled in this process. Nothing is allocated: state and batch are abstract (`state.build(
config, abstract=True)`, `compiled.abstract_batch`), placed by the config's rules (`compiled.lower_step`).

What is compared, per device of the SPMD program:
  formula  `scale_plan.plan(...)["bytes_per_device"]` = params + gradients + optimizer + batch +
           embeddings + max(loss, activations);
  XLA      arguments + outputs - aliased + temporaries (`compiled.compiled_memory`'s `peak_bytes`), where
             arguments  the state (params, optimizer state, step) and the batch's shard: the formula's
                        params + optimizer + batch, exactly (to a few bytes of counters);
             outputs - aliased   the state is donated, so the new state reuses the argument buffers and
                        what is left is the metrics (a few scalars);
             temporaries   all the step holds besides: the formula's gradients + embeddings +
                        max(loss, activations), and whatever the formula leaves out.
`parts_vs_xla` sets the two sides of each against each other (arguments, temporaries). XLA's numbers are its
buffer assignment's, an exact account of the compiled program on XLA:CPU (the only backend the check runs
on; see scale_plan's "Check against XLA"). Compiled with `FAST_COMPILE`, which halves compile time and
moves temp bytes by at most 0.9% (basic-s on 8 devices: 5 KB in 17 GB; tiny ViT on 2x4: 0.01%; a tiny
CoAtNet on 8x1: 0.9%).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import jax

from basic_core import sharding
from basic_core.configs import get_config
from basic_core.perf import compiled
from basic_core.perf.xla_flags import FAST_COMPILE, child_env


def compile_step(config, data: int, model: int) -> dict:
  """XLA's bytes per device of `config`'s train step on a data x model mesh of this process's devices."""
  mesh = sharding.make_mesh(config.mesh, jax.devices()[: data * model])
  start = time.perf_counter()
  memory = compiled.compiled_memory(compiled.lower_step(config, mesh).compile(FAST_COMPILE))
  return dict(argument_bytes=memory["argument_bytes"], output_bytes=memory["output_bytes"],
              alias_bytes=memory["alias_bytes"], temp_bytes=memory["temp_bytes"],
              peak_bytes=memory["peak_bytes"], compile_s=round(time.perf_counter() - start, 1),
              platform=jax.default_backend(), jax_version=jax.__version__)


def child_command(name: str, overrides: list[str], data: int, model: int) -> list[str]:
  return [sys.executable, "-m", "basic_core.perf.plan_xla", "--config", name, "--data", str(data),
          "--model", str(model)] + [f"--set={o}" for o in overrides]


def measure(name: str, overrides: list[str], data: int, model: int) -> dict:
  """`compile_step` of config `name` with `overrides`: here when this process has data x model CPU
  devices, else in a child process that simulates them."""
  if jax.default_backend() == "cpu" and jax.device_count() >= data * model:
    return dict(compile_step(get_config(name, overrides), data, model), process="this")
  run = subprocess.run(child_command(name, overrides, data, model), env=child_env(data * model),
                       capture_output=True, text=True)
  if run.returncode:
    raise RuntimeError(f"the XLA measurement failed (exit {run.returncode}): {run.stderr[-2000:]}")
  return dict(json.loads(run.stdout.strip().splitlines()[-1]), process="child")


def compare(plan: dict, xla: dict) -> dict:
  """The fields `--measure` adds to a plan: XLA's bytes per device, its breakdown, formula / XLA, and
  the formula's arguments and temporaries beside XLA's."""
  b = plan["breakdown"]
  parts = dict(
      arguments=dict(formula=b["params"] + b["optimizer"] + b["batch"], xla=xla["argument_bytes"]),
      temporaries=dict(formula=b["gradients"] + b["embeddings"] + max(b["loss"], b["activations"]),
                       xla=xla["temp_bytes"]))
  return dict(xla_bytes_per_device=xla["peak_bytes"], xla=xla, parts_vs_xla=parts,
              formula_over_xla=plan["bytes_per_device"] / xla["peak_bytes"])


def format_lines(result: dict) -> str:
  """The `--measure` fields as text, under `scale_plan.format_table`."""
  x, gib = result["xla"], lambda v: f"{v / 2**30:.2f} GiB"
  return "\n".join([
      f"  {'XLA':<12}{x['peak_bytes'] / 2**30:9.2f} GiB  = arguments {gib(x['argument_bytes'])} + outputs "
      f"{gib(x['output_bytes'])} - aliased {gib(x['alias_bytes'])} + temp {gib(x['temp_bytes'])} "
      f"(compiled in {x['compile_s']:.0f} s, {x['platform']}, {x['process']} process)",
      f"  formula / XLA = {result['formula_over_xla']:.3f}; "
      + "; ".join(f"{k} {gib(v['formula'])} vs {gib(v['xla'])}" for k, v in result["parts_vs_xla"].items())])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", required=True)
  parser.add_argument("--data", type=int, required=True, help="devices on the mesh's data axis")
  parser.add_argument("--model", type=int, required=True, help="devices on the mesh's model axis")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  args = parser.parse_args(argv)
  config = get_config(args.config, args.set)
  print(json.dumps(compile_step(config, args.data, args.model)), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
