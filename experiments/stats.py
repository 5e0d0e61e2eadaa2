"""Statistics over seeds: means with 95% t-intervals, and fitted trends of a metric vs batch size.

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


def summarize(df: pd.DataFrame, metrics: list[str], by: tuple[str, ...] = ("batch_size",)) -> pd.DataFrame:
  """One row per group and metric: n, mean, ci_low, ci_high."""
  rows = []
  for keys, group in df.groupby(list(by)):
    keys = keys if isinstance(keys, tuple) else (keys,)
    for metric in metrics:
      m, lo, hi = mean_ci(group[metric].to_numpy())
      rows.append(dict(zip(by, keys), metric=metric, n=len(group), mean=m, ci_low=lo, ci_high=hi))
  return pd.DataFrame(rows)


def _fit(x: np.ndarray, y: np.ndarray, level: float) -> dict:
  fit = stats.linregress(x, y)
  half = stats.t.ppf(0.5 + level / 2, len(x) - 2) * fit.stderr
  return dict(intercept=float(fit.intercept), slope=float(fit.slope), slope_ci_low=float(fit.slope - half),
              slope_ci_high=float(fit.slope + half), p_value=float(fit.pvalue), r2=float(fit.rvalue**2),
              n=int(len(x)))


def trend(df: pd.DataFrame, metric: str, level: float = 0.95) -> dict:
  """Both trend fits of `metric` against batch_size, and a one-line verdict on the log-linear slope."""
  n = df["batch_size"].to_numpy(float)
  y = df[metric].to_numpy(float)
  log_linear = _fit(np.log2(n), y, level)
  theory = _fit(1.0 / np.sqrt(n), y, level)
  if log_linear["slope_ci_high"] < 0:
    verdict = "shrinks with batch size"
  elif log_linear["slope_ci_low"] > 0:
    verdict = "grows with batch size"
  else:
    verdict = "no significant trend"
  return dict(metric=metric, per_doubling=log_linear, inverse_sqrt=theory, verdict=verdict)
