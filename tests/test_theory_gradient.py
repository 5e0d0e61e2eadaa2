"""theory/gradient.py (Proposition 2): the estimator is the loss's gradient, its control variates keep the
mean, the first order alpha / N matches Monte Carlo in a sphere world, and wrong first orders fail."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import special, stats

from theory import empirical, gradient, sphere

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORLD = sphere.World(4, 2.0, 1.0)  # small D: N_min = 16, so the fit's batches are cheap


@pytest.fixture(scope="module")
def constants():
  c = sphere.constants(WORLD)
  return c, gradient.gradient_constants(WORLD, c)


@pytest.mark.parametrize("dim,beta", [(2, 5.0), (16, 2.0), (64, 10.0)])
def test_mean_resultant_is_the_softmax_mean_and_the_bessel_ratio(dim, beta):
  rng = np.random.default_rng(0)
  y_nxD = rng.standard_normal((400_000, dim))
  cos_n = y_nxD[:, 0] / np.linalg.norm(y_nxD, axis=1)  # <e_1, y'> for y' uniform on the sphere
  weight_n = np.exp(beta * cos_n - sphere.log_partition(dim, beta))
  values_n = weight_n * cos_n
  assert abs(values_n.mean() - sphere.mean_resultant(dim, beta)) < 4 * values_n.std() / np.sqrt(len(values_n))
  bessel = special.ive(dim / 2, beta) / special.ive(dim / 2 - 1, beta)
  assert sphere.mean_resultant(dim, beta) == pytest.approx(bessel, rel=1e-10)


def _batch_loss(x_NxD: np.ndarray, y_NxD: np.ndarray, direction: str) -> float:
  return float(empirical.batch_losses((x_NxD @ y_NxD.T)[None], WORLD.beta, direction)[0])


def test_plain_draws_are_n_times_the_gradient_of_the_loss(constants):
  """The estimator against central differences of theory.empirical's loss, per direction and part:
  N d l_N / d(u_0, v_0) - g_inf, on the very batches anchor_draws drew."""
  _, gc = constants
  n, seed, h = 6, 3, 1e-6
  x_KxD, y_KxD = sphere.sample_pairs(WORLD, (2,), np.random.default_rng(0))
  plain, _ = gradient.anchor_draws(WORLD, gc, x_KxD, y_KxD, n, 1, np.random.default_rng(seed))
  x, y = sphere.sample_pairs(WORLD, (1, 2, n), np.random.default_rng(seed))
  x[:, :, 0], y[:, :, 0] = x_KxD, y_KxD
  g_inf = gradient.infinite_gradient(gc, x_KxD, y_KxD)
  for k in range(2):
    for d, direction in enumerate(("i2t", "t2i")):
      for part in range(2):
        numeric = np.empty(WORLD.dim)
        for i in range(WORLD.dim):
          step = np.zeros((2, n, WORLD.dim))  # (x, y) of the batch; only part `part` of pair 0 moves
          step[part, 0, i] = h
          up, down = ((x[0, k] + sign * step[0], y[0, k] + sign * step[1]) for sign in (1, -1))
          numeric[i] = n * (_batch_loss(*up, direction) - _batch_loss(*down, direction)) / (2 * h)
        np.testing.assert_allclose(plain[0, k, d, part] + g_inf[k, part], numeric, rtol=1e-6, atol=1e-7)


def test_control_variates_keep_the_mean_and_shrink_the_spread(constants):
  _, gc = constants
  x_KxD, y_KxD = sphere.sample_pairs(WORLD, (2,), np.random.default_rng(1))
  plain, controlled = gradient.anchor_draws(WORLD, gc, x_KxD, y_KxD, 32, 6000, np.random.default_rng(2))
  diff = plain - controlled  # the subtracted terms: mean exactly zero
  z = diff.mean(0) / (diff.std(0, ddof=1) / np.sqrt(len(diff)))
  assert np.abs(z).max() < stats.norm.ppf(1 - 0.001 / (2 * z.size))
  assert np.median(plain.std(0) / controlled.std(0)) > 3  # O(1/sqrt(N)) against O(1/N)


def test_span_coordinates_round_trip():
  rng = np.random.default_rng(3)
  x_KxD, y_KxD = sphere.sample_pairs(WORLD, (3,), rng)
  in_span = 0.7 * x_KxD[:, None] - 1.3 * y_KxD[:, None] + np.zeros((3, 2, 1))
  coords = gradient.span_coordinates(in_span, x_KxD, y_KxD)
  np.testing.assert_allclose(coords[..., 0], 0.7)
  np.testing.assert_allclose(coords[..., 1], -1.3)
  noise = rng.standard_normal((5, 3, 2, WORLD.dim))
  projected = gradient.from_coordinates(gradient.span_coordinates(noise, x_KxD, y_KxD), x_KxD, y_KxD)
  residual = noise - projected  # orthogonal to both basis vectors
  assert np.abs(np.einsum("rkpd,kd->rkp", residual, x_KxD)).max() < 1e-12
  assert np.abs(np.einsum("rkpd,kd->rkp", residual, y_KxD)).max() < 1e-12


def test_symmetric_first_order_is_the_mean_of_the_directions(constants):
  _, gc = constants
  x_KxD, y_KxD = sphere.sample_pairs(WORLD, (2,), np.random.default_rng(4))
  per_direction = gradient.first_order(gc, x_KxD, y_KxD)
  # text-to-image is image-to-text with x and y swapped: its (u, v) are the swapped world's (v, u)
  swapped = gradient.first_order(gc, y_KxD, x_KxD)
  np.testing.assert_allclose(per_direction[:, 1], swapped[:, 0, ::-1], atol=1e-12)
  np.testing.assert_allclose(gradient.symmetric(per_direction), per_direction.mean(1))


def test_first_order_matches_monte_carlo_and_wrong_ones_fail(constants):
  """The check (intercepts of N * bias per coordinate on (1, 1/N)) passes alpha and refutes the two
  broken first orders and alpha off by 10%, all on the same fits: the check can fail."""
  c, gc = constants
  plan = gradient.GradientPlan((WORLD,), anchors=3, draws=1500, points=3)
  verdicts = {r["name"]: r for r in gradient.world_verdicts(WORLD, plan, np.random.default_rng(0))}
  assert verdicts["sphere_gradient_first_order"]["passed"], verdicts
  assert verdicts["sphere_gradient_first_order"]["batch_sizes"] == [16, 32, 64]
  for name in gradient.BROKEN:
    assert not verdicts[name]["passed"] and verdicts[name]["max_abs_z"] > 3 * verdicts[name]["z_critical"]
  rng = np.random.default_rng(5)
  x_KxD, y_KxD = gradient.typical_anchors(WORLD, c, 3, rng)
  fitted, se, _ = gradient.fitted_coordinates(WORLD, gc, x_KxD, y_KxD, [16, 32, 64], 1500, rng, 0.999)
  alpha = gradient.per_direction_coordinates(gradient.first_order(gc, x_KxD, y_KxD), x_KxD, y_KxD).ravel()
  z_crit = stats.norm.ppf(1 - 0.001 / (2 * len(alpha)))
  assert np.abs((fitted - alpha) / se).max() <= z_crit
  for scale in (0.9, 1.1):
    assert np.abs((fitted - scale * alpha) / se).max() > z_crit


def test_typical_anchors_respect_the_weight_scale(constants):
  c, _ = constants
  x_KxD, y_KxD = gradient.typical_anchors(WORLD, c, 5, np.random.default_rng(6))
  w_K = np.exp(WORLD.beta * (x_KxD * y_KxD).sum(1) - c["log_z"])
  assert len(w_K) == 5 and w_K.max() <= max(1 + c["rho"], 1 + 2 * c["jensen"])


def test_command_line_gradient_json():
  args = ["--gradient", "--dim", "4", "--beta", "2", "--noise", "1", "--batches", "16,128", "--json",
          "--replicates", "5", "--budget", "4e7"]
  proc = subprocess.run(
    [sys.executable, "-m", "theory.bias", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
  )
  assert proc.returncode == 0, proc.stderr
  rows = [json.loads(line) for line in proc.stdout.splitlines()]
  assert [r["n"] for r in rows] == [16, 128]
  for r in rows:
    for key in ("rel_bias", "one_minus_cos", "projection", "n_rel_bias"):
      assert r[f"{key}_low"] <= r[key] <= r[f"{key}_high"], key
    assert r["predicted_rel_bias"] == pytest.approx(r["limit_n_rel_bias"] / r["n"])
  # N * bias -> alpha: at N = 128 the projection on alpha is within a few per cent of 1
  assert abs(rows[-1]["projection"] - 1) < 0.05
  assert abs(rows[-1]["n_rel_bias"] / rows[-1]["limit_n_rel_bias"] - 1) < 0.05
  assert abs(rows[0]["projection"] - 1) > abs(rows[-1]["projection"] - 1)  # the 1/N^2 term shrinks
