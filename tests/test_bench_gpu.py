"""`python -m basic_core.bench gpu`: its reduced CPU run end to end, the max-batch search, the peak table."""

import json
import math
import subprocess
import sys
import time

import jax
import pytest

from basic_core.perf import gpu_bench

KEYS = {"device", "device_kind", "config", "mode", "batch", "microbatch", "samples_per_s", "tflop_per_s",
        "mfu", "hfu", "jax_version", "reduced", "peak_source", "memory_limit_bytes"}


@pytest.mark.slow  # 35 s: the GPU benchmark's CPU mode, end to end (its parts are tested above)
def test_reduced_cpu_run_writes_rows_and_a_table(tmp_path):
  """The command as the GPU script runs it, here on CPU: two timed rows that say they are reduced."""
  out, table = tmp_path / "rows.jsonl", tmp_path / "table.md"
  cmd = [sys.executable, "-m", "basic_core.bench", "gpu", "--json", "--no-search", "--steps", "2",
         "--out", str(out), "--table", str(table)]
  stdout = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300).stdout
  rows = [json.loads(line) for line in stdout.splitlines()]  # stdout holds nothing but the JSON lines
  assert rows == [json.loads(line) for line in out.read_text().splitlines()]
  assert [(r["config"], r["mode"], r["batch"], r["microbatch"]) for r in rows] == [
      ("tiny", "plain", 32, 32), ("tiny", "accumulate", 64, 32)]
  for r in rows:
    assert set(r) >= KEYS, KEYS - set(r)
    assert (r["device"], r["reduced"], r["dtype"]) == ("cpu", True, "bfloat16")
    for key in ("samples_per_s", "tflop_per_s", "model_tflop_per_s", "mfu", "hfu", "peak_flop_per_s"):
      assert math.isfinite(r[key]) and r[key] > 0, (key, r[key])
    assert r["samples_per_s"] == pytest.approx(r["batch"] / r["step_s_median"])
    assert r["mfu"] == pytest.approx(r["model_tflop_per_s"] * 1e12 / r["peak_flop_per_s"])
    assert r["flops_per_step"] >= r["model_flops_per_step"]  # executed FLOPs include the recomputation
  plain, accumulated = rows
  assert accumulated["loss_tile"] == 32 and accumulated["microbatches"] == 2
  # the same model arithmetic per pair (up to the N x N logits), whatever the microbatching
  assert accumulated["model_flops_per_step"] == pytest.approx(2 * plain["model_flops_per_step"], rel=0.02)
  assert accumulated["flops_per_step"] > 1.1 * accumulated["model_flops_per_step"]  # the caching pass
  text = table.read_text()
  assert text.startswith("REDUCED CPU run, not a GPU measurement.")
  assert "| tiny | accumulate | 64 | 32 x 2 | 32 |" in text


@pytest.mark.parametrize("jump, tries, expected", [
    (0, 4, dict(batch=896, next_batch_fails=True, compiled_batches=[64, 512, 896, 928])),
    # not linear past 700: the predicted 896 fails, the search steps down to the edge
    (500, 4, dict(batch=832, next_batch_fails=True, compiled_batches=[64, 512, 832, 864, 896])),
    (500, 1, dict(batch=512, next_batch_fails=None, compiled_batches=[64, 512, 896])),  # out of tries
])
def test_max_batch_search_finds_the_edge(monkeypatch, jump, tries, expected):
  peak = lambda n: 1000 + 10 * n + (jump if n > 700 else 0)
  compiled = []
  monkeypatch.setattr(gpu_bench, "_peak_bytes", lambda config, n: compiled.append(n) or peak(n))
  config = gpu_bench.mode_config(gpu_bench.CASES["tiny"], "accumulate")  # microbatch 32, tile 32, N 64
  found = gpu_bench.max_batch(config, peak(64), 10_000, deadline=time.monotonic() + 60, tries=tries)
  assert {k: found[k] for k in expected} == expected
  assert found["peak_bytes"] == peak(found["batch"]) and found["capped"] is False
  assert found["bytes_per_sample"] == pytest.approx(10)  # from the batches 64 and 512
  assert 64 not in compiled  # the timed step's compiled bytes are reused


def test_max_batch_search_stops_at_its_cap(monkeypatch):
  monkeypatch.setattr(gpu_bench, "_peak_bytes", lambda config, n: 5000)
  config = gpu_bench.mode_config(gpu_bench.CASES["tiny"], "accumulate")
  found = gpu_bench.max_batch(config, 5000, 10_000, deadline=time.monotonic() + 60)
  assert (found["batch"], found["capped"]) == (gpu_bench.MAX_SEARCH_BATCH, True)


def test_peak_flops_by_device_kind():
  assert gpu_bench.peak_flops("NVIDIA H100 80GB HBM3") == 989.4e12
  assert gpu_bench.peak_flops("NVIDIA H100 PCIe") == 756.5e12
  assert gpu_bench.peak_flops("NVIDIA H200") == 989.4e12
  assert gpu_bench.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
  assert gpu_bench.peak_flops("NVIDIA GeForce RTX 4090") is None  # then the measured roof is used


def test_out_of_memory_halves_the_batch(monkeypatch):
  def measure(case, mode, facts, *, steps, warmup):
    if case.batch > 8:
      raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1GiB")
    return dict(batch=case.batch)

  monkeypatch.setattr(gpu_bench, "measure", measure)
  case, row = gpu_bench.measure_fitting(gpu_bench.CASES["tiny"], "plain", {}, steps=1, warmup=0)
  assert (case.batch, row) == (8, dict(batch=8))  # 32 -> 16 -> 8
  with pytest.raises(jax.errors.JaxRuntimeError):  # not more than twice
    gpu_bench.measure_fitting(gpu_bench.CASES["tiny"], "plain", {}, steps=1, warmup=0, halvings=1)
  monkeypatch.setattr(gpu_bench, "measure", lambda *a, **k: 1 / 0)
  with pytest.raises(ZeroDivisionError):  # other errors are not retried
    gpu_bench.measure_fitting(gpu_bench.CASES["tiny"], "plain", {}, steps=1, warmup=0)
