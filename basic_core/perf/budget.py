"""The remat policy and microbatch under which a config's train step fits a memory budget.

Remat policies are tried from the least to the most recomputation (`REMAT_POLICIES`' order) and, for
each, microbatch sizes from the largest down; among the fitting (policy, microbatch) pairs the one with
the fewest FLOPs per step (XLA's cost analysis) wins, ties going to the larger microbatch. Recomputation
costs FLOPs, a smaller microbatch mostly does not, so this picks the cheapest policy and then the
largest microbatch that fit. Every candidate is compiled (`compiled.lower_step`), nothing is run.

    python -m basic_core.bench memory --config tiny --batch 4096 --memory-budget 256MiB
"""

from __future__ import annotations

import re

from basic_core.models.layers import REMAT_POLICIES
from basic_core.perf import compiled as compiled_lib

_UNITS = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_bytes(text: str) -> int:
  """'8GiB' -> 8589934592; '512MB' -> 512000000."""
  m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", text)
  if not m or m.group(2).upper() not in _UNITS:
    raise ValueError(f"cannot read a memory size from {text!r} (e.g. 8GiB, 512MiB, 2GB)")
  return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def microbatch_candidates(batch: int, smallest: int = 1) -> list[int]:
  """`batch`, then halved while it stays even and >= `smallest`: divisors of `batch`, largest first."""
  out, m = [], batch
  while m >= smallest:
    out.append(m)
    if m % 2:
      break
    m //= 2
  return out


def choose(config, budget_bytes: int, *, smallest_microbatch: int = 1,
           policies: tuple[str, ...] = tuple(REMAT_POLICIES), log=lambda row: None) -> dict:
  """{choice, tried}: the cheapest (remat, microbatch) whose compiled step fits; raises if none does.

  `policies` (a subset of REMAT_POLICIES, in its order) limits the search."""
  batch = config.train.batch_size
  tried, fits = [], []
  for policy in (p for p in REMAT_POLICIES if p in policies):
    for micro in microbatch_candidates(batch, smallest_microbatch):
      candidate = compiled_lib.with_overrides(config, model__remat=policy, train__microbatch_size=micro)
      mem = compiled_lib.compiled_memory(compiled_lib.lower_step(candidate).compile())
      row = dict(remat=policy, microbatch=micro, fits=mem["peak_bytes"] <= budget_bytes, **mem)
      tried.append(row)
      log(row)
      if row["fits"]:
        fits.append(row)
        break
  if not fits:
    smallest = min(tried, key=lambda r: r["peak_bytes"])
    raise ValueError(
        f"nothing fits {budget_bytes / 2**30:.2f} GiB at contrastive batch {batch}: the smallest "
        f"step tried (remat={smallest['remat']}, microbatch={smallest['microbatch']}) needs "
        f"{smallest['peak_bytes'] / 2**30:.2f} GiB")
  return dict(choice=min(fits, key=lambda r: (r["flops"], -r["microbatch"])), tried=tried)


def describe(row: dict) -> str:
  """One tried candidate as a line of text."""
  return (f"  remat={row['remat']:<32} microbatch={row['microbatch']:>6} "
          f"peak={row['peak_bytes'] / 2**20:9.1f} MiB  fits={row['fits']}")


def summary(choice: dict, batch: int, budget_bytes: int) -> str:
  return (f"chose remat={choice['remat']}, microbatch={choice['microbatch']} for contrastive batch "
          f"{batch}: peak {choice['peak_bytes'] / 2**20:.1f} MiB <= budget {budget_bytes / 2**20:.1f} MiB")
