"""The sweep: bad input fails before any run; a killed sweep resumes without duplicate or partial rows."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from basic_core.perf.xla_flags import child_env
from experiments.batch_size_sweep import main
from experiments.presets import PRESETS
from experiments.runner import plan_runs

ROOT = Path(__file__).resolve().parents[1]


def _sweep_cmd(out: Path, *extra: str) -> list[str]:
  return [sys.executable, "-m", "experiments.batch_size_sweep", "--preset", "smoke", "--out", str(out),
          "--quiet", "--no-figures", *extra]


def test_unknown_preset_fails_before_any_run(tmp_path, capsys):
  assert main(["--preset", "huge", "--out", str(tmp_path)]) == 2
  assert "unknown preset 'huge'" in capsys.readouterr().err
  assert not (tmp_path / "runs").exists()


def test_batch_the_dataset_cannot_fill_fails_before_any_run(tmp_path, capsys):
  assert main(["--preset", "smoke", "--out", str(tmp_path), "--batch-sizes", "16,8192"]) == 2
  assert "exceeds the 4096 training pairs" in capsys.readouterr().err
  assert not (tmp_path / "runs").exists()


def test_run_ids_change_with_the_config():
  a = {r.run_id for r in plan_runs(PRESETS["smoke"])}
  assert len(a) == len(PRESETS["smoke"].batch_sizes) * len(PRESETS["smoke"].seeds)
  changed = PRESETS["smoke"].__class__(**{**PRESETS["smoke"].__dict__, "samples": 1000})
  assert not a & {r.run_id for r in plan_runs(changed)}


@pytest.mark.slow  # 58 s; tests/test_kills.py kills the sweep driver at random points too (also slow)
def test_killed_sweep_resumes_without_duplicates(tmp_path):
  """SIGKILL the sweep mid-run, re-run it: every run appears once, finished runs are not redone."""
  cmd = _sweep_cmd(tmp_path, "--batch-sizes", "16,64", "--seeds", "0")
  env = child_env(1)
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  results = tmp_path / "results.csv"
  deadline = time.time() + 240
  while time.time() < deadline and not (results.exists() and len(pd.read_csv(results)) >= 1):
    time.sleep(0.5)
  time.sleep(3)  # into the second run
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  first = pd.read_csv(results)
  assert len(first) >= 1 and first["run_id"].is_unique
  finished = {rid: (tmp_path / "runs" / rid / "eval.json").stat().st_mtime for rid in first["run_id"]}
  assert subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True).returncode == 0
  final = pd.read_csv(results)
  assert sorted(final["batch_size"]) == [16, 64] and final["run_id"].is_unique
  for rid, mtime in finished.items():
    assert (tmp_path / "runs" / rid / "eval.json").stat().st_mtime == mtime, "finished run was redone"
  assert any("gap" in c for c in final.columns) and any("zeroshot" in c for c in final.columns)


@pytest.mark.slow
def test_smoke_sweep_end_to_end(tmp_path):
  assert main(["--preset", "smoke", "--out", str(tmp_path), "--quiet"]) == 0
  df = pd.read_csv(tmp_path / "results.csv")
  assert len(df) == 9 and set(df["batch_size"]) == {16, 64, 256}
  assert (tmp_path / "figures" / "gap_vs_batch.png").exists()


def test_scaling_preset_crosses_model_data_and_batch_and_draws_the_combined_panels(tmp_path):
  """The combined-scaling grid: every (model, data size, batch, seed) once, each with its own sizes;
  the figure script draws the combined panels from such results (synthetic numbers, no training)."""
  from paper_figures.sweep_figures import combined_figure
  sweep = PRESETS["scaling"]
  runs = plan_runs(sweep)
  grid = {(r.model, r.num_train, r.batch_size, r.seed) for r in runs}
  assert len(grid) == len(runs) == (len(sweep.models) * len(sweep.num_train) * len(sweep.batch_sizes)
                                    * len(sweep.seeds))
  widths = {r.model: r.config().model.image.vit.width for r in runs}
  assert len(set(widths.values())) == len(sweep.models)
  assert {r.config().data.num_train for r in runs} == set(sweep.num_train)
  rng = np.random.default_rng(0)
  df = pd.DataFrame([dict(model=r.model, num_train=r.num_train, batch_size=r.batch_size, seed=r.seed,
                          gap_fixed_eval=rng.normal(), zeroshot_mean_top1=rng.uniform()) for r in runs])
  path = combined_figure(df, tmp_path / "combined.png")
  assert path is not None and path.stat().st_size > 10_000
  assert combined_figure(df[(df.model == "s") & (df.num_train == sweep.num_train[0])],
                         tmp_path / "none.png") is None


def test_negatives_grid_varies_only_the_group_size_data_mode_temperature_and_seed():
  """Same optimizer batch, steps, schedule and (frozen) temperature for every G; fresh runs have no pool
  size, so the full grid holds one fresh run per (G, temperature, seed), not one per m."""
  runs = plan_runs(PRESETS["negatives-pilot"])
  configs = [r.config() for r in runs]
  assert len(runs) == 5 * 3 * 2 * 2 and len({r.run_id for r in runs}) == len(runs)
  for key in ("train.batch_size", "train.steps", "optim.lr", "optim.warmup_steps", "train.microbatch_size",
              "model.learn_temperature"):
    section, name = key.split(".")
    assert len({c[section][name] for c in configs}) == 1, key
  assert {c.loss.group_size for c in configs} == {4, 16, 64, 256, 1024}
  assert {c.model.temperature_init for c in configs} == {0.07, 0.1} and not configs[0].model.learn_temperature
  assert {(r.data_mode, c.data.fresh) for r, c in zip(runs, configs)} == {("fresh", True), ("pool", False)}
  assert [r.seed for r in runs[:20]] == [0] * 20  # seeds outermost: an early stop leaves whole seeds



def test_testbed_grid_has_its_arms_and_per_seed_data():
  """The testbed grid: objects world fresh / pool 8192 / pool 65536 at T = 0.07, fresh with a learned
  temperature, the scenes world fresh at T = 0.07; G in 4..1024, 5 seeds; each seed draws its own data
  (data.seed = seed); seeds outermost across the arms; probes every 10% of training."""
  runs = plan_runs(PRESETS["negatives"])
  assert len(runs) == 5 * 5 * (3 + 1 + 1) and len({r.run_id for r in runs}) == len(runs)
  arms = {(r.world, r.data_mode, r.num_train if r.data_mode == "pool" else 0, r.temperature) for r in runs}
  assert arms == {("objects", "fresh", 0, 0.07), ("objects", "pool", 8192, 0.07),
                  ("objects", "pool", 65536, 0.07), ("objects", "fresh", 0, 0.0),
                  ("scenes", "fresh", 0, 0.07)}
  configs = [r.config() for r in runs]
  assert all(c.data.seed == r.seed and c.data.world == r.world for r, c in zip(runs, configs))
  assert all(c.eval.probe_every * 10 == c.train.steps and c.eval.control for c in configs)
  assert [r.seed for r in runs[:25]] == [0] * 25


@pytest.mark.slow
def test_negatives_smoke_end_to_end(tmp_path):
  """`make sweep`: three G at B = 256 on fresh pairs of the objects world; the population loss falls with G
  (the effect its figure shows), one seed gives no claim, and the figures are drawn."""
  assert main(["--preset", "negatives-smoke", "--out", str(tmp_path), "--quiet"]) == 0
  df = pd.read_csv(tmp_path / "results.csv").sort_values("group_size")
  assert df["group_size"].tolist() == [4, 16, 256] and (df["world"] == "objects").all()
  assert df["heldout_loss_offset_all"].iloc[-1] < df["heldout_loss_offset_all"].iloc[0]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert all("no interval (one seed)" in v for v in summary["verdicts"])
  assert (tmp_path / "figures" / "negatives_outcomes.png").exists()


def test_mechanism_shares_the_grids_plain_runs_and_adds_the_estimators():
  """The mechanism preset: its 50 plain runs of seeds 0-4 are the testbed grid's (same configs, same ids);
  SogCLR at G in {4, 16, 64} on the pool, a queue with G + Q = 1,024 on fresh pairs; seeds 5-14 only for
  SogCLR vs plain at G = 16 and plain at 1,024 on the pool; the estimator in the results."""
  runs = plan_runs(PRESETS["mechanism"])
  grid = {r.run_id for r in plan_runs(PRESETS["negatives"])}
  plain = [r for r in runs if r.estimator == "plain" and r.seed < 5]
  assert len(runs) == 110 and len(plain) == 50 and all(r.run_id in grid for r in plain)
  more = {(r.estimator, r.data_mode, r.group_size) for r in runs if r.seed >= 5}
  assert more == {("plain", "pool", 16), ("plain", "pool", 1024), ("sogclr", "pool", 16)}
  assert [r.seed for r in runs] == sorted(r.seed for r in runs)  # every arm of a seed before the next seed
  debiased = {(r.estimator, r.data_mode, r.group_size, r.queue_size) for r in runs if r.estimator != "plain"}
  assert debiased == {("sogclr", "pool", g, 0) for g in (4, 16, 64)} | {
      ("queue", "fresh", g, 1024 - g) for g in (4, 16, 64)}
  for r in runs:
    c = r.config()
    assert (c.loss.estimator, c.loss.queue_size) == (r.estimator, r.queue_size)


def test_collect_rebuilds_results_from_restored_records(tmp_path):
  """`--collect` (make grid-results, make mechanism-results): the committed records of two grid runs, copied
  into a fresh sweep folder, become its results.csv rows without running anything; a run that is not the
  preset's is ignored."""
  grid_records = Path(__file__).resolve().parents[1] / "paper_figures/data/negatives_grid_runs"
  records = sorted(grid_records.iterdir())[:2]
  for record in records + [records[0].with_name("not-a-run-of-this-preset")]:
    (tmp_path / "runs" / record.name).mkdir(parents=True)
    for name in ("eval.json", "metrics.jsonl"):
      if (record / name).exists():
        shutil.copy(record / name, tmp_path / "runs" / record.name / name)
  assert main(["--preset", "negatives", "--out", str(tmp_path), "--collect"]) == 0
  df = pd.read_csv(tmp_path / "results.csv")
  assert sorted(df["run_id"]) == [r.name for r in records]
  assert not (tmp_path / "sweep.json").exists()
