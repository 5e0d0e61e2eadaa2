"""A model class where every term of Theorem 1 can be evaluated: norm-constrained linear towers.

f(x) = W x and g(y) = V y with unit-norm inputs and spectral norms |W|_2, |V|_2 <= 1, so
|f|, |g| <= 1 and s = x^T W^T V y lies in [-1, 1], as the theorem assumes. Their complexities have
closed forms (README, section 4):
  tower:  E sup_W |(1/m) sum sigma_k W x_k| = E |(1/m) sum sigma_k x_k| <= 1/sqrt(m)      (Jensen)
  sim:    E sup <W^T V, (1/m) sum sigma_k x_k y_k^T> = E KyFan_D(A) <= sqrt(min(D, d_x, d_y) / m)
because M = W^T V ranges over all matrices of rank <= D with |M|_2 <= 1, whose dual norm is the
Ky Fan D-norm (sum of the D largest singular values), and KyFan_D(A) <= sqrt(D) |A|_F.
Training is projected gradient descent on the symmetric L^_N with a fixed batch partition.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from theory import bound, empirical, montecarlo, synthetic


def complexity(embed_dim: int, dim_x: int, dim_y: int) -> bound.Complexity:
  """Closed-form complexity constants for unit inputs and spectral norms <= 1."""
  return bound.Complexity(sim=float(np.sqrt(min(embed_dim, dim_x, dim_y))), tower=1.0)


def empirical_rademacher(x_mxdx: np.ndarray, y_mxdy: np.ndarray, embed_dim: int, n_sigma: int,
                         rng: np.random.Generator) -> dict[str, float]:
  """Monte Carlo over sign vectors of the exact suprema above, on one sample, with standard errors.

  To compare with the closed forms C / sqrt(m); 'tower' is the larger of the two towers' values.
  """
  m = len(x_mxdx)
  sigma_Sxm = rng.choice([-1.0, 1.0], size=(n_sigma, m))
  a_Sxdxxdy = np.einsum("sk,ki,kj->sij", sigma_Sxm, x_mxdx, y_mxdy) / m
  draws = {"sim": np.linalg.svd(a_Sxdxxdy, compute_uv=False)[:, :embed_dim].sum(1),
           "tower_x": np.linalg.norm(sigma_Sxm @ x_mxdx / m, axis=1),
           "tower_y": np.linalg.norm(sigma_Sxm @ y_mxdy / m, axis=1)}
  out = {}
  for name, values in draws.items():
    out[name], out[f"{name}_se"] = float(values.mean()), float(values.std(ddof=1) / np.sqrt(n_sigma))
  return out


def project_spectral(w_Dxd: np.ndarray) -> np.ndarray:
  """Euclidean projection onto {|W|_2 <= 1}: clip the singular values at 1."""
  u, s, vt = np.linalg.svd(w_Dxd, full_matrices=False)
  return (u * np.minimum(s, 1.0)) @ vt


def gradients(w_Dxdx: np.ndarray, v_Dxdy: np.ndarray, x_mxdx: np.ndarray, y_mxdy: np.ndarray,
              batch_size: int, beta: float) -> tuple[np.ndarray, np.ndarray]:
  """Gradients in W and V of the symmetric L^_N (empirical.train_objective of the embeddings).

  Per batch, d l_N / d S = beta / (2N) (P + Q - 2I) with P the row softmax and Q the column
  softmax of beta S; the mean over m/N batches multiplies it by N/m. Since |s| <= 1 the logits lie
  in [-beta, beta], so exp(beta S) needs no max-shift.
  """
  m, dim = len(x_mxdx), w_Dxdx.shape[0]
  f_BxNxD = (x_mxdx @ w_Dxdx.T).reshape(-1, batch_size, dim)
  g_BxNxD = (y_mxdy @ v_Dxdy.T).reshape(-1, batch_size, dim)
  d_f, d_g = np.empty_like(f_BxNxD), np.empty_like(g_BxNxD)
  step = max(1, (1 << 20) // batch_size**2)
  for b in range(0, len(f_BxNxD), step):
    fb, gb = f_BxNxD[b:b + step], g_BxNxD[b:b + step]
    e = np.exp(beta * (fb @ np.swapaxes(gb, 1, 2)))
    d_sims = e / e.sum(2, keepdims=True)
    e /= e.sum(1, keepdims=True)
    d_sims += e
    d_sims -= 2 * np.eye(batch_size)
    d_sims *= beta / (2 * m)
    d_f[b:b + step] = d_sims @ gb
    d_g[b:b + step] = np.swapaxes(d_sims, 1, 2) @ fb
  return d_f.reshape(m, dim).T @ x_mxdx, d_g.reshape(m, dim).T @ y_mxdy


def train(x_mxdx: np.ndarray, y_mxdy: np.ndarray, batch_size: int, beta: float, embed_dim: int,
          steps: int, lr: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Projected gradient descent with heavy-ball momentum 0.9 from a random feasible start."""
  params = [project_spectral(rng.normal(size=(embed_dim, a.shape[1])) / np.sqrt(a.shape[1]))
            for a in (x_mxdx, y_mxdy)]
  velocity = [np.zeros_like(p) for p in params]
  for _ in range(steps):
    grads = gradients(*params, x_mxdx, y_mxdy, batch_size, beta)
    velocity = [0.9 * v - lr * g for v, g in zip(velocity, grads)]
    params = [project_spectral(p + v) for p, v in zip(params, velocity)]
  return params[0], params[1]


@dataclasses.dataclass(frozen=True)
class SweepConfig:
  """World, model and training of one linear-tower sweep (defaults: the README's figure)."""
  m: int = 8192
  batch_sizes: tuple[int, ...] = (2, 8, 32, 128, 512, 2048)
  seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
  beta: float = 1.0
  embed_dim: int = 8
  delta: float = 0.05
  n_clusters: int = 16
  input_dim: int = 16
  kappa: float = 8.0
  world_seed: int = 0
  steps: int = 200
  lr: float = 3.0
  n_test: int = 16384
  n_sigma: int = 256

  def world(self) -> synthetic.PairWorld:
    return synthetic.make_world(np.random.default_rng(self.world_seed), self.n_clusters,
                                self.input_dim, self.input_dim, self.kappa, self.kappa)


def run_sweep(cfg: SweepConfig) -> pd.DataFrame:
  """Train at each batch size on the same m pairs per seed; one row per (seed, N) with gap and bound.

  gap = L_inf - L^_N, split into gap_batch = L_inf - L_N (batch-size bias at the trained model) and
  gap_sample = L_N - L^_N (held-out minus train at batch size N). L_inf is exact up to Monte Carlo
  over n_test anchors; L_N = L_inf + the control-variate bias (montecarlo.batch_statistics) on
  n_test held-out pairs, far less noisy than averaging l_N over held-out batches.
  """
  world = cfg.world()
  comp = complexity(cfg.embed_dim, cfg.input_dim, cfg.input_dim)
  rows = []
  for seed in cfg.seeds:
    rng = np.random.default_rng(seed)
    x, y = synthetic.sample_pairs(world, cfg.m, rng)
    x_test, y_test = synthetic.sample_pairs(world, cfg.n_test, rng)
    rad = empirical_rademacher(x, y, cfg.embed_dim, cfg.n_sigma, rng)
    for n in cfg.batch_sizes:
      w, v = train(x, y, n, cfg.beta, cfg.embed_dim, cfg.steps, cfg.lr, rng)
      l_hat = empirical.train_objective(x @ w.T, y @ v.T, n, cfg.beta)
      l_inf, l_inf_se = synthetic.symmetric_infinite_batch_loss(world, w, v, cfg.beta, cfg.n_test, rng)
      _, bias = montecarlo.batch_statistics(world, w, v, cfg.beta, x_test, y_test, n, "sym")
      bias_se = bias.std(ddof=1) / np.sqrt(len(bias)) if len(bias) > 1 else np.nan
      l_n = l_inf + bias.mean()
      terms = bound.uniform_terms(cfg.m, n, cfg.beta, cfg.delta, comp)
      rows.append({
          "seed": seed, "batch_size": n, "m": cfg.m, "beta": cfg.beta, "embed_dim": cfg.embed_dim,
          "delta": cfg.delta, "train_objective": l_hat, "population_loss": l_n,
          "infinite_batch_loss": l_inf, "infinite_batch_loss_se": l_inf_se,
          "batch_bias_se": bias_se, "gap": l_inf - l_hat, "gap_batch": l_inf - l_n,
          "gap_sample": l_n - l_hat, "bias_bound_fixed_model": bound.bias_bound(n, cfg.beta),
          **{f"bound_{k}": val for k, val in terms.items()},
          "bound_ratio": terms["total"] / abs(l_inf - l_hat),
          "complexity_sim": comp.sim / np.sqrt(cfg.m), "complexity_sim_hat": rad["sim"],
          "complexity_sim_hat_se": rad["sim_se"], "complexity_tower": comp.tower / np.sqrt(cfg.m),
          "complexity_tower_hat": max(rad["tower_x"], rad["tower_y"]),
          "complexity_tower_hat_se": max(rad["tower_x_se"], rad["tower_y_se"]),
      })
  return pd.DataFrame(rows)
