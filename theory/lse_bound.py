"""Theorem 2: a uniform bound whose cover is free of the batch size N and whose Lipschitz part is linear
in beta; N enters through the concentration constant c*_N that multiplies the cover, and c*_N grows with N.

Theorem 1 (theory/README.md) pays 2 beta e^{2 beta} G_{N-1}(g) ~ 1/sqrt(N) because each anchor takes
its own supremum over theta. Here the class is covered once, in the sup norm, and the loss is
Lipschitz in that norm with constant 2 beta, so N enters only through the concentration constant
c*_N. That constant is not small and not flat: it increases with N (2.83 at N = 2 to 10.37 at N = 2048
for beta = 1, where it saturates at 4 beta + e^{2 beta} - 1; 257, 2,324 and 10,007 at N = 64, 4,096 and
65,536 for beta = 14, still on its sqrt(N) w_N branch), so the bound on the sample gap increases with N.
That is the worst-case constant of bounded differences growing, not evidence that overfitting grows
with N. (The README's "about 2.9 nats at every N" on linear towers at m = 8192 is min(B_N, 2 beta)
falling from 2.0 to 0.003 while this sample part rises from 0.90 to 2.90.)

Setting as in the README (A1: |s_theta| <= 1; A2: fixed beta; fixed partition into m/N batches).
N_inf(S, eps) is the size of an eps-cover of S = {s_theta} in the sup norm over all (x, y), with
centres in S (an external eps/2-cover gives an internal eps-cover, so this costs a factor 2 in eps).
It is data-independent. w_N = bound.own_row_range(N, beta), c_N = bound.bounded_difference_constant.

Theorem 2. For every fixed eps > 0, with probability >= 1 - delta, for all theta simultaneously,
  |L_N(theta) - L^_N(theta)| <= 4 beta eps + c*_N sqrt((ln N_inf(S, eps) + ln(2/delta)) / (2m)),
  c*_N = min(c_N, sqrt(N) w_N) <= min(4 beta + e^{2 beta} - 1, 4 beta sqrt(N)),
and, adding Proposition 1 and |L_N - L_inf| <= 2 beta (both log M_1 and log Z lie in [-beta, beta]),
  |L_inf(theta) - L^_N(theta)| <= min(B_N(beta), 2 beta) + the same right-hand side.
The eps minimising the right-hand side (here: the best of a fine log grid, sample_gap_bound) depends
only on (m, N, beta, delta) and the class, not on the data, so using it needs no union over eps. The
net is finite, so no measurability assumption (A3) is needed either.

Proof. (i) LME(v) = log((1/N) sum_j e^{v_j}) has gradient softmax(v): entries > 0 summing to 1, so by
the mean value theorem |LME(v) - LME(v')| <= |v - v'|_inf [Lei et al. 2023]. Row i's term is
LME(beta (s_i. - s_ii)), whose argument moves by at most 2 beta max_j |s_ij - s'_ij|; so every row term,
l_N (a mean of rows; either direction, or their mean) and hence L^_N and L_N = E l_N move by at most
2 beta |s_theta - s_theta'|_inf. The constant is tight: the gradient's l1 norm is 2 beta (1 - p_ii),
-> 2 beta when the positive's softmax weight p_ii -> 0 (check_lipschitz reaches 0.9997).
(ii) Fix a centre theta_k. L^_N(theta_k) has mean L_N(theta_k) and two bounded-difference views:
per pair, c_N/m (Lemma 1); per batch, L^_N = (N/m) sum_b l_N(S_b) with the m/N batches independent
and each l_N in one interval of width w_N (every row term is, so their mean is), so McDiarmid over
the batches has sum of squared constants (m/N)(N w_N/m)^2 = (sqrt(N) w_N)^2/m. The better of the
two gives P(|L^_N - L_N| >= t) <= 2 exp(-2 m t^2 / c*_N^2). A union bound over the N_inf centres sets
t = c*_N sqrt((ln N_inf + ln(2/delta)) / (2m)).
(iii) For any theta, take the centre with |s_theta - s_theta_k|_inf <= eps; by (i), L^_N and L_N each
move by at most 2 beta eps between theta and theta_k: 4 beta eps in all.
Proposition 1 holds for every theta, so min(B_N, 2 beta) adds uniformly without a probability cost.

Correction to the sketch this came from: it had c*_N = min(c_N, N w_N), from replacing one pair
(which moves L^_N by at most N w_N/m). That is true but never helps: c_N <= N w_N for all N >= 2,
beta > 0 (check_constant_ordering). The per-batch McDiarmid above gives sqrt(N) w_N instead, which
beats c_N at small N, more so at large beta (numerically: N <= 4 at beta = 1, N <= 25 at beta = 2,
N <= 32459 at beta = 4). So the sketch's "beta-linear with a sqrt(N)" needs blocks, not single pairs.

Linear towers (README, section 4): unit inputs, |W|_2, |V|_2 <= 1. Since
W^T V - W'^T V' = (W - W')^T V + W'^T (V - V'), sup_{x,y} |s - s'| = |W^T V - W'^T V'|_2
<= |W - W'|_2 + |V - V'|_2, so eps/2-nets of the two spectral-norm unit balls (dimensions D d_x and
D d_y, nets inside the balls of size (1 + 4/eps)^dim by the volumetric argument [Ver18, sec. 4.2])
give ln N_inf(S, eps) <= D (d_x + d_y) ln(1 + 4/eps).

What stays: c*_N is e^{2 beta}-sized at large N or beta-linear with a sqrt(N), and worst-case bounded
differences really are that large (montecarlo.extremal_replacement_ratio reaches 0.93 of c_N; one
batch's l_N spans all of w_N at N = 2, check_batch_differences); the cover's part, 4 beta eps and
sqrt(ln N_inf), has no N and no e^{beta}, but it is multiplied by c*_N, which has both.
[Ver18] R. Vershynin, High-Dimensional Probability, Cambridge, 2018.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import sympy as sp

from theory import bound, empirical, linear_towers, montecarlo, symbolic

# Where the optimal eps is searched: beyond 2 one centre covers any class with |s| <= 1.
LOG_EPS_GRID = np.linspace(np.log(1e-8), np.log(2.0), 4001)


def row_lipschitz_constant(beta: float) -> float:
  """2 beta: LME is 1-Lipschitz in the sup norm and row i's argument beta (s_ij - s_ii) moves by 2 beta."""
  return 2.0 * beta


def trivial_bound(beta: float) -> float:
  """|L_inf - L^_N| <= 4 beta: every row term and L_inf's integrand lie in [-2 beta, 2 beta]."""
  return 4.0 * beta


def batch_range_constant(n: int, beta: float) -> float:
  """sqrt(N) w_N: McDiarmid over the m/N independent batches, each l_N in an interval of width w_N."""
  return float(np.sqrt(n) * bound.own_row_range(n, beta))


def concentration_constant(n: int, beta: float) -> float:
  """c*_N = min(c_N, sqrt(N) w_N): P(|L^_N - L_N| >= t) <= 2 exp(-2 m t^2 / c*_N^2) at a fixed theta."""
  return min(bound.bounded_difference_constant(n, beta), batch_range_constant(n, beta))


def linear_towers_log_cover(eps: float | np.ndarray, embed_dim: int, dim_x: int, dim_y: int) -> np.ndarray:
  """ln N_inf(S, eps) <= D (d_x + d_y) ln(1 + 4/eps): eps/2-nets of both spectral-norm unit balls."""
  return embed_dim * (dim_x + dim_y) * np.log1p(4.0 / np.asarray(eps))


def sample_gap_bound(
  m: int, n: int, beta: float, delta: float, log_cover: Callable[[np.ndarray], np.ndarray]
) -> dict[str, float]:
  """Theorem 2's bound on sup_theta |L_N - L^_N| at the eps minimising it on a fine log grid.

  lipschitz:     4 beta eps                                  (the net's resolution, L^_N and L_N)
  concentration: c*_N sqrt((ln N_inf(eps) + ln(2/delta)) / (2m))  (McDiarmid + union over the net)
  """
  eps_G = np.exp(LOG_EPS_GRID)
  lipschitz_G = 2 * row_lipschitz_constant(beta) * eps_G
  conc_G = concentration_constant(n, beta) * np.sqrt((log_cover(eps_G) + np.log(2 / delta)) / (2 * m))
  best = int(np.argmin(lipschitz_G + conc_G))
  return {
    "lipschitz": float(lipschitz_G[best]),
    "concentration": float(conc_G[best]),
    "total": float(lipschitz_G[best] + conc_G[best]),
    "eps": float(eps_G[best]),
  }


def n_free_terms(
  m: int, n: int, beta: float, delta: float, embed_dim: int, dim_x: int, dim_y: int
) -> dict[str, float]:
  """Terms of Theorem 2 for linear towers: w.p. >= 1 - delta, for all theta, |L_inf - L^_N| <= total.

  Shaped like bound.uniform_terms. The name says that the cover is free of N; N enters through c*_N
  (in concentration, which grows with N) and batch_bias (which falls).
  """
  sample = sample_gap_bound(
    m, n, beta, delta, lambda eps: linear_towers_log_cover(eps, embed_dim, dim_x, dim_y)
  )
  terms = {
    "lipschitz": sample["lipschitz"],
    "concentration": sample["concentration"],
    "batch_bias": bound.capped_bias_bound(n, beta),
  }
  return terms | {"total": float(sum(terms.values()))}


def comparison_table(cfg: linear_towers.SweepConfig) -> pd.DataFrame:
  """Theorem 1 vs Theorem 2 vs the trivial 4 beta, per batch size, at a sweep's settings."""
  comp = linear_towers.complexity(cfg.embed_dim, cfg.input_dim, cfg.input_dim)
  log_cover = lambda eps: linear_towers_log_cover(eps, cfg.embed_dim, cfg.input_dim, cfg.input_dim)
  rows = []
  for n in cfg.batch_sizes:
    t1 = bound.uniform_terms(cfg.m, n, cfg.beta, cfg.delta, comp)
    t2 = n_free_terms(cfg.m, n, cfg.beta, cfg.delta, cfg.embed_dim, cfg.input_dim, cfg.input_dim)
    rows.append(
      {
        "batch_size": n,
        "theorem1_total": t1["total"],
        "theorem1_batch": t1["batch_uniform"] + t1["batch_positive"],
        "theorem2_total": t2["total"],
        "theorem2_sample": t2["lipschitz"] + t2["concentration"],
        "theorem2_batch_bias": t2["batch_bias"],
        "c_star": concentration_constant(n, cfg.beta),
        "c_n": bound.bounded_difference_constant(n, cfg.beta),
        "eps": sample_gap_bound(cfg.m, n, cfg.beta, cfg.delta, log_cover)["eps"],
        "trivial": trivial_bound(cfg.beta),
      }
    )
  return pd.DataFrame(rows)


def check_lme_lipschitz(sizes: tuple[int, ...] = (2, 3, 4, 5, 6)) -> dict:
  """Sympy, N = 2..6: grad LME = softmax (entries > 0, sum 1), so LME is 1-Lipschitz in the sup norm;
  a row term's gradient in s_i. has l1 norm 2 beta (1 - p_ii) < 2 beta, -> 2 beta as p_ii -> 0."""
  beta = symbolic.beta
  ok = True
  for n in sizes:
    v = sp.symbols(f"v1:{n + 1}", real=True)
    u = sp.symbols(f"u1:{n + 1}", positive=True)  # u_j = exp(v_j)
    lme = sp.log(sum(sp.exp(vj) for vj in v) / n)
    grad = [sp.diff(lme, vj).subs(dict(zip(map(sp.exp, v), u))) for vj in v]
    softmax = [uj / sum(u) for uj in u]
    ok &= all(symbolic._zero(g - p) and bool(p.is_positive) for g, p in zip(grad, softmax))
    ok &= symbolic._zero(sum(softmax) - 1)
    # Row 1's term -beta s_11 + LME(beta s_1.): d/ds_1j = beta (p_j - [j = 1]), u_j = exp(beta s_1j).
    s = sp.symbols(f"s1:{n + 1}", real=True)
    row = -beta * s[0] + lme.subs(dict(zip(v, [beta * sj for sj in s])))
    to_u = dict(zip([sp.exp(beta * sj) for sj in s], u))
    row_grad = [sp.simplify(sp.diff(row, sj).subs(to_u)) for sj in s]
    ok &= bool((-row_grad[0]).is_positive) and all(bool(g.is_positive) for g in row_grad[1:])
    l1 = sum(row_grad[1:]) - row_grad[0]
    ok &= symbolic._zero(l1 - 2 * beta * (1 - softmax[0])) and bool(sp.factor(2 * beta - l1).is_positive)
    ok &= symbolic._zero(sp.limit(l1, u[0], 0) - 2 * beta)
  return {"name": "lse_sym_lme_lipschitz", "passed": bool(ok), "largest_N_checked": max(sizes)}


def check_constant_ordering() -> dict:
  """Sympy: other_row_change <= w_N, hence c_N = w_N + (N - 1) other_row_change <= N w_N, N >= 2.

  With u = e^{2 beta}: N u (1 + (N - 1) u) - (N - 1 + u)^2 = (u - 1)(N(2N - 3) + (N^2 - N - 1)(u - 1)),
  positive for u > 1 and N >= 2; it is exp(w_N) / exp(other_row_change) - 1 times a positive factor.
  """
  n = 2 + symbolic.n_plus
  a2, b2 = symbolic.A**2, symbolic.B**2
  ratio = (1 + (n - 1) * b2) / (1 + (n - 1) * a2) * n / (n - 1 + b2)  # exp(w_N - other_row_change)
  u = sp.Symbol("u", positive=True)
  gap = n * u * (1 + (n - 1) * u) - (n - 1 + u) ** 2
  factored = symbolic._zero(gap - (u - 1) * (n * (2 * n - 3) + (n**2 - n - 1) * (u - 1)))
  as_ratio = symbolic._zero((ratio - 1) - (gap / (n - 1 + u) ** 2).subs(u, b2))
  grid_ok = all(
    bound.bounded_difference_constant(k, b) <= k * bound.own_row_range(k, b) * (1 + 1e-12)
    for k in (2, 3, 16, 1024)
    for b in (0.1, 1.0, 3.0)
  )
  return {
    "name": "lse_sym_constant_ordering",
    "passed": factored and as_ratio and symbolic._positive(ratio - 1) and grid_ok,
    "c_n_over_n_w_n_N2_beta1": bound.bounded_difference_constant(2, 1.0) / (2 * bound.own_row_range(2, 1.0)),
  }


def _loss_changes(sims_BxNxN: np.ndarray, sims2_BxNxN: np.ndarray, beta: float) -> np.ndarray:
  """|l_N(S) - l_N(S')| per batch, for each direction: (directions, B)."""
  return np.abs(
    [
      empirical.batch_losses(sims2_BxNxN, beta, d) - empirical.batch_losses(sims_BxNxN, beta, d)
      for d in empirical.DIRECTIONS
    ]
  )


def check_lipschitz(
  rng: np.random.Generator, trials: int, lipschitz: Callable[[float], float] = row_lipschitz_constant
) -> dict:
  """|l_N(S) - l_N(S')| <= lipschitz(beta) max|S - S'| on random, adversarial and extremal perturbations.

  Adversarial: raise every negative and lower every positive (the sign of grad l_N = beta/N (P - I)
  in every direction). Extremal: positives at -1, negatives at +1, where p_ii is smallest.
  """
  ratios = {"random": [], "adversarial": [], "extremal": []}
  per_config = max(2, trials // 6)
  for n in (2, 16, 64):
    eye = np.eye(n)
    for beta in (0.5, 2.0):
      sims = rng.uniform(-1, 1, size=(per_config, n, n))
      eps_B11 = np.exp(rng.uniform(np.log(1e-4), 0, size=(per_config, 1, 1)))
      extremal = np.ones((1, n, n)) - 2 * eye
      perturbed = {
        "random": np.clip(sims + eps_B11 * rng.uniform(-1, 1, sims.shape), -1, 1),
        "adversarial": np.clip(sims + eps_B11 * (1 - 2 * eye), -1, 1),
      }
      pairs = [(k, sims, p) for k, p in perturbed.items()] + [("extremal", (1 - 1e-3) * extremal, extremal)]
      for kind, before, after in pairs:
        size_B = np.abs(after - before).max(axis=(1, 2))
        ratios[kind].append((_loss_changes(before, after, beta) / (lipschitz(beta) * size_B)).ravel())
  maxima = {f"max_ratio_{k}": float(np.concatenate(v).max()) for k, v in ratios.items()}
  return {
    "name": "lse_lipschitz",
    "passed": max(maxima.values()) <= 1 + 1e-9 and maxima["max_ratio_extremal"] >= 0.99,
    **maxima,
    "min_ratio_extremal": float(np.concatenate(ratios["extremal"]).min()),
  }


def check_linear_cover(
  rng: np.random.Generator, trials: int, embed_dim: int = 4, dim_x: int = 5, dim_y: int = 6, pairs: int = 64
) -> dict:
  """sup_{x,y} |x^T (W^T V - W'^T V') y| <= |W - W'|_2 + |V - V'|_2 in the spectral unit balls.

  Random unit x, y and random W, W', V, V' (some near each other); the exact sup over x, y is the
  spectral norm of W^T V - W'^T V'. A rank-one change of V with y and W x aligned to it attains 1.
  """

  def ball(dim, scale):
    return linear_towers.project_spectral(scale * rng.normal(size=(embed_dim, dim)))

  def unit(k, dim):
    z = rng.normal(size=(k, dim))
    return z / np.linalg.norm(z, axis=1, keepdims=True)

  sampled, exact = [], []
  for _ in range(trials):
    w, v = ball(dim_x, rng.uniform(0.1, 2)), ball(dim_y, rng.uniform(0.1, 2))
    near = rng.uniform() < 0.5
    w2 = ball(dim_x, 1.0) if not near else linear_towers.project_spectral(w + 1e-2 * rng.normal(size=w.shape))
    v2 = ball(dim_y, 1.0) if not near else linear_towers.project_spectral(v + 1e-2 * rng.normal(size=v.shape))
    diff_dxxdy = w.T @ v - w2.T @ v2
    radius = np.linalg.norm(w - w2, 2) + np.linalg.norm(v - v2, 2)
    x, y = unit(pairs, dim_x), unit(pairs, dim_y)
    sampled.append(np.abs(np.einsum("ki,ij,kj->k", x, diff_dxxdy, y)).max() / radius)
    exact.append(np.linalg.norm(diff_dxxdy, 2) / radius)
  # Tight case: W with orthonormal rows, V = 0, V' = eta u e_1^T, x = W^T u, y = e_1.
  w = np.linalg.qr(rng.normal(size=(dim_x, embed_dim)))[0].T
  u_dir = unit(1, embed_dim)[0]
  v2 = 0.5 * np.outer(u_dir, np.eye(dim_y)[0])
  x, y = w.T @ u_dir, np.eye(dim_y)[0]
  tight = abs(x @ (w.T @ v2) @ y) / np.linalg.norm(v2, 2)
  return {
    "name": "lse_linear_cover",
    "passed": bool(max(max(sampled), max(exact)) <= 1 + 1e-9 and tight >= 1 - 1e-9),
    "max_ratio_sampled": float(max(sampled)),
    "max_ratio_exact_sup": float(max(exact)),
    "tight_ratio": float(tight),
  }


def check_batch_differences(
  rng: np.random.Generator, trials: int, batch_range: Callable[[int, float], float] = bound.own_row_range
) -> dict:
  """Bounded differences behind c*_N.

  One pair replaced: m |Delta L^_N| <= c_N (Lemma 1) <= N w_N. One whole batch replaced:
  |Delta l_N| <= batch_range(N, beta) = w_N, reached exactly at N = 2 in one dimension, where
  positives at +1 / negatives at -1 give the bottom of the range and the swap gives its top.
  """
  configs = [(n, beta, dim) for n in (2, 16) for beta in (0.5, 2.0) for dim in (1, 3)]
  per_config = max(2, trials // len(configs))
  pair_c, pair_nw, batch = [], [], []
  for n, beta, dim in configs:
    ratios = montecarlo.replace_one_pair_ratios(rng, 4 * n, n, beta, dim, per_config)
    c_n = bound.bounded_difference_constant(n, beta)
    pair_c.append(ratios.ravel())
    pair_nw.append(ratios.ravel() * c_n / (n * bound.own_row_range(n, beta)))
    emb = rng.normal(size=(4, per_config, n, dim))
    img, txt, img2, txt2 = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
    change = _loss_changes(img @ np.swapaxes(txt, 1, 2), img2 @ np.swapaxes(txt2, 1, 2), beta)
    batch.append((change / batch_range(n, beta)).ravel())
  signs = np.array([[1.0], [-1.0]])
  extremal = [
    _loss_changes((signs @ signs.T)[None], (signs @ -signs.T)[None], beta).max() / batch_range(2, beta)
    for beta in (0.5, 2.0)
  ]
  out = {
    "max_pair_ratio_c_n": float(np.concatenate(pair_c).max()),
    "max_pair_ratio_n_w_n": float(np.concatenate(pair_nw).max()),
    "max_batch_ratio_random": float(np.concatenate(batch).max()),
    "batch_ratio_extremal": float(max(extremal)),
  }
  return {
    "name": "lse_batch_differences",
    "passed": max(out.values()) <= 1 + 1e-9 and out["batch_ratio_extremal"] >= 1 - 1e-9,
    **out,
  }


def check_linear_towers_sweep(cfg: linear_towers.SweepConfig, df: pd.DataFrame | None = None) -> dict:
  """Theorem 2 holds for trained linear towers: |gap_sample| <= sample part, |gap| <= total, every run.

  df: `linear_towers.run_sweep(cfg)` when already run (theory/check.py shares it with Theorem 1's check).
  Reports bound / |gap| ratios per N next to Theorem 1 at the sweep's settings, and the comparison
  table at the README's full settings (linear_towers.SweepConfig()).
  """
  df = linear_towers.run_sweep(cfg) if df is None else df
  terms = pd.DataFrame(
    [
      n_free_terms(cfg.m, n, cfg.beta, cfg.delta, cfg.embed_dim, cfg.input_dim, cfg.input_dim)
      for n in df.batch_size
    ]
  )
  df = df.assign(t2_sample=terms.lipschitz + terms.concentration, t2_total=terms.total)
  df = df.assign(
    sample_ratio=df.t2_sample / df.gap_sample.abs(),
    total_ratio=df.t2_total / df.gap.abs(),
    t1_ratio=df.bound_total / df.gap.abs(),
  )
  per_n = df.groupby("batch_size").agg(
    gap_sample=("gap_sample", "mean"),
    theorem2_sample=("t2_sample", "first"),
    sample_ratio_median=("sample_ratio", "median"),
    sample_ratio_min=("sample_ratio", "min"),
    theorem2_total=("t2_total", "first"),
    theorem2_ratio_median=("total_ratio", "median"),
    theorem1_total=("bound_total", "first"),
    theorem1_ratio_median=("t1_ratio", "median"),
  )
  return {
    "name": "lse_linear_towers_bound",
    "passed": bool((df.gap_sample.abs() <= df.t2_sample).all() and (df.gap.abs() <= df.t2_total).all()),
    "runs": len(df),
    "sample_ratio_min": float(df.sample_ratio.min()),
    "total_ratio_min": float(df.total_ratio.min()),
    "per_batch_size": per_n.reset_index().to_dict("list"),
    "full_settings": comparison_table(linear_towers.SweepConfig()).to_dict("list"),
  }


def run_all(
  rng: np.random.Generator, trials: int, sweep: linear_towers.SweepConfig | None = None
) -> list[dict]:
  """Every Theorem 2 check, in the {"name", "passed", ...} form of theory/check.py; the trained-towers
  check only with a `sweep` (theory/check.py runs it beside Theorem 1's, on the same runs)."""
  return [
    check_lme_lipschitz(),
    check_constant_ordering(),
    check_lipschitz(rng, trials),
    check_linear_cover(rng, trials),
    check_batch_differences(rng, trials),
  ] + ([check_linear_towers_sweep(sweep)] if sweep is not None else [])
