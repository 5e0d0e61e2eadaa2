"""The negatives analysis (experiments/negatives.py) and its figures (paper_figures/negatives_figures.py) on
synthetic results with known answers, the old pilot's committed files, and the evaluation metrics the
analysis reads (basic_core/evaluate.py) against direct computations."""

import json
from pathlib import Path

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from analysis import cli, verdicts
from basic_core import evaluate
from experiments import negatives
from paper_figures import negatives_figures

GROUPS = (4, 16, 64, 256, 1024)
SEEDS = (0, 1, 2, 3, 4)
N = 8192  # held-out pairs of every run
ARMS = (dict(world="objects", data_mode="fresh", num_train=8192, temperature=0.07),
        dict(world="objects", data_mode="pool", num_train=65536, temperature=0.07))
# The candidate finding's shape: the population loss falls, zero-shot and retrieval rise, the gap stays.
FINDING = {"gap_offset_all": 0.0, "heldout_loss_offset_all": -0.03, "zeroshot_mean_top1": 0.02,
           "retrieval_i2t_r1": 0.01}
MARGINS = {"gap_offset_all": 0.01, "heldout_loss_offset_all": 0.01, "zeroshot_mean_top1": 0.01}
# Each seed's ratio of measured to predicted bias is the planted one times these (mean exactly 1): an
# interval over the 5 seeds holds the planted ratio and nothing 25% away.
RATIO_SPREAD = 1 + 0.02 * np.array([-2, -1, 0, 1, 2])


def synthetic(slopes: dict[str, float] = FINDING, arms=ARMS, noise: float = 0.002, control_ratio: float = 1.0,
              seed_spread: float = 0.3) -> pd.DataFrame:
  """One run per arm x seed x G: metric = a_seed + slope log2 G + noise per planted slope (zero-shot through
  two tasks whose mean carries the slope); the bias checks at measured / predicted = 1 x RATIO_SPREAD, the
  untrained control's at `control_ratio` x RATIO_SPREAD."""
  rng = np.random.default_rng(0)
  rows = []
  for arm in arms:
    for s in SEEDS:
      offset = {m: seed_spread * rng.normal() for m in slopes}
      for g in GROUPS:
        value = {m: offset[m] + slope * np.log2(g) + noise * rng.normal() for m, slope in slopes.items()}
        zeroshot = value.pop("zeroshot_mean_top1", 0.5)
        kappa = 0.5
        same, split = kappa * (1 / g - 1 / N), kappa * (1 / g - 2 / N)
        rows.append(dict(arm, seed=s, group_size=g, **value, zeroshot_shape_top1=zeroshot + 0.1,
                         zeroshot_count_top1=zeroshot - 0.1, gap_sample=value.get("gap_offset_all", 0.0),
                         bias=same * RATIO_SPREAD[s], bias_predicted=same,
                         bias_split=split * RATIO_SPREAD[s], bias_predicted_split=split,
                         control_bias_split=control_ratio * split * RATIO_SPREAD[s],
                         control_bias_predicted_split=split))
  return pd.DataFrame(rows)


def synthetic_probes(matched_slope: float = 0.004) -> pd.DataFrame:
  """Ten probes per run. The fit measure (trained pairs' loss) falls faster at larger G, and the primary
  gap = a_seed - 0.2 fit + matched_slope log2 G: at any matched fit the slope is `matched_slope`, while at a
  fixed step larger G, being better fit, also has a larger gap."""
  rows = []
  for arm in ARMS:
    for s in SEEDS:
      for g in GROUPS:
        for step in range(10, 101, 10):
          fit = -step / 100 * (1 + 0.05 * np.log2(g)) + 0.01 * s
          rows.append(dict(arm, run_id=f"{arm['data_mode']}-{g}-{s}", seed=s, group_size=g, step=step,
                           train_loss_offset_all=fit,
                           gap_offset_all=0.05 * s - 0.2 * fit + matched_slope * np.log2(g)))
  return pd.DataFrame(rows)


def test_arms_and_their_names_and_old_results_are_the_scenes_world():
  df = synthetic(arms=ARMS + (dict(world="objects", data_mode="fresh", num_train=8192, temperature=0.0),))
  names = [negatives.arm_name(arm) for arm, _ in negatives.arms(df)]
  assert names == ["objects, fresh, learned T", "objects, fresh, T=0.07", "objects, pool m=65536, T=0.07"]
  assert [n for n, _ in negatives_figures.arms(df)] == names  # the figures' restated naming agrees
  assert all(len(runs) == len(SEEDS) * len(GROUPS) for _, runs in negatives.arms(df))
  old = df.drop(columns="world")  # the pilot's results.csv has no world column
  assert [negatives.arm_name(arm) for arm, _ in negatives.arms(old)][0] == "scenes, fresh, learned T"
  assert [n for n, _ in negatives_figures.arms(old)][0] == "scenes, fresh, learned T"


def test_planted_slopes_are_recovered_with_their_intervals_despite_seed_offsets():
  summary = negatives.summarize(synthetic(seed_spread=1.0))  # seed offsets 500x the noise
  for group in summary["groups"]:
    assert group["seeds"] == len(SEEDS) and group["runs"] == len(SEEDS) * len(GROUPS)
    for metric, truth in FINDING.items():
      fit = group["slopes"][metric]
      assert fit["ci_low"] < truth < fit["ci_high"] and fit["ci_high"] - fit["ci_low"] < 0.004, (metric, fit)


def test_finding_is_supported_only_when_all_three_parts_hold():
  held = {"heldout_loss_offset_all": "shrinks", "zeroshot_mean_top1": "grows", "gap_offset_all": "equivalent"}
  assert negatives.finding(held).startswith("supported")
  for metric, other in (("heldout_loss_offset_all", "none"), ("zeroshot_mean_top1", "shrinks"),
                        ("gap_offset_all", "grows")):
    text = negatives.finding(held | {metric: other})
    assert text.startswith("not shown") and "shown: " in text, text
  # End to end, Holm-adjusted: the planted finding is supported in both arms, with the margins declared...
  summary = negatives.summarize(synthetic(), margins=MARGINS)
  assert all(f.startswith("supported") for f in summary["findings"].values()), summary["findings"]
  # ...and not where the gap grows by more than its margin, nor without a margin to judge it by.
  grows = negatives.summarize(synthetic(FINDING | {"gap_offset_all": 0.03}), margins=MARGINS)
  assert all("not shown: the primary gap" in f for f in grows["findings"].values())
  no_margin = negatives.summarize(synthetic())
  assert not any(f.startswith("supported") for f in no_margin["findings"].values())


def test_iso_fit_ladder_has_nine_levels_per_arm_and_recovers_the_matched_fit_slope():
  probes = synthetic_probes(matched_slope=0.004)
  ladder = negatives.iso_fit_slopes(probes)
  assert len(ladder) == 9 * len(ARMS)
  for arm in ARMS:
    levels = [r for r in ladder if all(r[k] == arm[k] for k in negatives.ARM)]
    assert [r["fraction"] for r in levels] == pytest.approx(np.linspace(0.1, 0.9, 9))
    for r in levels:
      assert r["slope"] == pytest.approx(0.004, abs=1e-9) and r["seeds"] == len(SEEDS)
  last = probes[probes.step == 100]  # at a fixed step, not matched fit: the slope is not the planted one
  fixed_step = verdicts.slope_per_doubling(last[last.data_mode == "fresh"], "gap_offset_all")
  assert fixed_step["slope"] > 0.004 + 0.005
  summary = negatives.summarize(synthetic(), probes, iso_fit_level=0.3)
  primary = [j for j in summary["judged"] if j["metric"] == negatives.ISO_METRIC]
  assert len(primary) == len(ARMS) and all(j["fraction"] == pytest.approx(0.3) for j in primary)


def test_bias_check_flags_a_planted_wrong_ratio():
  summary = negatives.summarize(synthetic(control_ratio=1.25))
  for group in summary["groups"]:
    assert [row["group_size"] for row in group["bias_check"]] == list(GROUPS)
    for row in group["bias_check"]:
      assert row["split"]["agrees"] and row["same_pairs"]["agrees"]
      assert row["split"]["ratio"] == pytest.approx(1.0)
      assert not row["control"]["agrees"] and row["control"]["ratio"] == pytest.approx(1.25)


def _write_inputs(tmp_path, probes=True):
  results, probe_df = synthetic(), synthetic_probes()
  results.to_csv(tmp_path / "results.csv", index=False)
  probe_df.to_csv(tmp_path / "probes.csv", index=False)
  negatives.write_summary(results, probe_df if probes else None, tmp_path / "summary.json", margins=MARGINS)
  rates = [dict(world=w, group_size=g, rate=r, ci95=[max(0.0, r - 0.01), r + 0.01])
           for w, scale in (("objects", 0.0), ("scenes", 0.1)) for g, r in zip(GROUPS, scale * np.arange(5))]
  (tmp_path / "fn.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rates))


def test_figures_are_drawn_from_results_probes_summary_and_rates(tmp_path, capsys):
  _write_inputs(tmp_path)
  paths = negatives_figures.draw_all(tmp_path / "results.csv", tmp_path / "fig", tmp_path / "probes.csv",
                                     tmp_path / "summary.json", fn_rates=tmp_path / "fn.jsonl")
  names = ["negatives_outcomes.png", "negatives_iso_fit.png", "negatives_bias.png", "false_negatives.png"]
  assert [p.name for p in paths] == names
  assert all(p.stat().st_size > 10_000 for p in paths)
  alone = negatives_figures.draw_all(tmp_path / "results.csv", tmp_path / "alone", tmp_path / "absent.csv",
                                     tmp_path / "absent.json")
  assert [p.name for p in alone] == ["negatives_outcomes.png"]  # the rest need the summary
  argv = ["--results", str(tmp_path / "results.csv"), "--summary", str(tmp_path / "results.csv"), "--out",
          str(tmp_path / "cli")]
  assert cli.run(negatives_figures.main, argv) == 2
  assert "argument --summary" in capsys.readouterr().err  # a CSV is no summary.json: one line, its argument


def test_a_table_of_two_worlds_draws_each_arms_own_tasks(tmp_path):
  """The grid's results hold both worlds: a task only the scenes world has is empty in the objects arms, so
  the per-task panel (drawn for the objects arm) leaves it out instead of failing on an empty column."""
  scenes = synthetic(arms=(dict(world="scenes", data_mode="fresh", num_train=8192, temperature=0.07),))
  df = pd.concat([synthetic(arms=ARMS[:1]), scenes.assign(zeroshot_colour_top1=0.4)], ignore_index=True)
  assert negatives_figures.outcomes_figure(df, None, tmp_path / "outcomes.png").stat().st_size > 10_000
  fig, ax = plt.subplots()
  negatives_figures._tasks_panel(ax, negatives_figures.stats.add_means(negatives_figures.with_world(df)))
  labels = [t.get_text().split(" ")[0] for t in ax.get_legend().get_texts()]
  plt.close(fig)
  assert sorted(labels) == ["count", "shape"], labels


def test_the_old_pilot_still_draws_with_its_bounds(tmp_path):
  """The committed pilot (scenes world, no world column, no split-half or control columns), its summary
  recomputed by the new analysis, and the tiny_bound files of its theory figure."""
  data = Path(__file__).resolve().parents[1] / "paper_figures" / "data"
  results = pd.read_csv(data / "negatives_pilot.csv")
  probes = pd.read_csv(data / "negatives_pilot_probes.csv")
  negatives.write_summary(results, probes, tmp_path / "summary.json")
  paths = negatives_figures.draw_all(data / "negatives_pilot.csv", tmp_path / "fig",
                                     data / "negatives_pilot_probes.csv", tmp_path / "summary.json",
                                     sorted((data / "negatives_pilot_bounds").glob("*.json")))
  assert [p.name for p in paths] == ["negatives_outcomes.png", "negatives_iso_fit.png", "negatives_bias.png",
                                     "negatives_theory.png"]


def _pairs(n, d=8, noise=0.5, seed=0):
  rng = np.random.default_rng(seed)
  img = rng.normal(size=(n, d))
  txt = img + noise * rng.normal(size=(n, d))
  unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
  return unit(img), unit(txt)


def test_bias_constant_matches_a_direct_computation():
  img, txt = _pairs(256)
  beta = 5.0
  e = np.exp(beta * img.astype(np.float64) @ txt.T)

  def one(e):
    z = e.mean(1)
    return np.mean(np.diag(e) / z) - 1 - np.mean(e.var(1) / (2 * z**2))

  want = 0.5 * (one(e) + one(e.T))
  got = float(evaluate.bias_constant(jnp.asarray(img), jnp.asarray(txt), jnp.float32(beta)))
  assert got == pytest.approx(want, rel=1e-4)


def test_contrastive_metrics_of_a_fixed_model_follow_kappa_over_g():
  """The measured bias (loss at G - log G - loss at n + log n) of fixed embeddings is close to theory's
  first order kappa (1/G - 1/n) once G is large against kappa (here kappa = 7.6: 3% off at G = 64 and
  256, 33% at G = 8, where O(1/G^2) terms count); a group larger than the pairs gives NaN."""
  held, seen = _pairs(4096, noise=1.0, seed=1), _pairs(4096, noise=1.0, seed=2)
  for g, tolerance in ((8, 0.4), (64, 0.1), (256, 0.1)):
    m = evaluate.contrastive_metrics(held, seen, 5.0, eval_batch=256, group_size=g)
    assert m["bias"] == pytest.approx(m["bias_predicted"], rel=tolerance), m
    assert abs(m["gap_sample"]) < 0.05  # two samples of one distribution
  m = evaluate.contrastive_metrics(held, seen, 5.0, eval_batch=256, group_size=8192)
  assert np.isnan(m["gap_sample"]) and np.isfinite(m["gap_offset_all"])
