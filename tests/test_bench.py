"""The benchmark tools' plumbing: the OpenCLIP comparison table, the memory grid, the mode processes."""

import pytest

from basic_core.configs import get_config, microbatching
from basic_core.perf import cli, compare, memory_grid, throughput


def row(side, speed, rss, round_, **kw):
  return dict(name="plain", side=side, round=round_, samples_per_s=speed, peak_rss_mb=rss, batch=256,
              microbatch=256, remat="none", hw_gflop_per_s=100.0 + round_, **kw)


def test_table_takes_medians_and_max_rss():
  rows = [row("ours", 40.0, 3000, 0), row("openclip", 20.0, 4000, 0), row("ours", 44.0, 3100, 1),
          row("openclip", 30.0, 3900, 1), row("ours", 60.0, 2900, 2), row("openclip", 25.0, 3000, 2)]
  line = compare.table(rows).splitlines()[-1]
  cells = [c.strip() for c in line.strip("|").split("|")]
  assert cells[4:10] == ["44.0", "25.0", "**1.76x**", "3100", "4000", "**0.78x**"]
  assert cells[10] == "101"  # no roof recorded: GFLOP/s only


def test_table_reports_share_of_roof():
  rows = [row("ours", 40.0, 3000, 0, matmul_roof_gflop_per_s=200.0), row("openclip", 20.0, 4000, 0)]
  assert compare.table(rows).splitlines()[-1].endswith("| 100 (50%) |")


def test_memory_grid_accumulates_only_with_microbatches_that_split_the_batch():
  grid = memory_grid.configs(get_config("tiny"), (64, 96), (32, 64), ("none",), ("naive", "accumulate"))
  assert [(c.train.batch_size, *microbatching(c.train)) for c in grid] == [
      (64, 64, 1), (64, 32, 2), (96, 96, 1), (96, 32, 3)]
  with pytest.raises(ValueError, match="unknown modes"):
    list(memory_grid.configs(get_config("tiny"), (64,), (32,), ("none",), ("naive", "accumulated")))


def test_a_mode_process_gets_the_settings_it_was_given():
  """`bench throughput` and `bench compare` hand each mode to `python -m basic_core.perf.throughput`."""
  settings = throughput.Settings("tiny", ("model.text.layers=1",), batch=64, remat="full", steps=3)
  cmd = throughput.command(settings, "accumulate")
  assert cmd[1:3] == ["-m", "basic_core.perf.throughput"]
  args = throughput.parser().parse_args(cmd[3:])
  assert args.mode == "accumulate" and throughput.settings_from(args) == settings
  config = throughput.mode_config(settings, "accumulate")
  assert (config.train.batch_size, config.train.microbatch_size, config.model.remat) == (64, 16, "full")
  assert config.model.text.layers == 1


def test_bench_rejects_unknown_modes_before_starting_a_process():
  with pytest.raises(SystemExit):
    cli.bench_parser().parse_args(["throughput", "--modes", "plain,acumulate"])
