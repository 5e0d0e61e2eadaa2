"""Benchmarks of the train step: compiled memory over a grid, steady-state throughput, a memory planner.

    python -m basic_core.bench memory [--config tiny] [--json] [--plot runs/bench/memory.png]
    python -m basic_core.bench memory --config tiny --batch 4096 --memory-budget 256MiB
    python -m basic_core.bench throughput --config peer-vit [--json]
    python -m basic_core.bench compare --peer-python PY --peer-script ../shared/bench/openclip_peer/bench.py
    python -m basic_core.bench compare-table paper_figures/data/compare_openclip.jsonl
    python -m basic_core.bench roofline --config peer-vit

`memory` compiles the step for every (contrastive batch, mode, microbatch, remat) of its grid, reports
XLA's compiled bytes, then times a few steps on random data. One JSON object per line with `--json`.
`throughput` runs each mode in its own process (peak RSS is per process and only grows) and times
steps only while the rest of the machine is quiet (see `Quiet`), as the OpenCLIP peer harness does.
`compare` runs the same three modes of our step and of OpenCLIP's (through the peer harness, which is
not part of this repository: pass its venv's python and its bench.py), alternating the two programs;
`compare-table` prints the same table from saved lines (every run appends to its `--out` file).
`roofline` times the model's dense matmuls alone (`basic_core.roofline`): how much of the roof the step
could reach if everything else were free.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from basic_core import memory, runtime, step as step_lib
from basic_core.configs import get_config

DEFAULT_BATCHES = (256, 512, 1024, 2048, 4096, 8192)


def random_batch(config, n: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  size, length = config.model.image.image_size, config.model.text.context
  text = rng.integers(1, config.model.text.vocab_size, size=(n, length), dtype=np.int32)
  lengths = rng.integers(4, length + 1, size=n)
  text[np.arange(length)[None, :] >= lengths[:, None]] = 0
  return dict(image=rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8), text=text)


class Quiet:
  """Per-step share of CPU time used by OTHER processes (/proc/stat minus our own CPU time).

  On a shared 2-core machine another busy process makes 2-thread steps several times slower; steps
  during which others used more than `threshold` of a core are not counted.
  """

  def __init__(self, threshold: float = 0.05):
    self.threshold = threshold

  @staticmethod
  def _sample():
    with open("/proc/stat") as f:
      fields = [float(x) for x in f.readline().split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # minus idle and iowait
    own = sum(os.times()[:2])
    return busy / os.sysconf("SC_CLK_TCK"), own, time.perf_counter()

  def measure(self, fn):
    """(seconds, other processes' CPU in cores) of one call."""
    b0, o0, t0 = self._sample()
    fn()
    b1, o1, t1 = self._sample()
    return t1 - t0, max(b1 - b0 - (o1 - o0), 0.0) / (t1 - t0)


def time_steps(step, state, batch, *, steps: int, warmup: int, max_steps: int, quiet: Quiet):
  """Runs warmup + timed steps; returns (state, clean step times, contended flag, all times)."""
  holder = {"state": state}

  def one():
    holder["state"], metrics = step(holder["state"], batch)
    jax.block_until_ready(metrics["loss"])

  for _ in range(warmup):
    one()
  clean, everything = [], []
  while len(clean) < steps and len(everything) < max_steps:
    seconds, others = quiet.measure(one)
    everything.append(seconds)
    if others <= quiet.threshold:
      clean.append(seconds)
  contended = len(clean) < steps
  return holder["state"], (clean or everything)[-steps:], contended, everything


def _real_state(config):
  from basic_core import optim
  from basic_core.models import build_model
  fns, params = step_lib.split_model(build_model(config.model, config.seed), config)
  tx = optim.make_optimizer(config)
  return fns, step_lib.init_state(params, tx), tx


def memory_row(config, mode: str, *, time_it: bool, steps: int) -> dict:
  compiled = memory.compile_step(config, mode=mode)
  mem = memory.compiled_memory(compiled)
  batch = config.train.batch_size
  row = dict(mode=mode, batch=batch, microbatch=config.train.microbatch_size or batch,
             remat=config.model.remat, **mem)
  if time_it:
    fns, state, tx = _real_state(config)
    step = step_lib.jit_train_step(step_lib.make_train_step(fns, tx, mode=mode), config=config)
    _, times, contended, _ = time_steps(step, state, random_batch(config, batch), steps=steps,
                                        warmup=1, max_steps=3 * steps, quiet=Quiet())
    row.update(step_s=statistics.median(times), samples_per_s=batch / statistics.median(times),
               contended=contended)
  else:
    row.update(step_s=None, samples_per_s=None, contended=None)
  return row


def memory_grid(config, batches, microbatches, policies, modes):
  for batch in batches:
    for mode in modes:
      for policy in policies:
        for micro in (microbatches if mode == "accumulate" else (batch,)):
          if micro > batch or batch % micro:
            continue
          yield memory.with_overrides(config, train__batch_size=batch,
                                      train__microbatch_size=0 if mode == "naive" else micro,
                                      model__remat=policy), mode


def _ints(text: str) -> tuple[int, ...]:
  return tuple(int(x) for x in text.split(","))


def _print_table(rows: list[dict]) -> None:
  print(f"{'mode':<10} {'batch':>6} {'micro':>6} {'remat':<32} {'temp MiB':>9} {'args MiB':>9} "
        f"{'step s':>7} {'samples/s':>9}")
  for r in rows:
    step = f"{r['step_s']:.3f}" if r["step_s"] else "-"
    sps = f"{r['samples_per_s']:.0f}" if r["samples_per_s"] else "-"
    print(f"{r['mode']:<10} {r['batch']:>6} {r['microbatch']:>6} {r['remat']:<32} "
          f"{r['temp_bytes'] / 2**20:>9.1f} {r['argument_bytes'] / 2**20:>9.1f} {step:>7} {sps:>9}")


def plot_memory(rows: list[dict], path: Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import pandas as pd
  import seaborn as sns
  from matplotlib import pyplot as plt

  df = pd.DataFrame(rows)
  df["temp_MiB"] = df["temp_bytes"] / 2**20
  df["step"] = np.where(df["mode"] == "naive", "naive (full batch)",
                        "accumulate, microbatch " + df["microbatch"].astype(str))
  df["step"] = df["step"] + ", remat " + df["remat"]
  fig, ax = plt.subplots(figsize=(7, 4.5))
  sns.lineplot(df, x="batch", y="temp_MiB", hue="step", marker="o", ax=ax)
  ax.set(yscale="log", xlabel="contrastive batch size N",
         ylabel="compiled temp memory of the train step (MiB)",
         title="Train-step memory vs contrastive batch (XLA memory analysis)")
  ax.set_xscale("log", base=2)
  ax.set_xticks(sorted(df["batch"].unique()), [str(b) for b in sorted(df["batch"].unique())])
  ax.minorticks_off()  # matplotlib's minor labels would overlap the batch sizes
  ax.grid(alpha=0.3)
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=150)
  plt.close(fig)


def cmd_memory(args) -> int:
  config = get_config(args.config, args.set)
  if args.memory_budget:
    budget = memory.parse_bytes(args.memory_budget)
    config = memory.with_overrides(config, train__batch_size=args.batch or config.train.batch_size)
    log = (lambda r: print(json.dumps(r))) if args.json else (
        lambda r: print(f"  remat={r['remat']:<32} microbatch={r['microbatch']:>6} "
                        f"peak={r['peak_bytes'] / 2**20:9.1f} MiB  fits={r['fits']}"))
    result = memory.plan(config, budget, log=log)
    c = result["choice"]
    msg = (f"chose remat={c['remat']}, microbatch={c['microbatch']} for contrastive batch "
           f"{config.train.batch_size}: peak {c['peak_bytes'] / 2**20:.1f} MiB <= budget "
           f"{budget / 2**20:.1f} MiB")
    print(json.dumps(dict(choice=c, budget_bytes=budget)) if args.json else msg)
    return 0
  batches = (args.batch,) if args.batch else _ints(args.batches)
  rows = []
  for cfg, mode in memory_grid(config, batches, _ints(args.microbatches), args.remat.split(","),
                               args.modes.split(",")):
    time_it = not args.no_time and cfg.train.batch_size <= args.time_max_batch
    row = memory_row(cfg, mode, time_it=time_it, steps=args.steps)
    rows.append(row)
    if args.json:
      print(json.dumps(row), flush=True)
  if not args.json:
    _print_table(rows)
  if args.out:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
  if args.plot:
    plot_memory(rows, args.plot)
  return 0


# ----------------------------------------------------------------------------------------------------
# throughput


def matmul_roof_gflop_per_s(n: int = 2048, repeats: int = 5) -> float:
  """Best float32 GFLOP/s of one n x n x n XLA matmul on this machine: a practical compute ceiling."""
  a = jax.random.normal(jax.random.key(0), (n, n), jax.numpy.float32)
  matmul = jax.jit(lambda a: a @ a)
  jax.block_until_ready(matmul(a))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(matmul(a))
    best = min(best, time.perf_counter() - t0)
  return 2 * n**3 / best / 1e9


def throughput_row(config, mode: str, *, steps: int, warmup: int, max_steps: int) -> dict:
  """One mode, measured in this process: compile time, step times, FLOPs, peak RSS.

  `model_flops_per_sample` is the training arithmetic of the model itself (the plain step without
  recomputation); `hw_flops_per_sample` is what this mode executes (plus the caching forward pass of
  accumulation and any remat recomputation). Both come from XLA's cost analysis of the unrolled step.
  """
  fns, state, tx = _real_state(config)
  batch = random_batch(config, config.train.batch_size)
  step = step_lib.jit_train_step(step_lib.make_train_step(fns, tx, mode=mode), config=config)
  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  runtime.release_freed_memory()  # as the trainer does after compiling
  mem = memory.compiled_memory(compiled)
  _, times, contended, everything = time_steps(compiled, state, batch, steps=steps, warmup=warmup,
                                               max_steps=max_steps, quiet=Quiet())
  peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before any other compile
  n, median = config.train.batch_size, statistics.median(times)
  model_flops = memory.step_flops(memory.with_overrides(
      config, train__microbatch_size=0, model__remat="none"), "naive") / n
  hw_flops = memory.step_flops(config, mode) / n
  return dict(
      config=config.name, mode=mode, batch=n, microbatch=config.train.microbatch_size or n,
      remat=config.model.remat, step_s_median=median, step_s_min=min(times), step_s_max=max(times),
      step_s_all=everything, samples_per_s=n / median, compile_s=compile_s,
      model_flops_per_sample=model_flops, hw_flops_per_sample=hw_flops,
      model_gflop_per_s=model_flops * n / median / 1e9, hw_gflop_per_s=hw_flops * n / median / 1e9,
      temp_bytes=mem["temp_bytes"], peak_rss_mb=peak_rss_mb, contended=contended,
      malloc_tunables=os.environ.get("GLIBC_TUNABLES", ""),
      devices=str(jax.devices()[0].device_kind), jax_version=jax.__version__)


THROUGHPUT_MODES = {  # name -> (mode, microbatch divisor K, remat): the peer harness's three settings
    "plain": ("naive", 1, "dots_saveable"),  # keeps matmul outputs, recomputes cheap elementwise ops
    "accumulate": ("accumulate", 4, "dots_saveable"),
    "accumulate+remat": ("accumulate", 4, "full"),  # OpenCLIP's --grad-checkpointing counterpart
}
def _mode_config(args, name: str):
  mode, k, remat = THROUGHPUT_MODES[name]
  base = get_config(args.config, args.set)
  batch = args.batch or (base.train.batch_size * (k if mode == "accumulate" else 1))
  return mode, memory.with_overrides(base, train__batch_size=batch,
                                     train__microbatch_size=batch // k if k > 1 else 0,
                                     model__remat=args.remat or remat)


def _run_json(cmd: list[str]) -> dict:
  """Runs a benchmark process and returns the JSON object on the last line of its output."""
  out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def _ours_cmd(args, name: str, steps: int, warmup: int) -> list[str]:
  cmd = [sys.executable, "-m", "basic_core.bench", "throughput", "--config", args.config, "--one", name,
         "--steps", str(steps), "--warmup", str(warmup), "--max-steps", str(args.max_steps)]
  cmd += [f"--set={s}" for s in args.set] + (["--remat", args.remat] if args.remat else [])
  return cmd + (["--batch", str(args.batch)] if args.batch else [])


def cmd_throughput(args) -> int:
  if args.one:
    mode, config = _mode_config(args, args.one)
    row = dict(name=args.one, **throughput_row(config, mode, steps=args.steps, warmup=args.warmup,
                                               max_steps=args.max_steps))
    if args.roof:
      row["matmul_roof_gflop_per_s"] = matmul_roof_gflop_per_s()
    print(json.dumps(row), flush=True)
    return 0
  rows = []
  for name in args.modes.split(","):
    row = _run_json(_ours_cmd(args, name, args.steps, args.warmup) + ["--roof"])
    rows.append(row)
    if args.json:
      print(json.dumps(row), flush=True)
    else:
      print(f"{row['name']:<18} batch {row['batch']:>5} micro {row['microbatch']:>5} "
            f"{row['remat']:<14} {row['samples_per_s']:8.1f} samples/s  step {row['step_s_median']:.3f} s"
            f"  {row['hw_gflop_per_s']:6.1f} GFLOP/s ({row['hw_gflop_per_s'] / row['matmul_roof_gflop_per_s']:.0%}"
            f" of matmul)  RSS {row['peak_rss_mb']:.0f} MB{'  (contended)' if row['contended'] else ''}",
            flush=True)
  _append(args.out, rows)
  return 0


def _append(path: Path | None, rows: list[dict]) -> None:
  if path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)


def cmd_roofline(args) -> int:
  """The model's dense matmuls timed alone, against the roof: a ceiling for a step's share of it."""
  from basic_core import roofline
  config = get_config(args.config, args.set)
  ceiling = roofline.dense_ceiling(config, repeats=args.repeats)
  roof = matmul_roof_gflop_per_s()
  model_flops = memory.step_flops(memory.with_overrides(
      config, train__microbatch_size=0, model__remat="none"), "naive")
  row = dict(config=config.name, batch=config.train.batch_size, matmul_roof_gflop_per_s=roof,
             dense_share_of_model_flops=ceiling["dense_train_flops"] / model_flops,
             devices=str(jax.devices()[0].device_kind), jax_version=jax.__version__, **ceiling)
  if args.json:
    print(json.dumps(row))
  else:
    print(f"{'M':>7} {'I':>5} {'O':>5} {'count':>5} {'fwd GFLOP/s':>12} {'bwd GFLOP/s':>12}")
    for r in ceiling["shapes"]:
      print(f"{r['m']:>7} {r['i']:>5} {r['o']:>5} {r['count']:>5} {r['forward_gflop_per_s']:>12.0f} "
            f"{r['backward_gflop_per_s']:>12.0f}")
    print(f"dense matmuls (forward + backward, each alone): {ceiling['dense_gflop_per_s']:.0f} GFLOP/s = "
          f"{ceiling['dense_gflop_per_s'] / roof:.0%} of the matmul roof ({roof:.0f} GFLOP/s); they are "
          f"{row['dense_share_of_model_flops']:.0%} of the step's model FLOPs")
  _append(args.out, [row])
  return 0


# ----------------------------------------------------------------------------------------------------
# side by side with OpenCLIP


def compare_table(rows: list[dict]) -> str:
  """Markdown: per mode, median samples/s and max peak RSS of each side over rounds, and the ratios.

  Our executed GFLOP/s is the median over rounds, and its share of the float32 matmul roof measured in
  the same process (`matmul_roof_gflop_per_s`) where the rows carry one.
  """
  lines = ["| mode | batch | microbatch x K | ours: remat | ours samples/s | OpenCLIP samples/s | speed ratio "
           "| ours peak RSS MB | OpenCLIP peak RSS MB | RSS ratio | ours GFLOP/s (of roof) |", "|---" * 11 + "|"]
  for name in dict.fromkeys(r["name"] for r in rows):
    ours = [r for r in rows if r["name"] == name and r["side"] == "ours"]
    peer = [r for r in rows if r["name"] == name and r["side"] == "openclip"]
    if not (ours and peer):
      continue
    speed = [statistics.median(r["samples_per_s"] for r in side) for side in (ours, peer)]
    rss = [max(r["peak_rss_mb"] for r in side) for side in (ours, peer)]
    k = ours[0]["batch"] // ours[0]["microbatch"]
    flops = f"{statistics.median(r['hw_gflop_per_s'] for r in ours):.0f}"
    if all("matmul_roof_gflop_per_s" in r for r in ours):
      flops += f" ({statistics.median(r['hw_gflop_per_s'] / r['matmul_roof_gflop_per_s'] for r in ours):.0%})"
    lines.append(f"| {name} | {ours[0]['batch']} | {ours[0]['microbatch']} x {k} | {ours[0]['remat']} "
                 f"| {speed[0]:.1f} | {speed[1]:.1f} | **{speed[0] / speed[1]:.2f}x** | {rss[0]:.0f} "
                 f"| {rss[1]:.0f} | **{rss[0] / rss[1]:.2f}x** | {flops} |")
  return "\n".join(lines)


def cmd_compare(args) -> int:
  """Alternates our step and OpenCLIP's (one process each) per mode and round; prints the ratios."""
  rows = []
  for round_ in range(args.rounds):
    for name in args.modes.split(","):
      steps, warmup = (args.steps, 2) if name == "plain" else (max(args.steps - 2, 2), 1)
      warmup = warmup if args.warmup is None else args.warmup
      _, k, remat = THROUGHPUT_MODES[name]
      batch = _mode_config(args, name)[1].train.batch_size  # the same batch and K for OpenCLIP
      peer_cmd = [args.peer_python, args.peer_script, "--batch", str(batch), "--steps", str(steps),
                  "--warmup", str(warmup), "--threads", str(os.cpu_count()),
                  "--max-steps", str(args.max_steps), "--accum-freq", str(k)]
      peer_cmd += ["--grad-checkpointing"] if remat == "full" else []
      ours_cmd = _ours_cmd(args, name, steps, warmup) + ["--roof"]
      sides = [("ours", ours_cmd), ("openclip", peer_cmd)]
      for side, cmd in sides if round_ % 2 == 0 else sides[::-1]:
        row = {**_run_json(cmd), "name": name, "side": side, "round": round_}
        row.setdefault("microbatch", row.get("micro_batch"))
        rows.append(row)
        print(f"round {round_} {name:<17} {side:<9} {row['samples_per_s']:7.1f} samples/s  "
              f"RSS {row['peak_rss_mb']:6.0f} MB{'  (contended)' if row.get('contended') else ''}",
              flush=True)
      _append(args.out, rows[-2:])
  print(compare_table(rows))
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  m = sub.add_parser("memory", help="compiled memory (and step time) over a grid; or --memory-budget")
  m.add_argument("--config", default="tiny")
  m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  m.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)))
  m.add_argument("--batch", type=int, help="a single contrastive batch size")
  m.add_argument("--microbatches", default="128")
  m.add_argument("--remat", default="none,full")
  m.add_argument("--modes", default="naive,accumulate")
  m.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
  m.add_argument("--time-max-batch", type=int, default=8192, help="time only batches up to this")
  m.add_argument("--no-time", action="store_true", help="compile only")
  m.add_argument("--memory-budget", help="plan: e.g. 8GiB; picks remat and microbatch that fit")
  m.add_argument("--json", action="store_true")
  m.add_argument("--out", type=Path, help="also write the JSON lines here")
  m.add_argument("--plot", type=Path, help="draw memory vs contrastive batch to this PNG")
  m.set_defaults(fn=cmd_memory)
  t = sub.add_parser("throughput", help="steady-state samples/s per mode, one process per mode")
  t.add_argument("--config", default="peer-vit")
  t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  t.add_argument("--modes", default=",".join(THROUGHPUT_MODES))
  t.add_argument("--batch", type=int, help="global batch (default: the config's, x4 when accumulating)")
  t.add_argument("--steps", type=int, default=5)
  t.add_argument("--warmup", type=int, default=2)
  t.add_argument("--max-steps", type=int, default=12)
  t.add_argument("--remat", choices=memory.POLICY_ORDER, help="override every mode's remat policy")
  t.add_argument("--one", choices=tuple(THROUGHPUT_MODES), help=argparse.SUPPRESS)
  t.add_argument("--roof", action="store_true", help=argparse.SUPPRESS)
  t.add_argument("--json", action="store_true")
  t.add_argument("--out", type=Path)
  t.set_defaults(fn=cmd_throughput)
  r = sub.add_parser("roofline", help="the model's dense matmuls timed alone, against the matmul roof")
  r.add_argument("--config", default="peer-vit")
  r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  r.add_argument("--repeats", type=int, default=7, help="timed calls per matmul (median)")
  r.add_argument("--json", action="store_true")
  r.add_argument("--out", type=Path, help="also append the JSON line here")
  r.set_defaults(fn=cmd_roofline)
  c = sub.add_parser("compare", help="our step and OpenCLIP's, alternated, one process each; ratios")
  c.add_argument("--peer-python", required=True, help="python of a venv with open_clip (harness setup)")
  c.add_argument("--peer-script", required=True, help="the OpenCLIP peer harness's bench.py")
  c.add_argument("--config", default="peer-vit")
  c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  c.add_argument("--modes", default=",".join(THROUGHPUT_MODES))
  c.add_argument("--batch", type=int, help="global batch (default: the config's, x4 when accumulating)")
  c.add_argument("--remat", choices=memory.POLICY_ORDER, help="override our modes' remat policy")
  c.add_argument("--steps", type=int, default=5, help="timed steps for plain (accumulating: 2 fewer)")
  c.add_argument("--max-steps", type=int, default=10)
  c.add_argument("--rounds", type=int, default=1, help="rounds; odd rounds run OpenCLIP first")
  c.add_argument("--warmup", type=int, help="untimed steps per side (default: 2 plain, 1 accumulating)")
  c.add_argument("--out", type=Path, help="append the JSON lines of both sides here")
  c.set_defaults(fn=cmd_compare)
  ct = sub.add_parser("compare-table", help="the comparison table of saved JSON lines (compare --out)")
  ct.add_argument("files", type=Path, nargs="+")
  ct.set_defaults(fn=lambda a: print(compare_table(
      [json.loads(line) for f in a.files for line in f.read_text().splitlines() if line.strip()])))
  args = parser.parse_args(argv)
  return args.fn(args) or 0


if __name__ == "__main__":
  runtime.reexec_with_malloc_tunables()
  sys.exit(main())
