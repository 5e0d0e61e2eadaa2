"""Softmax attention over heads with a hand-written backward pass, for XLA:CPU.

Autodiff of `softmax(q k^T * scale + bias) v` contracts the query axis of the probabilities and of
their gradient (`dv = p^T do`, `dk = ds^T q`). XLA:CPU (jaxlib 0.10.2) hands such "transposed left
operand" batched dots to Eigen or to slow YNNPACK layouts, and it fuses the softmax (forward) and its
gradient (backward) into the YNNPACK dot next to them, which then runs the element-wise work inside
the matmul's tiling. `attend`'s backward transposes `p` and `ds` explicitly, behind optimization
barriers (as `models.matmul` does for weight gradients), and keeps the softmax out of the dots.

Its residuals are q, k, v and the probabilities, named `ATTENTION_PROBS` so that the `dots_*` remat
policies of `models.layers` keep them as autodiff's version kept the logits (the same bytes). Other
backends get the same function through autodiff (`reference_attend`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

ATTENTION_PROBS = "attention_probs"
"""`checkpoint_name` of the attention probabilities (the residual of `attend`'s backward pass)."""


def _probs(q_BxHxQxK, k_BxHxLxK, bias, scale):
  logits_BxHxQxL = jnp.einsum("bhqk,bhlk->bhql", q_BxHxQxK, k_BxHxLxK,
                              preferred_element_type=jnp.float32) * scale
  if bias is not None:
    logits_BxHxQxL = logits_BxHxQxL + bias
  return jax.nn.softmax(logits_BxHxQxL, axis=-1).astype(k_BxHxLxK.dtype)


def reference_attend(q_BxHxQxK, k_BxHxLxK, v_BxHxLxK, bias=None, *, scale: float):
  """softmax(q k^T * scale + bias) v, differentiated by autodiff; logits in float32."""
  return jnp.einsum("bhql,bhlk->bhqk", _probs(q_BxHxQxK, k_BxHxLxK, bias, scale), v_BxHxLxK)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _attend(q_BxHxQxK, k_BxHxLxK, v_BxHxLxK, bias, scale):
  return reference_attend(q_BxHxQxK, k_BxHxLxK, v_BxHxLxK, bias, scale=scale)


def _attend_fwd(q_BxHxQxK, k_BxHxLxK, v_BxHxLxK, bias, scale):
  p_BxHxQxL = checkpoint_name(
      jax.lax.optimization_barrier(_probs(q_BxHxQxK, k_BxHxLxK, bias, scale)), ATTENTION_PROBS)
  o_BxHxQxK = jnp.einsum("bhql,bhlk->bhqk", p_BxHxQxL, v_BxHxLxK)
  return o_BxHxQxK, (q_BxHxQxK, k_BxHxLxK, v_BxHxLxK, p_BxHxQxL, bias)


def _attend_bwd(scale, res, do_BxHxQxK):
  q_BxHxQxK, k_BxHxLxK, v_BxHxLxK, p_BxHxQxL, bias = res
  barrier = jax.lax.optimization_barrier
  transpose = lambda x: barrier(jnp.swapaxes(x, -1, -2))
  dp_BxHxQxL = jnp.einsum("bhqk,bhlk->bhql", do_BxHxQxK, v_BxHxLxK, preferred_element_type=jnp.float32)
  p32_BxHxQxL = p_BxHxQxL.astype(jnp.float32)
  dlogits_BxHxQxL = barrier(p32_BxHxQxL * (dp_BxHxQxL - jnp.sum(p32_BxHxQxL * dp_BxHxQxL, -1,
                                                                  keepdims=True)))
  dbias = None
  if bias is not None:  # sum over the axes the bias was broadcast along
    axes = tuple(i for i, n in enumerate(bias.shape) if n == 1 and dlogits_BxHxQxL.shape[i] != 1)
    dbias = jnp.sum(dlogits_BxHxQxL, axes, keepdims=True).astype(bias.dtype)
  ds_BxHxQxL = (dlogits_BxHxQxL * scale).astype(q_BxHxQxK.dtype)
  dq_BxHxQxK = jnp.einsum("bhql,bhlk->bhqk", ds_BxHxQxL, k_BxHxLxK)
  dk_BxHxLxK = jnp.einsum("bhlq,bhqk->bhlk", transpose(ds_BxHxQxL), q_BxHxQxK)
  dv_BxHxLxK = jnp.einsum("bhlq,bhqk->bhlk", transpose(p_BxHxQxL), do_BxHxQxK)
  return dq_BxHxQxK, dk_BxHxLxK, dv_BxHxLxK, dbias


_attend.defvjp(_attend_fwd, _attend_bwd)


def attend(q_BxHxQxK, k_BxHxLxK, v_BxHxLxK, bias=None, *, scale: float):
  """softmax(q k^T * scale + bias) v over [B, H, ., K] heads; `bias` broadcasts to [B, H, Q, L].

  On CPU with the backward pass above; elsewhere `reference_attend`. Values and gradients agree.
  """
  if jax.default_backend() != "cpu":
    return reference_attend(q_BxHxQxK, k_BxHxLxK, v_BxHxLxK, bias, scale=scale)
  return _attend(q_BxHxQxK, k_BxHxLxK, v_BxHxLxK, bias, scale)
