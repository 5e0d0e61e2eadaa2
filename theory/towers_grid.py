r"""The paper's scale, cheaply: plain vs debiased (SogCLR) grouped InfoNCE in the linear-tower world, with
the contrastive group size G up to 65,536 and the pool size m from 2^10 to 2^20, the population loss and
the sample gap measured per (estimator, G, m, seed), and the theory's bounds evaluated beside them.

    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false OPENBLAS_NUM_THREADS=1 \
      python -m theory.towers_grid --out paper_figures/data/towers_grid.csv           # the grid; resumable
    python -m theory.towers_grid --out /tmp/towers_quick.csv --quick                 # a tiny grid, seconds
    python -m paper_figures.towers_figure --results paper_figures/data/towers_grid.csv \
      --out paper_figures/figures

World and model: those of `linear_towers.SweepConfig` (16 vMF clusters in R^16 with independent centres
on the two sides, D = 8, beta = 1 frozen): f = W x, g = V y with |W|_2, |V|_2 <= 1, so |s| <= 1 and
exp(beta (s - 1)) <= 1 needs no max-shift. log Z(x) is exact (`synthetic`), so L_inf is exact up to Monte
Carlo over anchors.

Training: `steps` projected heavy-ball steps (momentum 0.9, as `linear_towers.train`) from an
initialisation drawn from the seed alone. Each step takes the next B = min(m, `batch`) pairs of a
per-epoch permutation of the pool and cuts them into B / G groups of G consecutive pairs. B is fixed for
every G and both estimators at a given m, so G decides only which pairs share a softmax, not how many
pairs a step averages over: the design of the trainer's `mechanism` preset (issue 28, item 3). Pool,
initialisation and batch order are shared by every cell of a seed (paired across G and estimators), and
the pool of m is the first m pairs of the seed's stream (nested across m).

Estimators (image->text shown; text->image swaps the roles, and the loss is the mean of the two):
  g_i = (1/G) sum_{j in group} exp(beta (s_ij - s_ii)),   the grouped objective is mean_i log g_i;
  plain:  gradient of mean_i log g_i;
  sogclr: u_i <- (1 - gamma) u_i + gamma g_i (u_i <- g_i the first time pair i is seen), one u per pool
          pair and side, and the gradient (1/u_i) grad g_i = (g_i / u_i) grad log g_i:
what `basic_core.losses.sogclr_loss` does (its docstring says where both differ from the published
estimator), written here in a few lines because theory/ does not import the trainer. gamma = 1 gives
u_i = g_i and the plain gradient (tests/test_towers_grid.py). SogCLR runs at G <= 4,096 only
(`sogclr_upto`): above it, plain alone is the large-G reference a debiased small G would have to reach.

Cost: the G x G similarities are never materialised. Per group, a first pass over tiles of 64 rows sums
exp(beta (s - 1)) over each row and each column; a second recomputes the tile, forms
dS_ij = e_ij (a_i + b_j), a_i = weight_i / row sum_i, b_j = weight_j / column sum_j, and contracts it with
both sides' embeddings; the diagonal's -(weight_i + weight_i') is added apart. A step touches B G
similarities twice, about 2 ns each on one core, whatever G (theory/README.md, "The (G, m) grid").

Outcomes per cell (columns of the CSV, `ROW_COLUMNS`): with o_i = 1/2 sum over both sides of
-beta s_ii + log Z(anchor_i) (exact Z) and, on groups of G pairs, d = l_G - mean_i o_i,
  infinite_batch_loss   L_inf = -beta E s (exact) + mean log Z over n_test held-out anchors;
  population_loss       L_G = L_inf + mean d over held-out groups (the control variate of montecarlo.py);
  train_objective       L^_G = mean l_G over groups of the pool (a random partition; all m pairs, or the
                        first n_test of a permutation when m > n_test);
  sample_gap            L_G - L^_G: held-out minus train at G, the gap Theorems 1 and 2 bound;
  train_infinite_batch_loss, sample_gap_inf = L_inf - mean_i o_i over all m pool pairs: the same gap on
                        one scale for every G (no batch offset), the positives' and anchors' part of it.
Bounds per (G, m), on the sample gap (none of them on sample_gap_inf): Theorem 1's sample terms
(`bound.uniform_terms`), Theorem 2's sample part (`lse_bound.sample_gap_bound`) and its total on
|L_inf - L^_G| (`lse_bound.n_free_terms`), the trivial w_G, and PAC-Bayes family (A) of `pac_bayes.py`
with the "init" prior (the initialisation, which depends on the seed only) for Q = N(theta_hat, sigma^2 I):
delta split over the 24 sigmas, sigma the largest whose Q keeps 90% of theta_hat's infinite-batch margin
on the training anchors (a G-free stand-in for `pac_bayes.choose_sigmas`' fidelity rule; any choice is
covered by the union bound). It bounds E_Q (L_G - L^_G), not theta_hat's gap. The kl and Bernstein
families need E_Q L^_G from draws of Q, m G entries per draw and sigma: not evaluated here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from numpy.polynomial import chebyshev
from scipy import special

from analysis import cli
from theory import bound, linear_towers, lse_bound, pac_bayes, synthetic

ESTIMATORS = ("plain", "sogclr")
KEYS = ("estimator", "group_size", "m", "seed")


@dataclasses.dataclass(frozen=True)
class GridConfig:
  """The grid, its training and its evaluation (defaults: the full grid of the README)."""
  group_sizes: tuple[int, ...] = (4, 16, 64, 256, 1024, 4096, 16384, 65536)
  pool_sizes: tuple[int, ...] = (2**10, 2**12, 2**14, 2**16, 2**18, 2**20)
  seeds: int = 10  # seeds 0..seeds-1 for every G <= many_seeds_upto
  few_seeds: int = 3  # above it
  many_seeds_upto: int = 4096
  sogclr_upto: int = 4096  # SogCLR only at G <= this; above, plain alone is the large-G reference
  largest_group_pools: tuple[int, ...] = (2**16, 2**20)  # the only pools of the largest G (the costliest)
  estimators: tuple[str, ...] = ESTIMATORS
  steps: int = 30
  batch: int = 65536  # B = min(m, batch) pairs per step
  lr: float = 3.0
  gamma: float = 0.9  # SogCLR's rate, as basic_core's loss.sogclr_gamma default
  n_test: int = 65536  # held-out pairs (>= the largest G): L_inf's anchors and L_G's groups
  fidelity_anchors: int = 4096
  tile_entries: int = 1 << 18  # similarities per vectorised batch of groups (tiles of 64 rows)
  delta: float = 0.05
  world: linear_towers.SweepConfig = linear_towers.SweepConfig()

  def cells(self) -> Iterator[tuple[str, int, int, int]]:
    """(estimator, G, m, seed), the cheap cells (G <= many_seeds_upto) first, each block by seed, so a
    partial run holds whole seeds."""
    for large in (False, True):
      for seed in range(self.few_seeds if large else self.seeds):
        for m in self.pool_sizes:
          for g in self.group_sizes:
            top = g == max(self.group_sizes) and m not in self.largest_group_pools
            if (g > self.many_seeds_upto) == large and g <= m and not top:
              ests = [e for e in self.estimators if e == "plain" or g <= self.sogclr_upto]
              yield from ((est, g, m, seed) for est in ests)


QUICK = GridConfig(group_sizes=(4, 32, 128), pool_sizes=(128, 256), seeds=2, few_seeds=1,
                   many_seeds_upto=32, sogclr_upto=32, largest_group_pools=(256,), steps=5, batch=256,
                   n_test=256, fidelity_anchors=128)


# ---- the data ------------------------------------------------------------------------------------------

BLOCK = 1 << 16  # pairs per independently seeded block of a seed's stream


@functools.lru_cache(maxsize=32)
def _block(world: linear_towers.SweepConfig, stream: str, seed: int, index: int) -> tuple[np.ndarray, ...]:
  rng = np.random.default_rng([{"pool": 0, "test": 1}[stream], seed, index])
  return synthetic.sample_pairs(world.world(), BLOCK, rng)


def pairs(world: linear_towers.SweepConfig, stream: str, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
  """The first n pairs of a seed's pool or test stream: blocks of 2^16 pairs, each from its own generator,
  so the pool of m is the start of the pool of 2m."""
  blocks = [_block(world, stream, seed, k) for k in range(-(-n // BLOCK))]
  return tuple(np.concatenate([b[side] for b in blocks])[:n] for side in (0, 1))


# ---- the normaliser, fast: log I_nu on the only radii linear towers reach ------------------------------


@functools.lru_cache(maxsize=8)
def _log_bessel(nu: float, kappa: float, beta: float) -> chebyshev.Chebyshev:
  """log I_nu(r) on [kappa - beta, kappa + beta], where r = |kappa mu + t| lies when |t| <= beta (|s| <= 1):
  a Chebyshev interpolant of degree 16 (error below 1e-13 there; within 1e-11 of scipy in
  tests/test_towers_grid.py) and about 3x as fast: the grid evaluates it on every pool pair."""
  fn = lambda r: np.log(special.ive(nu, r)) + r
  return chebyshev.Chebyshev.interpolate(fn, 16, domain=[max(kappa - beta, 1e-9), kappa + beta])


def log_partition(world: synthetic.PairWorld, w_Dxdx: np.ndarray, v_Dxdy: np.ndarray, beta: float,
                  x_nxdx: np.ndarray) -> np.ndarray:
  """`synthetic.log_partition` (log E_y' exp(beta <W x, V y'>), exact) with log I_nu interpolated."""
  t_nxdy = beta * (x_nxdx @ w_Dxdx.T) @ v_Dxdy
  nu, k = t_nxdy.shape[1] / 2 - 1, world.kappa_y
  r_nxC = np.sqrt((t_nxdy**2).sum(1, keepdims=True) + 2 * k * t_nxdy @ world.centres_y_Cxdy.T + k**2)
  log_i = _log_bessel(nu, k, beta)
  log_mgf_nxC = nu * np.log(k / r_nxC) + log_i(r_nxC) - log_i(k)
  return special.logsumexp(log_mgf_nxC + np.log(world.weights_C), axis=1)


def symmetric_log_partition(world: synthetic.PairWorld, w, v, beta: float, x, y) -> np.ndarray:
  """1/2 [log Z(x_i) + log Z'(y_i)] per pair: image->text and text->image normalisers, exact."""
  return 0.5 * (log_partition(world, w, v, beta, x) + log_partition(world.swapped(), v, w, beta, y))


def oracle_terms(world: synthetic.PairWorld, w, v, beta: float, x, y) -> np.ndarray:
  """o_i = 1/2 [(-beta s_ii + log Z(x_i)) + (-beta s_ii + log Z'(y_i))]: each pair's infinite-batch loss."""
  return -beta * ((x @ w.T) * (y @ v.T)).sum(1) + symmetric_log_partition(world, w, v, beta, x, y)


# ---- the tiled grouped loss and its two estimators (JAX, float32) --------------------------------------


def _tiling(group: int, tile_entries: int) -> tuple[int, int]:
  """(rows per tile, groups per vectorised batch): tiles of 64 rows (fewer, narrower tiles are slower on
  one CPU core), about tile_entries similarities per batch of groups."""
  rows = math.gcd(group, 64)
  return rows, max(1, tile_entries // (rows * group))


def _group_sums(f_GxD, g_GxD, beta: float, rows: int):
  """Row and column sums of exp(beta (s - 1)) over one group, [G] each, streamed over tiles of rows."""
  g_DxG = g_GxD.T

  def tile(col_G, f_RxD):
    e_RxG = jnp.exp(beta * (f_RxD @ g_DxG - 1))
    return col_G + jnp.ones(rows, e_RxG.dtype) @ e_RxG, e_RxG @ jnp.ones(g_DxG.shape[1], e_RxG.dtype)

  col_G, row_TxR = jax.lax.scan(tile, jnp.zeros(g_DxG.shape[1], f_GxD.dtype),
                                f_GxD.reshape(-1, rows, f_GxD.shape[1]))
  return row_TxR.reshape(-1), col_G


def _group_contract(f_GxD, g_GxD, a_G, b_G, beta: float, rows: int):
  """(dS g, dS^T f) for dS_ij = e_ij (a_i + b_j), e = exp(beta (s - 1)), one tile of rows at a time, so
  dS is never formed whole."""
  d = f_GxD.shape[1]
  g_DxG = g_GxD.T

  def tile(k_DxG, tile_in):
    f_RxD, a_R = tile_in
    ds_RxG = jnp.exp(beta * (f_RxD @ g_DxG - 1)) * (a_R[:, None] + b_G[None])
    return k_DxG + f_RxD.T @ ds_RxG, ds_RxG @ g_GxD

  k_DxG, df_TxRxD = jax.lax.scan(tile, jnp.zeros((d, g_DxG.shape[1]), f_GxD.dtype),
                                 (f_GxD.reshape(-1, rows, d), a_G.reshape(-1, rows)))
  return df_TxRxD.reshape(-1, d), k_DxG.T


def batch_gradients(w_Dxdx, v_Dxdy, x_BxDx, y_BxDy, u_2xB, *, group: int, beta: float, gamma: float | None,
                    tile_entries: int):
  """Gradient in (W, V) of the batch's symmetric grouped objective under an estimator; (grads, next u, value).

  gamma None: plain, weight 1. Otherwise SogCLR: u_2xB holds the batch pairs' (image, text) estimates
  (0: never seen), updated to u' = (1 - gamma) u + gamma g (g if unseen), and pair i's term is weighted
  by g_i / u'_i, whose gradient of log g_i is (1/u'_i) grad g_i. value: the plain objective,
  mean log g (offset by log G, as theory's l_N).
  """
  f_BxD, g_BxD = x_BxDx @ w_Dxdx.T, y_BxDy @ v_Dxdy.T
  b, d = f_BxD.shape
  rows, per = _tiling(group, tile_entries)
  groups = lambda a: a.reshape(b // group, group, *a.shape[1:])
  over = lambda fn, *arrays: jax.lax.map(lambda xs: fn(*xs), tuple(map(groups, arrays)), batch_size=per)
  row_KxG, col_KxG = over(lambda f, g: _group_sums(f, g, beta, rows), f_BxD, g_BxD)
  sums_2xB = jnp.stack([row_KxG.reshape(b), col_KxG.reshape(b)])
  log_g_2xB = jnp.log(sums_2xB / group) + beta * (1 - (f_BxD * g_BxD).sum(1))[None]
  if gamma is None:
    weight_2xB, u_2xB = jnp.ones_like(log_g_2xB), u_2xB
  else:
    g_2xB = jnp.exp(log_g_2xB)
    u_2xB = jnp.where(u_2xB > 0, (1 - gamma) * u_2xB + gamma * g_2xB, g_2xB)
    weight_2xB = g_2xB / u_2xB
  a_2xB = weight_2xB / sums_2xB
  df_KxGxD, dg_KxGxD = over(lambda f, g, a, c: _group_contract(f, g, a, c, beta, rows),
                            f_BxD, g_BxD, a_2xB[0], a_2xB[1])
  diag_B1 = weight_2xB.sum(0)[:, None]
  scale = beta / (2 * b)
  df_BxD = scale * (df_KxGxD.reshape(b, d) - diag_B1 * g_BxD)
  dg_BxD = scale * (dg_KxGxD.reshape(b, d) - diag_B1 * f_BxD)
  return (df_BxD.T @ x_BxDx, dg_BxD.T @ y_BxDy), u_2xB, log_g_2xB.mean()


def _project(w_Dxd):
  """linear_towers.project_spectral in JAX: clip the singular values at 1."""
  u, s, vt = jnp.linalg.svd(w_Dxd, full_matrices=False)
  return (u * jnp.minimum(s, 1.0)[None]) @ vt


@functools.partial(jax.jit, static_argnames=("group", "beta", "lr", "gamma", "tile_entries"),
                   donate_argnames=("u_2xm",))
def _train_step(params, velocity, u_2xm, x_mxdx, y_mxdy, idx_B, *, group, beta, lr, gamma, tile_entries):
  grads, u_2xB, value = batch_gradients(*params, x_mxdx[idx_B], y_mxdy[idx_B], u_2xm[:, idx_B], group=group,
                                        beta=beta, gamma=gamma, tile_entries=tile_entries)
  velocity = tuple(0.9 * vel - lr * grad for vel, grad in zip(velocity, grads))
  params = tuple(_project(p + vel) for p, vel in zip(params, velocity))
  return params, velocity, u_2xm.at[:, idx_B].set(u_2xB), value


def init_towers(cfg: GridConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """The initialisation of `linear_towers.train`, from the seed alone (the PAC-Bayes prior's mean)."""
  rng, dim = np.random.default_rng([2, seed]), cfg.world.input_dim
  return tuple(linear_towers.project_spectral(rng.normal(size=(cfg.world.embed_dim, dim)) / np.sqrt(dim))
               for _ in range(2))


def batch_order(m: int, batch: int, steps: int, seed: int) -> np.ndarray:
  """[steps, B] pool indices: consecutive slices of per-epoch permutations (the same for every G)."""
  rng = np.random.default_rng([3, seed, m])
  epochs = -(-steps * batch // m)
  return np.concatenate([rng.permutation(m) for _ in range(epochs)])[:steps * batch].reshape(steps, batch)


def train(cfg: GridConfig, estimator: str, group: int, x_mxdx, y_mxdy, seed: int):
  """(W, V) after cfg.steps steps; the objective's value at the last step."""
  m, batch = len(x_mxdx), min(len(x_mxdx), cfg.batch)
  params = tuple(jnp.asarray(p, jnp.float32) for p in init_towers(cfg, seed))
  velocity = tuple(jnp.zeros_like(p) for p in params)
  u_2xm = jnp.zeros((2, m), jnp.float32)
  x, y = jnp.asarray(x_mxdx, jnp.float32), jnp.asarray(y_mxdy, jnp.float32)
  gamma = {"plain": None, "sogclr": cfg.gamma}[estimator]
  value = jnp.nan
  for idx_B in batch_order(m, batch, cfg.steps, seed):
    params, velocity, u_2xm, value = _train_step(params, velocity, u_2xm, x, y, jnp.asarray(idx_B, jnp.int32),
                                                 group=group, beta=cfg.world.beta, lr=cfg.lr, gamma=gamma,
                                                 tile_entries=cfg.tile_entries)
  return tuple(np.asarray(p, np.float64) for p in params), float(value)


# ---- evaluation (numpy, float64: the batch bias at G = 65,536 is ~1e-5, below float32's sums) --------------


def log_means(f_nxD: np.ndarray, g_nxD: np.ndarray, group: int, beta: float,
              tile_entries: int = 1 << 18) -> np.ndarray:
  """[2, n]: log (1/G) sum_j exp(beta s_ij) over each pair's group, image->text (rows) and text->image
  (columns), for consecutive groups of `group` pairs; tiled as the training loss is."""
  n, d = f_nxD.shape
  rows, per = _tiling(group, tile_entries)
  f_KxGxD, g_KxGxD = f_nxD.reshape(-1, group, d), g_nxD.reshape(-1, group, d)
  out_2xKxG = np.zeros((2, n // group, group))
  for k in range(0, n // group, per):
    g_kxDxG = np.swapaxes(g_KxGxD[k:k + per], 1, 2)
    for r in range(0, group, rows):
      e_kxRxG = np.exp(beta * (f_KxGxD[k:k + per, r:r + rows] @ g_kxDxG - 1))
      out_2xKxG[0, k:k + per, r:r + rows] = e_kxRxG.sum(2)
      out_2xKxG[1, k:k + per] += e_kxRxG.sum(1)
  return np.log(out_2xKxG.reshape(2, n) / group) + beta


def grouped_terms(world, w, v, beta: float, x, y, group: int) -> tuple[np.ndarray, np.ndarray]:
  """Per group: l_G (the symmetric grouped objective) and d = l_G - mean o_i (its control variate's part)."""
  f, g = x @ w.T, y @ v.T
  loss_n = 0.5 * log_means(f, g, group, beta).sum(0) - beta * (f * g).sum(1)
  oracle_n = oracle_terms(world, w, v, beta, x, y)
  per_group = lambda a: a.reshape(-1, group).mean(1)
  return per_group(loss_n), per_group(loss_n - oracle_n)


def _se(a: np.ndarray) -> float:
  return float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else float("nan")


def pac_bayes_init(cfg: GridConfig, world, w, v, w0, v0, x, y, m: int, group: int, seed: int) -> dict:
  """PAC-Bayes (A), "init" prior, at the largest sigma of the grid whose Q keeps 1 - fidelity of theta_hat's
  infinite-batch margin on the training anchors (module docstring)."""
  beta, rng = cfg.world.beta, np.random.default_rng([4, seed, m, group])
  xa, ya = x[:cfg.fidelity_anchors], y[:cfg.fidelity_anchors]
  margin = oracle_terms(world, w, v, beta, xa, ya).mean()
  dist2 = float(((w - w0) ** 2).sum() + ((v - v0) ** 2).sum())
  faithful = [sig for sig in pac_bayes.SIGMAS
              if np.mean([oracle_terms(world, a, b, beta, xa, ya).mean()
                          for a, b in zip(*pac_bayes.sample_towers(w, v, sig, 2, rng))]) <= 0.9 * margin]
  sigma = max(faithful, default=min(pac_bayes.SIGMAS))
  kl = dist2 / (2 * sigma**2)
  c_star = lse_bound.concentration_constant(group, beta)
  return {"pac_bayes_bound": pac_bayes.mcdiarmid_gap(kl, m, c_star, cfg.delta / len(pac_bayes.SIGMAS)),
          "pac_bayes_sigma": sigma, "pac_bayes_kl": kl}


def bounds(cfg: GridConfig, m: int, group: int) -> dict:
  """The closed-form bounds at (G, m): Theorem 1's and Theorem 2's sample parts, Theorem 2's total, w_G."""
  s, beta = cfg.world, cfg.world.beta
  t1 = bound.uniform_terms(m, group, beta, cfg.delta, linear_towers.complexity(s.embed_dim, s.input_dim,
                                                                                 s.input_dim))
  t2 = lse_bound.n_free_terms(m, group, beta, cfg.delta, s.embed_dim, s.input_dim, s.input_dim)
  return {"theorem1_sample": t1["rademacher"] + t1["concentration"],
          "theorem2_sample": t2["lipschitz"] + t2["concentration"], "theorem2_total": t2["total"],
          "trivial_sample": bound.own_row_range(group, beta)}


def settings(cfg: GridConfig, estimator: str, m: int) -> dict:
  """What a cell was trained and measured with: these columns must match when a CSV is resumed."""
  return {"steps": cfg.steps, "batch": min(m, cfg.batch), "lr": cfg.lr,
          "gamma": cfg.gamma if estimator == "sogclr" else 1.0, "beta": cfg.world.beta,
          "embed_dim": cfg.world.embed_dim, "n_test": cfg.n_test, "delta": cfg.delta}


def run_cell(cfg: GridConfig, estimator: str, group: int, m: int, seed: int) -> dict:
  """Train one cell and measure it: one CSV row (module docstring)."""
  wall, cpu = time.perf_counter(), time.process_time()
  s, beta = cfg.world, cfg.world.beta
  world = s.world()
  x, y = pairs(s, "pool", seed, m)
  (w, v), last_value = train(cfg, estimator, group, x, y, seed)
  train_cpu = time.process_time() - cpu
  x_test, y_test = pairs(s, "test", seed, cfg.n_test)
  log_z_n = symmetric_log_partition(world, w, v, beta, x_test, y_test)
  l_inf = -beta * synthetic.mean_similarity(world, w, v) + log_z_n.mean()
  l_test_K, d_test_K = grouped_terms(world, w, v, beta, x_test, y_test, group)
  sub = np.random.default_rng([5, seed, m]).permutation(m)[:min(m, cfg.n_test)]
  l_train_K, _ = grouped_terms(world, w, v, beta, x[sub], y[sub], group)
  l_inf_train = oracle_terms(world, w, v, beta, x, y).mean()
  row = dict(zip(KEYS, (estimator, group, m, seed))) | settings(cfg, estimator, m) | {
    "infinite_batch_loss": l_inf, "infinite_batch_loss_se": _se(log_z_n),
    "population_loss": l_inf + d_test_K.mean(), "batch_bias": d_test_K.mean(), "batch_bias_se": _se(d_test_K),
    "train_objective": l_train_K.mean(), "train_objective_se": _se(l_train_K),
    "train_infinite_batch_loss": l_inf_train, "last_step_objective": last_value,
    "held_out_objective": l_test_K.mean(),
  }
  row |= {"sample_gap": row["population_loss"] - row["train_objective"],
          "sample_gap_inf": l_inf - l_inf_train}
  row |= bounds(cfg, m, group)
  row |= pac_bayes_init(cfg, world, w, v, *init_towers(cfg, seed), x, y, m, group, seed)
  row |= {"train_cpu_s": train_cpu, "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}
  return row


ROW_COLUMNS = (*KEYS, *settings(QUICK, "plain", 1), "infinite_batch_loss", "infinite_batch_loss_se",
               "population_loss", "batch_bias", "batch_bias_se", "train_objective", "train_objective_se",
               "train_infinite_batch_loss", "last_step_objective", "held_out_objective", "sample_gap",
               "sample_gap_inf", "theorem1_sample", "theorem2_sample", "theorem2_total", "trivial_sample",
               "pac_bayes_bound", "pac_bayes_sigma", "pac_bayes_kl", "train_cpu_s", "cpu_s", "wall_s")


def done_cells(cfg: GridConfig, out: Path) -> set[tuple]:
  """The cells already in `out`; refuses a CSV written under other settings."""
  if not out.exists():
    return set()
  df = pd.read_csv(out)
  if list(df.columns) != list(ROW_COLUMNS):
    raise ValueError(f"{out} has other columns than this version writes")
  for row in df.itertuples():
    for name, value in settings(cfg, row.estimator, row.m).items():
      if not np.isclose(getattr(row, name), value):
        raise ValueError(f"{out} was written with other settings ({name} = {getattr(row, name)}, "
                         f"not {value})")
  return set(df[list(KEYS)].itertuples(index=False, name=None))


def run_grid(cfg: GridConfig, out: Path, stop_after_s: float = float("inf"), log=print) -> int:
  """Every cell not yet in `out`, one row appended per finished cell; no cell starts after stop_after_s.
  Returns the number of cells run."""
  done, start, count = done_cells(cfg, out), time.perf_counter(), 0
  for cell in cfg.cells():
    if cell in done:
      continue
    if time.perf_counter() - start > stop_after_s:
      break
    row = run_cell(cfg, *cell)
    pd.DataFrame([row], columns=list(ROW_COLUMNS)).to_csv(out, mode="a", header=not out.exists(), index=False)
    count += 1
    log(f"{cell}: L_inf {row['infinite_batch_loss']:.5f} gap {row['sample_gap']:+.5f} "
        f"gap_inf {row['sample_gap_inf']:+.5f} ({row['train_cpu_s']:.1f} s train, {row['cpu_s']:.1f} s CPU)")
  return count


def main(argv: list[str] | None = None) -> int:
  parser = cli.Parser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", type=cli.out_file, required=True,
                      help="the CSV (rows are appended; resumable)")
  parser.add_argument("--quick", action="store_true", help="a tiny grid (seconds), for the tests")
  parser.add_argument("--stop-after", type=cli.number(float, gt=0), default=float("inf"),
                      help="seconds of wall time after which no new cell starts")
  args = parser.parse_args(argv)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  cfg = QUICK if args.quick else GridConfig()
  with cli.blame("--out"):
    done_cells(cfg, args.out)
  count = run_grid(cfg, args.out, args.stop_after)
  print(f"{count} cells run -> {args.out}")
  return 0


if __name__ == "__main__":
  raise SystemExit(cli.run(main))
