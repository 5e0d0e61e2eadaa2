"""Compiled-memory measurement and the memory planner (compile only; nothing is trained)."""

import pytest

from basic_core import memory
from basic_core.configs import get_config

SMALL = ["model.image.vit.patch=8", "train.batch_size=64"]


def test_parse_bytes():
  assert memory.parse_bytes("8GiB") == 8 * 2**30 and memory.parse_bytes("512MB") == 512_000_000
  with pytest.raises(ValueError, match="memory size"):
    memory.parse_bytes("lots")


def test_accumulation_uses_less_memory_than_naive():
  naive = memory.compiled_memory(memory.compile_step(get_config("tiny", SMALL)))
  acc = memory.compiled_memory(memory.compile_step(get_config("tiny", SMALL + ["train.microbatch_size=16"])))
  assert acc["temp_bytes"] < naive["temp_bytes"] / 2, (acc, naive)


def test_planner_choice_fits_its_budget():
  """A budget between the 64- and 32-example steps: no remat, microbatch 32, and it fits."""
  config = get_config("tiny", SMALL)
  peak = {m: memory.compiled_memory(memory.compile_step(memory.with_overrides(
      config, train__microbatch_size=m)))["peak_bytes"] for m in (64, 32)}
  assert peak[32] < peak[64]
  budget = (peak[32] + peak[64]) // 2
  choice = memory.plan(config, budget, smallest_microbatch=32)["choice"]
  assert choice["remat"] == "none" and choice["microbatch"] == 32
  assert choice["peak_bytes"] <= budget
