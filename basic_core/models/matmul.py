"""A dense-layer matmul whose weight gradient XLA:CPU can hand to its fast matmul library (YNNPACK).

The weight gradient of `y = x @ w` is `dw = x^T @ dy`, a dot that contracts the leading (row) axis of
both operands. XLA:CPU (jaxlib 0.10.2) hands a dot to YNNPACK only when its left operand is row-major
with the contracted axis last; autodiff's `dw` is not, so it fell back to Eigen, which ran these dots
at ~120 GFLOP/s where YNNPACK runs ~145-170 on the 2-core CI VM. `_matmul`'s backward pass writes the
transpose explicitly, on the narrower of x and dy, behind an optimization barrier so the algebraic
simplifier cannot fold it back into the dot. Measured once (2026-11-23, a throwaway timing script,
not kept; M = 16,640 rows, transposes included): 1024 -> 256 weight gradient 68 -> 49 ms, 256 -> 1024
54 -> 48 ms, 256 -> 768 42 -> 37 ms; whole peer-vit steps, both variants in one process, alternating:
plain batch 256 (remat none) 6.17 -> 5.49 s, accumulated 1024 = 256 x 4 (dots_saveable) 30.3 -> 27.6 s,
same losses. To reproduce, `xla.dense_grad=autodiff` switches back:
`python -m basic_core.bench throughput --config peer-vit --set xla.dense_grad=autodiff`.

Every dot here asks for a float32 result and casts it to the operands' dtype: with bfloat16 operands
XLA:CPU otherwise upcasts them to float32 before the dot, and a bf16 x bf16 -> f32 dot is YNNPACK's bf16
kernel (935 GFLOP/s on a 2048^3 matmul against 456 in float32, Zen 5 VM, 2026-11-26). For float32 it
changes nothing.

A `custom_vjp` hides its dot from remat policies, so the output is named `DENSE_OUTPUT` and the
`dots_*` policies of `models.layers` keep it by name. Other backends get the plain `lax.dot_general`:
GPU and TPU matmul units read transposed operands for free, and the barrier would only block fusion.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

DENSE_OUTPUT = "dense_output"
"""`checkpoint_name` of every dense matmul's output, so remat policies can keep it (`models.layers`)."""


def _dot(a: jax.Array, b: jax.Array) -> jax.Array:
  """a @ b accumulated in float32, returned in a's dtype (for bfloat16, XLA:CPU's fast bf16 dot)."""
  return jnp.dot(a, b, preferred_element_type=jnp.float32).astype(a.dtype)


@jax.custom_vjp
def _matmul(x_NxI: jax.Array, w_IxO: jax.Array) -> jax.Array:
  return _dot(x_NxI, w_IxO)


def _matmul_fwd(x_NxI, w_IxO):
  return _dot(x_NxI, w_IxO), (x_NxI, w_IxO)


def _matmul_bwd(res, dy_NxO):
  x_NxI, w_IxO = res
  barrier = jax.lax.optimization_barrier
  dx_NxI = _dot(dy_NxO, w_IxO.T)
  x_MxI = x_NxI.reshape(-1, x_NxI.shape[-1])
  dy_MxO = dy_NxO.reshape(-1, dy_NxO.shape[-1])
  if x_MxI.shape[1] <= dy_MxO.shape[1]:  # transpose the narrower operand: less to copy
    dw_IxO = _dot(barrier(x_MxI.T), dy_MxO)
  else:
    dw_IxO = barrier(_dot(barrier(dy_MxO.T), x_MxI)).T
  return dx_NxI, dw_IxO.astype(w_IxO.dtype)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def dense_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                      out_sharding=None):
  """`lax.dot_general` for `nnx.Linear`: on CPU, `lhs @ rhs` with the YNNPACK-friendly gradient above."""
  (lhs_contract, rhs_contract), batch = dimension_numbers
  plain = (jax.default_backend() != "cpu" or precision is not None or preferred_element_type is not None
           or out_sharding is not None or batch != ((), ()) or rhs.ndim != 2
           or tuple(lhs_contract) != (lhs.ndim - 1,) or tuple(rhs_contract) != (0,))
  if plain:
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type, out_sharding=out_sharding)
  return checkpoint_name(_matmul(lhs, rhs), DENSE_OUTPUT)
