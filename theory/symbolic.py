"""Sympy proofs of the constants and the algebra the README's proofs use.

Each check returns {"name", "passed", ...figures}. Signs are proved, not sampled: `_positive`
substitutes beta = log(1 + q) with q > 0 (so e^beta = 1 + q) and requires the numerator and
denominator of the rational result to expand into terms sympy can show positive. Every constant
is also compared with its implementation in theory/bound.py on a grid, so the code and the proof
cannot drift apart.
"""

from __future__ import annotations

import itertools

import numpy as np
import sympy as sp

from theory import bound

beta = sp.Symbol("beta", positive=True)
q = sp.Symbol("q", positive=True)
n_plus = sp.Symbol("k", nonnegative=True)  # N = 2 + k, or N = 1 + k
N = sp.Symbol("N", positive=True)
m = sp.Symbol("m", positive=True)
delta = sp.Symbol("delta", positive=True)
A, B = sp.exp(-beta), sp.exp(beta)  # range of exp(beta s) for s in [-1, 1]
GRID = [(n, b) for n in (1, 2, 3, 16, 1024) for b in (0.1, 1.0, 3.0)]


def _positive(expr: sp.Expr) -> bool:
  """True only if sympy proves expr > 0 for every beta > 0 (and every k >= 0 it contains)."""
  e = sp.together(sp.expand(sp.expand_log(sp.powsimp(expr.subs(beta, sp.log(1 + q))), force=True)))
  num, den = sp.fraction(e)
  return bool(sp.expand(num).is_positive and sp.expand(den).is_positive)


def _zero(expr: sp.Expr) -> bool:
  """True if sympy simplifies expr to 0 (hyperbolic functions are rewritten as exponentials)."""
  return sp.simplify(sp.sympify(expr).rewrite(sp.exp)) == 0


def _matches(sym_expr: sp.Expr, fn, n_symbol: sp.Symbol = N) -> float:
  """Largest relative difference between a sympy constant and its theory.bound implementation."""
  diffs = [abs(float(sym_expr.subs({n_symbol: n, beta: b})) - fn(n, b)) / max(1e-12, abs(fn(n, b)))
           for n, b in GRID]
  return float(max(diffs))


def log_lipschitz() -> dict:
  """|d log u / du| = 1/u is decreasing, so its sup on [e^-beta, e^beta] is e^beta."""
  u = sp.Symbol("u", positive=True)
  slope = sp.diff(sp.log(u), u)
  decreasing = _positive(-sp.diff(slope, u).subs(u, q))
  sup = slope.subs(u, A)
  numeric = max(bound.log_lipschitz(b) - np.max(np.abs(np.diff(np.log(grid)) / np.diff(grid)))
                for b in (0.5, 2.0) for grid in [np.exp(np.linspace(-b, b, 10001))])
  return {"name": "sym_log_lipschitz", "passed": decreasing and _zero(sup - B) and bool(numeric >= 0),
          "lipschitz_at_beta_1": float(sup.subs(beta, 1)), "numeric_margin": float(numeric)}


def exp_lipschitz() -> dict:
  """d/dt exp(beta t) = beta exp(beta t) is increasing, so its sup on [-1, 1] is beta e^beta."""
  t = sp.Symbol("t", real=True)
  slope = sp.diff(sp.exp(beta * t), t)
  increasing = _positive(sp.diff(slope, t).subs(t, 1)) and _zero(sp.diff(slope, t) - beta * slope)
  sup = slope.subs(t, 1)
  return {"name": "sym_exp_lipschitz", "passed": increasing and _zero(sup - beta * B)
          and _matches(sup + 0 * N, lambda n, b: bound.exp_lipschitz(b)) < 1e-12,
          "lipschitz_at_beta_1": float(sup.subs(beta, 1))}


def own_row_range() -> dict:
  """The row term of the replaced pair lies in an interval of width < 4 beta, -> 4 beta as N grows."""
  width = sp.log((1 + (N - 1) * B**2) / (1 + (N - 1) * A**2))
  slack = sp.exp(4 * beta - width) - 1  # > 0  <=>  width < 4 beta
  slope = (B**2 - A**2) / ((1 + (N - 1) * B**2) * (1 + (N - 1) * A**2))  # d width / dN
  return {"name": "sym_own_row_range",
          "passed": _positive(slack.subs(N, 1 + n_plus))
          and _zero(sp.diff(width, N) - slope) and _positive(slope.subs(N, 1 + n_plus))
          and _zero(sp.limit(width, N, sp.oo) - 4 * beta)
          and _matches(width, bound.own_row_range) < 1e-9,
          "width_N1024_beta1": float(width.subs({N: 1024, beta: 1}))}


def other_row_change() -> dict:
  """Replacing one of N terms in [a, b] moves log(mean) by at most log(1 + (e^{2 beta} - 1)/N).

  d/dS log((S + b)/(S + a)) = (a - b)/((S + a)(S + b)) < 0 in the sum S of the other N - 1
  terms, so the worst case is the smallest sum, S = (N - 1) a.
  """
  s = sp.Symbol("S", positive=True)
  change = sp.log((s + B) / (s + A))
  decreasing = _zero(sp.diff(change, s) * (s + A) * (s + B) - (A - B)) and _positive(B - A)
  closed = sp.log(1 + (B**2 - 1) / N)
  return {"name": "sym_other_row_change",
          "passed": decreasing and _zero(sp.exp(change.subs(s, (N - 1) * A)) - sp.exp(closed))
          and _matches(closed, bound.other_row_change) < 1e-9,
          "change_N64_beta2": float(closed.subs({N: 64, beta: 2}))}


def bounded_difference_constants() -> dict:
  """c_N <= 4 beta + (e^{2 beta} - 1)(N - 1)/N < c-bar = 4 beta + e^{2 beta} - 1 (Lemma 1, Theorem 1).

  Uses own-row width <= 4 beta (sym_own_row_range) and (N - 1) log(1 + z/N) <= (N - 1) z/N, from
  log(1 + y) <= y (y - log(1 + y) is 0 at 0 with derivative y/(1 + y) >= 0). The middle expression
  is also the constant of the uniform deviation Phi (Theorem 1, step 4): range 4 beta of the per-anchor loss,
  plus e^beta (log's Lipschitz constant) times e^beta - e^-beta (the range of one negative's term).
  """
  y = sp.Symbol("y", nonnegative=True)
  log1p_below = _zero(sp.diff(y - sp.log(1 + y), y) - y / (1 + y)) and bool((y / (1 + y)).is_nonnegative)
  middle = 4 * beta + (B**2 - 1) * (N - 1) / N
  phi_constant = 4 * beta + B * (B - A) * (N - 1) / N
  c_bar = 4 * beta + B**2 - 1
  grid_ok = all(bound.bounded_difference_constant(n, b) <= float(middle.subs({N: n, beta: b}))
                * (1 + 1e-12) and float(middle.subs({N: n, beta: b})) <= bound.c_bar(b) for n, b in GRID)
  return {"name": "sym_bounded_difference_constants",
          "passed": log1p_below and _zero(middle - phi_constant)
          and _zero(c_bar - middle - (B**2 - 1) / N) and _positive(B**2 - 1)
          and _matches(c_bar + 0 * N, lambda n, b: bound.c_bar(b)) < 1e-12 and grid_ok,
          "c_bar_beta1": bound.c_bar(1.0), "cN_N64_beta1": bound.bounded_difference_constant(64, 1.0)}


def taylor_moments() -> dict:
  """E[M - Z] = (p - Z)/N and E[(M - Z)^2] = ((N - 1) sigma^2 + (p - Z)^2)/N^2 (Proposition 1).

  M = (p + u_1 + ... + u_{N-1})/N: the positive p plus N - 1 i.i.d. negatives with mean Z and
  variance sigma^2. Checked by expanding the polynomial and taking moments term by term, N = 2..6.
  """
  p, z, var = sp.symbols("p Z sigma2", positive=True)
  ok = True
  for n in range(2, 7):
    us = sp.symbols(f"u1:{n}")
    dev = (p + sum(us)) / n - z

    def expect(expr, us=us):
      poly = sp.Poly(sp.expand(expr), *us)
      moment = {0: 1, 1: z, 2: var + z**2}
      return sum(c * sp.prod([moment[k] for k in powers]) for powers, c in poly.terms())
    ok &= _zero(expect(dev) - (p - z) / n)
    ok &= _zero(expect(dev**2) - ((n - 1) * var + (p - z)**2) / n**2)
  return {"name": "sym_taylor_moments", "passed": bool(ok), "largest_N_checked": 6}


def delta_method() -> dict:
  """N (L_N - L_inf) -> rho - E sigma^2/(2 Z^2): log(Z + e) = log Z + e/Z - e^2/(2 Z^2) + O(e^3)."""
  p, z, var, e = sp.symbols("p Z sigma2 epsilon", positive=True)
  series_ok = _zero(sp.series(sp.log(z + e), e, 0, 3).removeO() - (sp.log(z) + e / z - e**2 / (2 * z**2)))
  second_order = (p - z) / (N * z) - ((N - 1) * var + (p - z)**2) / (2 * N**2 * z**2)
  limit = sp.limit(N * second_order, N, sp.oo)
  return {"name": "sym_delta_method",
          "passed": series_ok and _zero(limit - ((p - z) / z - var / (2 * z**2))),
          "limit": str(limit)}


def _iid_expectation(expr: sp.Expr, draws: list[tuple], moment) -> sp.Expr:
  """E of a polynomial in i.i.d. draws: `draws` holds each draw's components (jointly distributed within a
  draw, independent across draws), moment(powers) is E of one draw's monomial with those powers."""
  flat = [v for draw in draws for v in draw]
  poly = sp.Poly(sp.expand(expr), *flat)
  width = len(draws[0])
  return sum(c * sp.prod([moment(powers[i:i + width]) for i in range(0, len(flat), width)])
             for powers, c in poly.terms())


def remainder_moments() -> dict:
  """The moments that finish Proposition 1's O(1/N^2) remainder and start Proposition 2's.

  t = (a + sum_{j>=2} c_j) / N with c_j i.i.d., mean 0, E c^2 = s2, E c^3 = m3, E c^4 = m4 (a = the
  positive's weight - 1); e = (h + sum_{j>=2} h_j) / N with (h_j, c_j) jointly i.i.d., E h_j = 0,
  E h_j c_j = k11 (one coordinate of the gradient's numerator). For N = 2..6:
    N^3 E t^3 = a^3 + 3 a (N - 1) s2 + (N - 1) m3,
    N^4 E t^4 = a^4 + 6 a^2 (N - 1) s2 + 4 a (N - 1) m3 + (N - 1) m4 + 3 (N - 1)(N - 2) s2^2,
    N^2 E e t = h a + (N - 1) k11.
  With |a|, |c| <= K the first is <= (4N - 3) K^3 and the second <= (3N^2 + 2N - 4) K^4 <= 5 N^2 K^4.
  The remainders: log(1 + t) = t - t^2/2 + t^3/3 - R(t), R' = t^3 / (1 + t) (so 0 <= R <= e^{2 beta} t^4 / 4
  when 1 + t >= e^{-2 beta}), and 1/(1 + t) = 1 - t + t^2 - t^3 + t^4 / (1 + t).
  """
  a, h, s2, m3, m4, k11 = sp.symbols("a h s2 m3 m4 k11", real=True)

  def moment(powers):  # powers of (c, h) in one draw
    table = {(0, 0): 1, (1, 0): 0, (0, 1): 0, (2, 0): s2, (3, 0): m3, (4, 0): m4, (1, 1): k11}
    return table[tuple(powers)]

  ok = True
  for n in range(2, 7):
    draws = [sp.symbols(f"c{j} h{j}", real=True) for j in range(2, n + 1)]
    t = (a + sum(c for c, _ in draws)) / n
    e = (h + sum(hj for _, hj in draws)) / n
    ok &= _zero(n**3 * _iid_expectation(t**3, draws, moment) - (a**3 + 3 * a * (n - 1) * s2 + (n - 1) * m3))
    ok &= _zero(n**4 * _iid_expectation(t**4, draws, moment)
                - (a**4 + 6 * a**2 * (n - 1) * s2 + 4 * a * (n - 1) * m3 + (n - 1) * m4
                   + 3 * (n - 1) * (n - 2) * s2**2))
    ok &= _zero(n**2 * _iid_expectation(e * t, draws, moment) - (h * a + (n - 1) * k11))
  n1 = 1 + n_plus  # N >= 1
  counts = (_positive(4 * n1 - (1 + 3 * (n1 - 1) + (n1 - 1)))
            and _positive(5 * n1**2 - (1 + 11 * (n1 - 1) + 3 * (n1 - 1) * (n1 - 2)))
            and _zero(1 + 11 * (n1 - 1) + 3 * (n1 - 1) * (n1 - 2) - (3 * n1**2 + 2 * n1 - 4)))
  t = sp.Symbol("t", real=True)
  remainders = (_zero(sp.diff(sp.log(1 + t) - t + t**2 / 2 - t**3 / 3, t) + t**3 / (1 + t))
                and _zero(1 / (1 + t) - (1 - t + t**2 - t**3) - t**4 / (1 + t)))
  k = B**2 - 1
  c2 = k**2 / 2 + 4 * k**3 / 3 + 5 * B**2 * k**4 / 4
  return {"name": "sym_remainder_moments",
          "passed": bool(ok) and counts and remainders
          and _matches(c2 + 0 * N, lambda n, b: bound.bias_remainder_constant(b)) < 1e-12,
          "largest_N_checked": 6, "C2_beta1": bound.bias_remainder_constant(1.0)}


def gradient_first_order() -> dict:
  """Proposition 2's constants are the gradients of Proposition 1's kappa, and its limits those of L_inf.

  A discrete world: two images and two texts with a fixed joint law pi (rational, not a product), scalar
  embeddings u_i, v_j (s = u_i v_j). kappa(u, v) = E w - 1 - (E_x q(x) - 1) / 2 and L_inf(u, v) are explicit,
  and each partial derivative must equal the pair-weighted sum of the per-pair formulas of README section 9:
  d kappa / d u_i = sum_j pi_ij alpha_u(i, j), d kappa / d v_j = sum_i pi_ij alpha_v(i, j), and the same
  for L_inf with beta (mu - v) and beta (nu - u). After differentiating, exp(beta u_i v_j) becomes a
  positive symbol, so each difference is a rational function that must cancel to 0.
  """
  pi = [[sp.Rational(1, 2), sp.Rational(1, 6)], [sp.Rational(1, 12), sp.Rational(1, 4)]]
  u, v = sp.symbols("u1 u2", real=True), sp.symbols("v1 v2", real=True)
  idx = range(2)
  px = [sum(pi[i]) for i in idx]
  py = [pi[0][j] + pi[1][j] for j in idx]
  ex = [[sp.exp(beta * u[i] * v[j]) for j in idx] for i in idx]
  z = [sum(py[j] * ex[i][j] for j in idx) for i in idx]
  w = [[ex[i][j] / z[i] for j in idx] for i in idx]
  mu = [sum(py[j] * w[i][j] * v[j] for j in idx) for i in idx]
  nu = [sum(px[i] * w[i][j] * u[i] for i in idx) for j in idx]
  q = [sum(py[j] * w[i][j] ** 2 for j in idx) for i in idx]
  rho = [sum(pi[i][j] / px[i] * w[i][j] for j in idx) - 1 for i in idx]
  kappa = sum(pi[i][j] * w[i][j] for i in idx for j in idx) - 1 - sum(px[i] * (q[i] - 1) for i in idx) / 2
  l_inf = sum(pi[i][j] * (-beta * u[i] * v[j] + sp.log(z[i])) for i in idx for j in idx)

  def alpha_u(i, j):
    return beta * (w[i][j] * (v[j] - mu[i]) - sum(py[k] * w[i][k] ** 2 * (v[k] - mu[i]) for k in idx))

  def alpha_v(i, j):
    return beta * (w[i][j] * u[i] - sum(px[k] * w[k][j] * u[k] * (1 + rho[k] + w[k][j] - q[k]) for k in idx))

  positive = {ex[i][j]: sp.Symbol(f"e{i}{j}", positive=True) for i in idx for j in idx}

  def same(lhs, rhs):
    return sp.expand(sp.numer(sp.together((lhs - rhs).subs(positive)))) == 0

  ok = all(same(sp.diff(kappa, u[i]), sum(pi[i][j] * alpha_u(i, j) for j in idx))
           and same(sp.diff(l_inf, u[i]), sum(pi[i][j] * beta * (mu[i] - v[j]) for j in idx)) for i in idx)
  ok &= all(same(sp.diff(kappa, v[j]), sum(pi[i][j] * alpha_v(i, j) for i in idx))
            and same(sp.diff(l_inf, v[j]), sum(pi[i][j] * beta * (nu[j] - u[i]) for i in idx)) for j in idx)
  # A wrong constant must not pass: alpha_u without its ratio-estimator term.
  broken = same(sp.diff(kappa, u[0]), sum(pi[0][j] * beta * w[0][j] * (v[j] - mu[0]) for j in idx))
  return {"name": "sym_gradient_first_order", "passed": bool(ok) and not broken,
          "broken_passes": bool(broken)}


def bias_bound() -> dict:
  """Proposition 1's constants.

  (i) log t >= (t - 1) - (t - 1)^2 / (2 min(t, 1)): h(t) = log t - t/2 + 1/(2t) has
      h' = -(t - 1)^2/(2 t^2) <= 0 and h(1) = 0 (t <= 1); g(t) = log t - (t - 1) + (t - 1)^2/2 has
      g' = (t - 1)^2/t >= 0 and g(1) = 0 (t >= 1).
  (ii) Bhatia-Davis, Var <= (b - Z)(Z - a); with max(1, Z/M) <= Z/a = e^beta Z the Jensen piece is
      <= e^beta (b - Z)(Z - a)/Z, maximal at Z = sqrt(ab) = 1:
      K1 = e^beta (a + b - 2) = 4 e^beta sinh^2(beta/2).
  (iii) the positive's piece e^beta (p - Z)^2 / Z <= e^beta (b - a)^2 / a = K2 = 4 e^{2 beta} sinh^2(beta).
  (iv) the first-order term rho = E[e^{beta s} / Z] - 1 lies in [a/b - 1, b/a - 1].
  """
  t, zz = sp.Symbol("t", positive=True), sp.Symbol("Z", positive=True)
  log_ok = (_zero(sp.diff(sp.log(t) - t / 2 + 1 / (2 * t), t) + (t - 1)**2 / (2 * t**2))
            and _zero(sp.diff(sp.log(t) - (t - 1) + (t - 1)**2 / 2, t) - (t - 1)**2 / t))
  piece1 = B * (B - zz) * (zz - A) / zz
  k1 = 4 * B * sp.sinh(beta / 2)**2
  k1_ok = (_zero(sp.diff(piece1, zz).subs(zz, 1)) and _positive(-sp.diff(piece1, zz, 2).subs(zz, q))
           and _zero(piece1.subs(zz, 1) - k1))
  k2 = 4 * B**2 * sp.sinh(beta)**2
  # (b - Z)^2 / Z decreases and (Z - a)^2 / Z increases on [a, b]: the worst is (b - a)^2 / a.
  k2_ok = (_zero(sp.diff((B - zz)**2 / zz, zz) + (B**2 - zz**2) / zz**2)
           and _zero(sp.diff((zz - A)**2 / zz, zz) - (zz**2 - A**2) / zz**2)
           and _zero(B * (B - A)**2 / A - k2))
  rho_ok = _zero(B / A - 1 - (B**2 - 1)) and _zero(A / B - 1 - (A**2 - 1))
  as_code = sp.Max((B**2 - 1) / N, (1 - A**2) / N + ((N - 1) * k1 + k2) / (2 * N**2))
  return {"name": "sym_bias_bound",
          "passed": log_ok and k1_ok and k2_ok and rho_ok and _matches(as_code, bound.bias_bound) < 1e-9,
          "K1_beta2": float(k1.subs(beta, 2)), "K2_beta2": float(k2.subs(beta, 2)),
          "bias_bound_N64_beta2": bound.bias_bound(64, 2.0)}


def mcdiarmid_inversion() -> dict:
  """exp(-2 m t^2 / c^2) = delta / k  <=>  t = c sqrt(ln(k/delta) / (2m)).

  k = 1 for McDiarmid one-sided, k = 2 two-sided.
  """
  t, c = sp.symbols("t c", positive=True)
  ok = True
  for k in (1, 2):
    (sol,) = sp.solve(sp.Eq(k * sp.exp(-2 * m * t**2 / c**2), delta), t)
    ok &= _zero(sol**2 - c**2 * sp.log(k / delta) / (2 * m))
    as_code = bound.mcdiarmid_deviation(3, 100, 0.05, two_sided=k == 2)
    ok &= abs(float(sol.subs({c: 3, m: 100, delta: 0.05})) - as_code) < 1e-12
  return {"name": "sym_mcdiarmid_inversion", "passed": bool(ok)}


def bound_monotone_and_limits() -> dict:
  """Theorem 1's total decreases in N (N >= 2) and in m, and its N- and m-terms vanish in the limit."""
  c_sim, c_tower = sp.symbols("C_s C_t", positive=True)
  sample = 2 * beta * (c_sim + B**2 * c_tower) / sp.sqrt(m) + (4 * beta + B**2 - 1) * sp.sqrt(
      sp.log(2 / delta) / (2 * m))
  batch = 2 * beta * B**2 * c_tower * sp.sqrt(N - 1) / N + (B**2 - 1) / N
  d_batch = sp.diff(batch, N)
  closed = 2 * beta * B**2 * c_tower * (2 - N) / (2 * N**2 * sp.sqrt(N - 1)) - (B**2 - 1) / N**2
  d_sample = sp.diff(sample, m)
  numeric = bound.uniform_terms(1000, 64, 1.0, 0.05, bound.Complexity(2.0, 1.0))
  as_code = float((sample + batch).subs({m: 1000, N: 64, beta: 1, delta: 0.05, c_sim: 2, c_tower: 1}))
  return {"name": "sym_bound_monotone_and_limits",
          "passed": _zero(d_batch - closed) and _positive(-closed.subs(N, 2 + n_plus))
          and _zero(d_sample + sample / (2 * m)) and _zero(sp.limit(batch, N, sp.oo))
          and _zero(sp.limit(sample, m, sp.oo)) and abs(as_code - numeric["total"]) < 1e-9,
          "d_batch_dN": str(closed), "total_m1000_N64_beta1": numeric["total"]}


def rademacher_linear() -> dict:
  """The two inequalities behind the linear-tower complexities (README, section 4).

  Jensen: E_sigma |sum sigma_k x_k|^2 = sum |x_k|^2 (cross terms cancel; enumerated for m = 3).
  Ky Fan: (s_1 + ... + s_D)^2 <= D (s_1^2 + ... + s_D^2), the gap being sum_{i<j} (s_i - s_j)^2.
  """
  xs = [sp.Matrix(sp.symbols(f"x{k}_1:3", real=True)) for k in range(3)]
  signs = list(itertools.product((-1, 1), repeat=3))
  mean_sq = sum(sum((sg * x for sg, x in zip(sgn, xs)), sp.zeros(2, 1)).norm()**2
                 for sgn in signs) / len(signs)
  jensen = _zero(sp.expand(mean_sq - sum(x.norm()**2 for x in xs)))
  sv = sp.symbols("s1:4", real=True)
  ky_fan = _zero(3 * sum(v**2 for v in sv) - sum(sv)**2
                 - sum((a - b)**2 for a, b in itertools.combinations(sv, 2)))
  return {"name": "sym_rademacher_linear", "passed": jensen and ky_fan}


CHECKS = (log_lipschitz, exp_lipschitz, own_row_range, other_row_change, bounded_difference_constants,
          taylor_moments, delta_method, remainder_moments, gradient_first_order, bias_bound,
          mcdiarmid_inversion, bound_monotone_and_limits, rademacher_linear)


def run_all() -> list[dict]:
  return [check() for check in CHECKS]
