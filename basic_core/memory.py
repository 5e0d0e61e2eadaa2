"""What a train step costs in memory, read from XLA's compiled program, and a planner that uses it.

Compiled memory (`memory_analysis()`) is deterministic, unlike process RSS, so it is what the tests and
the planner trust. Nothing here allocates the model: shapes come from `nnx.eval_shape`.

Planner: given a contrastive batch and a per-device memory budget, try remat policies from the least to
the most recomputation and, for each, microbatch sizes from the largest down; among the fitting
(policy, microbatch) pairs keep the one with the fewest FLOPs per step (XLA's cost analysis), ties going
to the larger microbatch. Recomputation costs FLOPs, a smaller microbatch mostly does not, so this picks
the cheapest policy and then the largest microbatch that fit.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
from flax import nnx

from basic_core import accumulate, optim, step as step_lib
from basic_core.configs import REMAT_POLICIES, apply_overrides, validate
from basic_core.models import build_model

# Cheapest first: how much of the forward pass each policy recomputes in the backward pass.
POLICY_ORDER = ("none", "dots_saveable", "dots_with_no_batch_dims_saveable", "full")
assert set(POLICY_ORDER) == set(REMAT_POLICIES)

_UNITS = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_bytes(text: str) -> int:
  """'8GiB' -> 8589934592; '512MB' -> 512000000."""
  m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", text)
  if not m or m.group(2).upper() not in _UNITS:
    raise ValueError(f"cannot read a memory size from {text!r} (e.g. 8GiB, 512MiB, 2GB)")
  return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def abstract_train_state(config):
  """(ModelFns, abstract state, optimizer) without allocating any parameter."""
  model = nnx.eval_shape(lambda: build_model(config.model, config.seed))
  fns, params = step_lib.split_model(model, config)
  tx = optim.make_optimizer(config)
  state = jax.eval_shape(lambda p: step_lib.init_state(p, tx), params)
  return fns, state, tx


def abstract_batch(config, batch_size: int | None = None) -> dict:
  n = batch_size or config.train.batch_size
  size = config.model.image.image_size
  return dict(image=jax.ShapeDtypeStruct((n, size, size, 3), jnp.uint8),
              text=jax.ShapeDtypeStruct((n, config.model.text.context), jnp.int32))


def compile_step(config, mode: str | None = None):
  """The jitted train step of `config`, lowered on abstract inputs and compiled."""
  fns, state, tx = abstract_train_state(config)
  step = step_lib.jit_train_step(step_lib.make_train_step(fns, tx, mode=mode), config=config)
  return step.lower(state, abstract_batch(config)).compile()


def compiled_memory(compiled) -> dict:
  """Bytes XLA reserves for the step; `peak_bytes` = arguments + outputs + temporaries - aliased."""
  m = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  out = dict(temp_bytes=int(m.temp_size_in_bytes), argument_bytes=int(m.argument_size_in_bytes),
             output_bytes=int(m.output_size_in_bytes), alias_bytes=int(m.alias_size_in_bytes),
             flops=float(cost.get("flops", 0.0)))
  out["peak_bytes"] = out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"] - out["alias_bytes"]
  return out


def _flops(lowered) -> float:
  cost = lowered.cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


def step_flops(config, mode: str | None = None) -> float:
  """FLOPs of one train step as executed (recomputation included), from XLA's cost analysis.

  XLA counts the body of a loop once, whatever its trip count, so layers are unrolled
  (`model.scan_layers=False`: the same arithmetic) and the step is counted before compilation. The
  accumulated step loops over its K microbatches, so it is counted as K plain steps of one microbatch
  plus the forward passes of its embedding pass (K - 1 when it keeps the last microbatch's activations):
  exact up to the loss and the optimizer update, which it runs once instead of K times (well under 1%
  of the FLOPs here).
  """
  unrolled = with_overrides(config, model__scan_layers=False)
  default_mode, k = step_lib.step_mode(unrolled)
  if (mode or default_mode) == "accumulate":
    plain = with_overrides(unrolled, train__batch_size=unrolled.train.microbatch_size,
                           train__microbatch_size=0)
    fns, state, _ = abstract_train_state(plain)
    embed = jax.jit(lambda p, b: fns.embed(p, b, None)).lower(state["params"], abstract_batch(plain))
    passes = k - 1 if accumulate.keeps_last_microbatch(k) else k
    return k * step_flops(plain, "naive") + passes * _flops(embed)
  fns, state, tx = abstract_train_state(unrolled)
  step = step_lib.jit_train_step(step_lib.make_train_step(fns, tx, mode=mode))
  return _flops(step.lower(state, abstract_batch(unrolled)))


def with_overrides(config, **values):
  """A copy of `config` with dotted-key overrides, validated."""
  new = config.copy_and_resolve_references()
  apply_overrides(new, [f"{k.replace('__', '.')}={v!r}" for k, v in values.items()])
  validate(new)
  return new


def microbatch_candidates(batch: int, smallest: int = 1) -> list[int]:
  """Divisors of `batch` that are powers of two times an odd part of batch, largest first."""
  out, m = [], batch
  while m >= smallest:
    out.append(m)
    if m % 2:
      break
    m //= 2
  return out


def plan(config, budget_bytes: int, *, smallest_microbatch: int = 1, log=lambda *_: None) -> dict:
  """The cheapest (remat, microbatch) whose compiled step fits `budget_bytes`; raises if none does."""
  batch = config.train.batch_size
  tried, fits = [], []
  for policy in POLICY_ORDER:
    for micro in microbatch_candidates(batch, smallest_microbatch):
      candidate = with_overrides(config, model__remat=policy, train__microbatch_size=micro)
      mem = compiled_memory(compile_step(candidate))
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
  best = min(fits, key=lambda r: (r["flops"], -r["microbatch"]))
  return dict(choice=best, tried=tried)
