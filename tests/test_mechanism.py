"""experiments/mechanism.py on results with a planted answer: the recovered fraction's interval covers the
planted fraction and is conclusive with enough seeds, a debiased arm that does nothing recovers 0, and a
plain arm with no gain to recover gives no interval and no claim."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis import stats
from experiments import mechanism

PLAIN_G = (4, 16, 64, 256, 1024)


def planted(fraction: float, seeds: int, noise: float, slope: float = -0.03, seed: int = 0) -> pd.DataFrame:
  """Plain loss = a_seed + slope log2 G + noise; SogCLR at G = plain_G - fraction (plain_G - plain_1024)."""
  rng = np.random.default_rng(seed)
  rows = []
  for s in range(seeds):
    a = 2 + rng.normal(0, 0.05)
    mean = {g: a + slope * np.log2(g) for g in PLAIN_G}
    cell = lambda estimator, g, value, s=s: dict(  # noqa: E731
        run_id=f"{estimator}-G{g}-s{s}", estimator=estimator, data_mode="pool", group_size=g, seed=s,
        queue_size=0,
        heldout_loss_offset_all=value + rng.normal(0, noise), gap_offset_all=0.05 + rng.normal(0, noise),
        zeroshot_shape_top1=0.3 - value / 10 + rng.normal(0, noise),
        retrieval_i2t_r1=0.5 + rng.normal(0, noise))
    rows += [cell("plain", g, mean[g]) for g in PLAIN_G]
    rows += [cell("sogclr", g, mean[g] - fraction * (mean[g] - mean[1024])) for g in (4, 16, 64)]
  return pd.DataFrame(rows)


def primary(summary: dict, g: int) -> dict:
  return next(r for r in summary["recovered"] if r["metric"] == mechanism.PRIMARY and r["group_size"] == g)


@pytest.mark.parametrize("fraction", [-0.5, 0.0, 0.5, 1.0, 1.5])
def test_recovered_fraction_finds_the_planted_one_and_is_conclusive(fraction):
  """Point estimates near the planted fraction, intervals narrow enough to be conclusive (their coverage:
  the Fieller test below); an interval wholly outside [0, 1] is named as worse or better."""
  summary = mechanism.summarize(planted(fraction, seeds=6, noise=0.005))
  for g in (4, 16, 64):
    r = primary(summary, g)
    assert abs(r["ratio"] - fraction) < 0.1 and r["conclusive"], r
  assert len(summary["answer"]) == 3 and "conclusive" in summary["answer"][1]
  words = {-0.5: "below 0: worse", 1.5: "above 100%: better"}.get(fraction)
  assert all((words in a) if words else ("whole interval" not in a) for a in summary["answer"])


def test_fieller_interval_has_its_coverage_and_refuses_a_ratio_over_nothing():
  """Over 400 planted draws the 95% interval covers the true ratio 0.6 about 95% of the time (a wrong
  variance would miss), and a denominator not told apart from 0 gives an unbounded interval."""
  rng = np.random.default_rng(1)
  hits = 0
  for _ in range(400):
    b = rng.normal(1, 0.3, 5)
    r = stats.paired_ratio(0.6 * b + rng.normal(0, 0.1, 5), b)
    hits += r["ci_low"] <= 0.6 <= r["ci_high"]
  assert 0.92 <= hits / 400 <= 0.98
  assert not stats.paired_ratio(rng.normal(0.5, 0.1, 5), rng.normal(0, 1, 5))["bounded"]


def test_no_gain_to_recover_gives_no_claim():
  summary = mechanism.summarize(planted(0.5, seeds=5, noise=0.05, slope=0.0))
  r = primary(summary, 16)
  assert not r["bounded"] and not r["conclusive"] and "no claim" in mechanism.answer(r)


def test_differences_and_slopes_are_one_holm_family_with_their_words():
  summary = mechanism.summarize(planted(1.0, seeds=6, noise=0.01), margins={"gap_offset_all": 0.01})
  judged = summary["judged"]
  assert len({j["tests_in_family"] for j in judged}) == 1
  vs_own_g = next(j for j in judged if j["arm"] == "sogclr G=16 vs plain G=16 (pool)"
                  and j["metric"] == mechanism.PRIMARY)
  assert vs_own_g["claim"] == "lower" and "minus plain G=16" in vs_own_g["verdict"]
  vs_large = next(j for j in judged if j["arm"] == "sogclr G=16 vs plain G=1024 (pool)"
                  and j["metric"] == mechanism.PRIMARY)
  assert vs_large["claim"] == "none"  # fraction 1: no difference from G = 1024 to show
  plain_gap = next(j for j in judged if j["arm"] == "plain, pool" and j["metric"] == "gap_offset_all")
  assert plain_gap["claim"] == "equivalent"
  # The margin is per doubling of G (slopes): a difference between arms, however tight, is never called
  # equivalent with it (the planted gaps are equal across arms, the interval well inside +-0.01).
  tight = mechanism.summarize(planted(1.0, seeds=6, noise=0.001), margins={"gap_offset_all": 0.01})
  gap_difference = next(j for j in tight["judged"] if j["arm"] == "sogclr G=16 vs plain G=16 (pool)"
                        and j["metric"] == "gap_offset_all")
  assert -0.01 < gap_difference["ci_low"] < gap_difference["ci_high"] < 0.01
  assert gap_difference["claim"] == "none"


def test_gradient_bias_is_read_at_each_runs_own_g_and_newest_step():
  df = planted(0.5, seeds=3, noise=0.01)
  rows = pd.DataFrame([dict(run=r, step=step, group_size=g, rel_bias=step + g / 1e4 + (r == "sogclr-G4-s0"),
                            ratio_measured_predicted=0.5)
                       for r in df.run_id for g in (4, 16, 64, 256, 1024) for step in (270, 300)])
  merged = mechanism.with_gradients(df, rows)
  expected = 300 + merged.group_size / 1e4 + (merged.run_id == "sogclr-G4-s0")
  assert np.allclose(merged.gradient_rel_bias, expected)
  summary = mechanism.summarize(merged)
  assert "gradient_rel_bias" in summary["arms"][0]["slopes"]
  assert {d["metric"] for d in summary["gradient_differences"]} == set(mechanism.GRADIENT)
  assert all(j["metric"] not in mechanism.GRADIENT for j in summary["judged"])


def test_geometry_table_reads_each_runs_newest_step_and_averages_per_arm():
  df = planted(0.5, seeds=3, noise=0.01)
  geometry = {c: 0.0 for c in mechanism.GEOMETRY}
  rows = pd.DataFrame([dict(geometry, run=r, step=step, image_effective_rank=step + seed)
                       for r, seed in zip(df.run_id, df.seed) for step in (270, 300)])
  lines = mechanism.geometry_table(df, rows).splitlines()
  assert len(lines) == 2 + 8  # plain at 5 G, sogclr at 3
  sogclr_16 = next(line for line in lines if line.startswith("| sogclr, pool | 16 |"))
  assert "| 3 | 301.000 (300.000 to 302.000) |" in sogclr_16  # seeds 0-2 at their step 300
  queued = df.estimator == "sogclr"  # as if only these runs had a queue's numbers
  rows = rows.assign(**{c: np.where(rows.run.isin(df.run_id[queued]), 0.25, np.nan)
                        for c in mechanism.QUEUE_GEOMETRY if c != "negative_cosine"})
  lines = mechanism.geometry_table(df, rows, mechanism.QUEUE_GEOMETRY).splitlines()
  assert len(lines) == 2 + 3 and all(line.startswith("| sogclr, pool |") for line in lines[2:])


def test_cli_writes_the_summary_and_prints_the_answer(tmp_path, capsys):
  path = tmp_path / "mechanism.csv"
  planted(0.5, seeds=4, noise=0.01).to_csv(path, index=False)
  assert mechanism.main(["--results", str(path), "--preset", "mechanism",
                         "--summary", str(tmp_path / "s.json")]) == 0
  out = capsys.readouterr().out
  assert "The answer" in out and "| sogclr | pool | 16 |" in out
  assert json.loads((tmp_path / "s.json").read_text())["primary"] == mechanism.PRIMARY


def test_figure_draws_from_the_results_and_summary(tmp_path):
  from paper_figures import mechanism_figure
  df = planted(0.5, seeds=3, noise=0.01)
  path = mechanism_figure.mechanism_figure(df, mechanism.summarize(df), tmp_path / "mechanism.png")
  assert path.stat().st_size > 10_000


@pytest.mark.slow
def test_mechanism_smoke_end_to_end(tmp_path):
  """The mechanism preset in miniature through the sweep driver: every arm runs, the estimator and queue
  size reach results.csv, the summary holds a recovered fraction per debiased arm and outcome, the figure
  is drawn."""
  from experiments.batch_size_sweep import main
  assert main(["--preset", "mechanism-smoke", "--out", str(tmp_path), "--quiet"]) == 0
  df = pd.read_csv(tmp_path / "results.csv")
  arms = set(map(tuple, df[["estimator", "data_mode", "group_size", "queue_size"]].to_numpy().tolist()))
  assert arms == {("plain", m, g, 0) for m in ("fresh", "pool") for g in (4, 256)} | {
      ("sogclr", "pool", 4, 0), ("queue", "fresh", 4, 252)}
  assert (df.groupby("estimator").seed.nunique() == 2).all()
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert {(r["estimator"], r["group_size"]) for r in summary["recovered"]} == {("sogclr", 4), ("queue", 4)}
  assert (tmp_path / "figures" / "mechanism.png").exists()
