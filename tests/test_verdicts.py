"""Verdict sentences (analysis/verdicts.py): Holm's adjustment by hand, no claim from one seed,
equivalence only inside a declared margin with enough seeds; and the split-half check of Proposition 1
(basic_core/evaluate.py), which fails on a planted wrong kappa."""

import numpy as np
import pandas as pd
import pytest

from analysis import verdicts
from analysis.stats import mean_ci
from basic_core import evaluate


def test_holm_by_hand():
  """p = (0.01, 0.04, 0.03, 0.005), m = 4: sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005 = 0.02, 3*0.01 = 0.03,
  2*0.03 = 0.06, max(1*0.04, 0.06) = 0.06 (step-down keeps the adjusted values monotone)."""
  assert verdicts.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
  assert np.isnan(verdicts.holm([0.2, float("nan")])[1]) and verdicts.holm([0.2, float("nan")])[0] == 0.2


def _runs(slope: float, seeds: int, noise: float, seed: int = 0) -> pd.DataFrame:
  rng = np.random.default_rng(seed)
  g = np.array([4, 16, 64, 256, 1024])
  return pd.DataFrame([dict(seed=s, group_size=x, m=0.3 * s + slope * np.log2(x) + rng.normal(0, noise))
                       for s in range(seeds) for x in g])


def test_one_seed_gives_no_claim():
  e = verdicts.slope_per_doubling(_runs(-0.1, 1, 0.001), "m")
  [judged] = verdicts.judge([e], {"m": 0.5})
  assert judged["claim"] == "no interval" and "no interval (one seed)" in judged["verdict"]
  assert "n = 5 runs, 1 seed" in judged["verdict"]


def test_direction_equivalence_and_nothing():
  clear = verdicts.slope_per_doubling(_runs(-0.05, 5, 0.01), "m")
  flat = verdicts.slope_per_doubling(_runs(0.0, 5, 0.001, seed=1), "m")
  noisy = verdicts.slope_per_doubling(_runs(0.0, 5, 0.5, seed=2), "m")
  judged = verdicts.judge([clear, flat, noisy], {"m": 0.01})
  assert [j["claim"] for j in judged] == ["shrinks", "equivalent", "none"]
  assert all(j["tests_in_family"] == 6 for j in judged)  # a direction and an equivalence test each
  assert "Holm over 6 tests" in judged[0]["verdict"] and "n = 25 runs, 5 seeds" in judged[0]["verdict"]


def test_equivalence_needs_a_declared_margin_and_three_seeds():
  flat = verdicts.slope_per_doubling(_runs(0.0, 5, 0.001), "m")
  assert verdicts.judge([flat], {})[0]["claim"] == "none"  # no margin declared for m
  two_seeds = verdicts.slope_per_doubling(_runs(0.0, 2, 0.001), "m")
  [judged] = verdicts.judge([two_seeds], {"m": 0.01})
  assert judged["claim"] == "none" and "needs 3+ seeds" in judged["verdict"]


def test_seed_intercepts_remove_seed_offsets():
  """Seeds differ by 0.3 in level; with one intercept per seed the slope's interval is narrow."""
  e = verdicts.slope_per_doubling(_runs(0.02, 5, 0.001), "m")
  assert e["ci_low"] < 0.02 < e["ci_high"] and e["ci_high"] - e["ci_low"] < 0.002


def _embeddings(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Aligned pairs: text = image + noise, both on the unit sphere."""
  rng = np.random.default_rng(seed)
  img = rng.normal(size=(n, dim)).astype(np.float32)
  txt = img + 1.5 * rng.normal(size=(n, dim)).astype(np.float32)
  return (img / np.linalg.norm(img, axis=1, keepdims=True), txt / np.linalg.norm(txt, axis=1, keepdims=True))


def test_split_half_check_agrees_for_a_fixed_model_and_fails_for_a_wrong_kappa():
  """Measured bias on one half over kappa (1/G - 2/n) from the other half: about 1 across independent draws
  (Proposition 1 for a fixed model, at a G where kappa / G is small: its O(1/G^2) terms pull the ratio
  below 1 at small G); a kappa 1.5x too large is outside the interval over draws."""
  ratios = []
  for seed in range(10):
    out = evaluate.split_bias_check(_embeddings(8192, 16, seed), logit_scale=4.0, group_size=512)
    ratios.append(out["bias_split"] / out["bias_predicted_split"])
  mean, lo, hi = mean_ci(np.array(ratios))
  assert lo <= 1.0 <= hi and hi - lo < 0.3, (mean, lo, hi)
  _, lo_wrong, hi_wrong = mean_ci(np.array(ratios) / 1.5)  # the same bias against a planted 1.5x kappa
  assert not lo_wrong <= 1.0 <= hi_wrong
  assert np.isnan(evaluate.split_bias_check(_embeddings(64, 16, 0), 8.0, 64)["bias_split"])  # G > n/2
