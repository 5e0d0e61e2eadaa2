"""The train step on one GPU in five minutes: samples/s, TFLOP/s, MFU, and the largest contrastive batch
that fits, for the plain step and BASIC's accumulated step of `small` and `basic-s` in bfloat16.

    python -m basic_core.bench gpu --json [--out ROWS.jsonl] [--table TABLE.md]   (make bench-gpu)
    bash scripts/gpu_check.sh    # on a lent GPU machine: carried wheels, nvidia-smi, this command

Per config (`CASES`) and mode, on the default device, with random data already on the device:
- `plain`: the whole contrastive batch in one pass (microbatches K = 1, dense N x N logits);
  `accumulate`: BASIC's step over K microbatches, each the size of the plain batch, with the tiled loss
  (`loss.tile` rows per tile). Both run in bfloat16 (`model.dtype=bfloat16`: parameters and logits stay
  float32) with the config's remat policy (`small`: none, `basic-s`: full). The sizes are estimates for
  an 80 GB GPU; a step that runs out of memory is retried at half the batch, twice at most.
- `samples_per_s`: contrastive batch / median time of the timed steps after warm-up, each step waited
  for with `block_until_ready` (`throughput.row`, `timing.time_steps`).
- `tflop_per_s`: FLOPs the step executes (remat recomputation and accumulation's caching forward pass
  included) / median step time. FLOPs come from XLA's cost analysis of the step's program
  (`compiled.step_flops`): unrolled and counted before compilation, since XLA counts a loop body once,
  and lowered for the host CPU, since a CUDA plugin has no cost analysis of a lowered program.
- `mfu`: model FLOPs per second (the plain step's own training arithmetic, no recomputation:
  `compiled.model_flops`, PaLM's definition) / the device's peak dense bfloat16 FLOP/s; `hfu`: the
  executed FLOP/s (`tflop_per_s`) over the same peak. The two differ by remat and accumulation's
  caching forward pass (basic-s, remat full: executed about 1.2x model FLOPs plain, 1.5x accumulated).
- The peak (`PEAK_BF16_FLOPS`, by `device_kind`): NVIDIA's datasheets (H100, H200, A100) for dense
  BF16 tensor-core math, i.e. the printed "with sparsity" figure halved: H100 SXM and H200 SXM 989.4
  TFLOP/s, H100 NVL and H200 NVL 835.5, H100 PCIe 756.5, A100 312. On a device not in the table, and on
  CPU, the denominator is the measured roof instead: the best of a few n x n x n bfloat16 XLA matmuls
  on the device (`timing.matmul_roof_gflop_per_s`). Each row names its denominator (`peak_source`) and
  carries the measured roof (`matmul_roof_tflop_per_s`) too.
- `max-batch` rows: the largest contrastive batch, in steps of lcm(microbatch, tile), whose accumulated
  step with the tiled loss fits the device: XLA's memory analysis of the compiled step (arguments +
  outputs + temporaries - aliased, `compiled.compiled_memory`) against `memory_stats()['bytes_limit']`
  (what XLA's allocator may take; `XLA_PYTHON_CLIENT_MEM_FRACTION` sets it). At a fixed microbatch and
  tile those bytes grow linearly in N (the batch itself, the embedding cache, a tile of logits per row
  block), so two compiled points give the line; the batch it predicts is compiled to check that it fits
  and the next one that it does not (`next_batch_fails`; steps towards the edge follow if the line was
  off, within `search_tries`). Nothing runs at that batch. Searches come after every timing, largest
  config first; nothing new starts after the time budget (`--budget-s`). `max-batch` rows have no
  samples/s, TFLOP/s or MFU (null).

Without a GPU the command runs a REDUCED version and says so (`"device": "cpu"`, `"reduced": true`, and
the table's first line): `tiny` only, a few steps, a stated memory budget (`--memory-limit`, 1 GiB) in
place of the device's, and the measured bfloat16 matmul roof of this CPU as the MFU denominator.
tests/test_bench_gpu.py runs it. No GPU number exists in this repository yet: no GPU was lent to the
session that wrote this; `scripts/gpu_check.sh` is the prepared run for one.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import traceback
from pathlib import Path

import jax

from basic_core.configs import get_config, microbatching
from basic_core.perf import budget, throughput, timing
from basic_core.perf import compiled as compiled_lib

# (substring of jax's device_kind, dense bf16 FLOP/s); the first match wins, so variants come first.
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756.5e12),
    ("H100 NVL", 835.5e12),
    ("H200 NVL", 835.5e12),
    ("H100", 989.4e12),  # SXM5; jax's device_kind "NVIDIA H100 80GB HBM3"
    ("H200", 989.4e12),  # SXM; "NVIDIA H200" (and GH200's Hopper)
    ("A100", 312e12),
)
PEAK_SOURCE = "NVIDIA datasheet, dense BF16 tensor core (the 'with sparsity' figure halved)"


@dataclasses.dataclass(frozen=True)
class Case:
  """The sizes measured for a config: the plain batch is also the accumulated step's microbatch."""
  config: str
  batch: int
  microbatches: int  # K of the accumulated step
  tile: int  # loss.tile of the accumulated step


CASES = {
    # Sized for an 80 GB H100 by estimate, not on a GPU: XLA:CPU compiles these plain steps at 37 GiB
    # (small) and 59 GiB (basic-s), and a GPU program of the same step is expected to need less. An
    # out-of-memory error halves the batch (`measure_fitting`).
    "small": Case("small", batch=8192, microbatches=4, tile=4096),
    "basic-s": Case("basic-s", batch=256, microbatches=4, tile=512),
    # The reduced CPU version.
    "tiny": Case("tiny", batch=32, microbatches=2, tile=32),
}
MODES = ("plain", "accumulate")
GPU_DEFAULTS = dict(configs=("small", "basic-s"), steps=10, warmup=3, budget_s=270.0, search_tries=2)
CPU_DEFAULTS = dict(configs=("tiny",), steps=3, warmup=1, budget_s=90.0, search_tries=1, memory_limit="1GiB")
MAX_SEARCH_BATCH = 2**22  # the search stops here (64 x BASIC's 65,536)


def mode_config(case: Case, mode: str):
  """`case`'s config in bfloat16 for `mode`: one pass, or K microbatches with the tiled loss."""
  k = 1 if mode == "plain" else case.microbatches
  return compiled_lib.with_overrides(
      get_config(case.config), model__dtype="bfloat16", train__batch_size=case.batch * k,
      train__microbatch_size=case.batch if k > 1 else 0, loss__tile=case.tile if k > 1 else 0)


def peak_flops(device_kind: str) -> float | None:
  """Dense bf16 FLOP/s of a GPU from its datasheet, or None if it is not in `PEAK_BF16_FLOPS`."""
  return next((flops for key, flops in PEAK_BF16_FLOPS if key in device_kind), None)


def device_facts(memory_limit: int | None = None) -> dict:
  """What every row carries: the device, the MFU denominator, the memory limit, and where each is from."""
  device = jax.devices()[0]
  backend = jax.default_backend()
  roof = timing.matmul_roof_gflop_per_s(n=2048 if backend == "cpu" else 8192, dtype=jax.numpy.bfloat16)
  peak = peak_flops(device.device_kind) if backend == "gpu" else None
  stats = device.memory_stats() or {}
  limit_source = "--memory-limit" if memory_limit else "device.memory_stats()['bytes_limit']"
  return dict(
      device=backend, device_kind=device.device_kind, reduced=backend != "gpu", jax_version=jax.__version__,
      peak_flop_per_s=peak or roof * 1e9,
      peak_source=PEAK_SOURCE if peak else "measured: best n x n x n bfloat16 XLA matmul on this device",
      matmul_roof_tflop_per_s=roof / 1e3, memory_limit_bytes=memory_limit or stats.get("bytes_limit"),
      memory_limit_source=limit_source)


def measure(case: Case, mode: str, facts: dict, *, steps: int, warmup: int) -> dict:
  """One timed mode of `case` (`throughput.row`) with its TFLOP/s, MFU and HFU."""
  config = mode_config(case, mode)
  r = throughput.row(config, steps=steps, warmup=warmup, max_steps=steps + 5)
  model_flop_per_s = r["model_flops_per_sample"] * r["samples_per_s"]
  hw_flop_per_s = r["hw_flops_per_sample"] * r["samples_per_s"]
  _, k = microbatching(config.train)
  return dict(
      facts, config=case.config, mode=mode, batch=r["batch"], microbatch=r["microbatch"], microbatches=k,
      loss_tile=config.loss.tile, dtype=config.model.dtype, remat=r["remat"], steps=steps,
      step_s_median=r["step_s_median"], step_s_all=r["step_s_all"], compile_s=r["compile_s"],
      samples_per_s=r["samples_per_s"], tflop_per_s=hw_flop_per_s / 1e12,
      model_tflop_per_s=model_flop_per_s / 1e12, mfu=model_flop_per_s / facts["peak_flop_per_s"],
      hfu=hw_flop_per_s / facts["peak_flop_per_s"], flops_per_step=r["hw_flops_per_sample"] * r["batch"],
      model_flops_per_step=r["model_flops_per_sample"] * r["batch"], peak_bytes=r["peak_bytes"],
      contended=r["contended"])


def measure_fitting(case: Case, mode: str, facts: dict, *, steps: int, warmup: int,
                    halvings: int = 2) -> tuple[Case, dict]:
  """`measure`, halving the case's batch (so also the microbatch) after an out-of-memory error."""
  for _ in range(halvings):
    try:
      return case, measure(case, mode, facts, steps=steps, warmup=warmup)
    except jax.errors.JaxRuntimeError as e:
      if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
        raise
      print(f"{case.config} {mode} at batch {case.batch} ran out of memory; halving it", file=sys.stderr)
      case = dataclasses.replace(case, batch=case.batch // 2)
  return case, measure(case, mode, facts, steps=steps, warmup=warmup)


def _peak_bytes(config, batch: int) -> int:
  config = compiled_lib.with_overrides(config, train__batch_size=batch)
  return compiled_lib.compiled_memory(compiled_lib.lower_step(config).compile())["peak_bytes"]


def max_batch(config, known_peak: int, limit: int, *, deadline: float, tries: int = 4) -> dict:
  """The largest batch (a multiple of lcm(microbatch, tile)) whose compiled step fits `limit` bytes.

  `config` is the accumulated step, `known_peak` its compiled peak bytes. Peak bytes are linear in the
  batch at a fixed microbatch and tile: a second point (8x the batch) gives the line, then the predicted
  batch and its neighbours are compiled, at most `tries` of them, until a fitting batch and a failing
  one a step apart are found (`next_batch_fails`; None where the next batch was not compiled).
  """
  micro, _ = microbatching(config.train)
  step = math.lcm(micro, config.loss.tile or micro)
  n0, n1 = config.train.batch_size, 8 * config.train.batch_size
  peaks = {n0: known_peak, n1: _peak_bytes(config, n1)}
  per_sample = (peaks[n1] - known_peak) / (n1 - n0)
  fixed = known_peak - per_sample * n0
  predicted = MAX_SEARCH_BATCH if per_sample <= 0 else int((limit - fixed) / per_sample) // step * step
  n, compiles, lo, hi = min(max(predicted, step), MAX_SEARCH_BATCH), 1, 0, None
  while True:
    if n not in peaks:
      peaks[n] = _peak_bytes(config, n)
      compiles += 1
    lo = max((b for b, p in peaks.items() if p <= limit), default=0)
    hi = min((b for b, p in peaks.items() if p > limit and b > lo), default=None)
    if lo == MAX_SEARCH_BATCH or hi == lo + step or compiles > tries or time.monotonic() > deadline:
      break
    n = lo + step if peaks[n] <= limit else hi - step  # next to the edge; never a batch compiled already
  return dict(batch=lo or None, microbatch=micro, loss_tile=config.loss.tile,
              peak_bytes=peaks.get(lo), next_batch_fails=True if hi == lo + step else None,
              capped=lo == MAX_SEARCH_BATCH, batch_step=step, bytes_per_sample=per_sample, fixed_bytes=fixed,
              predicted=predicted, compiled_batches=sorted(peaks))


def run(configs, *, steps: int, warmup: int, budget_s: float, memory_limit: int | None = None,
        search: bool = True, search_tries: int = 4, emit=lambda row: None) -> list[dict]:
  """Every case's modes timed, then the max-batch searches (largest config first) while time is left."""
  deadline = time.monotonic() + budget_s
  facts = device_facts(memory_limit)
  rows, accumulated = [], {}
  for name in configs:
    case = CASES[name]
    for mode in MODES:
      if time.monotonic() > deadline:
        print(f"skipped {name} {mode}: over the {budget_s:.0f} s budget", file=sys.stderr, flush=True)
        continue
      try:
        case, row = measure_fitting(case, mode, facts, steps=steps, warmup=warmup)
      except Exception:  # one failed measurement must not lose the others' rows
        traceback.print_exc()
        continue
      rows.append(row)
      emit(row)
      if mode == "accumulate":
        accumulated[name] = case, row
  for name in (reversed(list(accumulated)) if search else ()):
    limit = facts["memory_limit_bytes"]
    if time.monotonic() > deadline or not limit:
      print(f"skipped the max-batch search of {name}: over the budget or no memory limit", file=sys.stderr,
            flush=True)
      continue
    t0 = time.perf_counter()
    case, row = accumulated[name]
    try:
      found = max_batch(mode_config(case, "accumulate"), row["peak_bytes"], limit, deadline=deadline,
                        tries=search_tries)
    except Exception:
      traceback.print_exc()
      continue
    rows.append(dict(facts, config=name, mode="max-batch", **found, search_s=time.perf_counter() - t0,
                     samples_per_s=None, tflop_per_s=None, mfu=None))
    emit(rows[-1])
  return rows


def table(rows: list[dict]) -> str:
  """The rows as a markdown table, headed by the device and the MFU denominator."""
  if not rows:
    return "no rows"
  f = rows[0]
  head = (f"{'REDUCED CPU run, not a GPU measurement. ' if f['reduced'] else ''}device {f['device']} "
          f"({f['device_kind']}), jax {f['jax_version']}; MFU denominator "
          f"{f['peak_flop_per_s'] / 1e12:.1f} TFLOP/s ({f['peak_source']}); measured bf16 matmul roof "
          f"{f['matmul_roof_tflop_per_s']:.1f} TFLOP/s; memory limit "
          f"{(f['memory_limit_bytes'] or 0) / 2**30:.2f} GiB ({f['memory_limit_source']})")
  lines = [head, "", "| config | mode | batch | microbatch x K | loss tile | step s | samples/s | TFLOP/s "
                     "| MFU | HFU | compiled peak GiB |", "|---|---|" + "---:|" * 9]
  for r in rows:
    gib = f"{r['peak_bytes'] / 2**30:.2f}" if r["peak_bytes"] else "-"
    if r["mode"] == "max-batch":
      exact = (" (the search's cap)" if r["capped"] else "" if r["next_batch_fails"]
               else " (the next size was not compiled)")
      lines.append(f"| {r['config']} | max batch that fits{exact} | {r['batch'] or '-'} | "
                   f"{r['microbatch']} | {r['loss_tile']} | - | - | - | - | - | {gib} |")
      continue
    lines.append(f"| {r['config']} | {r['mode']} | {r['batch']} | {r['microbatch']} x {r['microbatches']} | "
                 f"{r['loss_tile'] or '-'} | {r['step_s_median']:.4f} | {r['samples_per_s']:.1f} | "
                 f"{r['tflop_per_s']:.3f} | {r['mfu']:.1%} | {r['hfu']:.1%} | {gib} |")
  return "\n".join(lines)


def add_arguments(parser) -> None:
  parser.add_argument("--configs", help=f"comma-separated, of {', '.join(CASES)} "
                                        "(default: GPU small,basic-s; CPU tiny)")
  parser.add_argument("--steps", type=int, help="timed steps (default: GPU 10, CPU 3)")
  parser.add_argument("--warmup", type=int, help="untimed steps after compiling (default: GPU 3, CPU 1)")
  parser.add_argument("--budget-s", type=float, help="no new measurement or search after this many seconds "
                                                     "(default: GPU 270, CPU 60)")
  parser.add_argument("--memory-limit", help="e.g. 1GiB: in place of the device's bytes_limit (CPU: 1GiB)")
  parser.add_argument("--no-search", action="store_true", help="skip the max-batch searches")
  parser.add_argument("--json", action="store_true", help="one JSON line per row (else the table)")
  parser.add_argument("--out", type=Path, help="also append the JSON lines here")
  parser.add_argument("--table", type=Path, help="write the markdown table here (after every row)")


def settings_from(args) -> dict:
  """`run`'s keyword arguments from the command line, with the GPU or the reduced CPU defaults."""
  defaults = GPU_DEFAULTS if jax.default_backend() == "gpu" else CPU_DEFAULTS
  configs = args.configs.split(",") if args.configs else defaults["configs"]
  if unknown := [c for c in configs if c not in CASES]:
    raise SystemExit(f"unknown configs {unknown}; one of {', '.join(CASES)}")
  memory_limit = args.memory_limit or defaults.get("memory_limit")
  return dict(configs=configs, steps=args.steps or defaults["steps"],
              warmup=args.warmup or defaults["warmup"], budget_s=args.budget_s or defaults["budget_s"],
              search=not args.no_search, search_tries=defaults["search_tries"],
              memory_limit=budget.parse_bytes(memory_limit) if memory_limit else None)
