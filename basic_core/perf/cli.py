"""The `bench` and `plan` commands: argparse front-ends of this package's tools.

    python -m basic_core.bench memory [--config tiny] [--json] [--out ROWS.jsonl]
    python -m basic_core.bench memory --config tiny --batch 4096 --memory-budget 256MiB
    python -m basic_core.bench throughput --config peer-vit [--json]
    python -m basic_core.bench roofline --config peer-vit
    python -m basic_core.bench compare --peer-python PY --peer-script ../shared/bench/openclip_peer/bench.py
    python -m basic_core.bench compare-table paper_figures/data/compare_openclip.jsonl
    python -m basic_core.bench gpu --json [--out ROWS.jsonl] [--table TABLE.md]
    python -m basic_core.bench scale --config tiny --microbatch 512 --tile 128 --check 4096 --train 65536
    python -m basic_core.plan --config basic-l --mesh data=64,model=8 --batch 65536 --microbatch 128
    python -m basic_core.plan --config basic-s --mesh data=8,model=1 --batch 65536 --microbatch 512 --measure

`memory` compiles the step for every (contrastive batch, mode, microbatch, remat) of its grid, reports
XLA's compiled bytes and times a few steps on random data (`memory_grid`); with `--memory-budget` it picks
the remat policy and microbatch that fit (`budget`). `throughput` times each mode in its own process
(`throughput`), `compare` alternates those processes with OpenCLIP's (`compare`), `roofline` times the
model's dense matmuls alone (`roofline`). `gpu` times the plain and accumulated bfloat16 steps of
`small` and `basic-s` on one GPU within five minutes (samples/s, TFLOP/s, MFU, the largest batch that
fits), or a reduced `tiny` run on CPU that says so (`gpu_bench`). `scale` measures BASIC's step up to
N = 2^20 on this machine (`scale`). `plan` is the scale plan on paper (`scale_plan`); with
`--measure` XLA's bytes per device of the compiled step stand beside it (`plan_xla`). With `--json` every
row is one JSON line; `--out` writes the memory rows, and appends the rows of the other commands. The
results layer draws the rows (`python -m paper_figures.memory_figure`, `make figures`); this package
only writes them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from analysis import cli
from basic_core import sharding
from basic_core.configs import ConfigError, get_config
from basic_core.perf import (
  budget,
  compare,
  compiled,
  gpu_bench,
  memory_grid,
  plan_xla,
  roofline,
  scale,
  scale_plan,
  throughput,
)


def _ints(text: str) -> tuple[int, ...]:
  return tuple(int(x) for x in text.split(","))


def _modes(text: str) -> list[str]:
  names = text.split(",")
  if unknown := [n for n in names if n not in throughput.MODES]:
    raise argparse.ArgumentTypeError(f"unknown modes {unknown}; one of {', '.join(throughput.MODES)}")
  return names


def _append(path: Path | None, rows: list[dict]) -> None:
  if path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)


def _memory(args) -> None:
  config = get_config(args.config, args.set)
  if args.memory_budget:
    _budget(args, config)
    return
  batches = (args.batch,) if args.batch else _ints(args.batches)
  rows = []
  for cfg in memory_grid.configs(config, batches, _ints(args.microbatches), args.remat.split(","),
                                 args.modes.split(",")):
    time_it = not args.no_time and cfg.train.batch_size <= args.time_max_batch
    rows.append(memory_grid.row(cfg, time_it=time_it, steps=args.steps))
    if args.json:
      print(json.dumps(rows[-1]), flush=True)
  if not args.json:
    print(memory_grid.format_table(rows))
  if args.out:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # Drawing is the results layer's job, not this package's; stderr keeps --json's stdout JSON only.
    figure = args.out.with_suffix(".png")
    print(f"draw it: python -m paper_figures.memory_figure --rows {args.out} --out {figure}"
          " (`make figures` redraws the committed rows)", file=sys.stderr)


def _budget(args, config) -> None:
  budget_bytes = budget.parse_bytes(args.memory_budget)
  config = compiled.with_overrides(config, train__batch_size=args.batch or config.train.batch_size)
  log = (lambda r: print(json.dumps(r))) if args.json else (lambda r: print(budget.describe(r)))
  choice = budget.choose(config, budget_bytes, log=log)["choice"]
  print(json.dumps(dict(choice=choice, budget_bytes=budget_bytes)) if args.json
        else budget.summary(choice, config.train.batch_size, budget_bytes))


def _throughput(args) -> None:
  settings = throughput.settings_from(args)
  for name in args.modes:
    row = throughput.measure(settings, name)
    print(json.dumps(row) if args.json else throughput.summary(row), flush=True)
    _append(args.out, [row])


def _roofline(args) -> None:
  row = roofline.row(get_config(args.config, args.set), repeats=args.repeats)
  print(json.dumps(row) if args.json else roofline.format_table(row))
  _append(args.out, [row])


def _compare(args) -> None:
  settings = throughput.Settings(args.config, tuple(args.set), args.batch, args.remat, args.steps,
                                 max_steps=args.max_steps)
  rows = []
  for row in compare.side_by_side(settings, args.modes, rounds=args.rounds, peer_python=args.peer_python,
                                  peer_script=args.peer_script, warmup=args.warmup):
    rows.append(row)
    print(compare.summary(row), flush=True)
    _append(args.out, [row])
  print(compare.table(rows))


def _gpu(args) -> None:
  rows = []

  def emit(row):
    rows.append(row)
    if args.json:
      print(json.dumps(row), flush=True)
    _append(args.out, [row])
    if args.table:
      args.table.parent.mkdir(parents=True, exist_ok=True)
      args.table.write_text(gpu_bench.table(rows) + "\n")

  gpu_bench.run(**gpu_bench.settings_from(args), emit=emit)
  if not args.json:
    print(gpu_bench.table(rows))


def _scale(args) -> None:
  config = get_config(args.config, args.set)
  rows = [scale.memory_row(scale.step_config(config, n, args.microbatch, args.tile))
          for n in _ints(args.batches)]
  if len(rows) > 1:
    rows.append(scale.growth(rows))
  if args.check:
    rows.append(scale.exact(config, args.check, args.check_microbatch, args.check_tile))
  if args.train:
    rows.append(scale.train(args.config, args.set, args.train, args.microbatch, args.tile, args.steps))
  for row in rows:
    print(json.dumps(row) if args.json else scale.describe(row), flush=True)
  _append(args.out, rows)


def _compare_table(args) -> None:
  with cli.blame("files"):
    print(compare.table([json.loads(line) for f in args.files for line in f.read_text().splitlines()
                         if line.strip()]))


def bench_parser() -> argparse.ArgumentParser:
  positive = cli.number(int, gt=0)
  parser = cli.Parser(
      description="Benchmarks of the train step: compiled memory, a memory planner, throughput, "
                  "the dense-matmul ceiling, and the comparison with OpenCLIP.")
  sub = parser.add_subparsers(dest="command", required=True)
  m = sub.add_parser("memory", help="compiled memory (and step time) over a grid; or --memory-budget")
  m.add_argument("--config", default="tiny")
  m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  m.add_argument("--batches", default=",".join(map(str, memory_grid.DEFAULT_BATCHES)))
  m.add_argument("--batch", type=positive, help="a single contrastive batch size")
  m.add_argument("--microbatches", default="128")
  m.add_argument("--remat", default="none,full")
  m.add_argument("--modes", default=",".join(memory_grid.MODES))
  m.add_argument("--steps", type=positive, default=3, help="timed steps per configuration")
  m.add_argument("--time-max-batch", type=positive, default=8192, help="time only batches up to this")
  m.add_argument("--no-time", action="store_true", help="compile only")
  m.add_argument("--memory-budget", help="plan: e.g. 8GiB; picks remat and microbatch that fit")
  m.add_argument("--json", action="store_true")
  m.add_argument("--out", type=cli.out_file, help="also write the JSON lines here")
  m.set_defaults(fn=_memory)
  t = sub.add_parser("throughput", help="steady-state samples/s per mode, one process per mode")
  throughput.add_arguments(t)
  t.add_argument("--modes", type=_modes, default=list(throughput.MODES))
  t.add_argument("--steps", type=int, default=5)
  t.add_argument("--warmup", type=int, default=2)
  t.add_argument("--max-steps", type=int, default=12)
  t.add_argument("--json", action="store_true")
  t.add_argument("--out", type=cli.out_file, help="also append the JSON lines here")
  t.set_defaults(fn=_throughput)
  r = sub.add_parser("roofline", help="the model's dense matmuls timed alone, against the matmul roof")
  r.add_argument("--config", default="peer-vit")
  r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  r.add_argument("--repeats", type=positive, default=7, help="timed calls per matmul (median)")
  r.add_argument("--json", action="store_true")
  r.add_argument("--out", type=cli.out_file, help="also append the JSON line here")
  r.set_defaults(fn=_roofline)
  c = sub.add_parser("compare", help="our step and OpenCLIP's, alternated, one process each; ratios")
  c.add_argument("--peer-python", required=True, help="python of a venv with open_clip (harness setup)")
  c.add_argument("--peer-script", required=True, help="the OpenCLIP peer harness's bench.py")
  throughput.add_arguments(c)
  c.add_argument("--modes", type=_modes, default=list(throughput.MODES))
  c.add_argument("--steps", type=int, default=5, help="timed steps for plain (accumulating: 2 fewer)")
  c.add_argument("--max-steps", type=int, default=10)
  c.add_argument("--rounds", type=int, default=1, help="rounds; odd rounds run OpenCLIP first")
  c.add_argument("--warmup", type=int, help="untimed steps per side (default: 2 plain, 1 accumulating)")
  c.add_argument("--out", type=cli.out_file, help="append the JSON lines of both sides here")
  c.set_defaults(fn=_compare)
  ct = sub.add_parser("compare-table", help="the comparison table of saved JSON lines (compare --out)")
  ct.add_argument("files", type=cli.existing_file, nargs="+")
  ct.set_defaults(fn=_compare_table)
  g = sub.add_parser("gpu", help="one GPU, 5 minutes: samples/s, TFLOP/s, MFU, max batch (CPU: reduced)")
  gpu_bench.add_arguments(g)
  g.set_defaults(fn=_gpu)
  s = sub.add_parser("scale", help="BASIC's step from N = 4,096 to 2^20: compiled memory, its growth per "
                                   "pair, exactness against the dense loss, and a real training run")
  s.add_argument("--config", default="tiny")
  s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  s.add_argument("--batches", default="4096,16384,65536,262144,1048576", help="compiled, not run")
  s.add_argument("--microbatch", type=positive, default=512)
  s.add_argument("--tile", type=positive, default=128, help="rows per block of the tiled loss")
  s.add_argument("--check", type=int, default=0, metavar="N", help="exactness at this batch (0 = skip)")
  s.add_argument("--check-microbatch", type=int, default=256)
  s.add_argument("--check-tile", type=int, default=128)
  s.add_argument("--train", type=int, default=0, metavar="N", help="train at this batch (0 = skip)")
  s.add_argument("--steps", type=int, default=3, help="training steps of --train")
  s.add_argument("--json", action="store_true")
  s.add_argument("--out", type=cli.out_file, help="also append the JSON lines here")
  s.set_defaults(fn=_scale)
  return parser


def bench_main(argv=None) -> int:
  args = bench_parser().parse_args(argv)
  args.fn(args)
  return 0


def _parse_mesh(text: str) -> tuple[int, int]:
  """'data=64,model=8' -> (64, 8)."""
  try:
    values = dict(part.split("=") for part in text.split(","))
    data, model = int(values.pop("data")), int(values.pop("model"))
  except (KeyError, ValueError):
    raise ConfigError(f"--mesh {text!r}: expected data=D,model=M") from None
  if values or data <= 0 or model <= 0:
    raise ConfigError(f"--mesh {text!r}: expected data=D,model=M with positive sizes")
  return data, model


def _memory_size(text: str) -> int:
  try:
    return budget.parse_bytes(text)
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from None


def plan_main(argv=None) -> int:
  parser = cli.Parser(description=scale_plan.__doc__.split("\n\n")[0])
  parser.add_argument("--config", required=True)
  parser.add_argument("--mesh", required=True, help="data=D,model=M")
  parser.add_argument("--batch", type=cli.number(int, gt=0), help="contrastive batch (default: the config's)")
  parser.add_argument("--microbatch", type=cli.number(int, ge=0),
                      help="0 = no accumulation (default: the config's)")
  parser.add_argument("--rules", help="sharding rule set (default: the config's mesh.rules)")
  parser.add_argument("--memory", type=_memory_size, default="32GiB",
                      help="memory per device, e.g. 32GiB, 80GB")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  parser.add_argument("--json", action="store_true", help="one JSON object on the last line")
  parser.add_argument("--measure", action="store_true",
                      help="also compile the step on the mesh (simulated CPU devices): XLA's bytes")
  args = parser.parse_args(argv)
  try:
    data, model = _parse_mesh(args.mesh)
    overrides = list(args.set)
    for key, value in (("train.batch_size", args.batch), ("train.microbatch_size", args.microbatch),
                       ("mesh.rules", args.rules)):
      if value is not None:
        overrides.append(f"{key}={value!r}")
    overrides += [f"mesh.data={data}", f"mesh.model={model}"]
    config = get_config(args.config, overrides)
    budget_bytes = args.memory
    result = scale_plan.plan(config, data, model)
  except (ConfigError, sharding.ShardingError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  result.update(memory_per_device=budget_bytes, fits=result["bytes_per_device"] <= budget_bytes)
  if args.measure:
    try:
      result.update(plan_xla.compare(result, plan_xla.measure(args.config, overrides, data, model)))
    except RuntimeError as e:  # the child process that simulates the mesh failed
      print(f"error: {e}", file=sys.stderr)
      return 1
  if args.json:
    print(json.dumps(result))
    return 0
  print(scale_plan.format_table(result, budget_bytes))
  if args.measure:
    print(plan_xla.format_lines(result))
  return 0
