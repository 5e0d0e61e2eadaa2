"""The gradient bias of a trained model at fixed weights: the expected G-pair gradient against the
infinite-batch gradient, per G, measured next to Proposition 2's first order (theory/README.md, section 9).

    python -m experiments.gradient_bias --workdir W [--step S] [--pairs 8192] [--anchors 256] \
        [--groups 4,16,64,256,1024] [--replicates 10] [--draws 32] [--json] [--out FILE.jsonl]

    OPENBLAS_NUM_THREADS=1 python -m experiments.gradient_bias --step 300 --pairs 4096 --anchors 128 \
        --replicates 5 --workdir runs/sweep-negatives/runs/objects-s-N1024-G4-fresh-T0.07-s0-221e3341  # 51 s

(wall time on the project's shared 2-core CPU, busy with a sweep; a multi-threaded BLAS there is 3x slower).

What is measured. The checkpoint embeds n held-out pairs of its own evaluation suite (evaluation's
Encoder, unit-norm embeddings) and the loss is BASIC's symmetric loss at the model's own logit scale beta.
The n pairs are cut in two halves, A and B, and each half is a population: the law of one of its pairs
drawn uniformly. K anchor pairs are drawn from B; each is put in batches with G - 1 companions drawn
from B (independently, with replacement), and g_G(k) = G times the gradient of the loss w.r.t. the
anchor's embeddings (u_k, v_k) is averaged over the companions (theory/gradient.py's estimator, control
variates included). g_inf is the gradient of all of B as one batch, which for an anchor of B is exactly
the infinite-batch gradient of B's law (its softmax means over B). Per G, over the concatenated [K, 2, D]
gradients: rel_bias = |E g_G - g_inf| / |g_inf|, the cosine of E g_G with g_inf and parallel =
<E g_G - g_inf, g_inf> / |g_inf|^2 (negative: the expected G-pair gradient is shorter), with 95% intervals
over replicates (fresh companions each; `gradient.summarise`).

What is predicted. Proposition 2: E g_G - g_inf = alpha / G + O(1/G^2), alpha the plug-in first order,
here out of sample: alpha's constants (each row's partition function, softmax means, rho and q, per
direction) come from half A, the measurement from half B, as evaluation's split_bias_check does for the
loss's value (kappa). predicted_rel_bias = |alpha_A| / (G |g_inf|), and ratio_measured_predicted =
G |E g_G - g_inf| / |alpha_A| -> 1 as G grows, if the expansion holds (ratio_ci is the measurement's
interval over the prediction, which it holds fixed); projection = <G (E g_G - g_inf), alpha_A> / |alpha_A|^2
-> 1 checks the direction too (`first_order_fit`). predicted_rel_bias_in_sample uses
alpha from B itself (the same law the bias is measured in), which separates the constants' sampling error
from the higher orders. The series in 1/G settles only once G is well above the positives' softmax weights
w = e^{beta s} / Z (sphere.fit_batch_sizes): a trained model with a large kappa is far from its first
order at small G, and the ratio says how far.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import stats

from analysis import cli
from analysis.stats import line_fit
from basic_core import data, evaluate
from theory import gradient
from theory.empirical import logsumexp

ROW_CHUNK = 512  # rows of a population's logit matrix held at once (its statistics are computed in tiles)


class Rows(NamedTuple):
  """One direction of the loss over a population of M pairs: the rows' side a (the images, for
  image-to-text), the candidates' side b, and per row its partition function Z = mean_j e^{beta <a_i, b_j>},
  rho = w_ii - 1 (its own positive's weight, the law's E_{y|x} w - 1) and q = mean_j w_ij^2, with
  w_ij = e^{beta <a_i, b_j>} / Z_i."""

  beta: float
  a_MxD: np.ndarray
  b_MxD: np.ndarray
  log_z_M: np.ndarray
  rho_M: np.ndarray
  q_M: np.ndarray


def rows(beta: float, a_MxD: np.ndarray, b_MxD: np.ndarray) -> Rows:
  """The row statistics of `Rows`, tiled over ROW_CHUNK rows (never the whole M x M matrix)."""
  log_z, rho, q = [], [], []
  for start in range(0, len(a_MxD), ROW_CHUNK):
    logits_RxM = beta * a_MxD[start:start + ROW_CHUNK] @ b_MxD.T
    lz_R = logsumexp(logits_RxM) - np.log(len(b_MxD))
    own_R = beta * (a_MxD[start:start + ROW_CHUNK] * b_MxD[start:start + ROW_CHUNK]).sum(-1)
    log_z.append(lz_R)
    rho.append(np.expm1(own_R - lz_R))
    q.append(np.exp(2 * (logits_RxM - lz_R[:, None])).mean(-1))
  return Rows(beta, a_MxD, b_MxD, *map(np.concatenate, (log_z, rho, q)))


def population(beta: float, u_MxD: np.ndarray, v_MxD: np.ndarray) -> tuple[Rows, Rows]:
  """(image-to-text, text-to-image) statistics of the law of M pairs (u_i, v_i) at inverse temperature
  beta: text-to-image's rows are the texts."""
  return rows(beta, u_MxD, v_MxD), rows(beta, v_MxD, u_MxD)


class Side(NamedTuple):
  """One direction's infinite-batch quantities at K anchors (a_k, b_k) (a the row side), and Proposition 2's
  first order: mu = E_b'[w(a_k, b') b'] (the anchor row's softmax mean), nu = E_a'[w(a', b_k) a'] (the
  anchor as a candidate of every row), alpha_row / alpha_col the first order w.r.t. a_k / b_k."""

  log_z_K: np.ndarray
  mu_KxD: np.ndarray
  nu_KxD: np.ndarray
  alpha_row_KxD: np.ndarray
  alpha_col_KxD: np.ndarray


def side(r: Rows, a_KxD: np.ndarray, b_KxD: np.ndarray) -> Side:
  """Proposition 2 with the expectations taken over the population of `r` (theory/README.md, section 9):

  alpha_row = beta [w (b - mu) - E_b'[w(a, b')^2 (b' - mu)]]
  alpha_col = beta [w a - E_a'[w(a', b) a' (1 + rho(a') + w(a', b) - q(a'))]],  w = w(a_k, b_k).
  """
  m = len(r.a_MxD)
  logits_KxM = r.beta * a_KxD @ r.b_MxD.T
  log_z_K = logsumexp(logits_KxM) - np.log(m)
  w_KxM = np.exp(logits_KxM - log_z_K[:, None])
  w_Kx1 = np.exp(r.beta * (a_KxD * b_KxD).sum(-1, keepdims=True) - log_z_K[:, None])
  mu_KxD = w_KxM @ r.b_MxD / m
  spread_KxD = (w_KxM**2) @ r.b_MxD / m - (w_KxM**2).mean(-1, keepdims=True) * mu_KxD
  wc_KxM = np.exp(r.beta * b_KxD @ r.a_MxD.T - r.log_z_M)  # w(a'_i, b_k): the anchor in row i
  nu_KxD = wc_KxM @ r.a_MxD / m
  col_KxD = (wc_KxM * (1 + r.rho_M + wc_KxM - r.q_M)) @ r.a_MxD / m
  return Side(log_z_K, mu_KxD, nu_KxD, r.beta * (w_Kx1 * (b_KxD - mu_KxD) - spread_KxD),
              r.beta * (w_Kx1 * a_KxD - col_KxD))


def sides(pop: tuple[Rows, Rows], u_KxD: np.ndarray, v_KxD: np.ndarray) -> tuple[Side, Side]:
  """(image-to-text, text-to-image) Sides of anchors (u_k, v_k): text-to-image's rows are the texts."""
  return side(pop[0], u_KxD, v_KxD), side(pop[1], v_KxD, u_KxD)


def _parts(i2t_row, i2t_col, t2i_row, t2i_col) -> np.ndarray:
  """[K, 2, 2, D] in theory/gradient.py's layout (direction, part (u, v)): u is image-to-text's row and
  text-to-image's column."""
  return np.stack([np.stack([i2t_row, i2t_col], 1), np.stack([t2i_col, t2i_row], 1)], 1)


def infinite_gradient(pop, s: tuple[Side, Side], u_KxD, v_KxD) -> np.ndarray:
  """[K, 2, 2, D]: beta (softmax mean - positive) per direction and part, the population as one batch."""
  beta, (i2t, t2i) = pop[0].beta, s
  return beta * _parts(i2t.mu_KxD - v_KxD, i2t.nu_KxD - u_KxD, t2i.mu_KxD - u_KxD, t2i.nu_KxD - v_KxD)


def first_order(s: tuple[Side, Side]) -> np.ndarray:
  """[K, 2, 2, D]: alpha per direction and part (gradient.symmetric gives the symmetric loss's)."""
  return _parts(s[0].alpha_row_KxD, s[0].alpha_col_KxD, s[1].alpha_row_KxD, s[1].alpha_col_KxD)


def _shared_direction(r: Rows, sd: Side, a_KxD, b_KxD, idx_cxC: np.ndarray) -> gradient.Direction:
  """The Direction of the batches {anchor k} + companions idx (the same G - 1 for every anchor of a draw:
  each anchor's batch is still its own with i.i.d. companions, and the companions' block is computed once)."""
  c, k = len(idx_cxC), len(a_KxD)
  a_cxCxD, b_cxCxD, log_z_cxC = r.a_MxD[idx_cxC], r.b_MxD[idx_cxC], r.log_z_M[idx_cxC]
  own_cxKx1 = np.broadcast_to(r.beta * (a_KxD * b_KxD).sum(-1)[:, None], (c, k, 1))
  row_cxKxC = r.beta * a_KxD @ b_cxCxD.swapaxes(1, 2)
  w_row_cxKxN = np.exp(np.concatenate([own_cxKx1, row_cxKxC], -1) - sd.log_z_K[:, None])
  w_in_cxKxC = np.exp(r.beta * b_KxD @ a_cxCxD.swapaxes(1, 2) - log_z_cxC[:, None])  # w_i0
  w_col_cxKxN = np.concatenate([w_row_cxKxN[..., :1], w_in_cxKxC], -1)
  block_cxCxC = np.exp(r.beta * a_cxCxD @ b_cxCxD.swapaxes(1, 2) - log_z_cxC[..., None])
  n = idx_cxC.shape[1] + 1
  t_cxKxN = np.concatenate([w_row_cxKxN.mean(-1, keepdims=True),
                            (w_in_cxKxC + block_cxCxC.sum(-1)[:, None]) / n], -1)
  stack = lambda x_KxD, x_cxCxD: np.concatenate(  # noqa: E731
    [np.broadcast_to(x_KxD[None, :, None], (c, k, 1, x_KxD.shape[-1])),
     np.broadcast_to(x_cxCxD[:, None], (c, k, *x_cxCxD.shape[1:]))], 2)
  return gradient.Direction(w_row_cxKxN, w_col_cxKxN, t_cxKxN, stack(a_KxD, a_cxCxD), stack(b_KxD, b_cxCxD),
                            sd.mu_KxD, sd.nu_KxD)


def draws(pop: tuple[Rows, Rows], s: tuple[Side, Side], u_KxD, v_KxD, n: int, count: int,
          rng: np.random.Generator, max_entries: int = 1 << 23) -> tuple[np.ndarray, np.ndarray]:
  """(plain, controlled) [count, K, 2, 2, D] draws of g_N - g_inf (gradient.direction_draws), the
  companions drawn from the population with replacement; a few draws and anchors at a time, so that a
  step holds about max_entries numbers (the anchors of a draw share its companions)."""
  k, d = u_KxD.shape
  per_slice = max(1, min(k, max_entries // (n * d)))
  chunk = max(1, max_entries // (n * n + per_slice * n * d))
  out = []
  for start in range(0, count, chunk):
    idx_cxC = rng.integers(len(pop[0].a_MxD), size=(min(chunk, count - start), n - 1))
    parts = []
    for first in range(0, k, per_slice):
      sl = slice(first, first + per_slice)
      i2t, t2i = (Side(*(field[sl] for field in sd)) for sd in s)
      parts.append(gradient.direction_draws(pop[0].beta,
                                            _shared_direction(pop[0], i2t, u_KxD[sl], v_KxD[sl], idx_cxC),
                                            _shared_direction(pop[1], t2i, v_KxD[sl], u_KxD[sl], idx_cxC)))
    out.append([np.concatenate(p, axis=1) for p in zip(*parts)])
  return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])


def measure(pop, s, u_KxD, v_KxD, alpha_Kx2xD: np.ndarray, n: int, rng: np.random.Generator,
            replicates: int, count: int, level: float = 0.95) -> dict:
  """gradient.summarise of the symmetric loss's controlled draws at batch n, against alpha / n."""
  g_Kx2xD = gradient.symmetric(infinite_gradient(pop, s, u_KxD, v_KxD))
  draw = lambda c: gradient.symmetric(draws(pop, s, u_KxD, v_KxD, n, c, rng)[1])  # noqa: E731
  return gradient.summarise(draw, g_Kx2xD, alpha_Kx2xD, n, replicates, count, level)


class Split(NamedTuple):
  """The two halves of the pairs as populations (A predicts, B is measured) and K anchors drawn from B."""

  pop_a: tuple[Rows, Rows]
  pop_b: tuple[Rows, Rows]
  u_KxD: np.ndarray
  v_KxD: np.ndarray


def split(u_nxD: np.ndarray, v_nxD: np.ndarray, beta: float, anchors: int, rng: np.random.Generator) -> Split:
  """First half A, second half B (as evaluation's split_bias_check cuts them), anchors from B."""
  half = len(u_nxD) // 2
  u, v = np.asarray(u_nxD, np.float64), np.asarray(v_nxD, np.float64)
  pick = half + rng.choice(half, size=anchors, replace=False)
  return Split(population(beta, u[:half], v[:half]), population(beta, u[half:2 * half], v[half:2 * half]),
               u[pick], v[pick])


def gradient_bias(sp: Split, groups, rng: np.random.Generator, *, replicates: int = 10, count: int = 32,
                  level: float = 0.95) -> list[dict]:
  """One row per G: measured in B's law, predicted from A's (out of sample) and from B's (in sample)."""
  sides_b = sides(sp.pop_b, sp.u_KxD, sp.v_KxD)
  alpha_a = gradient.symmetric(first_order(sides(sp.pop_a, sp.u_KxD, sp.v_KxD)))
  alpha_b = gradient.symmetric(first_order(sides_b))
  g = gradient.symmetric(infinite_gradient(sp.pop_b, sides_b, sp.u_KxD, sp.v_KxD))
  out = []
  for n in groups:
    r = measure(sp.pop_b, sides_b, sp.u_KxD, sp.v_KxD, alpha_a, n, rng, replicates, count, level)
    predicted = r["predicted_rel_bias"]
    out.append({
      "group_size": n,
      "rel_bias": r["rel_bias"],
      "rel_bias_ci": [r["rel_bias_low"], r["rel_bias_high"]],
      "cosine": 1 - r["one_minus_cos"],
      "cosine_ci": [1 - r["one_minus_cos_high"], 1 - r["one_minus_cos_low"]],
      "predicted_rel_bias": predicted,
      "predicted_cosine": 1 - r["predicted_one_minus_cos"],
      "ratio_measured_predicted": r["rel_bias"] / predicted,
      "ratio_ci": [r["rel_bias_low"] / predicted, r["rel_bias_high"] / predicted],
      "predicted_rel_bias_in_sample": float(np.sqrt((alpha_b**2).sum() / (g**2).sum()) / n),
      "parallel": r["parallel"],
      "parallel_ci": [r["parallel_low"], r["parallel_high"]],
      "predicted_parallel": r["predicted_parallel"],
      "projection": r["projection"],
      "projection_ci": [r["projection_low"], r["projection_high"]],
      "beta": sp.pop_b[0].beta,
      "anchors": len(sp.u_KxD),
      "replicates": replicates,
      "draws": count,
      "pairs": 2 * len(sp.pop_b[0].a_MxD),
      "level": level,
    })
  return out


def first_order_fit(rows: list[dict]) -> dict[str, dict]:
  """{"ratio": fit, "projection": fit}: each = a + b / G over the rows (weighted by their intervals), so
  a is its limit in G, 1 where alpha is the first order, and b the second order. The ratio compares
  lengths and the projection <G bias, alpha> / |alpha|^2 directions: both at 1 means G bias -> alpha
  (|G bias| = |alpha| = <G bias, alpha> / |alpha|). A row's standard error is its interval's
  half-width over the t quantile the interval was built with. Rows whose interval has no width (a
  degenerate model, e.g. embeddings collapsed onto a line, where every replicate agrees) carry no weight
  the fit can use and are left out; with fewer than two rows left the fit is NaN."""
  t = stats.t.ppf(0.5 + rows[0]["level"] / 2, rows[0]["replicates"] - 1)
  inv_g = np.array([1 / r["group_size"] for r in rows])
  out = {}
  for name, key, ci in (("ratio", "ratio_measured_predicted", "ratio_ci"),
                        ("projection", "projection", "projection_ci")):
    se = np.array([(r[ci][1] - r[ci][0]) / (2 * t) for r in rows])
    y = np.array([r[key] for r in rows])
    keep = np.isfinite(y) & np.isfinite(se) & (se > 0)
    if keep.sum() < 2:
      nan2 = (np.nan, np.nan)
      out[name] = dict(intercept=np.nan, intercept_ci=nan2, slope=np.nan, slope_ci=nan2,
                       chi2_reduced=np.nan, n=int(keep.sum()))
      continue
    out[name] = line_fit(inv_g[keep], y[keep], se[keep], rows[0]["level"])
  return out


def heldout_embeddings(workdir: Path, step: int | None, pairs: int) -> tuple[int, float, np.ndarray,
                                                                             np.ndarray]:
  """(step, logit scale, u, v): the first `pairs` held-out pairs of the run's evaluation suite, embedded
  by evaluation's Encoder (unit rows); the logit scale is the model's own."""
  run = evaluate.load(workdir, step)
  heldout = data.eval_suite(run.config, run.tokenizer).heldout
  encoder = evaluate.Encoder(run.fns, run.params, chunk=int(run.config.eval.batch_size))
  return (run.step, encoder.logit_scale, encoder.images(heldout["image"][:pairs]),
          encoder.texts(heldout["text"][:pairs]))


def main(argv=None) -> int:
  parser = cli.Parser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, type=cli.existing_dir)
  parser.add_argument("--step", type=cli.number(int, ge=0), help="checkpoint step (default: the newest)")
  positive = cli.number(int, gt=0)
  parser.add_argument("--pairs", type=cli.number(int, ge=4), default=8192,
                      help="at most this many held-out pairs, cut in two halves")
  parser.add_argument("--anchors", type=positive, default=256, help="anchor pairs K (from the second half)")
  parser.add_argument("--groups", type=cli.ints(ge=2), default=(4, 16, 64, 256, 1024),
                      help="comma-separated group sizes G")
  parser.add_argument("--replicates", type=cli.number(int, ge=2), default=10, help="replicates per interval")
  parser.add_argument("--draws", type=positive, default=32, help="companion draws per anchor and replicate")
  parser.add_argument("--seed", type=cli.number(int, ge=0), default=0)
  parser.add_argument("--json", action="store_true", help="one JSON object per G instead of a table")
  parser.add_argument("--out", type=cli.out_file, help="also append the JSON rows to this file")
  args = parser.parse_args(argv)
  start = time.time()
  with cli.blame("--workdir"):
    step, beta, u, v = heldout_embeddings(args.workdir, args.step, args.pairs)
  half = len(u) // 2
  if max(args.groups) > half:
    raise cli.CommandError("--groups", f"G = {max(args.groups)} exceeds half of the {len(u)} held-out pairs")
  if args.anchors > half:
    raise cli.CommandError("--anchors", f"{args.anchors} anchors exceed half of the {len(u)} held-out pairs")
  rng = np.random.default_rng(args.seed)
  measured = gradient_bias(split(u, v, beta, args.anchors, rng), args.groups, rng,
                           replicates=args.replicates, count=args.draws)
  rows = [{"run": args.workdir.name, "step": step} | r for r in measured]
  if args.out:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)
  if args.json:
    print("\n".join(json.dumps(r) for r in rows))
  else:
    print(f"step {step}, beta {beta:.4g}, {rows[0]['pairs']} pairs, {args.anchors} anchors, "
          f"{args.replicates} replicates ({time.time() - start:.0f} s)")
    for r in rows:
      lo, hi = r["rel_bias_ci"]
      clo, chi = r["cosine_ci"]
      plo, phi = r["parallel_ci"]
      print(f"G={r['group_size']:<5d} |bias|/|g| {r['rel_bias']:.4g} [{lo:.4g}, {hi:.4g}]  first order "
            f"{r['predicted_rel_bias']:.4g} (in sample {r['predicted_rel_bias_in_sample']:.4g})  ratio "
            f"{r['ratio_measured_predicted']:.3f}  <bias,g>/|g|^2 {r['parallel']:.4g} [{plo:.4g}, {phi:.4g}] "
            f"(first order {r['predicted_parallel']:.4g})  cos {r['cosine']:.5f} [{clo:.5f}, {chi:.5f}]")
    if len(rows) > 2:
      for name, fit in first_order_fit(rows).items():
        lo, hi = fit["intercept_ci"]
        print(f"{name} = a + b / G over these G: a = {fit['intercept']:.3f} [{lo:.3f}, {hi:.3f}] (1 if the "
              f"first order holds), b = {fit['slope']:.3g}, reduced chi^2 {fit['chi2_reduced']:.3g}")
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
