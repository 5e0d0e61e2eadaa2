"""A paired-data world whose infinite-batch loss is known in closed form.

Pairs come from a mixture of von Mises-Fisher (vMF) clusters: pick a cluster c, then draw
x ~ vMF(a_c, kappa_x) on S^{d_x - 1} and y ~ vMF(b_c, kappa_y) on S^{d_y - 1} independently.
The towers are linear, f(x) = W x and g(y) = V y (identity towers: the inputs *are* the
embeddings). Then the partition function Z(x) = E_y' exp(beta <W x, V y'>) is a vMF moment
generating function evaluated at t = beta V^T W x, which has a closed form (Mardia and Jupp,
"Directional Statistics", 2000, section 9.3). So L_inf needs Monte Carlo only over anchors, and
the Monte Carlo checks can compare batch estimates against an exact target.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import special, stats


@dataclasses.dataclass(frozen=True)
class PairWorld:
  """Mixture of vMF clusters with an image side (x) and a text side (y)."""
  centres_x_Cxdx: np.ndarray
  centres_y_Cxdy: np.ndarray
  kappa_x: float
  kappa_y: float
  weights_C: np.ndarray

  def swapped(self) -> PairWorld:
    """The same world with the roles of x and y exchanged: text-to-image is image-to-text here."""
    return PairWorld(self.centres_y_Cxdy, self.centres_x_Cxdx, self.kappa_y, self.kappa_x,
                     self.weights_C)


def make_world(rng: np.random.Generator, n_clusters: int, dim_x: int, dim_y: int,
               kappa_x: float, kappa_y: float, aligned: bool = False) -> PairWorld:
  """Random cluster centres, uniform on each sphere, equal weights.

  aligned=True shares the centres between the sides (dim_x == dim_y), so identity towers already
  score positives above negatives: a fixed, reasonably trained model for the Monte Carlo checks.
  """
  def centres(dim):
    c = rng.normal(size=(n_clusters, dim))
    return c / np.linalg.norm(c, axis=1, keepdims=True)
  centres_x = centres(dim_x)
  centres_y = centres_x if aligned else centres(dim_y)
  return PairWorld(centres_x, centres_y, float(kappa_x), float(kappa_y),
                   np.full(n_clusters, 1.0 / n_clusters))


def sample_pairs(world: PairWorld, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """n i.i.d. pairs (x_nxdx, y_nxdy), unit vectors."""
  labels = rng.choice(len(world.weights_C), size=n, p=world.weights_C)
  x = np.empty((n, world.centres_x_Cxdx.shape[1]))
  y = np.empty((n, world.centres_y_Cxdy.shape[1]))
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    x[idx] = stats.vonmises_fisher(world.centres_x_Cxdx[c], world.kappa_x).rvs(len(idx), random_state=rng)
    y[idx] = stats.vonmises_fisher(world.centres_y_Cxdy[c], world.kappa_y).rvs(len(idx), random_state=rng)
  return x, y


def _log_bessel_i(nu: float, r: np.ndarray) -> np.ndarray:
  """log I_nu(r), stable for large r (ive = I * exp(-r))."""
  return np.log(special.ive(nu, r)) + r


def log_mgf_y(world: PairWorld, t_nxdy: np.ndarray) -> np.ndarray:
  """log E_y exp(<t, y>) for y from the text-side mixture; one value per row of t.

  For one vMF(mu, kappa) on S^{p-1} with nu = p/2 - 1 and r = |kappa mu + t|:
  E exp(<t, y>) = (kappa / r)^nu I_nu(r) / I_nu(kappa).
  """
  nu = t_nxdy.shape[1] / 2 - 1
  k = world.kappa_y
  r_nxC = np.sqrt(np.maximum(
      (t_nxdy**2).sum(1, keepdims=True) + 2 * k * t_nxdy @ world.centres_y_Cxdy.T + k**2, 1e-300))
  log_mgf_nxC = nu * np.log(k / r_nxC) + _log_bessel_i(nu, r_nxC) - _log_bessel_i(nu, k)
  return special.logsumexp(log_mgf_nxC + np.log(world.weights_C), axis=1)


def mean_resultant_length(dim: int, kappa: float) -> float:
  """|E x| for x ~ vMF(mu, kappa) on S^{dim-1}: A(kappa) = I_{dim/2}(kappa) / I_{dim/2-1}(kappa)."""
  return float(special.ive(dim / 2, kappa) / special.ive(dim / 2 - 1, kappa))


def mean_similarity(world: PairWorld, W_Dxdx: np.ndarray, V_Dxdy: np.ndarray) -> float:
  """E <W x, V y> over positive pairs, exact: E[x | c] = A(kappa_x) a_c and x, y independent given c."""
  a = mean_resultant_length(W_Dxdx.shape[1], world.kappa_x)
  b = mean_resultant_length(V_Dxdy.shape[1], world.kappa_y)
  fx_CxD = world.centres_x_Cxdx @ W_Dxdx.T
  gy_CxD = world.centres_y_Cxdy @ V_Dxdy.T
  return float(a * b * (world.weights_C * (fx_CxD * gy_CxD).sum(1)).sum())


def log_partition(world: PairWorld, W_Dxdx: np.ndarray, V_Dxdy: np.ndarray, beta: float,
                  x_nxdx: np.ndarray) -> np.ndarray:
  """log Z(x) = log E_y' exp(beta <W x, V y'>), exact, for each anchor x."""
  return log_mgf_y(world, beta * (x_nxdx @ W_Dxdx.T) @ V_Dxdy)


def infinite_batch_loss(world: PairWorld, W_Dxdx: np.ndarray, V_Dxdy: np.ndarray, beta: float,
                        n_anchors: int, rng: np.random.Generator) -> tuple[float, float]:
  """Image-to-text L_inf = -beta E s(x, y) + E log Z(x): (value, Monte Carlo standard error).

  The first term is exact; only E log Z(x) is averaged over n_anchors fresh anchors.
  """
  x, _ = sample_pairs(world, n_anchors, rng)
  log_z_n = log_partition(world, W_Dxdx, V_Dxdy, beta, x)
  value = -beta * mean_similarity(world, W_Dxdx, V_Dxdy) + log_z_n.mean()
  return float(value), float(log_z_n.std(ddof=1) / np.sqrt(n_anchors))


def symmetric_infinite_batch_loss(world: PairWorld, W_Dxdx: np.ndarray, V_Dxdy: np.ndarray,
                                  beta: float, n_anchors: int,
                                  rng: np.random.Generator) -> tuple[float, float]:
  """Mean of the image-to-text and text-to-image L_inf (the BASIC objective): (value, std. error)."""
  i2t, se_i2t = infinite_batch_loss(world, W_Dxdx, V_Dxdy, beta, n_anchors, rng)
  t2i, se_t2i = infinite_batch_loss(world.swapped(), V_Dxdy, W_Dxdx, beta, n_anchors, rng)
  return 0.5 * (i2t + t2i), 0.5 * float(np.hypot(se_i2t, se_t2i))


def delta_method_terms(world: PairWorld, W_Dxdx: np.ndarray, V_Dxdy: np.ndarray, beta: float,
                       n_pairs: int, rng: np.random.Generator) -> dict[str, float]:
  """The two O(1/N) effects in L_N - L_inf = kappa / N + O(1/N^2) (image-to-text), with std. errors.

  rho = E[exp(beta s(x, y)) / Z(x)] - 1: the positive sitting inside the batch mean (pushes L_N up).
  jensen = E[sigma^2(x) / (2 Z(x)^2)], sigma^2(x) = Var_y' exp(beta s): log is concave (pushes L_N
  down); sigma^2 / Z^2 = Z_{2 beta}(x) / Z_beta(x)^2 - 1 exactly. kappa = rho - jensen.
  """
  x, y = sample_pairs(world, n_pairs, rng)
  log_z = log_partition(world, W_Dxdx, V_Dxdy, beta, x)
  rho_n = np.expm1(beta * ((x @ W_Dxdx.T) * (y @ V_Dxdy.T)).sum(1) - log_z)
  jensen_n = 0.5 * np.expm1(log_partition(world, W_Dxdx, V_Dxdy, 2 * beta, x) - 2 * log_z)
  out = {}
  for name, values in (("rho", rho_n), ("jensen", jensen_n), ("kappa", rho_n - jensen_n)):
    out[name], out[f"{name}_se"] = float(values.mean()), float(values.std(ddof=1) / np.sqrt(n_pairs))
  return out
