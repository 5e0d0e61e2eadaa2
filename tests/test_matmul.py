"""The dense matmul with the YNNPACK-friendly weight gradient: same values, fast dots, kept by remat."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from basic_core.models.layers import REMAT_POLICIES, Options, linear
from basic_core.models.matmul import DENSE_OUTPUT, dense_dot_general

DIMS = (((2,), (0,)), ((), ()))  # nnx.Linear's contraction for B x L x I inputs


def dense(dot_general, x_BxLxI, w_IxO):
  return dot_general(x_BxLxI, w_IxO, DIMS)


def loss(dot_general, x_BxLxI, w_IxO):
  return jnp.sum(jnp.sin(dense(dot_general, x_BxLxI, w_IxO)))


@pytest.mark.parametrize("d_in,d_out", [(16, 48), (48, 16), (32, 32)])  # transposes x, dy, x
def test_values_and_gradients_match_lax(d_in, d_out):
  kx, kw = jax.random.split(jax.random.key(0))
  x_BxLxI = jax.random.normal(kx, (3, 20, d_in))
  w_IxO = jax.random.normal(kw, (d_in, d_out)) / np.sqrt(d_in)
  ours = jax.jit(jax.value_and_grad(lambda x, w: loss(dense_dot_general, x, w), argnums=(0, 1)))
  ref = jax.jit(jax.value_and_grad(lambda x, w: loss(jax.lax.dot_general, x, w), argnums=(0, 1)))
  (v, (dx, dw)), (v_ref, (dx_ref, dw_ref)) = ours(x_BxLxI, w_IxO), ref(x_BxLxI, w_IxO)
  np.testing.assert_allclose(v, v_ref, rtol=1e-5)
  np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(dw, dw_ref, rtol=1e-4, atol=1e-5)
  assert dw.shape == w_IxO.shape and dw.dtype == w_IxO.dtype


def unfused_dots(dot_general, d_in, d_out) -> int:
  """Dots left to Eigen (not inside a YNNPACK fusion) in the compiled gradient of one dense layer."""
  x = jnp.ones((8, 64, d_in))
  w = jnp.ones((d_in, d_out))
  grad = jax.jit(jax.grad(lambda x, w: loss(dot_general, x, w), argnums=1))
  text = grad.lower(x, w).compile().as_text()
  entry = text[text.index("ENTRY"):]
  return sum(" dot(" in line for line in entry.splitlines())


@pytest.mark.parametrize("d_in,d_out", [(64, 256), (256, 64)])
def test_weight_gradient_leaves_no_dot_to_eigen(d_in, d_out):
  """The point of the module: XLA:CPU (the pinned jaxlib) sends autodiff's dW to Eigen, ours to YNNPACK."""
  assert unfused_dots(jax.lax.dot_general, d_in, d_out) >= 1
  assert unfused_dots(dense_dot_general, d_in, d_out) == 0


def test_dots_saveable_keeps_the_dense_output(capsys):
  """Remat's `dots_saveable` must still see the matmul inside the custom VJP (via its name)."""
  x_BxLxI, w_IxO = jnp.ones((2, 5, 8)), jnp.ones((8, 12))

  def saved(policy: str) -> str:
    f = jax.checkpoint(lambda x, w: jnp.sum(jnp.tanh(dense(dense_dot_general, x, w))),
                       policy=REMAT_POLICIES[policy])
    jax.ad_checkpoint.print_saved_residuals(f, x_BxLxI, w_IxO)
    return capsys.readouterr().out

  assert any(DENSE_OUTPUT in line and "[2,5,12]" in line for line in saved("dots_saveable").splitlines())
  assert DENSE_OUTPUT not in saved("full")


def test_config_switch_picks_the_dot_general():
  """`xla.dense_grad=autodiff` restores the plain `lax.dot_general` (for A/B runs of the two)."""
  rngs = nnx.Rngs(0)
  assert linear(4, 8, Options(), rngs).dot_general is dense_dot_general
  assert linear(4, 8, Options(dense_grad="autodiff"), rngs).dot_general is jax.lax.dot_general




def bf16_dots(text: str) -> int:
  """Dots in compiled HLO `text` whose two operands are both bfloat16."""
  types = dict(re.findall(r"(%[\w.-]+) = (\w+)\[", text))
  dots = re.findall(r" dot\((%[\w.-]+), (%[\w.-]+)\)", text)
  return sum(types[a] == types[b] == "bf16" for a, b in dots)


def test_bfloat16_dots_take_bfloat16_operands():
  """XLA:CPU upcasts a bf16 x bf16 -> bf16 dot to float32 operands; asking for a float32 result keeps
  bf16 operands, YNNPACK's bf16 kernel (2.0x the float32 matmul roof on the Zen 5 VM)."""
  x, w = jnp.ones((8, 64, 256), jnp.bfloat16), jnp.ones((256, 512), jnp.bfloat16)
  loss = lambda dot_general: lambda x, w: jnp.sum(dense(dot_general, x, w).astype(jnp.float32) ** 2)
  grad = lambda dot_general: jax.jit(jax.grad(loss(dot_general), argnums=(0, 1)))
  assert bf16_dots(grad(jax.lax.dot_general).lower(x, w).compile().as_text()) == 0
  assert bf16_dots(grad(dense_dot_general).lower(x, w).compile().as_text()) >= 2  # dx and dw
  y = jax.jit(lambda x, w: dense(dense_dot_general, x, w))(x, w)
  assert y.dtype == jnp.bfloat16 and float(y[0, 0, 0]) == 256.0
