"""Attention with the hand-written backward pass: autodiff's values and gradients, kept by remat."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from basic_core.models.attend import ATTENTION_PROBS, attend, reference_attend
from basic_core.models.layers import REMAT_POLICIES

B, H, Q, L, K = 3, 2, 5, 7, 8


def qkv(q_len=Q):
  kq, kk, kv = jax.random.split(jax.random.key(0), 3)
  return (jax.random.normal(kq, (B, H, q_len, K)), jax.random.normal(kk, (B, H, L, K)),
          jax.random.normal(kv, (B, H, L, K)))


def causal_bias():
  rows_Q = jnp.arange(L - Q, L)  # the last Q positions, as a pruned last block asks for
  future_QxL = jnp.arange(L)[None] > rows_Q[:, None]
  return jnp.broadcast_to(jnp.where(future_QxL, jnp.finfo(jnp.float32).min, 0.0), (B, 1, Q, L))


def value_and_grads(fn, *args):
  weights = jax.random.normal(jax.random.key(9), (B, H, Q, K))
  loss = lambda *a: jnp.sum(jnp.sin(fn(*a, scale=K ** -0.5)) * weights)
  return jax.jit(jax.value_and_grad(loss, argnums=tuple(range(len(args)))))(*args)


@pytest.mark.parametrize("bias", ["none", "learned", "causal"])
def test_values_and_gradients_match_autodiff(bias):
  """`bias` as ViT (none), CoAtNet (a learned per-head table, broadcast over the batch) and text use it."""
  extra = {"none": (), "learned": (jax.random.normal(jax.random.key(5), (1, H, Q, L)),),
           "causal": (causal_bias(),)}[bias]
  (v, grads), (v_ref, grads_ref) = (value_and_grads(f, *qkv(), *extra) for f in (attend,
                                                                                 reference_attend))
  np.testing.assert_allclose(v, v_ref, rtol=1e-5)
  for g, g_ref in zip(grads[:3], grads_ref[:3]):  # the causal mask's "gradient" is not compared
    np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-5)
  if bias == "learned":
    np.testing.assert_allclose(grads[3], grads_ref[3], rtol=1e-4, atol=1e-5)
    assert grads[3].shape == (1, H, Q, L)


def dots_left_to_eigen(fn) -> int:
  """Dots not inside a YNNPACK fusion in the compiled gradient of attention (XLA:CPU)."""
  q, k, v = (jnp.ones((16, 4, 65, 64)) for _ in range(3))
  grad = jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v, scale=0.125) ** 2), argnums=(0, 1, 2)))
  text = grad.lower(q, k, v).compile().as_text()
  return sum(" dot(" in line for line in text[text.index("ENTRY"):].splitlines())


def test_backward_leaves_no_dot_to_eigen():
  """The point of the module: autodiff's `dk = ds^T q` goes to Eigen on the pinned jaxlib, ours does not."""
  assert dots_left_to_eigen(reference_attend) >= 1
  assert dots_left_to_eigen(attend) == 0


def test_dots_saveable_keeps_the_probabilities(capsys):
  def saved(policy: str) -> str:
    f = jax.checkpoint(lambda q, k, v: jnp.sum(jnp.tanh(attend(q, k, v, scale=0.3))),
                       policy=REMAT_POLICIES[policy])
    jax.ad_checkpoint.print_saved_residuals(f, *qkv())
    return capsys.readouterr().out

  assert any(ATTENTION_PROBS in line and f"[{B},{H},{Q},{L}]" in line
             for line in saved("dots_saveable").splitlines())
  assert ATTENTION_PROBS not in saved("full")
