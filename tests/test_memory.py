"""Compiled-memory measurement and the memory planner (compile only; nothing is trained)."""

import pytest

from basic_core.configs import get_config
from basic_core.perf import budget, compiled

SMALL = ["model.image.vit.patch=8", "train.batch_size=64"]


def peak(config) -> dict:
  return compiled.compiled_memory(compiled.lower_step(config).compile())


def test_parse_bytes():
  assert budget.parse_bytes("8GiB") == 8 * 2**30 and budget.parse_bytes("512MB") == 512_000_000
  with pytest.raises(ValueError, match="memory size"):
    budget.parse_bytes("lots")


def test_accumulation_uses_less_memory_than_naive():
  naive = peak(get_config("tiny", SMALL))
  acc = peak(get_config("tiny", SMALL + ["train.microbatch_size=16"]))
  assert acc["temp_bytes"] < naive["temp_bytes"] / 2, (acc, naive)


def test_planner_choice_fits_its_budget():
  """A budget between the 64- and 32-example steps: no remat, microbatch 32, and it fits."""
  config = get_config("tiny", SMALL)
  peaks = {m: peak(compiled.with_overrides(config, train__microbatch_size=m))["peak_bytes"] for m in (64, 32)}
  assert peaks[32] < peaks[64]
  budget_bytes = (peaks[32] + peaks[64]) // 2
  result = budget.choose(config, budget_bytes, smallest_microbatch=32, policies=("full", "none"))
  assert [r["remat"] for r in result["tried"]][0] == "none"  # cheapest policy first, whatever the order given
  choice = result["choice"]
  assert choice["remat"] == "none" and choice["microbatch"] == 32
  assert choice["peak_bytes"] <= budget_bytes
