"""analysis.stats, the one statistics module: its fits agree with independent computations, the
committed sweep summaries are reproduced from their CSVs, and it loads without the trainer."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis import stats

ROOT = Path(__file__).resolve().parents[1]


def test_line_fit_matches_the_textbook_formulas():
  """Ordinary least squares: polyfit's line, se = sqrt(s^2 / Sxx) and a t interval on n - 2 dof."""
  rng = np.random.default_rng(0)
  x = np.linspace(0.0, 3.0, 8)
  y = 0.5 - 1.2 * x + rng.normal(0, 0.3, len(x))
  fit = stats.line_fit(x, y, level=0.9)
  slope, intercept = np.polyfit(x, y, 1)
  s2 = ((y - intercept - slope * x)**2).sum() / (len(x) - 2)
  se = np.sqrt(s2 / ((x - x.mean())**2).sum())
  half = scipy_stats.t.ppf(0.95, len(x) - 2) * se
  assert (fit["slope"], fit["intercept"]) == pytest.approx((slope, intercept), rel=1e-10)
  assert fit["slope_se"] == pytest.approx(se, rel=1e-10)
  assert fit["slope_ci"] == pytest.approx((slope - half, slope + half), rel=1e-10)
  trend = stats.trend(pd.DataFrame({"batch_size": 2.0**x, "g": y}), "g", level=0.9)["per_doubling"]
  assert trend["p_value"] == pytest.approx(2 * scipy_stats.t.sf(abs(slope / se), len(x) - 2), rel=1e-8)
  assert trend["r2"] == pytest.approx(np.corrcoef(x, y)[0, 1]**2, rel=1e-10)


@pytest.mark.parametrize("noise_over_se", [0.5, 4.0])
def test_weighted_line_fit_widens_only_for_a_poor_fit(noise_over_se):
  """Known standard errors: polyfit's weighted line and unscaled covariance, inflated by chi^2 > 1 only."""
  rng = np.random.default_rng(1)
  x = np.linspace(1.0, 2.0, 10)
  y_se = np.linspace(0.01, 0.03, len(x))
  y = 2.0 + 0.7 * x + noise_over_se * y_se * rng.normal(size=len(x))
  fit = stats.line_fit(x, y, y_se)
  coef, cov = np.polyfit(x, y, 1, w=1 / y_se, cov="unscaled")
  chi2 = (((y - np.polyval(coef, x)) / y_se)**2).sum() / (len(x) - 2)
  se = np.sqrt(cov[0, 0] * max(1.0, chi2))
  assert (chi2 > 1) == (noise_over_se > 1)
  assert fit["slope"] == pytest.approx(coef[0], rel=1e-10)
  assert fit["chi2_reduced"] == pytest.approx(chi2, rel=1e-10)
  assert fit["slope_se"] == pytest.approx(se, rel=1e-8)


def test_trend_detects_a_known_slope():
  rng = np.random.default_rng(0)
  n = np.repeat([16, 64, 256, 1024], 5)
  shrinking = pd.DataFrame(dict(batch_size=n, gap=1.0 - 0.1 * np.log2(n) + rng.normal(0, 0.02, len(n))))
  fit = stats.trend(shrinking, "gap")
  assert fit["verdict"] == "shrinks with batch size"
  assert fit["per_doubling"]["slope_ci_low"] < -0.1 < fit["per_doubling"]["slope_ci_high"]
  flat = pd.DataFrame(dict(batch_size=n, gap=rng.normal(0, 0.02, len(n))))
  assert stats.trend(flat, "gap")["verdict"] == "no significant trend"


def test_trend_of_two_runs_has_no_interval():
  """Two runs leave no residual degrees of freedom: NaN intervals and no verdict, not an error."""
  fit = stats.trend(pd.DataFrame({"batch_size": [16, 64], "gap": [0.2, 0.1]}), "gap")
  assert np.isnan(fit["per_doubling"]["slope_ci_low"]) and fit["verdict"] == "no significant trend"


@pytest.mark.parametrize("name", ["sweep_default", "sweep_default_steps"])
def test_committed_trends_are_reproduced_from_their_csv(name):
  data = ROOT / "paper_figures" / "data"
  df = stats.add_means(pd.read_csv(data / f"{name}.csv"))
  for committed in json.loads((data / f"{name}_summary.json").read_text())["trends"]:
    fit = stats.trend(df, committed["metric"])
    assert fit["verdict"] == committed["verdict"]
    for model in ("per_doubling", "inverse_sqrt"):
      assert fit[model] == pytest.approx(committed[model], rel=1e-9, abs=1e-12)
