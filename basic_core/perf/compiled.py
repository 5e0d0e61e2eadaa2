"""What a config's train step costs, read from XLA: compiled memory, and FLOPs as executed.

Compiled memory (`memory_analysis()`) is deterministic, unlike process RSS, so it is what the tests and
the planners trust. Nothing is allocated: the state is abstract (`state.build(config, abstract=True)`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from basic_core import accumulate, sharding
from basic_core import state as state_lib
from basic_core import step as step_lib
from basic_core.configs import apply_overrides, microbatching, validate


def with_overrides(config, **values):
  """A copy of `config` with overrides (`train__batch_size=8` sets `train.batch_size`), validated."""
  new = config.copy_and_resolve_references()
  apply_overrides(new, [f"{k.replace('__', '.')}={v!r}" for k, v in values.items()])
  validate(new)
  return new


def abstract_batch(config) -> dict:
  """A training batch of `config` as shapes: [N, S, S, 3] uint8 images, [N, L] int32 tokens."""
  n, size = config.train.batch_size, config.model.image.image_size
  return dict(image=jax.ShapeDtypeStruct((n, size, size, 3), jnp.uint8),
              text=jax.ShapeDtypeStruct((n, config.model.text.context), jnp.int32))


def lower_step(config, mesh: jax.sharding.Mesh | None = None):
  """The jitted train step of `config` (K = N / M microbatches), lowered on abstract inputs.

  With a `mesh` the state and batch are placed as the trainer places them (the config's rules).
  """
  built = state_lib.build(config, abstract=True, mesh=mesh)
  _, k = microbatching(config.train)
  step = step_lib.make_train_step(built.fns, built.tx, config.loss, seed=config.seed, microbatches=k)
  batch_sharding = None if mesh is None else sharding.batch_sharding(mesh)
  jitted = step_lib.jit_train_step(step, built.sharding, batch_sharding, xla=config.xla)
  return jitted.lower(built.state, abstract_batch(config))


def compiled_memory(compiled) -> dict:
  """Bytes XLA reserves for the step; `peak_bytes` = arguments + outputs + temporaries - aliased."""
  m = compiled.memory_analysis()
  out = dict(temp_bytes=int(m.temp_size_in_bytes), argument_bytes=int(m.argument_size_in_bytes),
             output_bytes=int(m.output_size_in_bytes), alias_bytes=int(m.alias_size_in_bytes),
             flops=_flops(compiled))
  out["peak_bytes"] = out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"] - out["alias_bytes"]
  return out


def _flops(lowered_or_compiled) -> float:
  """XLA's FLOP count; NaN where the backend has no cost analysis (then `step_flops` still counts)."""
  cost = lowered_or_compiled.cost_analysis()
  if cost is None:
    return float("nan")
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost).get("flops", 0.0))


def _lowered_for_host():
  """Lowers for the host CPU while tracing for the default backend, so FLOPs can be counted anywhere.

  A PJRT plugin backend (CUDA) has no cost analysis before compilation (`Lowered.cost_analysis()` is
  None there). The program is still traced for the default backend (the model's backend checks read
  `jax.default_backend()`, which the default device does not change), so what is counted is what runs.
  """
  return jax.default_device(jax.local_devices(backend="cpu")[0])


def step_flops(config) -> float:
  """FLOPs of one train step as executed (recomputation included), from XLA's cost analysis.

  XLA counts the body of a loop once, whatever its trip count, so layers are unrolled
  (`model.scan_layers=False`: the same arithmetic) and the step is counted before compilation. The
  accumulated step loops over its K microbatches, so it is counted as K plain steps of one microbatch
  plus the forward passes of its embedding pass (K - 1 when it keeps the last microbatch's activations):
  exact up to the loss and the optimizer update, which it runs once instead of K times (well under 1%
  of the FLOPs here). The program is lowered for the host CPU (`_lowered_for_host`), on any backend.
  """
  with _lowered_for_host():
    return _step_flops(config)


def _step_flops(config) -> float:
  unrolled = with_overrides(config, model__scan_layers=False)
  micro, k = microbatching(unrolled.train)
  if k == 1:
    return _flops(lower_step(unrolled))
  plain = with_overrides(unrolled, train__batch_size=micro, train__microbatch_size=0)
  built = state_lib.build(plain, abstract=True)
  embed = jax.jit(lambda p, b: built.fns.embed(p, b, None)).lower(built.state["params"],
                                                                  abstract_batch(plain))
  passes = k - 1 if accumulate.keeps_last_microbatch(k) else k
  return k * _step_flops(plain) + passes * _flops(embed)


def model_flops(config) -> float:
  """FLOPs of the model's own training arithmetic: the plain step over the whole batch, without remat."""
  return step_flops(with_overrides(config, train__microbatch_size=0, model__remat="none"))
