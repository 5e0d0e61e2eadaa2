"""False negatives: how often a row's contrastive group holds another image its caption describes truly.

A loss group of G pairs treats the other G - 1 images as negatives of each caption. Where a caption is
true of one of them too ("three shapes"), that negative is false, and larger groups hold more of them,
so "more negatives" and "more false negatives" grow together. A caption describes an image truly when
every fact it names holds there; facts are attribute values present in the scene (any object) and the
scene's object count, a bag of values: an image with a red square and a blue circle satisfies "a red
circle and a blue square". That reading finds at least every false negative a binding reading would,
so the rate it gives is an upper bound.

The pairs of a group are i.i.d. draws of the world's distribution, as in a shuffled pool or the fresh
stream; each world names its facts (`World.claims_and_facts`).
"""

from __future__ import annotations

import math

import numpy as np

_ROWS_PER_CHUNK = 512  # [512, G] float32 products: 128 MiB at G = 65,536


def describes_any_other(claims_GxF: np.ndarray, facts_GxF: np.ndarray) -> np.ndarray:
  """bool [G]: whether caption i is true of some image j != i of its group (claims_i within facts_j)."""
  not_facts_FxG = (~facts_GxF).T.astype(np.float32)
  out = np.zeros(len(claims_GxF), bool)
  for start in range(0, len(claims_GxF), _ROWS_PER_CHUNK):
    rows = slice(start, start + _ROWS_PER_CHUNK)
    true_RxG = claims_GxF[rows].astype(np.float32) @ not_facts_FxG == 0  # no claimed fact missing
    true_RxG[np.arange(true_RxG.shape[0]), np.arange(start, start + true_RxG.shape[0])] = False
    out[rows] = true_RxG.any(axis=1)
  return out


def rate(world, group_size: int, rows: int = 8192, seed: int = 0) -> dict:
  """The false-negative rate at G = group_size over ceil(rows / G) groups drawn from `world`, with a 95%
  Wilson interval that treats rows as independent (rows of one group share negatives: a lower bound on
  the interval's width when groups are few)."""
  if group_size < 2:
    raise ValueError(f"--group-size must be at least 2, got {group_size}")
  groups = max(1, math.ceil(rows / group_size))
  claims, facts = world.claims_and_facts(f"fn-rate/{seed}/{group_size}", groups * group_size)
  G = group_size
  hits = np.concatenate([describes_any_other(claims[g * G:(g + 1) * G], facts[g * G:(g + 1) * G])
                         for g in range(groups)])
  return dict(group_size=group_size, rate=float(hits.mean()), rows=int(hits.size), groups=groups,
              ci95=list(wilson(int(hits.sum()), int(hits.size))))


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
  """The 95% Wilson score interval of a binomial proportion."""
  p = successes / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return max(0.0, centre - half), min(1.0, centre + half)
