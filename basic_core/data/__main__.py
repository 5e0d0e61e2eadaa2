"""Data commands: export a built-in world as WebDataset shards, benchmark the input pipeline, train a BPE,
count a world's false negatives.

  python -m basic_core.data export --out DIR [--num N] [--shard-size K] [--config tiny] [--split train]
  python -m basic_core.data bench [--config tiny] [--seconds 3]
  python -m basic_core.data train-tokenizer --out FILE [--vocab-size 1024] [--corpus builtin|CSV|shards|TXT]
  python -m basic_core.data fn-rate --group-size G [--world W] [--rows 8192] [--json]

Every command takes `--set key=value` config overrides (e.g. --set data.world=digits).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import numpy as np

from analysis import cli
from basic_core.configs import get_config, world_name
from basic_core.data import false_negatives, wds, worlds
from basic_core.data import images as image_io
from basic_core.data.datasets import read_pairs
from basic_core.data.pipeline import train_pipeline
from basic_core.data.tokenizer import get_tokenizer, train_bpe

TINY_TRAINER_SAMPLES_PER_S = 1000  # upper end of the tiny trainer's rate on a 2-core CPU
_EXPORT_CHUNK = 256


def export_shards(config, out: str, num: int | None = None, shard_size: int = 1000,
                  split: str = "train") -> list[str]:
  """Writes the first `num` pairs of a built-in split as key.png / key.txt / key.json shards."""
  if num and world_name(config.data) != "digits":  # procedural worlds draw as many pairs as asked
    config = config.copy_and_resolve_references()
    config.data[f"num_{split}"] = num
  pairs = getattr(worlds.build(config), split)
  n = min(num or len(pairs), len(pairs))

  def samples():
    for start in range(0, n, _EXPORT_CHUNK):
      idx = np.arange(start, min(n, start + _EXPORT_CHUNK))
      loaded = pairs.load(idx)
      for row, i in enumerate(idx):
        meta = dict(label=int(loaded.labels_N[row]), split=split, index=int(i), **pairs.describe(int(i)))
        yield f"{i:09d}", dict(png=image_io.encode_png(loaded.images_NxHxWx3[row]),
                               txt=loaded.captions[row].encode(), json=json.dumps(meta).encode())

  return wds.write_shards(samples(), out, shard_size, prefix=f"{world_name(config.data)}-{split}")


def brace_pattern(paths: list[str]) -> str:
  """The data.train value naming shards written by export_shards."""
  last = len(paths) - 1
  return paths[0].replace("000000.tar", f"{{000000..{last:06d}}}.tar") if last else paths[0]


def corpus(spec: str, config, num: int) -> list[str]:
  """Captions to train a tokenizer on: 'builtin' (every built-in world's captions and task prompts), a
  .txt file (one caption per line), or any data.train value (CSV/TSV, shards)."""
  if spec == "builtin":
    return worlds.corpus(config.data.seed, num)
  if spec.endswith(".txt"):
    with open(spec, encoding="utf-8") as f:
      return [line.strip() for line in f if line.strip()]
  return read_pairs(spec, config).captions


def _rate(fn, items_per_call: int, seconds: float, clock=time.perf_counter) -> float:
  """Items per second of `clock` (wall time; time.process_time = CPU time of this process)."""
  fn()
  calls, start = 0, clock()
  while clock() - start < seconds:
    fn()
    calls += 1
  return calls * items_per_call / (clock() - start)


def bench(config, seconds: float) -> dict[str, float]:
  """Images/s of the world's renderer at 32 and 64 (per CPU second: it runs on one core), and samples/s
  of the pipeline, built-in and from shards (per wall second, as the trainer sees it)."""
  results, idx = {}, np.arange(2048)
  for size in (32, 64):
    sized = config.copy_and_resolve_references()
    sized.model.image.image_size, sized.data.num_train = size, len(idx)
    pool = worlds.build(sized).train
    results[f"render {size}x{size} images/s"] = _rate(
        lambda p=pool: p.images(idx), len(idx), seconds, clock=time.process_time)
  tokenizer = get_tokenizer(config.data, config.model.text.context)
  batch = config.train.batch_size

  def pipeline_rate(cfg) -> float:
    p = train_pipeline(cfg, tokenizer)
    rate = _rate(lambda: next(p), batch, seconds)
    p.close()
    return rate

  results["pipeline builtin samples/s"] = pipeline_rate(config)
  with tempfile.TemporaryDirectory() as tmp:
    shards = export_shards(config, tmp, num=4096, shard_size=1024)
    shard_config = config.copy_and_resolve_references()
    shard_config.data.train = brace_pattern(shards)
    results["pipeline webdataset samples/s"] = pipeline_rate(shard_config)
  return results


def main(argv: list[str] | None = None) -> None:
  parser = cli.Parser(prog="python -m basic_core.data", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest="command", required=True)
  for name in ("export", "bench", "train-tokenizer", "fn-rate"):
    sub = commands.add_parser(name)
    sub.add_argument("--config", default="tiny")
    sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  positive = cli.number(int, gt=0)
  commands.choices["export"].add_argument("--out", required=True, type=cli.out_dir)
  commands.choices["export"].add_argument("--num", type=positive, help="pairs (default: the split)")
  commands.choices["export"].add_argument("--shard-size", type=positive, default=1000)
  commands.choices["export"].add_argument("--split", choices=("train", "test"), default="train")
  commands.choices["bench"].add_argument("--seconds", type=cli.number(float, gt=0), default=3.0)
  commands.choices["train-tokenizer"].add_argument("--out", required=True, type=cli.out_file)
  commands.choices["train-tokenizer"].add_argument("--vocab-size", type=positive, default=1024)
  commands.choices["train-tokenizer"].add_argument("--corpus", default="builtin")
  commands.choices["train-tokenizer"].add_argument("--num", type=positive, default=50000,
                                                   help="scene captions in the builtin corpus")
  fn_rate = commands.choices["fn-rate"]
  fn_rate.add_argument("--group-size", type=positive, required=True, help="G, the pairs of one loss group")
  fn_rate.add_argument("--world", default=None, help="a built-in world (default: the config's data.world)")
  fn_rate.add_argument("--rows", type=positive, default=8192, help="rows sampled (at least one group)")
  fn_rate.add_argument("--seed", type=int, default=0)
  fn_rate.add_argument("--json", action="store_true", help="one JSON object")
  args = parser.parse_args(argv)
  config = get_config(args.config, args.set + ([f"data.world={args.world}"] if "world" in args and args.world
                                               else []))

  if args.command == "export":
    paths = export_shards(config, str(args.out), args.num, args.shard_size, args.split)
    print(f"wrote {len(paths)} shards; train on them with --set data.train={brace_pattern(paths)}")
  elif args.command == "bench":
    for name, value in bench(config, args.seconds).items():
      headroom = f"  ({value / TINY_TRAINER_SAMPLES_PER_S:.1f}x a {TINY_TRAINER_SAMPLES_PER_S}/s trainer)" \
          if "pipeline" in name else ""
      print(f"{name:34s} {value:10.0f}{headroom}")
  elif args.command == "fn-rate":
    result = dict(world=world_name(config.data)) | false_negatives.rate(
        worlds.build(config), args.group_size, args.rows, args.seed)
    if args.json:
      print(json.dumps(result))
    else:
      low, high = result["ci95"]
      print(f"world {result['world']}, G = {args.group_size}: false-negative rate {result['rate']:.4f} "
            f"[{low:.4f}, {high:.4f}] over {result['rows']} rows in {result['groups']} groups")
  else:
    with cli.blame("--corpus"):
      texts = corpus(args.corpus, config, args.num)
    tok = train_bpe(texts, args.vocab_size)
    tok.save(str(args.out))
    print(f"wrote {args.out}: vocabulary {tok.get_vocab_size()}")


if __name__ == "__main__":
  sys.exit(cli.run(main))
