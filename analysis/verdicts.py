"""Slopes per doubling with one intercept per seed, and verdict sentences that say no more than they show.

A sweep's summary makes many claims at once (every metric, arm and fit level); each is a test, so the
family is corrected together (Holm's step-down, family-wise error at `ALPHA`), and every sentence says
how many runs and seeds it rests on and the adjusted p-value that licensed it. Three kinds of sentence:

  direction    "grows" / "shrinks": the slope differs from 0 (two-sided t test), Holm-adjusted p < ALPHA;
  equivalence  "does not change by more than m": both one-sided tests of |slope| >= m reject (TOST),
               Holm-adjusted, where m is a margin declared before the runs (in the preset), in the
               metric's own unit per doubling, and at least `MIN_SEEDS_EQUIVALENCE` seeds ran;
  nothing      "not shown either way", with the interval; and "no interval (one seed)" for one seed.

numpy and scipy only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis import stats

ALPHA = 0.05
MIN_SEEDS_EQUIVALENCE = 3


def slope_per_doubling(df: pd.DataFrame, metric: str, x: str = "group_size", level: float = 0.95) -> dict:
  """b in metric = a_seed + b log2(x) + noise, fitted by least squares over runs: runs sharing a seed share
  data and initialisation across x (a paired design), so b comes from within-seed differences and the
  residual spread includes whatever differs between runs (evaluation draws included, where each seed
  draws its own). One seed gives no interval."""
  d = df[["seed", x, metric]].dropna()
  seeds = np.unique(d["seed"], return_inverse=True)[1]
  num_seeds = int(seeds.max() + 1) if len(d) else 0
  base = dict(metric=metric, runs=len(d), seeds=num_seeds, x=x, levels=sorted(d[x].unique().tolist()))
  if num_seeds < 2 or d[x].nunique() < 2:
    nan = float("nan")
    slope = nan
    if d[x].nunique() >= 2:  # one seed: the point estimate, no interval
      slope = float(np.polyfit(np.log2(d[x].to_numpy(float)), d[metric].to_numpy(float), 1)[0])
    return base | dict(slope=slope, se=nan, dof=0, ci_low=nan, ci_high=nan, p_value=nan)
  design = np.column_stack([np.eye(num_seeds)[seeds], np.log2(d[x].to_numpy(float))])
  fit = stats.least_squares(design, d[metric].to_numpy(float), level=level)
  slope, se, (lo, hi) = stats.combination(fit, np.eye(design.shape[1])[-1])
  p = float(2 * sps.t.sf(abs(slope / se), fit["dof"])) if se > 0 else float("nan")
  return base | dict(slope=slope, se=se, dof=fit["dof"], ci_low=lo, ci_high=hi, p_value=p)


def equivalence_p(slope: float, se: float, dof: int, margin: float) -> float:
  """TOST p-value of |slope| < margin: the larger of the two one-sided p-values."""
  return float(max(sps.t.sf((slope + margin) / se, dof), sps.t.cdf((slope - margin) / se, dof)))


def holm(p_values: list[float]) -> list[float]:
  """Holm's step-down adjusted p-values (NaN stays NaN and does not count as a test)."""
  p = np.asarray(p_values, float)
  idx = np.flatnonzero(np.isfinite(p))
  out = np.full_like(p, np.nan)
  order = idx[np.argsort(p[idx])]
  m, running = len(order), 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * p[i]))
    out[i] = running
  return out.tolist()


def judge(estimates: list[dict], margins: dict[str, float], unit: str = "per doubling of G") -> list[dict]:
  """Adds `verdict` (a sentence), `claim` (grows | shrinks | equivalent | none | no interval) and the
  Holm-adjusted p-values to each slope estimate of one summary (one family). `margins[metric]` is the
  equivalence margin declared for that metric, in its own unit per doubling; a metric without one is
  never called equivalent. An estimate may carry its own `unit` and `words` (what a positive and a
  negative estimate are called; default "grows", "shrinks"): a difference between arms, for example; and
  its own `margin` (None: never called equivalent), which then replaces `margins[metric]`."""
  tests = []  # (estimate index, kind, p)
  for i, e in enumerate(estimates):
    if e["seeds"] < 2 or not np.isfinite(e["se"]):
      continue
    tests.append((i, "direction", e["p_value"]))
    margin = _margin(e, margins)
    if margin is not None and e["seeds"] >= MIN_SEEDS_EQUIVALENCE:
      tests.append((i, "equivalence", equivalence_p(e["slope"], e["se"], e["dof"], margin)))
  adjusted = holm([p for _, _, p in tests])
  family = len(tests)
  out = [dict(e, p_direction_holm=float("nan"), p_equivalence_holm=float("nan"), tests_in_family=family)
         for e in estimates]
  for (i, kind, _), p in zip(tests, adjusted):
    out[i][f"p_{kind}_holm"] = p
  for e in out:
    e["claim"], e["verdict"] = _sentence(e, _margin(e, margins), e.get("unit", unit), family)
  return out


def _margin(estimate: dict, margins: dict[str, float]) -> float | None:
  return estimate["margin"] if "margin" in estimate else margins.get(estimate["metric"])


def _sentence(e: dict, margin: float | None, unit: str, family: int) -> tuple[str, str]:
  n = f"n = {e['runs']} runs, {e['seeds']} seed{'s' if e['seeds'] != 1 else ''}"
  if e["seeds"] < 2 or not np.isfinite(e["se"]):
    point = f"{e['slope']:+.4f} {unit}, " if np.isfinite(e["slope"]) else ""
    return "no interval", f"{e['metric']}: {point}no interval (one seed), no claim ({n})"
  span = (f"{e['slope']:+.4f} {unit} (95% CI {e['ci_low']:+.4f} to {e['ci_high']:+.4f}; {n}; "
          f"Holm over {family} tests at family-wise {ALPHA:g}")
  if e["p_direction_holm"] < ALPHA:
    word = e.get("words", ("grows", "shrinks"))[0 if e["slope"] > 0 else 1]
    return word, f"{e['metric']} {word}: {span}, adjusted p = {e['p_direction_holm']:.2g})"
  if np.isfinite(e["p_equivalence_holm"]) and e["p_equivalence_holm"] < ALPHA:
    return "equivalent", (f"{e['metric']} does not change by more than the declared margin {margin:g} "
                          f"{unit}: {span}, adjusted equivalence p = {e['p_equivalence_holm']:.2g})")
  why = "" if margin is None else (f"; equivalence within {margin:g} needs {MIN_SEEDS_EQUIVALENCE}+ seeds"
                                    if e["seeds"] < MIN_SEEDS_EQUIVALENCE else f"; not within {margin:g}")
  p = e["p_direction_holm"]
  return "none", f"{e['metric']}: not shown either way: {span}, adjusted p = {p:.2g}{why})"
