"""Data commands: export the built-in set as WebDataset shards, benchmark the input pipeline, train a BPE.

  python -m basic_core.data export --out DIR [--num N] [--shard-size K] [--config tiny] [--split train]
  python -m basic_core.data bench [--config tiny] [--seconds 3]
  python -m basic_core.data train-tokenizer --out FILE [--vocab-size 1024] [--corpus builtin|CSV|shards|TXT]

Every command takes `--set key=value` config overrides (e.g. --set data.name=digits).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np

from basic_core.configs import get_config
from basic_core.data import captions as C
from basic_core.data import digits as digits_lib
from basic_core.data import images as image_io
from basic_core.data import scenes as S
from basic_core.data import tasks, wds
from basic_core.data.benchmark import ScenesBenchmark
from basic_core.data.datasets import builtin, read_pairs
from basic_core.data.pipeline import train_pipeline
from basic_core.data.tokenizer import get_tokenizer, train_bpe

TINY_TRAINER_SAMPLES_PER_S = 1000  # upper end of the tiny trainer's rate on a 2-core CPU
_EXPORT_CHUNK = 256


def export_shards(config, out: str, num: int | None = None, shard_size: int = 1000,
                  split: str = "train") -> list[str]:
  """Writes the first `num` pairs of a built-in split as key.png / key.txt / key.json shards."""
  if num and config.data.name == "scenes":
    config = config.copy_and_resolve_references()
    config.data[f"num_{split}"] = num
  pairs = getattr(builtin(config), split)
  n = min(num or len(pairs), len(pairs))

  def samples():
    for start in range(0, n, _EXPORT_CHUNK):
      idx = np.arange(start, min(n, start + _EXPORT_CHUNK))
      loaded = pairs.load(idx)
      for row, i in enumerate(idx):
        meta = dict(label=int(loaded.labels_N[row]), split=split, index=int(i), **pairs.describe(int(i)))
        yield f"{i:09d}", dict(png=image_io.encode_png(loaded.images_NxHxWx3[row]),
                               txt=loaded.captions[row].encode(), json=json.dumps(meta).encode())

  return wds.write_shards(samples(), out, shard_size, prefix=f"{config.data.name}-{split}")


def brace_pattern(paths: list[str]) -> str:
  """The data.train value naming shards written by export_shards."""
  last = len(paths) - 1
  return paths[0].replace("000000.tar", f"{{000000..{last:06d}}}.tar") if last else paths[0]


def corpus(spec: str, config, num: int) -> list[str]:
  """Captions to train a tokenizer on: 'builtin' (scene and digit captions, task prompts), a .txt
  file (one caption per line), or any data.train value (CSV/TSV, shards)."""
  if spec == "builtin":
    scenes = ScenesBenchmark(config.data.seed, 8, num, 0).scenes["train"]
    digit_sets = digits_lib.Digits(config.data.seed, 8)
    digit_prompts = [t.format(w) for t in digits_lib.TEMPLATES for w in digits_lib.WORDS]
    digit_captions = [digit_sets.caption(i) for i in range(len(digit_sets.labels_N))]
    return C.captions(scenes, np.arange(num)) + digit_captions + tasks.prompts() + digit_prompts
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
  """Images/s of the renderer at 32 and 64 (per CPU second: it runs on one core), and samples/s of the
  pipeline, built-in and from shards (per wall second, as the trainer sees it)."""
  results = {}
  scenes = S.sample(np.random.default_rng(0), 2048, S.allowed_table(S.heldout_pairs(0)))
  for size in (32, 64):
    results[f"render {size}x{size} images/s"] = _rate(
        lambda s=size: S.render_scenes(scenes, s), len(scenes), seconds, clock=time.process_time)
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
  parser = argparse.ArgumentParser(prog="python -m basic_core.data", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest="command", required=True)
  for name in ("export", "bench", "train-tokenizer"):
    sub = commands.add_parser(name)
    sub.add_argument("--config", default="tiny")
    sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  commands.choices["export"].add_argument("--out", required=True)
  commands.choices["export"].add_argument("--num", type=int, default=None, help="pairs (default: the split)")
  commands.choices["export"].add_argument("--shard-size", type=int, default=1000)
  commands.choices["export"].add_argument("--split", choices=("train", "test"), default="train")
  commands.choices["bench"].add_argument("--seconds", type=float, default=3.0)
  commands.choices["train-tokenizer"].add_argument("--out", required=True)
  commands.choices["train-tokenizer"].add_argument("--vocab-size", type=int, default=1024)
  commands.choices["train-tokenizer"].add_argument("--corpus", default="builtin")
  commands.choices["train-tokenizer"].add_argument("--num", type=int, default=50000,
                                                   help="scene captions in the builtin corpus")
  args = parser.parse_args(argv)
  config = get_config(args.config, args.set)

  if args.command == "export":
    paths = export_shards(config, args.out, args.num, args.shard_size, args.split)
    print(f"wrote {len(paths)} shards; train on them with --set data.train={brace_pattern(paths)}")
  elif args.command == "bench":
    for name, value in bench(config, args.seconds).items():
      headroom = f"  ({value / TINY_TRAINER_SAMPLES_PER_S:.1f}x a {TINY_TRAINER_SAMPLES_PER_S}/s trainer)" \
          if "pipeline" in name else ""
      print(f"{name:34s} {value:10.0f}{headroom}")
  else:
    tok = train_bpe(corpus(args.corpus, config, args.num), args.vocab_size)
    tok.save(args.out)
    print(f"wrote {args.out}: vocabulary {tok.get_vocab_size()}")


if __name__ == "__main__":
  main()
