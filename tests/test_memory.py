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
  """A budget between the 64- and 32-example steps without remat: (none, 64) does not fit, the choice
  fits, and no fitting candidate tried costs fewer FLOPs."""
  config = get_config("tiny", SMALL + ["model.remat=none"])
  peak = {m: memory.compiled_memory(memory.compile_step(memory.with_overrides(
      config, train__microbatch_size=m)))["peak_bytes"] for m in (64, 32)}
  assert peak[32] < peak[64]
  budget = (peak[32] + peak[64]) // 2
  result = memory.plan(config, budget, smallest_microbatch=32)
  choice = result["choice"]
  assert choice["peak_bytes"] <= budget
  assert [r["fits"] for r in result["tried"] if (r["remat"], r["microbatch"]) == ("none", 64)] == [False]
  assert all(choice["flops"] <= r["flops"] for r in result["tried"] if r["fits"])

