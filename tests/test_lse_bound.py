"""Theorem 2 (theory/lse_bound.py): its checks pass, broken constants fail, and its numbers are right."""

import numpy as np
import pytest
from scipy import optimize

from theory import bound, linear_towers, lse_bound

# One xdist worker runs this module (make test: --dist loadgroup): the checks' run, made once.
pytestmark = pytest.mark.xdist_group("lse_bound")

SMALL_SWEEP = linear_towers.SweepConfig(
  m=512, batch_sizes=(4, 32, 128), seeds=(0, 1), steps=60, n_test=4096, n_sigma=64
)


@pytest.fixture(scope="module")
def results():
  """Every Theorem 2 check at small sizes, by name."""
  return {r["name"]: r for r in lse_bound.run_all(np.random.default_rng(0), 300, SMALL_SWEEP)}


def test_every_check_passes(results):
  assert set(results) == {
    "lse_sym_lme_lipschitz",
    "lse_sym_constant_ordering",
    "lse_lipschitz",
    "lse_linear_cover",
    "lse_batch_differences",
    "lse_linear_towers_bound",
  }
  assert [name for name, r in results.items() if not r["passed"]] == []


def test_constants_are_tight_and_the_bound_is_loose(results):
  assert results["lse_lipschitz"]["max_ratio_extremal"] > 0.999
  assert results["lse_linear_cover"]["tight_ratio"] == pytest.approx(1.0)
  assert results["lse_batch_differences"]["batch_ratio_extremal"] == pytest.approx(1.0)
  sweep = results["lse_linear_towers_bound"]
  assert sweep["runs"] == 6 and sweep["sample_ratio_min"] > 1
  assert sweep["per_batch_size"]["batch_size"] == [4, 32, 128]


def test_broken_constants_fail():
  """beta instead of 2 beta, and half the batch range, are each caught by an extremal configuration."""
  rng = np.random.default_rng(1)
  broken = lse_bound.check_lipschitz(rng, 60, lipschitz=lambda beta: beta)
  assert not broken["passed"] and broken["max_ratio_extremal"] > 1.9
  half = lse_bound.check_batch_differences(rng, 60, batch_range=lambda n, b: bound.own_row_range(n, b) / 2)
  assert not half["passed"] and half["batch_ratio_extremal"] == pytest.approx(2.0)


def test_complexity_part_is_free_of_n(monkeypatch):
  args = (8192, 1.0, 0.05, 8, 16, 16)
  small, large = (lse_bound.n_free_terms(args[0], n, *args[1:]) for n in (2, 2048))
  assert small["batch_bias"] != large["batch_bias"] and small["concentration"] != large["concentration"]
  monkeypatch.setattr(lse_bound, "concentration_constant", lambda n, beta: 5.0)
  small, large = (lse_bound.n_free_terms(args[0], n, *args[1:]) for n in (2, 2048))
  assert small["lipschitz"] == large["lipschitz"] and small["concentration"] == large["concentration"]
  assert small["batch_bias"] == 2.0 and large["batch_bias"] == pytest.approx(bound.bias_bound(2048, 1.0))


def test_bound_decreases_in_m():
  totals = [lse_bound.n_free_terms(m, 64, 1.0, 0.05, 8, 16, 16)["total"] for m in (512, 4096, 65536, 10**6)]
  assert np.all(np.diff(totals) < 0)


def test_concentration_constant_is_the_better_of_pairs_and_batches():
  for n in (2, 3, 16, 1024):
    for beta in (0.1, 1.0, 4.0):
      c_star = lse_bound.concentration_constant(n, beta)
      assert c_star <= min(bound.c_bar(beta), 4 * beta * np.sqrt(n))
      assert bound.bounded_difference_constant(n, beta) <= n * bound.own_row_range(n, beta)
  assert lse_bound.concentration_constant(2, 1.0) == lse_bound.batch_range_constant(2, 1.0)
  assert lse_bound.concentration_constant(64, 1.0) == bound.bounded_difference_constant(64, 1.0)


@pytest.mark.parametrize("n", [2, 32])
def test_numbers_match_an_independent_recomputation(n):
  """README full settings (m = 8192, beta = 1, D = 8, d = 16, delta = 0.05), from the formulas."""
  m, beta, delta, dim = 8192, 1.0, 0.05, 8 * (16 + 16)
  u = np.exp(2 * beta)
  width = np.log((1 + (n - 1) * u) / (1 + (n - 1) / u))
  c_star = min(width + (n - 1) * np.log(1 + (u - 1) / n), np.sqrt(n) * width)
  sample = lambda log_eps: (
    4 * beta * np.exp(log_eps)
    + c_star * np.sqrt((dim * np.log(1 + 4 * np.exp(-log_eps)) + np.log(2 / delta)) / (2 * m))
  )
  best = optimize.minimize_scalar(sample, bounds=(np.log(1e-6), np.log(2.0)), method="bounded")
  k1, k2 = 4 * np.exp(beta) * np.sinh(beta / 2) ** 2, 4 * u * np.sinh(beta) ** 2
  bias = max((u - 1) / n, (1 - 1 / u) / n + ((n - 1) * k1 + k2) / (2 * n**2))
  terms = lse_bound.n_free_terms(m, n, beta, delta, 8, 16, 16)
  assert terms["lipschitz"] + terms["concentration"] == pytest.approx(best.fun, rel=1e-5)
  assert terms["total"] == pytest.approx(best.fun + min(bias, 2 * beta), rel=1e-5)


def test_comparison_table_at_full_settings():
  """Theorem 2 is flat in N and below the trivial 4 beta; it beats Theorem 1 at small N, not at large N."""
  table = lse_bound.comparison_table(linear_towers.SweepConfig()).set_index("batch_size")
  assert list(table.index) == [2, 8, 32, 128, 512, 2048]
  assert (table.theorem2_total < table.trivial).all()
  assert table.theorem2_total.max() - table.theorem2_total.min() < 0.1
  assert table.loc[2, "theorem2_total"] < table.loc[2, "theorem1_total"]
  assert table.loc[2048, "theorem2_total"] > table.loc[2048, "theorem1_total"]
  assert np.allclose(table.theorem2_total, table.theorem2_sample + table.theorem2_batch_bias)
