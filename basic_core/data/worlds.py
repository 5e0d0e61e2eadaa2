"""The built-in worlds by name: the one door from the data machinery to `basic_core/worlds/`.

The machinery (readers, pipeline, evaluation suite, commands) never imports a world; it asks this
registry, which imports the named module on first use. A world module provides

  build(config) -> World     its pool, held-out pairs and zero-shot tasks, fixed by data.seed
  corpus(seed, num) -> list  captions and task prompts (the builtin tokenizer's training text)

and, for worlds drawn procedurally, `World.fresh(seed, noise)` (an unlimited stream of pairs, each
drawn once) and `World.claims_and_facts(stream, n)` (what `false_negatives.py` counts).
"""

from __future__ import annotations

import importlib
from typing import Protocol

from basic_core.configs import ConfigError, world_name
from basic_core.data.source import Source
from basic_core.data.tasks import ZeroShotTask

WORLDS = {
    "scenes": "basic_core.worlds.scenes",  # 1-3 objects, alt-text-like partial captions (the first world)
    "digits": "basic_core.worlds.digits",  # scikit-learn's scanned digits: real pixels
    "objects": "basic_core.worlds.objects",  # 1-4 objects, complete captions: negatives are negatives
}


class World(Protocol):
  image_size: int
  train: Source  # the pool of data.num_train pairs
  test: Source  # held-out pairs from the same distribution

  def tasks(self, n: int) -> list[ZeroShotTask]: ...


def module(name: str):
  if name not in WORLDS:
    raise ConfigError(f"data.world must be one of {sorted(WORLDS)}, got {name!r}")
  return importlib.import_module(WORLDS[name])


def build(config) -> World:
  return module(world_name(config.data)).build(config)


def corpus(seed: int, num: int) -> list[str]:
  """Every world's captions (num per procedural world) and prompts: the builtin tokenizer's text."""
  return [text for name in WORLDS for text in module(name).corpus(seed, num)]
