"""How fast can a model's dense matmuls run here? A ceiling for the train step's FLOP/s.

A train step's FLOP/s is reported against the machine's matmul roof (one large square XLA matmul,
`timing.matmul_roof_gflop_per_s`). A transformer's dense layers are thinner than that (K = 256 for
peer-vit), and no step runs faster than its dense matmuls do on their own. This module finds every
dense matmul of the model's forward pass (`dot_general`s with a 2-D right operand, from the traced
program, scan lengths counted), times each shape on its own as the train step runs it (forward
`x @ w`, then the backward pass of `models.matmul`: `dx` and `dw` with its transpose) and reports their
GFLOP/s, so a step's share of the roof can be read against what its matmuls alone reach.

    python -m basic_core.bench roofline --config peer-vit
"""

from __future__ import annotations

import collections
import math
import statistics
import time

import jax

from basic_core import state as state_lib
from basic_core.models.matmul import dense_dot_general
from basic_core.perf import compiled as compiled_lib
from basic_core.perf import timing


def _subjaxprs(eqn):
  for value in eqn.params.values():
    for item in (value if isinstance(value, (tuple, list)) else (value,)):
      if hasattr(item, "eqns"):
        yield item
      elif hasattr(item, "jaxpr") and hasattr(item.jaxpr, "eqns"):
        yield item.jaxpr


def _dense_dots(jaxpr, times: int, found: collections.Counter) -> None:
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      (lhs_contract, rhs_contract), batch = eqn.params["dimension_numbers"]
      lhs, rhs = (v.aval.shape for v in eqn.invars)
      if (len(rhs) == 2 and batch == ((), ()) and tuple(lhs_contract) == (len(lhs) - 1,)
          and tuple(rhs_contract) == (0,)):
        found[(math.prod(lhs[:-1]), rhs[0], rhs[1])] += times
    inner = times * eqn.params.get("length", 1) if eqn.primitive.name == "scan" else times
    for sub in _subjaxprs(eqn):
      _dense_dots(sub, inner, found)


def dense_matmuls(config) -> collections.Counter:
  """{(M rows, I in, O out): count} of the dense matmuls in one forward pass of a training batch."""
  built = state_lib.build(config, abstract=True)
  jaxpr = jax.make_jaxpr(lambda p, b: built.fns.embed(p, b, None))(built.state["params"],
                                                                   compiled_lib.abstract_batch(config))
  found = collections.Counter()
  _dense_dots(jaxpr.jaxpr, 1, found)
  return found


def _median_seconds(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def time_dense(m: int, i: int, o: int, *, repeats: int = 7) -> dict:
  """Seconds of one (M x I) @ (I x O) forward and of its backward pass (dx and dw), each alone."""
  kx, kw, ky = jax.random.split(jax.random.key(0), 3)
  x_MxI, w_IxO = jax.random.normal(kx, (m, i)), jax.random.normal(kw, (i, o))
  dy_MxO = jax.random.normal(ky, (m, o))
  dims = (((1,), (0,)), ((), ()))
  forward = jax.jit(lambda x, w: dense_dot_general(x, w, dims))
  backward = jax.jit(lambda x, w, dy: jax.vjp(lambda x, w: dense_dot_general(x, w, dims), x, w)[1](dy))
  return dict(forward_s=_median_seconds(forward, x_MxI, w_IxO, repeats=repeats),
              backward_s=_median_seconds(backward, x_MxI, w_IxO, dy_MxO, repeats=repeats))


def dense_ceiling(config, *, repeats: int = 7) -> dict:
  """Per shape and overall: training GFLOP/s of the model's dense matmuls, each timed on its own."""
  rows, flops, seconds = [], 0.0, 0.0
  for (m, i, o), count in sorted(dense_matmuls(config).items(), key=lambda kv: -math.prod(kv[0])):
    t = time_dense(m, i, o, repeats=repeats)
    fwd_flops = 2.0 * m * i * o
    rows.append(dict(m=m, i=i, o=o, count=count, forward_gflop_per_s=fwd_flops / t["forward_s"] / 1e9,
                     backward_gflop_per_s=2 * fwd_flops / t["backward_s"] / 1e9))
    flops += 3 * fwd_flops * count
    seconds += (t["forward_s"] + t["backward_s"]) * count
  return dict(shapes=rows, dense_train_flops=flops, dense_gflop_per_s=flops / seconds / 1e9)


def row(config, *, repeats: int = 7) -> dict:
  """The dense ceiling of `config`, the matmul roof, and the dense matmuls' share of the model FLOPs."""
  ceiling = dense_ceiling(config, repeats=repeats)
  return dict(config=config.name, batch=config.train.batch_size,
              matmul_roof_gflop_per_s=timing.matmul_roof_gflop_per_s(),
              dense_share_of_model_flops=ceiling["dense_train_flops"] / compiled_lib.model_flops(config),
              devices=str(jax.devices()[0].device_kind), jax_version=jax.__version__, **ceiling)


def format_table(r: dict) -> str:
  lines = [f"{'M':>7} {'I':>5} {'O':>5} {'count':>5} {'fwd GFLOP/s':>12} {'bwd GFLOP/s':>12}"]
  lines += [f"{s['m']:>7} {s['i']:>5} {s['o']:>5} {s['count']:>5} {s['forward_gflop_per_s']:>12.0f} "
            f"{s['backward_gflop_per_s']:>12.0f}" for s in r["shapes"]]
  roof = r["matmul_roof_gflop_per_s"]
  lines.append(f"dense matmuls (forward + backward, each alone): {r['dense_gflop_per_s']:.0f} GFLOP/s = "
               f"{r['dense_gflop_per_s'] / roof:.0%} of the matmul roof ({roof:.0f} GFLOP/s); they are "
               f"{r['dense_share_of_model_flops']:.0%} of the step's model FLOPs")
  return "\n".join(lines)
