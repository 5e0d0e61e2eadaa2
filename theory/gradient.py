"""Proposition 2 (theory/README.md, section 9): the N-pair loss's gradient is a biased estimate of the
infinite-batch gradient, E[gradient] - gradient of L_inf = alpha / N + O(1/N^2), with alpha the gradient of
Proposition 1's kappa. Measured against that first order in the sphere worlds of theory/sphere.py.

  python -m theory.bias --gradient --dim D --beta B --noise S --batches 4,16,64,256,1024 [--json]

What is differentiated. BASIC's symmetric loss (the mean of image-to-text and text-to-image, each offset by
log N), w.r.t. the unit-norm embeddings the loss receives (ambient vectors of R^D, before any
normalisation's Jacobian), for a fixed set of K anchor pairs: anchor k, with embeddings (u_k, v_k), is put
in a batch with N - 1 fresh pairs, and g_N(k) = N grad_{(u_k, v_k)} l_N (the gradient of the sum over rows:
O(1) at every N) is averaged over the companions. Any parameter gradient is E[J_f^T (u part) + J_g^T
(v part)] over pairs (chain rule), so its bias is a linear image of this one; and a trainer measures the
same thing: fixed anchors, random companions, the gradient w.r.t. the anchors' embeddings, against a
batch far larger than N.

In a sphere world (identity towers, u = x and v = y), per anchor (x, y), with w = exp(beta <x, y>) / Z,
A = A_D(beta), A2 = A_D(2 beta) (sphere.mean_resultant), q = 1 + 2 J = Z(2 beta) / Z(beta)^2 and rho from
sphere.constants:
  g_inf = beta (A x - y,  A y - x)                           (u part, v part)
  alpha = (row(x, y) + column(y, x),  column(x, y) + row(y, x)) / 2
  row(a, b)    = beta [w (b - A a) - q (A2 - A) a]             an anchor's own row, w.r.t. its embedding a
  column(a, b) = beta [w a - (rho A + q A2) b + (q - 1) A b]   w.r.t. the candidate b, through every row
(the first argument is the side that anchors the direction: x for image-to-text, y for text-to-image).
The q (A2 - A) and (q - 1) terms come from the spread of the negatives' weights (the bias of the softmax
mean as a ratio of two sample means: Jensen's analogue); the rest from where positives sit: the
anchor's own positive in its row (w), the other rows' positives (rho), and the anchor's embedding as a
term of every other row's normaliser (q A2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from analysis.stats import line_fit, mean_ci
from theory import sphere

# The right first order and two wrong ones that a careless derivation gives, as (jensen, columns):
# no_jensen drops the terms of the weights' spread, rows_only treats the gradient through the other
# rows (the anchor as a negative) as unbiased. The check must refute both on the data that confirm alpha.
RIGHT = {"sphere_gradient_first_order": (True, True)}
BROKEN = {
  "sphere_broken_gradient_no_jensen": (False, True),
  "sphere_broken_gradient_rows_only": (True, False),
}


def gradient_constants(world: sphere.World, c: dict[str, float] | None = None) -> dict[str, float]:
  """What the closed forms need: beta, log Z, rho (quadrature), q = 1 + 2 J, A_D(beta), A_D(2 beta)."""
  c = sphere.constants(world) if c is None else c
  return {
    "beta": world.beta,
    "log_z": c["log_z"],
    "rho": c["rho"],
    "q": 1 + 2 * c["jensen"],
    "A": sphere.mean_resultant(world.dim, world.beta),
    "A2": sphere.mean_resultant(world.dim, 2 * world.beta),
  }


def infinite_gradient(gc: dict[str, float], x_KxD: np.ndarray, y_KxD: np.ndarray) -> np.ndarray:
  """[K, 2, D]: the gradient of L_inf per anchor pair and unit mass: beta (A x - y, A y - x) (u, v parts).

  Both halves of the symmetric loss give the same: beta (softmax mean - positive), and the softmax mean
  of the infinite batch is A x (rows) or A y (columns), as every marginal is uniform.
  """
  b, a = gc["beta"], gc["A"]
  return np.stack([b * (a * x_KxD - y_KxD), b * (a * y_KxD - x_KxD)], axis=1)


def _row(gc: dict[str, float], w_Kx1: np.ndarray, a_KxD, b_KxD, jensen: bool) -> np.ndarray:
  """First-order bias (times N) of an anchor's own row, w.r.t. its embedding a (positive b)."""
  out = w_Kx1 * (b_KxD - gc["A"] * a_KxD)
  return gc["beta"] * (out - jensen * gc["q"] * (gc["A2"] - gc["A"]) * a_KxD)


def _column(gc: dict[str, float], w_Kx1: np.ndarray, a_KxD, b_KxD, jensen: bool) -> np.ndarray:
  """First-order bias (times N) w.r.t. the candidate b of the pair (a, b), through every row it is in."""
  out = w_Kx1 * a_KxD - (gc["rho"] * gc["A"] + gc["q"] * gc["A2"]) * b_KxD
  return gc["beta"] * (out + jensen * (gc["q"] - 1) * gc["A"] * b_KxD)


def first_order(
  gc: dict[str, float], x_KxD: np.ndarray, y_KxD: np.ndarray, jensen: bool = True, columns: bool = True
) -> np.ndarray:
  """[K, 2, 2, D]: alpha per anchor, direction (image-to-text, text-to-image) and part (u, v); the
  symmetric loss's is the mean over directions (`symmetric`). jensen=False or columns=False: the broken ones.

  Image-to-text: u anchors its row, v is a candidate of every row; text-to-image: the roles swap.
  """
  w_Kx1 = np.exp(gc["beta"] * (x_KxD * y_KxD).sum(-1, keepdims=True) - gc["log_z"])
  i2t = [_row(gc, w_Kx1, x_KxD, y_KxD, jensen), columns * _column(gc, w_Kx1, x_KxD, y_KxD, jensen)]
  t2i = [columns * _column(gc, w_Kx1, y_KxD, x_KxD, jensen), _row(gc, w_Kx1, y_KxD, x_KxD, jensen)]
  return np.stack([np.stack(i2t, axis=1), np.stack(t2i, axis=1)], axis=1)


def symmetric(d_xKx2x2xD: np.ndarray) -> np.ndarray:
  """[..., K, 2, D]: the symmetric loss's (u, v) parts, the mean of the two directions."""
  return d_xKx2x2xD.mean(axis=-3)


class Direction(NamedTuple):
  """One direction of the loss around the anchors, each in slot 0 of its own batch of N: anchors a in the
  rows, candidates b in the columns, weights w = exp(beta s) / Z(row) with Z the world's partition
  function of that row. What the estimator needs of a world (a sphere world or any population of pairs):

  w_row_cKxN   w_0j, the anchor's row;            t_cKxN    T_i = mean_j w_ij, every row's mean weight;
  w_col_cKxN   w_i0, the anchor's column;         a_cKxNxD, b_cKxNxD  the embeddings, the anchor's in slot 0;
  mu_KxD       the anchor row's infinite-batch softmax mean E_b'[w(a_0, b') b'];
  nu_KxD       the anchor column's infinite-batch mean E_a'[w(a', b_0) a'] (its rows' own weights).
  """

  w_row_cKxN: np.ndarray
  w_col_cKxN: np.ndarray
  t_cKxN: np.ndarray
  a_cKxNxD: np.ndarray
  b_cKxNxD: np.ndarray
  mu_KxD: np.ndarray
  nu_KxD: np.ndarray


def _direction(d: Direction):
  """(row, controlled row, column, controlled column) of one direction, each [c, K, D] and without the
  factor beta: row = softmax mean of row 0 - mu (the bias w.r.t. a_0), column = (1/N) sum_i w_i0 a_i / T_i
  - nu (w.r.t. b_0). The controlled versions have the same means and, in the sphere worlds, a spread
  O(1/N) instead of O(1/sqrt(N)):

  row:    R/T - mu = e / T, e = (1/N) sum_j w_0j (b_j - mu) of known mean w_00 (b_0 - mu) / N; so
          e / T - e + E e = (T_0 - 1)(mu - R/T) + w_00 (b_0 - mu) / N, a product of two O(1/sqrt(N)) terms.
  column: minus (1/N) sum_{i >= 1} (w_i0 a_i - nu), of mean zero (a_i is independent of b_0 and
          E[w(a', b_0) a'] = nu), leaves w_00 a_0 / (N T_0) + (1/N) sum_{i >= 1} w_i0 a_i
          (1/T_i - 1) - nu / N, whose terms are nearly uncorrelated where E_x' w(x', y) = 1 for every y.
  """
  n = d.t_cKxN.shape[-1]
  a0, b0, t0 = d.a_cKxNxD[..., 0, :], d.b_cKxNxD[..., 0, :], d.t_cKxN[..., 0, None]
  mu, nu, w00 = d.mu_KxD, d.nu_KxD, d.w_row_cKxN[..., 0, None]
  row = np.einsum("ckj,ckjd->ckd", d.w_row_cKxN, d.b_cKxNxD) / (n * t0)
  col = np.einsum("cki,ckid->ckd", d.w_col_cKxN / d.t_cKxN, d.a_cKxNxD) / n
  row_ctrl = (t0 - 1) * (mu - row) + w00 * (b0 - mu) / n
  others = d.w_col_cKxN[..., 1:] * (1 / d.t_cKxN[..., 1:] - 1)
  col_ctrl = w00 * a0 / (n * t0) + (np.einsum("cki,ckid->ckd", others, d.a_cKxNxD[..., 1:, :]) - nu) / n
  return row - mu, row_ctrl, col - nu, col_ctrl


def direction_draws(beta: float, i2t: Direction, t2i: Direction) -> tuple[np.ndarray, np.ndarray]:
  """(plain, controlled), each [c, K, 2, 2, D] (direction, part): g_N - g_inf per draw of the batches.

  Image-to-text: u is the anchor's row, v its column; text-to-image (the columns of S are its rows): u
  is the column, v the row. The symmetric loss's gradient is the mean of the two (`symmetric`).
  """
  i2t_parts, t2i_parts = _direction(i2t), _direction(t2i)
  out = []
  for row, col in ((0, 2), (1, 3)):
    directions = [np.stack([i2t_parts[row], i2t_parts[col]], axis=2),
                  np.stack([t2i_parts[col], t2i_parts[row]], axis=2)]
    out.append(beta * np.stack(directions, axis=2))
  return out[0], out[1]


def block_direction(w_cKxNxN: np.ndarray, a_cKxNxD: np.ndarray, b_cKxNxD: np.ndarray, mu_KxD: np.ndarray,
                    nu_KxD: np.ndarray) -> Direction:
  """The Direction of a full weight block [c, K, N, N] (rows a, columns b; the anchor in slot 0)."""
  return Direction(w_cKxNxN[..., 0, :], w_cKxNxN[..., :, 0], w_cKxNxN.mean(-1), a_cKxNxD, b_cKxNxD,
                   mu_KxD, nu_KxD)


def anchor_draws(
  world: sphere.World,
  gc: dict[str, float],
  x_KxD: np.ndarray,
  y_KxD: np.ndarray,
  n: int,
  count: int,
  rng: np.random.Generator,
  max_entries: int = 1 << 21,
) -> tuple[np.ndarray, np.ndarray]:
  """(plain, controlled), each [count, K, 2, 2, D] (direction, part): per draw of N - 1 fresh companions
  for every anchor, g_N - g_inf (plain) and its control-variate version (same mean, spread O(1/N)), for
  each direction of the loss (direction_draws); a few draws at a time.
  """
  chunk = max(1, max_entries // (len(x_KxD) * n * n))
  mu_KxD, nu_KxD = gc["A"] * x_KxD, gc["A"] * y_KxD  # the softmax means of the infinite batch
  blocks = []
  for start in range(0, count, chunk):
    x, y = sphere.sample_pairs(world, (min(chunk, count - start), len(x_KxD), n), rng)
    x[:, :, 0], y[:, :, 0] = x_KxD, y_KxD
    w_cKxNxN = np.exp(gc["beta"] * np.einsum("cknd,ckmd->cknm", x, y) - gc["log_z"])
    i2t = block_direction(w_cKxNxN, x, y, mu_KxD, nu_KxD)
    t2i = block_direction(np.swapaxes(w_cKxNxN, -1, -2), y, x, nu_KxD, mu_KxD)
    blocks.append(direction_draws(gc["beta"], i2t, t2i))
  return np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])


def span_coordinates(d_xKx2xD: np.ndarray, x_KxD: np.ndarray, y_KxD: np.ndarray) -> np.ndarray:
  """[..., K, 2, 2]: the least-squares coordinates of each part in the basis (x_k, y_k).

  The world is invariant under the reflections that fix x_k and y_k, so E g_N(k) lies in their span:
  the rest of a draw is noise of mean zero, and projecting it out loses nothing.
  """
  basis_Kx2xD = np.stack([x_KxD, y_KxD], axis=1)
  gram_Kx2x2 = basis_Kx2xD @ np.swapaxes(basis_Kx2xD, 1, 2)
  inner = np.einsum("...kpd,kbd->...kpb", d_xKx2xD, basis_Kx2xD)
  return np.einsum("kab,...kpb->...kpa", np.linalg.inv(gram_Kx2x2), inner)


def per_direction_coordinates(d_xKx2x2xD: np.ndarray, x_KxD: np.ndarray, y_KxD: np.ndarray) -> np.ndarray:
  """[..., K, 4, 2]: span_coordinates of both directions' parts (i2t u, i2t v, t2i u, t2i v)."""
  return span_coordinates(d_xKx2x2xD.reshape(*d_xKx2x2xD.shape[:-3], 4, d_xKx2x2xD.shape[-1]), x_KxD, y_KxD)


def from_coordinates(c_xKx2x2: np.ndarray, x_KxD: np.ndarray, y_KxD: np.ndarray) -> np.ndarray:
  """The ambient vectors [..., K, 2, D] of span_coordinates' output."""
  return c_xKx2x2[..., :1] * x_KxD[:, None] + c_xKx2x2[..., 1:] * y_KxD[:, None]


def measure(
  world: sphere.World,
  gc: dict[str, float],
  x_KxD: np.ndarray,
  y_KxD: np.ndarray,
  n: int,
  rng: np.random.Generator,
  replicates: int,
  draws: int,
  level: float = 0.95,
) -> dict:
  """The gradient bias at batch size n against its first order, with intervals over replicates
  (`summarise`); each draw is controlled and projected on span(x_k, y_k)."""

  def draw(count: int) -> np.ndarray:
    controlled = symmetric(anchor_draws(world, gc, x_KxD, y_KxD, n, count, rng)[1])
    return from_coordinates(span_coordinates(controlled, x_KxD, y_KxD), x_KxD, y_KxD)

  g, alpha = infinite_gradient(gc, x_KxD, y_KxD), symmetric(first_order(gc, x_KxD, y_KxD))
  return summarise(draw, g, alpha, n, replicates, draws, level)


def summarise(
  draw: Callable[[int], np.ndarray],
  g: np.ndarray,
  alpha: np.ndarray,
  n: int,
  replicates: int,
  draws: int,
  level: float = 0.95,
) -> dict:
  """The bias of draw(count) ([count, K, 2, D] draws of g_N - g_inf) against alpha / n, with intervals.

  Each replicate averages `draws` draws per anchor into b_r, the bias of the concatenated [K, 2, D]
  gradient. Its squared norm is debiased by the trace of its own covariance (the noise's share of
  |b_r|^2), so rel_bias = sqrt(mean_r |b_r|^2 - tr) / |g_inf|, with the interval of the mean mapped
  through the square root. parallel = <b_r, g_inf> / |g_inf|^2, the part of the bias that only rescales
  the gradient (negative: the expected N-pair gradient is shorter); the rest turns it, which 1 - cos
  measures (clipped to [0, 2]: where E g_N nearly vanishes, its debiased squared norm can be <= 0).
  projection = <N b_r, alpha> / |alpha|^2 -> 1 as N grows.
  """
  g2, a2 = float((g**2).sum()), float((alpha**2).sum())
  rel2_R, parallel_R, one_minus_cos_R, projection_R = [], [], [], []
  for _ in range(replicates):
    d_dxKx2xD = draw(draws)
    b = d_dxKx2xD.mean(0)
    sq = float((b**2).sum() - d_dxKx2xD.var(0, ddof=1).sum() / draws)
    inner = float((b * g).sum())
    rel2_R.append(sq / g2)
    parallel_R.append(inner / g2)
    one_minus_cos_R.append(1 - np.clip((g2 + inner) / np.sqrt(g2 * max(g2 + 2 * inner + sq, 1e-300)), -1, 1))
    projection_R.append(n * float((b * alpha).sum()) / a2)
  rel2, rel2_lo, rel2_hi = mean_ci(np.array(rel2_R), level)
  par, par_lo, par_hi = mean_ci(np.array(parallel_R), level)
  omc, omc_lo, omc_hi = mean_ci(np.array(one_minus_cos_R), level)
  proj, proj_lo, proj_hi = mean_ci(np.array(projection_R), level)
  first = g + alpha / n
  root = lambda v: float(np.sqrt(max(v, 0.0)))  # noqa: E731
  return {
    "n": n,
    "rel_bias": root(rel2),
    "rel_bias_low": root(rel2_lo),
    "rel_bias_high": root(rel2_hi),
    "predicted_rel_bias": float(np.sqrt(a2 / g2) / n),
    "n_rel_bias": n * root(rel2),
    "n_rel_bias_low": n * root(rel2_lo),
    "n_rel_bias_high": n * root(rel2_hi),
    "limit_n_rel_bias": float(np.sqrt(a2 / g2)),
    "parallel": par,
    "parallel_low": par_lo,
    "parallel_high": par_hi,
    "predicted_parallel": float((alpha * g).sum() / g2 / n),
    "one_minus_cos": omc,
    "one_minus_cos_low": omc_lo,
    "one_minus_cos_high": omc_hi,
    "predicted_one_minus_cos": float(1 - (first * g).sum() / np.sqrt((first**2).sum() * g2)),
    "projection": proj,
    "projection_low": proj_lo,
    "projection_high": proj_hi,
    "replicates": replicates,
    "draws": draws,
    "level": level,
  }


def table(
  world: sphere.World,
  batch_sizes: list[int],
  rng: np.random.Generator,
  anchors: int = 4,
  replicates: int = 10,
  budget: int = 1 << 31,
  level: float = 0.95,
) -> pd.DataFrame:
  """One row per N (measure); the anchors are drawn once from rng and kept for every N.

  Draws per replicate: budget / (replicates K N (N + D)) within [20, 200]: a draw's cost is its
  similarity block, and the controlled spread is O(1/N), so equal draws give equal relative precision.
  """
  gc = gradient_constants(world)
  x_KxD, y_KxD = sphere.sample_pairs(world, (anchors,), rng)
  rows = []
  for n in batch_sizes:
    draws = int(np.clip(budget // (replicates * anchors * n * (n + world.dim)), 20, 200))
    rows.append(measure(world, gc, x_KxD, y_KxD, n, rng, replicates, draws, level))
  return pd.DataFrame(rows)


# --- the check: fitted intercepts of N * bias against alpha, coordinate by coordinate ---------------


@dataclasses.dataclass(frozen=True)
class GradientPlan:
  """Worlds and precision of the gradient check (FULL for the report, QUICK for the tests).

  For `anchors` typical anchors (typical_anchors) at the batch sizes of sphere.fit_batch_sizes, the
  pooled controlled draws give N * bias per coordinate
  (K anchors x 2 directions x 2 parts x 2 basis vectors) with its standard error; a weighted fit on
  (1, 1/N) gives the intercept, which must hold alpha's coordinate at the family-wise level (Bonferroni
  over the coordinates). Each direction is tested, not only their mean: in the symmetric loss the
  terms of the weights' spread nearly cancel between a row and a column in these worlds.
  """

  worlds: tuple[sphere.World, ...]
  anchors: int = 4
  draws: int = 3000  # per anchor and N
  points: int = 4
  span: float = 8.0
  level: float = 0.999


FULL = GradientPlan(
  (
    sphere.World(4, 2.0, 1.0),
    sphere.World(16, 2.0, 0.5),
    sphere.World(16, 5.0, 1.0),
    sphere.World(64, 5.0, 0.5),
  )
)
QUICK = GradientPlan((sphere.World(4, 2.0, 1.0), sphere.World(16, 5.0, 1.0)), anchors=3, draws=1500, points=3)


def fitted_coordinates(
  world: sphere.World, gc: dict, x_KxD: np.ndarray, y_KxD: np.ndarray, sizes: list[int], draws: int,
  rng: np.random.Generator, level: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(intercept, its s.e., reduced chi^2), each [8K]: N * bias per coordinate fitted on (1, 1/N), for
  each anchor, direction, part and basis vector (a direction's row and column are tested separately)."""
  means, ses = [], []
  for n in sizes:
    controlled = anchor_draws(world, gc, x_KxD, y_KxD, n, draws, rng)[1]
    coords_dx8K = per_direction_coordinates(controlled, x_KxD, y_KxD).reshape(draws, -1)
    means.append(n * coords_dx8K.mean(0))
    ses.append(n * coords_dx8K.std(0, ddof=1) / np.sqrt(draws))
  inv_n = 1 / np.asarray(sizes, float)
  fits = [line_fit(inv_n, m, s, level) for m, s in zip(np.array(means).T, np.array(ses).T)]
  return tuple(np.array([f[k] for f in fits]) for k in ("intercept", "intercept_se", "chi2_reduced"))


def typical_anchors(
  world: sphere.World, c: dict[str, float], count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
  """count pairs of the world whose positive weight w = exp(beta s) / Z is at most max(1 + rho, 1 + 2 J).

  The batch sizes of a fit are sized by that scale (sphere.fit_batch_sizes). An anchor's own weight is
  one of its row's N terms, so for a heavier anchor the 1/N series settles only at N >> w: at D = 16,
  beta = 5 an anchor with w = 20 is off alpha by 4.5 standard errors at N = 32..128 and by 4 at 64..512.
  """
  scale = max(1 + c["rho"], 1 + 2 * c["jensen"])
  x_KxD, y_KxD = sphere.sample_pairs(world, (64 * count,), rng)
  keep = np.flatnonzero(world.beta * (x_KxD * y_KxD).sum(-1) - c["log_z"] <= np.log(scale))[:count]
  if len(keep) < count:
    raise ValueError(f"fewer than {count} of {64 * count} pairs of {world} have w <= {scale:.3g}")
  return x_KxD[keep], y_KxD[keep]


def world_verdicts(world: sphere.World, plan: GradientPlan, rng: np.random.Generator) -> list[dict]:
  """One verdict per candidate (RIGHT and BROKEN) in one world, all judged on the same fits."""
  c = sphere.constants(world)
  gc = gradient_constants(world, c)
  x_KxD, y_KxD = typical_anchors(world, c, plan.anchors, rng)
  sizes = sphere.fit_batch_sizes(c, plan.span, plan.points)
  fitted, se, chi2 = fitted_coordinates(world, gc, x_KxD, y_KxD, sizes, plan.draws, rng, plan.level)
  z_crit = stats.norm.ppf(1 - (1 - plan.level) / (2 * len(fitted)))
  out = []
  for name, (jensen, columns) in (RIGHT | BROKEN).items():
    alpha = first_order(gc, x_KxD, y_KxD, jensen, columns)
    predicted = per_direction_coordinates(alpha, x_KxD, y_KxD).ravel()
    z = np.abs(fitted - predicted) / se
    out.append(
      {
        "name": name,
        "world": world.label(),
        "passed": bool(z.max() <= z_crit),
        "max_abs_z": float(z.max()),
        "z_critical": float(z_crit),
        "coordinates": len(fitted),
        "batch_sizes": sizes,
        "median_relative_se": float(np.median(se / np.abs(predicted).clip(1e-12))),
        "median_chi2_reduced": float(np.median(chi2)),
      }
    )
  return out


def check(plan: GradientPlan, rng: np.random.Generator) -> list[dict]:
  """Check dicts: alpha passes in every world; each broken first order fails in every world."""
  per_world = [r for world, world_rng in zip(plan.worlds, rng.spawn(len(plan.worlds)))
               for r in world_verdicts(world, plan, world_rng)]
  out = []
  for name in RIGHT | BROKEN:
    runs = [r for r in per_world if r["name"] == name]
    held = [r["passed"] for r in runs]
    out.append(
      {
        "name": name,
        "passed": all(held) if name in RIGHT else not any(held),
        "max_abs_z": max(r["max_abs_z"] for r in runs),
        "min_max_abs_z": min(r["max_abs_z"] for r in runs),
        "per_world_max_abs_z": {r["world"]: r["max_abs_z"] for r in runs},
        "z_critical": runs[0]["z_critical"],
        "per_world_batch_sizes": {r["world"]: r["batch_sizes"] for r in runs},
      }
    )
  return out


def text_table(df: pd.DataFrame) -> str:
  """The command line's table: each measured value with its interval, then its first-order prediction."""
  interval = lambda r, k, f: f"{r[k]:{f}} [{r[k + '_low']:{f}}, {r[k + '_high']:{f}}]"  # noqa: E731
  rows = [
    {
      "N": int(r["n"]),
      "|bias|/|g|": interval(r, "rel_bias", ".4g"),
      "first order": f"{r['predicted_rel_bias']:.4g}",
      "<bias,g>/|g|^2": interval(r, "parallel", ".4g"),
      "first order (par.)": f"{r['predicted_parallel']:.4g}",
      "1 - cos": interval(r, "one_minus_cos", ".3g"),
      "first order (cos)": f"{r['predicted_one_minus_cos']:.3g}",
      "N |bias|/|g|": interval(r, "n_rel_bias", ".4f"),
      "limit": f"{r['limit_n_rel_bias']:.4f}",
      "<N bias,alpha>/|alpha|^2": interval(r, "projection", ".4f"),
    }
    for r in df.to_dict("records")
  ]
  return pd.DataFrame(rows).to_string(index=False)
