"""Which rate does a measured generalization gap follow in the batch size: 1/sqrt(N) or 1/N?

Theorem 1 has a term ~ 1/sqrt(N) (an artifact of its proof, not a predicted rate), while for a
fixed model the objective's batch-size bias is ~ 1/N (Proposition 1; bias, not overfitting).
`evaluate_sweep` fits both gap = a + b / sqrt(N) and gap = a + b / N to a sweep's results.csv (one
row per run) by least squares and says which one the data supports. It reads only the CSV: theory
stands beside the trainer and does not import basic_core.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.stats import combination, least_squares

RATES = {"inv_sqrt": 0.5, "inv": 1.0}  # gap = a + b N^-p


def gap_columns(df: pd.DataFrame) -> list[str]:
  """Numeric columns whose name contains 'gap' (e.g. gap_fixed_eval, gap_acc)."""
  return [c for c in df.columns if "gap" in c.lower() and pd.api.types.is_numeric_dtype(df[c])]


def _design(batch_size: np.ndarray, seed: np.ndarray | None, p: float) -> np.ndarray:
  """Columns: one intercept per seed (or a single one), then N^-p."""
  groups = np.zeros(len(batch_size), int) if seed is None else np.unique(seed, return_inverse=True)[1]
  return np.column_stack([np.eye(groups.max() + 1)[groups], batch_size**-p])


def exponent_profile(batch_size: np.ndarray, gap: np.ndarray, seed: np.ndarray | None,
                     level: float = 0.95) -> tuple[float, tuple[float, float]]:
  """Best p in gap = a + b N^-p on a grid over [0.05, 3], with a profile-likelihood interval.

  The interval holds every p whose residual sum of squares is within the F-test cut of the best.
  An end at 0.05 or 3 means the data do not bound the rate on that side.
  """
  grid = np.linspace(0.05, 3.0, 296)
  rss = np.array([least_squares(_design(batch_size, seed, p), gap)["rss"] for p in grid])
  dof = len(gap) - _design(batch_size, seed, 1.0).shape[1] - 1
  inside = grid[rss <= rss.min() * (1 + stats.f.ppf(level, 1, dof) / dof)]
  return float(grid[rss.argmin()]), (float(inside.min()), float(inside.max()))


def use_seed_effects(batch_size: np.ndarray, seed: np.ndarray) -> bool:
  """Per-seed intercepts pay off only if every seed was run at two or more batch sizes."""
  return all(len(np.unique(batch_size[seed == s])) >= 2 for s in np.unique(seed))


def fit_rates(batch_size: np.ndarray, gap: np.ndarray, seed: np.ndarray | None = None,
              level: float = 0.95) -> dict:
  """Fit gap = a + b N^-p for p = 1/2 and p = 1; Akaike weights decide (same parameter count).

  With `seed`, runs sharing a seed (same data and initialisation across N: a paired design) get
  their own intercept, which removes between-seed variance from b; a is then the mean intercept.
  supported: the rate with Akaike weight >= 0.9 (delta AIC >= 4.4); 'either' when neither is;
  'none' when neither fit's b differs from 0 at `level` (no detectable batch-size effect).
  """
  n, gap = np.asarray(batch_size, float), np.asarray(gap, float)
  out, aic = {}, {}
  for name, p in RATES.items():
    design = _design(n, seed, p)
    f = least_squares(design, gap, level=level)
    k = design.shape[1]
    aic[name] = f["n"] * np.log(f["rss"] / f["n"]) + 2 * k
    mean_intercept = np.r_[np.full(k - 1, 1.0 / (k - 1)), 0.0]
    for coef, w in (("a", mean_intercept), ("b", np.eye(k)[-1])):
      out[f"{name}_{coef}"], _, out[f"{name}_{coef}_ci"] = combination(f, w)
    out[f"{name}_rss"] = f["rss"]
  best = min(aic, key=aic.get)
  weights = {k: 1 / sum(np.exp(-(a - aic[k]) / 2) for a in aic.values()) for k in aic}
  significant = any(lo > 0 or hi < 0 for lo, hi in (out[f"{k}_b_ci"] for k in RATES))
  p_hat, p_ci = exponent_profile(n, gap, seed, level)
  supported = ("none" if not significant else best if weights[best] >= 0.9 else "either")
  return out | {f"{k}_akaike_weight": float(w) for k, w in weights.items()} | {
      "exponent": p_hat, "exponent_ci": p_ci, "supported": supported, "n_runs": len(n),
      "n_batch_sizes": len(np.unique(n)), "seed_effects": seed is not None}


def fit_column(df: pd.DataFrame, col: str, level: float = 0.95) -> dict:
  """fit_rates on one gap column of a results table, or why it cannot be fitted."""
  d = df[["batch_size", "seed", col]].dropna()
  n, seed = d["batch_size"].to_numpy(float), d["seed"].to_numpy()
  if len(np.unique(n)) < 3:  # two parameters per rate: fewer batch sizes cannot tell rates apart
    return {"supported": "too few batch sizes", "n_runs": len(n), "n_batch_sizes": len(np.unique(n))}
  return fit_rates(n, d[col].to_numpy(), seed if use_seed_effects(n, seed) else None, level)


def evaluate_sweep(results_csv_path: str, by: tuple[str, ...] = (), level: float = 0.95) -> pd.DataFrame:
  """One row per gap column (and per group of the `by` columns, e.g. model size or m): both fits.

  Needs columns batch_size and seed; every numeric column whose name contains 'gap' is fitted.
  Seeds run at two or more batch sizes get their own intercept (see fit_rates).
  """
  df = pd.read_csv(results_csv_path)
  missing = {"batch_size", "seed"} - set(df.columns)
  if missing:
    raise ValueError(f"{results_csv_path} lacks columns {sorted(missing)}")
  rows = []
  for key, group in split_by(df, by):
    rows += [key | {"column": col} | fit_column(group, col, level) for col in gap_columns(group)]
  return pd.DataFrame(rows)


def split_by(df: pd.DataFrame, by: tuple[str, ...]) -> list[tuple[dict, pd.DataFrame]]:
  """(values of the `by` columns, rows with them) per group; the whole table when `by` is empty."""
  if not by:
    return [({}, df)]
  return [(dict(zip(by, np.atleast_1d(key))), g) for key, g in df.groupby(list(by))]


def simulate_sweep_csv(path: str, rng: np.random.Generator, exponent: float,
                       batch_sizes: tuple[int, ...] = (64, 256, 1024, 4096, 16384),
                       seeds: int = 5, a: float = 0.05, effect: float = 0.2,
                       noise_sd: float = 0.01) -> pd.DataFrame:
  """Write a results.csv-shaped file from gap = a + b N^-exponent + Gaussian noise, where b is set
  so that the excess gap at the smallest batch size is `effect`.

  For self-tests and for planning: how many seeds and batch sizes a sweep needs before
  evaluate_sweep can tell the two rates apart at a given noise level.
  """
  n = np.repeat(np.asarray(batch_sizes), seeds)
  b = effect * min(batch_sizes)**exponent
  df = pd.DataFrame({"batch_size": n, "seed": np.tile(np.arange(seeds), len(batch_sizes)),
                     "gap_fixed_eval": a + b * n**-exponent + noise_sd * rng.normal(size=len(n)),
                     "final_loss": rng.normal(size=len(n))})
  df.to_csv(path, index=False)
  return df
