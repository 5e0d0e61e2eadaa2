"""The negatives analysis (experiments/negatives.py) and its figures, on synthetic results with known
answers; and the evaluation metrics it reads (basic_core/evaluate.py) against direct computations."""

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from basic_core import evaluate
from experiments import negatives
from paper_figures import negatives_figures

GROUPS = (4, 16, 64, 256, 1024)


def synthetic(slope: float, noise: float, seeds=(0, 1, 2), seed_spread: float = 0.05) -> pd.DataFrame:
  """gap_sample = a_seed + slope log2 G + noise; bias = kappa / G exactly, for two modes."""
  rng = np.random.default_rng(0)
  rows = []
  for mode in ("fresh", "pool"):
    for s in seeds:
      a = seed_spread * rng.normal()
      for g in GROUPS:
        rows.append(dict(data_mode=mode, temperature=0.07, seed=s, group_size=g,
                         gap_sample=a + slope * np.log2(g) + noise * rng.normal(),
                         bias=0.5 / g, bias_predicted=0.5 * (1 / g - 1 / 8192), zeroshot_x_top1=0.5))
  return pd.DataFrame(rows)


def test_the_paired_slope_recovers_the_truth_and_removes_seed_offsets():
  df = synthetic(slope=-0.02, noise=0.002, seed_spread=0.5)  # seed offsets 250x the noise
  fit = negatives.slope_per_doubling(df[df.data_mode == "fresh"], "gap_sample")
  assert fit["ci_low"] < -0.02 < fit["ci_high"] and fit["ci_high"] - fit["ci_low"] < 0.01
  assert fit["verdict"].startswith("gap_sample shrinks")
  pooled = np.polyfit(np.log2(df.group_size), df.gap_sample, 1)[0]  # ignores the pairing: still -0.02,
  assert abs(pooled + 0.02) < 0.01  # but its residuals carry the seed offsets (not tested here)


@pytest.mark.parametrize("slope,noise,start", [(0.0, 0.001, "gap_sample does not change"),
                                               (0.0, 0.2, "not shown either way"),
                                               (0.03, 0.002, "gap_sample grows")])
def test_verdicts_say_what_the_interval_says(slope, noise, start):
  fit = negatives.slope_per_doubling(synthetic(slope, noise), "gap_sample")
  assert fit["verdict"].startswith(start), fit


def test_bias_check_and_summary():
  summary = negatives.summarize(synthetic(-0.01, 0.002))
  for group in summary["groups"]:
    ratios = [r["ratio"] for r in group["bias_check"]["per_group_size"]]
    assert ratios == pytest.approx([1 / (1 - g / 8192) for g in GROUPS])  # bias = predicted + kappa / 8192
  slopes = negatives.gap_sample_slopes(summary)
  assert set(slopes) == {"fresh", "pool"} and slopes["pool"]["0.07"]["half_width"] < 0.01


def test_iso_fit_interpolates_every_run_at_common_fit_levels():
  rows = []
  for s in (0, 1, 2):
    for g in (4, 64, 1024):
      for step, fit in zip((50, 100, 150), (-0.1, -0.3, -0.5)):
        rows.append(dict(run_id=f"{g}-{s}", seed=s, group_size=g, data_mode="fresh", temperature=0.07,
                         step=step, train_loss_offset_all=fit + 0.01 * s,
                         gap_sample=-0.1 * fit + 0.001 * np.log2(g)))  # the gap grows as fit improves
  iso = negatives.iso_fit_slopes(pd.DataFrame(rows), levels=3)
  assert len(iso) == 3
  for level in iso:
    assert level["slope"] == pytest.approx(0.001, abs=1e-9)


def test_figures_are_drawn_from_results_and_probes(tmp_path):
  df = synthetic(-0.01, 0.002)
  df.to_csv(tmp_path / "results.csv", index=False)
  probes = df.assign(run_id=df.data_mode + df.seed.astype(str) + df.group_size.astype(str), step=100,
                     train_loss_offset_all=-0.2)
  probes.to_csv(tmp_path / "probes.csv", index=False)
  paths = negatives_figures.draw_all(tmp_path / "results.csv", tmp_path / "fig", tmp_path / "probes.csv")
  assert [p.name for p in paths] == ["negatives_gap.png", "negatives_bias.png", "negatives_iso_fit.png"]
  assert all(p.stat().st_size > 10_000 for p in paths)


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
