"""theory/bias.py: the exact constants against Monte Carlo, the estimator, the command line and the
robust checks (which must pass with the right constants and fail with broken ones)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import special

from theory import bias, empirical, sphere

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small noise with a large beta (a peaked integrand), the circle (D = 2), and two worlds of the checks.
WORLDS = [
  bias.World(4, 10.0, 0.05),
  bias.World(2, 5.0, 0.7),
  bias.World(16, 2.0, 0.5),
  bias.World(64, 10.0, 2.0),
]


@pytest.mark.parametrize("dim,beta", [(2, 5.0), (16, 2.0), (64, 10.0)])
def test_log_partition_matches_monte_carlo_and_bessel_form(dim, beta):
  rng = np.random.default_rng(0)
  y_nxD = rng.standard_normal((200_000, dim))
  cos_n = y_nxD[:, 0] / np.linalg.norm(y_nxD, axis=1)  # <e_1, y'> for y' uniform on the sphere
  values_n = np.exp(beta * cos_n)
  mc, se = values_n.mean(), values_n.std() / np.sqrt(len(values_n))
  exact = np.exp(sphere.log_partition(dim, beta))
  assert abs(exact - mc) < 4 * se
  nu = dim / 2 - 1
  bessel = special.gammaln(dim / 2) + nu * np.log(2 / beta) + np.log(special.ive(nu, beta)) + beta
  assert sphere.log_partition(dim, beta) == pytest.approx(bessel, rel=1e-12)


@pytest.mark.parametrize("world", WORLDS, ids=lambda w: w.label())
def test_quadrature_matches_monte_carlo(world):
  c = bias.constants(world)
  assert c["mass"] == pytest.approx(1, abs=1e-9)
  x_nxD, y_nxD = bias.sample_pairs(world, (400_000,), np.random.default_rng(1))
  s_n = (x_nxD * y_nxD).sum(1)
  n = len(s_n)
  assert abs(s_n.mean() - c["mean_sim"]) < 4 * s_n.std() / np.sqrt(n)
  # The normalised weight of the positive, exp(beta s) / Z, has mean 1 + rho.
  weight_n = np.exp(world.beta * s_n - c["log_z"])
  assert abs(weight_n.mean() - (1 + c["rho"])) < 4 * weight_n.std() / np.sqrt(n)
  dev2_n = (s_n - s_n.mean()) ** 2
  assert abs(dev2_n.mean() - c["var_sim"]) < 4 * dev2_n.std() / np.sqrt(n)


@pytest.mark.parametrize("world", WORLDS, ids=lambda w: w.label())
def test_quadrature_is_converged(world):
  coarse, fine = bias.constants(world), bias.constants(world, nodes=192, epsrel=1e-12)
  for key in ("mean_sim", "var_sim", "log_mean_exp", "rho", "kappa", "tau2", "l_inf"):
    assert coarse[key] == pytest.approx(fine[key], rel=1e-9, abs=1e-12), key


def test_jensen_term_matches_monte_carlo():
  """J = E sigma^2 / (2 Z^2) with sigma^2 = Var_y' exp(beta <x, y'>), here from independent x, y'."""
  world = bias.World(16, 5.0, 1.0)
  rng = np.random.default_rng(2)
  x_nxD, _ = bias.sample_pairs(world, (400_000,), rng)
  y_nxD, _ = bias.sample_pairs(world, (400_000,), rng)
  weight_n = np.exp(world.beta * (x_nxD * y_nxD).sum(1) - sphere.log_partition(16, 5.0))
  half_sq_n = (weight_n - 1) ** 2 / 2
  se = half_sq_n.std() / np.sqrt(len(half_sq_n))
  assert abs(half_sq_n.mean() - bias.constants(world)["jensen"]) < 4 * se


def test_control_variate_has_the_plain_mean_and_a_smaller_spread():
  """mean d_N = mean l_N - L_inf (the difference is a plain Monte Carlo of -beta E s + log Z - L_inf = 0)."""
  world = bias.World(16, 2.0, 0.5)
  c = bias.constants(world)
  d_B, l_B = bias.batch_values(world, 32, 4000, np.random.default_rng(3), c["log_z"])
  plain_se = l_B.std() / np.sqrt(len(l_B))
  assert abs(d_B.mean() - (l_B.mean() - c["l_inf"])) < 4 * plain_se
  # Sharper, on the same batches: the difference's own error is that of beta E s alone.
  gap_B = l_B - c["l_inf"] - d_B
  assert abs(gap_B.mean()) < 4 * gap_B.std() / np.sqrt(len(gap_B))
  assert d_B.std() < l_B.std() / 3  # O(1/N) against O(1/sqrt(N)): 0.016 against 0.069 here


def test_two_stage_sample_size_follows_target_and_budget():
  world = bias.World(4, 2.0, 1.0)
  log_z = sphere.log_partition(4, 2.0)
  rng = np.random.default_rng(4)
  sampling = bias.Sampling(min_batches=50, budget=4 * (4 + 4) * 3000)
  assert bias.measure(world, 4, rng, log_z, 1.0, sampling)["n_batches"] == 50
  middle = bias.measure(world, 4, rng, log_z, 0.01, sampling)  # sd(d_4) ~ 0.3: ~900 batches
  assert 600 < middle["n_batches"] < 1400
  tight = bias.measure(world, 4, rng, log_z, 1e-6, sampling)
  assert tight["n_batches"] == 3000
  assert tight["ci_low"] < tight["bias"] < tight["ci_high"]


def test_command_line_json():
  args = ["--dim", "16", "--beta", "2", "--noise", "0.5", "--batches", "2,16,64,256,1024", "--json"]
  proc = subprocess.run(
    [sys.executable, "-m", "theory.bias", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
  )
  assert proc.returncode == 0, proc.stderr
  rows = [json.loads(line) for line in proc.stdout.splitlines()]
  assert [r["n"] for r in rows] == [2, 16, 64, 256, 1024]
  for r in rows:
    assert {"n", "bias", "ci_low", "ci_high", "predicted", "se", "n_batches", "kappa"} <= set(r)
    assert r["ci_low"] < r["bias"] < r["ci_high"]
    assert r["predicted"] == pytest.approx(r["kappa"] / r["n"])
  last = rows[-1]
  assert last["ci_low"] > 0
  # At N = 1024 the delta method is accurate: kappa / N lies within the interval widened by 2 s.e.
  assert last["ci_low"] - 2 * last["se"] < last["predicted"] < last["ci_high"] + 2 * last["se"]


def test_robust_checks_pass_and_broken_constants_fail():
  """Quick mode: 3 worlds (beta = 2, 5, 10) x 5 seeds; the right constants pass in every world."""
  results = {r["name"]: r for r in bias.check_pass_rates(bias.QUICK, np.random.default_rng(0))}
  assert set(results) == {f"{name}_pass_rate" for name in bias.RIGHT | bias.BROKEN}
  for name in bias.RIGHT:
    assert results[f"{name}_pass_rate"]["passed"] and results[f"{name}_pass_rate"]["min_rate"] >= 0.8
  for name in bias.BROKEN:
    assert results[f"{name}_pass_rate"]["passed"] and results[f"{name}_pass_rate"]["mean_rate"] <= 0.2


def test_constant_checks_are_check_dicts():
  checks = bias.constant_checks(bias.WORLDS[0], bias.QUICK, np.random.default_rng(5))
  assert [r["name"] for r in checks] == list(bias.RIGHT)
  assert all(r["passed"] for r in checks), checks
  assert all(abs(r["fitted"] - r["predicted"]) < 4 * r["fitted_se"] for r in checks)


def test_fit_batch_sizes_grow_with_the_weights():
  c = bias.constants(bias.World(64, 10.0, 1.0))
  sizes = bias.fit_batch_sizes(c, span=8.0, points=4)
  assert sizes == [sizes[0] * 2**k for k in range(4)]
  assert sizes[0] >= 8 * max(1 + c["rho"], 1 + 2 * c["jensen"]) > sizes[0] / 2


def test_batch_values_match_empirical_row_losses():
  """The fixed-shift log M_i of batch_values against theory.empirical on the same draws."""
  world = bias.World(16, 5.0, 1.0)
  log_z = sphere.log_partition(16, 5.0)
  d_B, l_B = bias.batch_values(world, 8, 10, np.random.default_rng(7), log_z)
  x_BxNxD, y_BxNxD = bias.sample_pairs(world, (10, 8), np.random.default_rng(7))
  sims_BxNxN = np.einsum("bnd,bkd->bnk", x_BxNxD, y_BxNxD)
  reference_B = empirical.row_losses(sims_BxNxN, 5.0).mean(-1)
  np.testing.assert_allclose(l_B, reference_B, rtol=1e-12, atol=1e-12)
  positive_BxN = np.diagonal(sims_BxNxN, axis1=1, axis2=2)
  np.testing.assert_allclose(d_B, reference_B - (log_z - 5.0 * positive_BxN).mean(-1), rtol=1e-12, atol=1e-12)
