"""theory/towers_grid.py: the tiled gradients against a dense autodiff reference, SogCLR at gamma = 1
against plain, the tiled evaluation against montecarlo.py, the fast normaliser against synthetic.py,
and the quick grid end to end (columns, resume without duplicates, the figure drawn from it)."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from paper_figures import towers_figure
from theory import montecarlo, synthetic
from theory import towers_grid as tg

BETA = 1.0


def _case(b: int, seed: int = 0):
  """Unit inputs and feasible towers (|W|_2, |V|_2 <= 1), as in the grid: float32 for the trainer."""
  rng = np.random.default_rng(seed)
  unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
  x, y = unit(rng.normal(size=(b, 16))), unit(rng.normal(size=(b, 16)))
  w, v = (tg.linear_towers.project_spectral(rng.normal(size=(8, 16))) for _ in range(2))
  return tuple(jnp.asarray(a, jnp.float32) for a in (w, v, x, y))


def _dense_objective(w, v, x, y, log_u_2xB, group: int):
  """The symmetric grouped objective, dense: plain (log_u None) or SogCLR's surrogate mean g_i / u_i with
  u held fixed, whose gradient is (1/u_i) grad g_i."""
  f_KxGxD = (x @ w.T).reshape(-1, group, w.shape[0])
  g_KxGxD = (y @ v.T).reshape(-1, group, v.shape[0])
  s_KxGxG = BETA * jnp.einsum("kid,kjd->kij", f_KxGxD, g_KxGxD)
  diag_KxG = jnp.diagonal(s_KxGxG, axis1=1, axis2=2)
  log_g_2xB = jnp.stack([jax.nn.logsumexp(s_KxGxG, 2) - diag_KxG,
                         jax.nn.logsumexp(s_KxGxG, 1) - diag_KxG]).reshape(2, -1) - jnp.log(group)
  if log_u_2xB is None:
    return log_g_2xB.mean()
  return jnp.exp(log_g_2xB - log_u_2xB).mean()


def test_tiled_gradients_equal_dense_autodiff_for_plain_and_sogclr():
  """Two groups of 128 pairs, each cut into two tiles of 64 rows and run as separate map batches; SogCLR
  with some pairs unseen (u = 0: u' = g) and some seen (u' = (1 - gamma) u + gamma g)."""
  group, gamma = 128, 0.3
  w, v, x, y = _case(256)
  u_2xB = jnp.asarray(np.random.default_rng(1).uniform(0.5, 2.0, (2, 256)) * (np.arange(256) % 3 > 0),
                      jnp.float32)
  kwargs = dict(group=group, beta=BETA, tile_entries=group * 64)
  (dw, dv), u_plain, value = tg.batch_gradients(w, v, x, y, u_2xB, gamma=None, **kwargs)
  ref_w, ref_v = jax.grad(_dense_objective, argnums=(0, 1))(w, v, x, y, None, group)
  np.testing.assert_allclose(dw, ref_w, atol=2e-6)
  np.testing.assert_allclose(dv, ref_v, atol=2e-6)
  assert value == pytest.approx(float(_dense_objective(w, v, x, y, None, group)), abs=1e-6)
  np.testing.assert_array_equal(u_plain, u_2xB)  # plain leaves the estimates alone

  (dw, dv), u_next, _ = tg.batch_gradients(w, v, x, y, u_2xB, gamma=gamma, **kwargs)
  f, g = np.asarray(x @ w.T, np.float64), np.asarray(y @ v.T, np.float64)
  s = BETA * np.einsum("kid,kjd->kij", f.reshape(2, group, 8), g.reshape(2, group, 8))
  diag = np.diagonal(s, axis1=1, axis2=2)
  mean_exp = lambda a, axis: np.log(np.exp(a).mean(axis))
  g_ref = np.exp(np.stack([mean_exp(s, 2) - diag, mean_exp(s, 1) - diag]).reshape(2, -1))
  u_ref = np.where(np.asarray(u_2xB) > 0, (1 - gamma) * np.asarray(u_2xB) + gamma * g_ref, g_ref)
  np.testing.assert_allclose(u_next, u_ref, rtol=2e-6)
  log_u = jnp.log(jnp.asarray(u_ref, jnp.float32))
  ref_w, ref_v = jax.grad(_dense_objective, argnums=(0, 1))(w, v, x, y, log_u, group)
  np.testing.assert_allclose(dw, ref_w, atol=2e-6)
  np.testing.assert_allclose(dv, ref_v, atol=2e-6)


def test_sogclr_with_gamma_one_is_the_plain_gradient():
  """gamma = 1 sets u_i = g_i whatever u was, and (1/g_i) grad g_i = grad log g_i."""
  w, v, x, y = _case(64, seed=2)
  u_2xB = jnp.asarray(np.random.default_rng(3).uniform(0.1, 5.0, (2, 64)), jnp.float32)
  kwargs = dict(group=16, beta=BETA, tile_entries=1 << 10)
  plain, _, _ = tg.batch_gradients(w, v, x, y, u_2xB, gamma=None, **kwargs)
  sogclr, _, _ = tg.batch_gradients(w, v, x, y, u_2xB, gamma=1.0, **kwargs)
  for a, b in zip(plain, sogclr):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert float(jnp.abs(plain[0]).max()) > 1e-3  # not a vacuous zero


def test_tiled_evaluation_equals_montecarlo_batch_statistics():
  """grouped_terms (tiled, fast normaliser) gives montecarlo.batch_statistics' l_N and d_N (dense, scipy)."""
  cfg = tg.QUICK
  world = cfg.world.world()
  x, y = tg.pairs(cfg.world, "test", 0, 256)
  w, v = tg.init_towers(cfg, 0)
  loss_K, control_K = tg.grouped_terms(world, w, v, BETA, x, y, 128)
  ref_loss, ref_control = montecarlo.batch_statistics(world, w, v, BETA, x, y, 128, "sym")
  np.testing.assert_allclose(loss_K, ref_loss, atol=1e-12)
  np.testing.assert_allclose(control_K, ref_control, atol=1e-10)


def test_fast_log_partition_matches_scipy():
  cfg = tg.QUICK
  world = cfg.world.world()
  x, _ = tg.pairs(cfg.world, "pool", 1, 512)
  w, v = tg.init_towers(cfg, 1)
  for beta in (BETA, 2.0):  # both ends of the interpolant's interval are reached by |t| <= beta
    np.testing.assert_allclose(tg.log_partition(world, w, v, beta, x),
                               synthetic.log_partition(world, w, v, beta, x), atol=1e-11)


def test_pools_are_nested_and_streams_differ():
  s = tg.QUICK.world
  small, large = tg.pairs(s, "pool", 0, 100), tg.pairs(s, "pool", 0, 300)
  np.testing.assert_array_equal(small[0], large[0][:100])
  assert not np.allclose(tg.pairs(s, "test", 0, 100)[0], small[0])


@pytest.fixture(scope="module")
def quick_csv(tmp_path_factory):
  out = tmp_path_factory.mktemp("towers") / "towers_grid.csv"
  assert tg.main(["--out", str(out), "--quick"]) == 0
  return out


def test_quick_grid_writes_every_cell_once_and_resumes(quick_csv, tmp_path):
  df = pd.read_csv(quick_csv)
  assert list(df.columns) == list(tg.ROW_COLUMNS)
  cells = list(tg.QUICK.cells())
  assert sorted(df[list(tg.KEYS)].itertuples(index=False, name=None)) == sorted(cells)
  assert np.isfinite(df[["infinite_batch_loss", "population_loss", "sample_gap", "sample_gap_inf",
                         "theorem2_sample", "pac_bayes_bound"]].to_numpy()).all()
  assert (df["theorem2_sample"] > df["sample_gap"].abs()).all()  # a valid bound, at least here
  part = tmp_path / "part.csv"
  df.iloc[:5].to_csv(part, index=False)  # an interrupted run
  assert tg.run_grid(tg.QUICK, part) == len(cells) - 5
  assert tg.run_grid(tg.QUICK, part) == 0
  again = pd.read_csv(part)
  assert len(again) == len(cells) and not again.duplicated(list(tg.KEYS)).any()
  measured = ["infinite_batch_loss", "sample_gap", "train_objective"]
  pd.testing.assert_frame_equal(again.sort_values(list(tg.KEYS))[measured].reset_index(drop=True),
                                df.sort_values(list(tg.KEYS))[measured].reset_index(drop=True), atol=1e-6)


def test_resume_refuses_a_csv_of_other_settings(quick_csv, tmp_path):
  other = tmp_path / "other.csv"
  pd.read_csv(quick_csv).assign(steps=999).to_csv(other, index=False)
  with pytest.raises(ValueError, match="other settings"):
    tg.done_cells(tg.QUICK, other)


def test_figure_draws_from_the_quick_csv(quick_csv, tmp_path):
  assert towers_figure.main(["--results", str(quick_csv), "--out", str(tmp_path)]) == 0
  assert (tmp_path / "towers_grid.png").stat().st_size > 10_000
