"""The sphere worlds: pairs on S^{D-1} whose partition function, hence every constant of the batch
bias (theory/bias.py) and of the gradient bias (theory/gradient.py), is exact.

World: x uniform on the sphere S^{D-1} and y = normalize(x + S g) with g ~ N(0, I_D); the similarity
is s = <x, y> and B the inverse temperature. Both marginals are uniform and the joint law depends on
<x, y> only, so the partition function Z = E_y' exp(B <x, y'>) does not depend on x and has a closed
form, the softmax means E_y' [exp(B <x, y'>) y'] / Z = A_D(B) x are closed forms too (mean_resultant),
and what remains is a one-dimensional integral over the law of s (constants, by quadrature).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np
from scipy import integrate, special

from theory.empirical import logsumexp


@dataclasses.dataclass(frozen=True)
class World:
  """x uniform on S^{dim-1}, y = normalize(x + noise g); similarity <x, y> at inverse temperature beta."""

  dim: int
  beta: float
  noise: float

  def __post_init__(self):
    # beta <= 300 keeps every exp(beta (s - 1)) >= exp(-600) representable (see bias.batch_values).
    if self.dim < 2 or not 0 < self.beta <= 300 or self.noise <= 0:
      raise ValueError(f"need dim >= 2, 0 < beta <= 300 and noise > 0, got {self}")

  def label(self) -> str:
    return f"D={self.dim} beta={self.beta:g} noise={self.noise:g}"


def log_partition(dim: int, beta: float) -> float:
  """log Z(beta) = log E exp(beta <x, y'>), y' uniform on S^{D-1}.

  Z = Gamma(D/2) (2/beta)^{D/2-1} I_{D/2-1}(beta), which the power series of I_nu turns into
  0F1(; D/2; beta^2 / 4). That form stays finite where the Bessel route does not: ive(D/2 - 1, beta)
  underflows to 0 once D >= 256 at beta <= 1 (D = 512 at beta = 10), and for beta <= 600 (Z(2 beta)
  at the largest allowed beta) Z <= e^600 does not overflow. Both agree to 1e-13 where both work.
  """
  return float(np.log(special.hyp0f1(dim / 2, beta**2 / 4)))


def mean_resultant(dim: int, beta: float) -> float:
  """A_D(beta) = E_y'[exp(beta <x, y'>) <x, y'>] / Z = d log Z / d beta, y' uniform on S^{D-1}.

  By symmetry E_y'[exp(beta <x, y'>) y'] / Z = A_D(beta) x: the softmax mean of the infinite batch.
  d/dbeta 0F1(; b; beta^2/4) = beta / (2b) 0F1(; b + 1; beta^2/4), so A_D = (beta / D) times a ratio of
  the series log_partition uses (I_{D/2}(beta) / I_{D/2-1}(beta) in Bessel form), finite where Z is.
  """
  return float(beta / dim * special.hyp0f1(dim / 2 + 1, beta**2 / 4) / special.hyp0f1(dim / 2, beta**2 / 4))


def sample_pairs(
  world: World, shape: tuple[int, ...], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
  """Positive pairs (x, y), each of shape (*shape, dim), unit rows."""
  x = rng.standard_normal((*shape, world.dim))
  x /= np.linalg.norm(x, axis=-1, keepdims=True)
  y = x + world.noise * rng.standard_normal(x.shape)
  return x, y / np.linalg.norm(y, axis=-1, keepdims=True)


# --- the law of s, by quadrature -------------------------------------------------------------------


@functools.cache
def _legendre(nodes: int) -> tuple[np.ndarray, np.ndarray]:
  """Gauss-Legendre nodes and weights on [-1, 1] (an eigenproblem: worth computing once)."""
  return np.polynomial.legendre.leggauss(nodes)


def _log_radial(dim: int, a_T: np.ndarray, nodes: int) -> np.ndarray:
  """log int_0^inf r^{D-1} exp(-(r - a)^2 / 2) dr for each a, by Gauss-Legendre around the mode.

  The integrand is log-concave with curvature <= -1, so beyond 14 of its mode it is below exp(-98)
  of its peak: a fixed window [mode - 14, mode + 14] cut at 0 holds all of it.
  """
  a_Tx1 = np.asarray(a_T, float)[..., None]
  k = dim - 1
  root = np.sqrt(a_Tx1**2 + 4 * k)
  # The positive root of r^2 - a r - k, written without cancellation for either sign of a.
  mode = np.where(a_Tx1 >= 0, (a_Tx1 + root) / 2, 2 * k / (root - a_Tx1))
  lo, hi = np.maximum(mode - 14.0, 0.0), mode + 14.0
  x_K, w_K = _legendre(nodes)
  r_TxK = lo + (hi - lo) * (x_K + 1) / 2
  log_terms = special.xlogy(k, r_TxK) - (r_TxK - a_Tx1) ** 2 / 2 + np.log(w_K * (hi - lo) / 2)
  return logsumexp(log_terms)


def log_angle_density(world: World, theta_T: np.ndarray, nodes: int = 96) -> np.ndarray:
  """log density of the angle theta = arccos <x, y> of a positive pair, on [0, pi].

  y is the direction of z = x / noise + g. In polar coordinates z = r y, so y has surface density
  (2 pi)^{-D/2} e^{-sin^2(theta) / (2 noise^2)} int_0^inf r^{D-1} e^{-(r - cos(theta)/noise)^2/2} dr,
  and the angle carries the area |S^{D-2}| sin^{D-2}(theta) of its level set. In theta (rather than
  s = cos theta) the density has no endpoint singularity for any D >= 2.
  """
  d = world.dim
  theta_T = np.asarray(theta_T, float)
  sin_T = np.sin(theta_T)
  log_area = np.log(2) + (d - 1) / 2 * np.log(np.pi) - special.gammaln((d - 1) / 2)
  return (
    log_area
    - d / 2 * np.log(2 * np.pi)
    + special.xlogy(d - 2, sin_T)
    - sin_T**2 / (2 * world.noise**2)
    + _log_radial(d, np.cos(theta_T) / world.noise, nodes)
  )


def one_minus_s(theta_T: np.ndarray) -> np.ndarray:
  """1 - cos(theta) = 2 sin^2(theta / 2), without the cancellation near theta = 0 (small noise)."""
  return 2 * np.sin(np.asarray(theta_T) / 2) ** 2


def log_expectation(
  world: World, log_f: Callable[[np.ndarray], np.ndarray], nodes: int = 96, epsrel: float = 1e-10
) -> tuple[float, float]:
  """log E f(s) over positive pairs for f >= 0 given as log f(1 - s): (value, relative error estimate).

  The integrand is peaked when the noise is small or f = exp(-beta (1 - s)) with a large beta, so a
  grid (geometric near theta = 0) locates its mode and the points where it has fallen by e, e^5,
  e^15, e^40; adaptive quadrature gets them as breakpoints, on the integrand divided by its peak.
  """
  grid_G = np.concatenate([np.geomspace(1e-9, 1.0, 300), np.linspace(1.0, np.pi - 1e-9, 300)[1:]])
  log_g = lambda theta: log_angle_density(world, theta, nodes) + log_f(one_minus_s(theta))  # noqa: E731
  values_G = log_g(grid_G)
  peak = values_G.max()
  points = {float(grid_G[values_G.argmax()])}
  for drop in (1, 5, 15, 40):
    inside = grid_G[values_G >= peak - drop]
    points |= {float(inside.min()), float(inside.max())}
  integrand = lambda theta: float(np.exp(log_g(np.array([theta]))[0] - peak))  # noqa: E731
  value, error = integrate.quad(
    integrand, 0.0, np.pi, points=sorted(points - {0.0, np.pi}), epsabs=0.0, epsrel=epsrel, limit=500
  )
  return float(peak + np.log(value)), float(error / value)


def constants(world: World, nodes: int = 96, epsrel: float = 1e-10) -> dict[str, float]:
  """Every constant of Proposition 1 in this world, exact or by quadrature (no Monte Carlo).

  mass is the quadrature of the density itself (1 up to the quadrature error): a check on the rest;
  a moment whose error estimate exceeds 1e-6 raises instead of passing as exact.
  Moments are of w = 1 - s (>= 0 and small for small noise), Var s = E (w - E w)^2 directly, and
  E exp(beta s) = exp(beta) E exp(-beta w), so nothing overflows or cancels.
  """
  b = world.beta

  def moment(log_f):
    value, error = log_expectation(world, log_f, nodes, epsrel)
    if not error < 1e-6:  # the checks treat the constants as exact
      raise ArithmeticError(f"quadrature did not converge in {world}: relative error {error:.2g}")
    return value

  mass = np.exp(moment(np.zeros_like))
  mean_w = np.exp(moment(np.log))
  var_s = np.exp(moment(lambda w: 2 * np.log(np.abs(w - mean_w))))
  log_mean_exp = b + moment(lambda w: -b * w)
  log_z = log_partition(world.dim, b)
  rho = float(np.expm1(log_mean_exp - log_z))
  jensen = float(np.expm1(log_partition(world.dim, 2 * b) - 2 * log_z) / 2)
  return {
    "mass": float(mass),
    "mean_sim": float(1 - mean_w),
    "var_sim": float(var_s),
    "log_mean_exp": float(log_mean_exp),
    "log_z": log_z,
    "l_inf": float(-b * (1 - mean_w) + log_z),
    "rho": rho,
    "jensen": jensen,
    "kappa": rho - jensen,
    "tau2": float(b**2 * var_s),
  }


def fit_batch_sizes(c: dict[str, float], span: float, points: int) -> list[int]:
  """N_min, ..., 2^(points-1) N_min with N_min the smallest power of two >= span * max(1 + rho, 1 + 2 J).

  N (L_N - L_inf) = E N log(1 + A / N), A = (w_pos - 1) + sum_j (w_j - 1) with weights w = exp(beta s) / Z,
  is a series in 1/N whose terms carry the moments of the positive's weight (mean 1 + rho) and of
  the negatives' (E w^2 = 1 + 2 J, then higher): it behaves like kappa + c_2 / N only once N is well
  above both. Below that the higher-order terms show: at D = 64, beta = 10, noise 2 (kappa = -0.80),
  N * bias is -0.25, -0.47, -0.65, -0.71 at N = 2, 8, 32, 64, far from a line in 1/N until N ~ 64.
  span = 8 puts N_min at 16 or 32 in the worlds at beta <= 5 and at 64 at beta = 10. The gradient's
  series (theory/gradient.py) carries the same moments, and the same rule serves it.
  """
  scale = span * max(1 + c["rho"], 1 + 2 * c["jensen"])
  n_min = max(2, 1 << int(np.ceil(np.log2(scale))))
  return [n_min << k for k in range(points)]
