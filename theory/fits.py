"""Least-squares fits with honest intervals, shared by the Monte Carlo checks and the sweep analysis."""

from __future__ import annotations

import numpy as np
from scipy import stats


def least_squares(design_nxk: np.ndarray, y: np.ndarray, y_se: np.ndarray | None = None,
                  level: float = 0.95) -> dict:
  """Linear least squares y = X coef, with standard errors and t intervals at `level`.

  y_se=None: ordinary least squares, noise level estimated from the residuals.
  y_se given (Monte Carlo standard errors): weighted least squares; the covariance is inflated by
  the reduced chi^2 when that exceeds 1, so a misspecified model widens the interval instead of
  hiding behind small standard errors.
  """
  y = np.asarray(y, float)
  se = np.ones_like(y) if y_se is None else np.asarray(y_se, float)
  design = np.asarray(design_nxk, float) / se[:, None]
  coef, *_ = np.linalg.lstsq(design, y / se, rcond=None)
  dof = len(y) - design.shape[1]
  rss = float(((design @ coef - y / se)**2).sum())
  scale = rss / dof if y_se is None else max(1.0, rss / dof)
  cov = np.linalg.inv(design.T @ design) * scale
  return {"coef": coef, "cov": cov, "t": float(stats.t.ppf(0.5 + level / 2, dof)), "rss": rss,
          "n": len(y), "chi2_reduced": rss / dof}


def combination(fit: dict, weights_k: np.ndarray) -> tuple[float, float, tuple[float, float]]:
  """Estimate, standard error and interval of the linear combination weights . coef."""
  value = float(weights_k @ fit["coef"])
  se = float(np.sqrt(weights_k @ fit["cov"] @ weights_k))
  return value, se, (value - fit["t"] * se, value + fit["t"] * se)


def line_fit(x: np.ndarray, y: np.ndarray, y_se: np.ndarray | None = None, level: float = 0.95) -> dict:
  """y = a + b x: intercept and slope with standard errors and intervals (see least_squares)."""
  x = np.asarray(x, float)
  fit = least_squares(np.stack([np.ones_like(x), x], axis=1), y, y_se, level)
  out = {"rss": fit["rss"], "n": fit["n"], "chi2_reduced": fit["chi2_reduced"]}
  for name, w in (("intercept", np.array([1.0, 0.0])), ("slope", np.array([0.0, 1.0]))):
    out[name], out[f"{name}_se"], out[f"{name}_ci"] = combination(fit, w)
  return out


def loglog_slope(x: np.ndarray, y: np.ndarray, y_se: np.ndarray, level: float = 0.95) -> dict:
  """Power-law rate: slope of log y against log x (delta-method errors se/y); needs y > 0."""
  y = np.asarray(y, float)
  return line_fit(np.log(x), np.log(y), np.asarray(y_se, float) / y, level)
