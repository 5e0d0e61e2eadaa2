"""Which pairs a config names: data.train is `builtin` (data.world, see `worlds.py`), a CSV/TSV file, or
WebDataset shards (comma-separated or a brace pattern); the held-out pairs go with it.

Real data takes its held-out pairs from data.test when set, otherwise a seeded tenth of data.train
(at most data.num_test pairs) is kept out of training.
"""

from __future__ import annotations

import zlib

import numpy as np

from basic_core.data import wds, worlds
from basic_core.data.csv_pairs import read_csv
from basic_core.data.source import EncodedPairs, Source


def read_pairs(spec: str, config) -> EncodedPairs:
  d, size = config.data, config.model.image.image_size
  if spec.lower().endswith((".csv", ".tsv")):
    return read_csv(spec, size, d.csv_image_key, d.csv_caption_key, d.csv_label_key)
  paths = wds.expand(spec)
  if not paths:
    raise ValueError(f"{spec!r} names no WebDataset shard (an empty brace range?)")
  return wds.read_shards(paths, size)


def train_and_test(config, world: worlds.World | None = None) -> tuple[Source, Source]:
  """(train, held-out) sources; `world` is worlds.build(config) when the caller has it already."""
  d = config.data
  if d.train == "builtin":
    world = world or worlds.build(config)
    return (world.fresh(config.seed, d.noise) if d.fresh else world.train), world.test
  train = read_pairs(d.train, config)
  if d.test:
    return train, read_pairs(d.test, config)
  num_test = min(d.num_test, len(train) // 10)
  order = np.random.default_rng([d.seed, zlib.crc32(b"real/test")]).permutation(len(train))
  return train.subset(np.sort(order[num_test:])), train.subset(np.sort(order[:num_test]))
