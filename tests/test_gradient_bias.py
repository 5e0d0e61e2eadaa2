"""experiments/gradient_bias.py: the estimator is the trainer's gradient, the plug-in first order is the
sphere world's closed form, the measured bias goes to it (and a planted wrong constant does not), and the
command runs end to end on a trained workdir."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from analysis import cli
from basic_core.losses import contrastive_loss, pair_losses
from experiments import gradient_bias as gb
from theory import gradient, sphere

WORLD = sphere.World(16, 2.0, 0.5)  # theory/README.md section 9's world


def _n_grad(loss, u_NxD, v_NxD, rows):
  """N times the gradient of loss(u, v) w.r.t. the embeddings of `rows`, as [len(rows), 2, D]."""
  gu, gv = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(u_NxD, jnp.float32),
                                                     jnp.asarray(v_NxD, jnp.float32))
  return len(u_NxD) * np.stack([np.asarray(gu)[rows], np.asarray(gv)[rows]], 1)


def test_draws_and_g_inf_are_the_trainers_gradients():
  """A plain draw + g_inf is G times the gradient of basic_core's loss on the batch it drew (anchor k and
  the draw's companions), and g_inf is the gradient of the whole population as one batch (tiled loss)."""
  x, y = sphere.sample_pairs(sphere.World(8, 3.0, 0.7), (48,), np.random.default_rng(0))
  beta, pick, n = 3.0, np.array([3, 7, 11]), 6
  pop = gb.population(beta, x, y)
  sides = gb.sides(pop, x[pick], y[pick])
  g_Kx2xD = gradient.symmetric(gb.infinite_gradient(pop, sides, x[pick], y[pick]))
  plain, _ = gb.draws(pop, sides, x[pick], y[pick], n, 2, np.random.default_rng(5))
  one_at_a_time, _ = gb.draws(pop, sides, x[pick], y[pick], n, 2, np.random.default_rng(5), max_entries=n * 8)
  np.testing.assert_allclose(one_at_a_time, plain, atol=1e-12)  # one anchor and one draw per step
  idx_cxC = np.random.default_rng(5).integers(len(x), size=(2, n - 1))  # the companions draws() drew
  loss = lambda u, v: contrastive_loss(u, v, jnp.float32(beta))  # noqa: E731
  for c in range(2):
    for k, anchor in enumerate(pick):
      batch = np.concatenate([[anchor], idx_cxC[c]])
      want = _n_grad(loss, x[batch], y[batch], [0])[0]
      np.testing.assert_allclose(gradient.symmetric(plain[c, k]) + g_Kx2xD[k], want, atol=2e-5)
  tiled = lambda u, v: sum(ce.mean() for ce in pair_losses(u, v, jnp.float32(beta), tile=16)) / 2  # noqa: E731
  np.testing.assert_allclose(g_Kx2xD, _n_grad(tiled, x, y, pick), atol=2e-5)


def test_control_variates_keep_the_mean_where_the_marginals_are_not_uniform():
  """A population whose images lean towards e_1, so E_x' w(x', y) != 1 (in a sphere world it is 1): the
  controlled draws still have the plain draws' mean, and a smaller spread."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal((64, 8)) + 1.5 * np.eye(8)[0]
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  y = x + 0.7 * rng.standard_normal(x.shape)
  y /= np.linalg.norm(y, axis=1, keepdims=True)
  pop, pick = gb.population(4.0, x, y), np.array([0, 5, 9])
  column_mass = np.exp(4.0 * x @ y[pick].T - pop[0].log_z_M[:, None]).mean(0)
  assert np.abs(column_mass - 1).max() > 0.1
  plain, controlled = gb.draws(pop, gb.sides(pop, x[pick], y[pick]), x[pick], y[pick], 8, 6000,
                               np.random.default_rng(1))
  diff = plain - controlled
  z = diff.mean(0) / (diff.std(0, ddof=1) / np.sqrt(len(diff)))
  assert np.abs(z).max() < stats.norm.ppf(1 - 0.001 / (2 * z.size))
  assert np.median(plain.std(0) / controlled.std(0)) > 1.3


def test_plug_in_first_order_is_the_sphere_worlds_closed_form():
  """On 6000 pairs of a sphere world the population's alpha, g_inf, rho and q are theory's closed forms
  up to sampling, per direction (in the symmetric mean the spread terms nearly cancel)."""
  c = sphere.constants(WORLD)
  gc = gradient.gradient_constants(WORLD, c)
  rng = np.random.default_rng(1)
  pop = gb.population(WORLD.beta, *sphere.sample_pairs(WORLD, (6000,), rng))
  x_KxD, y_KxD = sphere.sample_pairs(WORLD, (8,), rng)
  sides = gb.sides(pop, x_KxD, y_KxD)
  rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)  # noqa: E731
  assert rel(gb.first_order(sides), gradient.first_order(gc, x_KxD, y_KxD)) < 0.03
  assert rel(gb.infinite_gradient(pop, sides, x_KxD, y_KxD),
             gradient.infinite_gradient(gc, x_KxD, y_KxD)[:, None]) < 0.03
  wrong = gradient.first_order(gc, x_KxD, y_KxD, columns=False)  # the check below can fail
  assert rel(gb.first_order(sides), wrong) > 0.2
  for rows in pop:
    assert rows.rho_M.mean() == pytest.approx(c["rho"], rel=0.03)
    assert rows.q_M.mean() == pytest.approx(1 + 2 * c["jensen"], rel=0.03)


def test_measured_bias_goes_to_the_first_order_and_a_planted_constant_does_not():
  """Out of sample (constants from half A, bias measured in half B): at G = 32 .. 256 the ratio goes to 1
  and the ratio and the projection fitted on (1, 1/G) hold 1 in their intervals; with A's constants at a
  10% wrong temperature they do not, on the same measurement."""
  x, y = sphere.sample_pairs(WORLD, (4096,), np.random.default_rng(0))
  sp = gb.split(x, y, WORLD.beta, 32, np.random.default_rng(1))
  planted = sp._replace(pop_a=gb.population(1.1 * WORLD.beta, sp.pop_a[0].a_MxD, sp.pop_a[0].b_MxD))
  groups = [32, 64, 128, 256]
  right, wrong = (gb.gradient_bias(s, groups, np.random.default_rng(2), replicates=10, count=16)
                  for s in (sp, planted))
  assert [r["rel_bias"] for r in right] == [r["rel_bias"] for r in wrong]  # the same measurement
  for r in right:
    assert r["rel_bias_ci"][0] <= r["rel_bias"] <= r["rel_bias_ci"][1]
    assert r["cosine_ci"][0] <= r["cosine"] <= r["cosine_ci"][1] and r["cosine"] > 0.999
    assert r["predicted_rel_bias_in_sample"] == pytest.approx(r["predicted_rel_bias"], rel=0.02)
  off = [abs(r["ratio_measured_predicted"] - 1) for r in right]  # the second order, falling as 1/G
  assert off == sorted(off, reverse=True) and off[-1] < 0.01
  for fit in gb.first_order_fit(right).values():
    assert fit["intercept_ci"][0] <= 1 <= fit["intercept_ci"][1], fit
  for fit in gb.first_order_fit(wrong).values():
    assert not fit["intercept_ci"][0] <= 1 <= fit["intercept_ci"][1], fit


def test_first_order_fit_leaves_out_rows_whose_interval_has_no_width():
  """A collapsed model's replicates can all agree (interval [x, x]): such rows carry no usable weight; the
  fit uses the others, and is NaN when fewer than two remain (it used to stop the command)."""
  row = lambda g, value, half: dict(group_size=g, level=0.95, replicates=5,  # noqa: E731
                                    ratio_measured_predicted=value, ratio_ci=[value - half, value + half],
                                    projection=value, projection_ci=[value - half, value + half])
  rows = [row(4, 1.2, 0.0), row(16, 1.0 + 0.5 / 16, 0.01), row(64, 1.0 + 0.5 / 64, 0.01),
          row(256, 1.0 + 0.5 / 256, 0.01)]
  fit = gb.first_order_fit(rows)["ratio"]
  assert fit["n"] == 3 and fit["intercept"] == pytest.approx(1.0) and fit["slope"] == pytest.approx(0.5)
  degenerate = gb.first_order_fit([row(4, 0.0, 0.0), row(16, 0.0, 0.0), row(64, 0.5, 0.1)])
  assert all(np.isnan(f["intercept"]) and f["n"] == 1 for f in degenerate.values())


def test_the_command_on_a_trained_workdir(tiny_run, tmp_path, capsys):
  out = tmp_path / "bias.jsonl"
  argv = ["--workdir", str(tiny_run), "--pairs", "256", "--anchors", "16", "--groups", "4,16,64",
          "--replicates", "3", "--draws", "8"]
  assert gb.main([*argv, "--json", "--out", str(out)]) == 0
  rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert rows == [json.loads(line) for line in out.read_text().splitlines()]
  assert [r["group_size"] for r in rows] == [4, 16, 64]
  for r in rows:
    assert {"step", "group_size", "rel_bias", "rel_bias_ci", "cosine", "cosine_ci", "predicted_rel_bias",
            "ratio_measured_predicted", "anchors", "replicates", "pairs"} <= set(r)
    assert (r["step"], r["anchors"], r["replicates"], r["pairs"]) == (5, 16, 3, 256)
    assert r["rel_bias_ci"][0] <= r["rel_bias"] <= r["rel_bias_ci"][1] and r["predicted_rel_bias"] > 0
  assert rows[0]["rel_bias"] > rows[-1]["rel_bias"]  # the bias falls with G
  assert gb.main(argv) == 0
  table = capsys.readouterr().out.splitlines()
  assert table[0].startswith("step 5, beta") and [line.split()[0] for line in table[1:4]] == ["G=4", "G=16",
                                                                                              "G=64"]
  with pytest.raises(cli.CommandError, match="--groups"):
    gb.main(["--workdir", str(tiny_run), "--pairs", "256", "--groups", "256"])
