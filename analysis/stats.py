"""Statistics and tables of results: means with t-intervals, least squares with intervals, sweep trends.

numpy, pandas and scipy only (never jax or basic_core), so that redrawing a figure from a CSV, the
theory checks and the sweep analysis share one fitting code without loading the trainer.

Two trend models for a gap g(N), fitted by least squares over all runs (not over means, so the
interval reflects seed noise):
  log-linear: g = a + b * log2(N)      b < 0 (interval below 0) = "the gap shrinks as N doubles"
  theory:     g = a + c / sqrt(N)      the rate of the bound's batch term (theory/README.md)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
  """(mean, lower, upper) of a Student-t interval; a single value has an infinite interval."""
  values = np.asarray(values, float)
  m = float(values.mean())
  if len(values) < 2:
    return m, -np.inf, np.inf
  half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
  return m, m - half, m + half


def paired_ratio(a_S: np.ndarray, b_S: np.ndarray, level: float = 0.95) -> dict:
  """mean(a) / mean(b) over paired samples (one a_s, b_s per seed) with Fieller's interval: the set of
  theta with |mean(a) - theta mean(b)| <= t * se(mean(a) - theta mean(b)), exact for normal means. It is
  bounded only when mean(b) is itself told apart from 0 at `level`; otherwise the ratio is not estimable
  from these samples and the interval is (-inf, inf) (`bounded` False), never a delta-method guess."""
  a_S, b_S = np.asarray(a_S, float), np.asarray(b_S, float)
  n = len(a_S)
  ratio = float(a_S.mean() / b_S.mean()) if b_S.mean() != 0 else float("nan")
  if n < 2:
    return dict(ratio=ratio, ci_low=-np.inf, ci_high=np.inf, bounded=False, n=n)
  cov = np.cov(a_S, b_S, ddof=1) / n
  t2 = stats.t.ppf(0.5 + level / 2, n - 1) ** 2
  ma, mb = a_S.mean(), b_S.mean()
  qa, qb, qc = mb**2 - t2 * cov[1, 1], ma * mb - t2 * cov[0, 1], ma**2 - t2 * cov[0, 0]
  disc = qb**2 - qa * qc
  if qa <= 0 or disc < 0:
    return dict(ratio=ratio, ci_low=-np.inf, ci_high=np.inf, bounded=False, n=n)
  root = np.sqrt(disc)
  return dict(ratio=ratio, ci_low=float((qb - root) / qa), ci_high=float((qb + root) / qa), bounded=True, n=n)


def summarize(df: pd.DataFrame, metrics: list[str], by: tuple[str, ...] = ("batch_size",)) -> pd.DataFrame:
  """One row per group and metric: n, mean, ci_low, ci_high."""
  rows = []
  for keys, group in df.groupby(list(by)):
    keys = keys if isinstance(keys, tuple) else (keys,)
    for metric in metrics:
      m, lo, hi = mean_ci(group[metric].to_numpy())
      rows.append(dict(zip(by, keys), metric=metric, n=len(group), mean=m, ci_low=lo, ci_high=hi))
  return pd.DataFrame(rows)


def least_squares(design_nxk: np.ndarray, y: np.ndarray, y_se: np.ndarray | None = None,
                  level: float = 0.95) -> dict:
  """Linear least squares y = X coef, with standard errors and t intervals at `level`.

  y_se=None: ordinary least squares, noise level estimated from the residuals.
  y_se given (Monte Carlo standard errors): weighted least squares; the covariance is inflated by
  the reduced chi^2 when that exceeds 1, so a misspecified model widens the interval instead of
  hiding behind small standard errors. With no residual degrees of freedom the intervals are NaN.
  """
  y = np.asarray(y, float)
  se = np.ones_like(y) if y_se is None else np.asarray(y_se, float)
  design = np.asarray(design_nxk, float) / se[:, None]
  coef, *_ = np.linalg.lstsq(design, y / se, rcond=None)
  dof = len(y) - design.shape[1]
  rss = float(((design @ coef - y / se)**2).sum())
  chi2_reduced = rss / dof if dof > 0 else np.nan
  scale = chi2_reduced if y_se is None else max(1.0, chi2_reduced)
  cov = np.linalg.inv(design.T @ design) * scale
  return {"coef": coef, "cov": cov, "t": float(stats.t.ppf(0.5 + level / 2, dof)), "dof": dof, "rss": rss,
          "n": len(y), "chi2_reduced": chi2_reduced}


def combination(fit: dict, weights_k: np.ndarray) -> tuple[float, float, tuple[float, float]]:
  """Estimate, standard error and interval of the linear combination weights . coef."""
  value = float(weights_k @ fit["coef"])
  se = float(np.sqrt(weights_k @ fit["cov"] @ weights_k))
  return value, se, (value - fit["t"] * se, value + fit["t"] * se)


def line_fit(x: np.ndarray, y: np.ndarray, y_se: np.ndarray | None = None, level: float = 0.95) -> dict:
  """y = a + b x: intercept and slope with standard errors and intervals (see least_squares)."""
  x = np.asarray(x, float)
  fit = least_squares(np.stack([np.ones_like(x), x], axis=1), y, y_se, level)
  out = {"rss": fit["rss"], "n": fit["n"], "dof": fit["dof"], "chi2_reduced": fit["chi2_reduced"]}
  for name, w in (("intercept", np.array([1.0, 0.0])), ("slope", np.array([0.0, 1.0]))):
    out[name], out[f"{name}_se"], out[f"{name}_ci"] = combination(fit, w)
  return out


def _trend_fit(x: np.ndarray, y: np.ndarray, seed_N: np.ndarray, level: float) -> dict:
  """y = a_seed + b x by least squares, one intercept per seed (runs sharing a seed share data and
  initialisation, so b comes from within-seed differences), in summary.json's keys: the slope with its
  interval and two-sided p-value, R^2 of the fit, and `intercept` = the mean of the seeds' intercepts.

  Too few runs for residual degrees of freedom give NaN p-value and interval instead of an error, so a
  two-point sweep still gets its summary.
  """
  seeds = np.unique(seed_N, return_inverse=True)[1]
  k = int(seeds.max()) + 1
  design = np.column_stack([np.eye(k)[seeds], np.asarray(x, float)])
  with np.errstate(divide="ignore", invalid="ignore"):
    fit = least_squares(design, y, level=level)
    slope, se, (lo, hi) = combination(fit, np.eye(k + 1)[-1])
    intercept = float(fit["coef"][:k].mean())
    t = np.float64(slope) / se
    r2 = 1 - fit["rss"] / np.float64(((y - y.mean())**2).sum())
  return dict(intercept=intercept, slope=slope, slope_ci_low=lo, slope_ci_high=hi,
              p_value=float(2 * stats.t.sf(abs(t), fit["dof"])), r2=float(r2), n=fit["n"], seeds=k)


def trend(df: pd.DataFrame, metric: str, level: float = 0.95) -> dict:
  """Both trend fits of `metric` against batch_size (one intercept per seed), and a one-line verdict on
  the log-linear slope."""
  n = df["batch_size"].to_numpy(float)
  y = df[metric].to_numpy(float)
  seeds = df["seed"].to_numpy() if "seed" in df else np.zeros(len(df))
  log_linear = _trend_fit(np.log2(n), y, seeds, level)
  theory = _trend_fit(1.0 / np.sqrt(n), y, seeds, level)
  if log_linear["slope_ci_high"] < 0:
    verdict = "shrinks with batch size"
  elif log_linear["slope_ci_low"] > 0:
    verdict = "grows with batch size"
  else:
    verdict = "no significant trend"
  return dict(metric=metric, per_doubling=log_linear, inverse_sqrt=theory, verdict=verdict)


def zeroshot_columns(df: pd.DataFrame) -> list[str]:
  """Zero-shot top-1 accuracy columns of a results table (robustness sets carry an '@')."""
  return [c for c in df.columns if c.startswith("zeroshot_") and c.endswith("_top1")]


def add_means(df: pd.DataFrame) -> pd.DataFrame:
  """Mean zero-shot top-1 over the in-distribution tasks and over the robustness sets."""
  cols = [c for c in zeroshot_columns(df) if c not in ("zeroshot_mean_top1", "zeroshot_robustness_mean_top1")]
  robust = [c for c in cols if "@" in c]
  plain = [c for c in cols if "@" not in c]
  df = df.copy()
  if plain:
    df["zeroshot_mean_top1"] = df[plain].mean(axis=1)
  if robust:
    df["zeroshot_robustness_mean_top1"] = df[robust].mean(axis=1)
  return df
