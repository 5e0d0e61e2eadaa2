"""Losses against a straightforward float64 numpy reference: values and gradients, temperature included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from basic_core.losses import contrastive_loss, sigmoid_loss, tiled_contrastive_loss


def _unit(rng, n, d):
  x = rng.normal(size=(n, d))
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _logsumexp(x, axis):
  m = x.max(axis=axis, keepdims=True)
  return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def numpy_reference(img, txt, scale):
  """Loss and closed-form gradients: dL/dlogits = (softmax_rows + softmax_cols) / 2N - I / N."""
  n = img.shape[0]
  sims = img @ txt.T
  logits = scale * sims
  loss = 0.5 * ((_logsumexp(logits, 1) - np.diag(logits)).mean()
                + (_logsumexp(logits, 0) - np.diag(logits)).mean())
  p_rows = np.exp(logits - _logsumexp(logits, 1)[:, None])
  p_cols = np.exp(logits - _logsumexp(logits, 0)[None, :])
  g_logits = 0.5 * (p_rows + p_cols) / n - np.eye(n) / n
  return loss, scale * g_logits @ txt, scale * g_logits.T @ img, np.sum(g_logits * sims)


@pytest.mark.parametrize("n,d,scale", [(8, 4, 1.0), (64, 16, 1 / 0.07), (96, 32, 100.0)])
def test_contrastive_loss_matches_numpy(n, d, scale):
  rng = np.random.default_rng(n)
  img, txt = _unit(rng, n, d), _unit(rng, n, d)
  ref_loss, ref_gi, ref_gt, ref_gs = numpy_reference(img, txt, scale)
  loss, (gi, gt, gs) = jax.value_and_grad(contrastive_loss, argnums=(0, 1, 2))(
      jnp.asarray(img, jnp.float32), jnp.asarray(txt, jnp.float32), jnp.float32(scale))
  np.testing.assert_allclose(loss, ref_loss, rtol=2e-5)
  for got, want in [(gi, ref_gi), (gt, ref_gt)]:
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=5e-6 * np.abs(want).max())
  np.testing.assert_allclose(gs, ref_gs, rtol=1e-3, atol=1e-6)


def test_chance_level_loss_is_log_n():
  """Identical embeddings make every logit equal: both cross-entropies are exactly log N."""
  x = jnp.ones((32, 8)) / jnp.sqrt(8.0)
  np.testing.assert_allclose(contrastive_loss(x, x, jnp.float32(10.0)), np.log(32), rtol=1e-6)


@pytest.mark.parametrize("tile", [1, 8, 32, 64])
def test_tiled_equals_dense(tile):
  rng = np.random.default_rng(0)
  img, txt = (jnp.asarray(_unit(rng, 64, 16), jnp.float32) for _ in range(2))
  scale = jnp.float32(1 / 0.07)
  dense = jax.value_and_grad(contrastive_loss, argnums=(0, 1, 2))(img, txt, scale)
  tiled = jax.value_and_grad(lambda i, t, s: tiled_contrastive_loss(i, t, s, tile), argnums=(0, 1, 2))(
      img, txt, scale)
  np.testing.assert_allclose(tiled[0], dense[0], rtol=1e-6)
  for got, want in zip(tiled[1], dense[1]):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_tiled_memory_grows_with_tile_not_n_squared():
  """Compiled temp memory of the tiled gradient stays far below the N x N logits of the dense one."""
  n, d, tile = 2048, 32, 128
  args = (jnp.zeros((n, d)), jnp.zeros((n, d)), jnp.float32(10.0))

  def temp(fn):
    grad = jax.jit(jax.grad(fn, argnums=(0, 1, 2)))
    return grad.lower(*args).compile().memory_analysis().temp_size_in_bytes

  dense = temp(contrastive_loss)
  tiled = temp(lambda i, t, s: tiled_contrastive_loss(i, t, s, tile))
  assert dense >= 4 * n * n  # at least one float32 N x N matrix
  assert tiled < 8 * 4 * n * tile + 16 * 4 * n * d, (tiled, dense)


def _on_mesh(fn, shape, *args):
  """jit(fn) with the [N, D] arguments split over the data axis of a data x model mesh."""
  mesh = Mesh(np.asarray(jax.devices()[: shape[0] * shape[1]]).reshape(shape), ("data", "model"),
              axis_types=(AxisType.Auto, AxisType.Auto))
  rows = NamedSharding(mesh, P("data"))

  def under_mesh(*a):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return fn(*a)

  return jax.jit(under_mesh, in_shardings=(rows, rows, None)), mesh


@pytest.mark.parametrize("shape,tile", [((8, 1), 64), ((4, 2), 32), ((2, 4), 256)])
def test_tiled_loss_on_a_data_mesh_equals_one_device(shape, tile):
  """Global negatives: each device's rows against all columns; value and gradients as on one device."""
  rng = np.random.default_rng(1)
  n, d, scale = 256, 16, 1 / 0.07
  img, txt = _unit(rng, n, d), _unit(rng, n, d)
  ref_loss, *ref_grads = numpy_reference(img, txt, scale)
  fn = jax.value_and_grad(lambda i, t, s: tiled_contrastive_loss(i, t, s, tile), argnums=(0, 1, 2))
  step, _ = _on_mesh(fn, shape)
  loss, grads = step(jnp.asarray(img, jnp.float32), jnp.asarray(txt, jnp.float32), jnp.float32(scale))
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  for got, want in zip(grads, ref_grads):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)
  assert grads[0].sharding.spec[0] == "data"  # the image gradients stay split over the devices


def test_tiled_loss_on_8_devices_holds_no_n_by_n():
  """N = 65,536 on 8 simulated devices (compiled, not run): the dense N x N logits would be 16 GiB;
  each device holds its rows' blocks (3 x N x tile / 8 floats) and a few [N, D] arrays."""
  n, d, tile, devices = 65536, 64, 1024, 8
  fn = jax.grad(lambda i, t, s: tiled_contrastive_loss(i, t, s, tile), argnums=(0, 1, 2))
  step, _ = _on_mesh(fn, (devices, 1))
  args = (jax.ShapeDtypeStruct((n, d), jnp.float32),) * 2 + (jax.ShapeDtypeStruct((), jnp.float32),)
  temp = step.lower(*args).compile().memory_analysis().temp_size_in_bytes
  assert temp < 3 * 4 * n * tile / devices + 6 * 4 * n * d, temp / 2**20  # measured 128 of 192 MiB
  assert temp < 4 * n * n / devices / 10


@pytest.mark.parametrize("tile", [0, 16])
def test_sigmoid_loss_matches_numpy(tile):
  rng = np.random.default_rng(1)
  img, txt = _unit(rng, 32, 8), _unit(rng, 32, 8)
  scale, bias = 10.0, -10.0
  logits = scale * img @ txt.T + bias
  labels = 2 * np.eye(32) - 1
  ref = np.sum(np.log1p(np.exp(-labels * logits))) / 32
  got = sigmoid_loss(jnp.asarray(img, jnp.float32), jnp.asarray(txt, jnp.float32), scale, bias, tile)
  np.testing.assert_allclose(got, ref, rtol=1e-5)
  g_dense = jax.grad(sigmoid_loss, argnums=(0, 1, 2, 3))(
      jnp.asarray(img, jnp.float32), jnp.asarray(txt, jnp.float32), jnp.float32(scale), jnp.float32(bias))
  g_tiled = jax.grad(lambda *a: sigmoid_loss(*a, tile=16), argnums=(0, 1, 2, 3))(
      jnp.asarray(img, jnp.float32), jnp.asarray(txt, jnp.float32), jnp.float32(scale), jnp.float32(bias))
  for a, b in zip(g_dense, g_tiled):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def numpy_grouped(img, txt, scale, g):
  """Mean over consecutive groups of g pairs of the whole-batch numpy reference, and its gradients."""
  parts = [numpy_reference(img[i:i + g], txt[i:i + g], scale) for i in range(0, len(img), g)]
  k = len(parts)
  loss = sum(p[0] for p in parts) / k
  d_img = np.concatenate([p[1] for p in parts]) / k
  d_txt = np.concatenate([p[2] for p in parts]) / k
  return loss, d_img, d_txt, sum(p[3] for p in parts) / k


@pytest.mark.parametrize("g", [2, 8, 32, 64])
def test_grouped_loss_is_the_mean_of_per_group_losses(g):
  """G - 1 negatives per positive: value and gradients against an independent float64 reference; with
  G = N it is the whole-batch loss, and the tiled loss groups the same way."""
  rng = np.random.default_rng(g)
  img, txt, scale = _unit(rng, 64, 16), _unit(rng, 64, 16), 1 / 0.07
  ref = numpy_grouped(img, txt, scale, g)
  args = (jnp.asarray(img, jnp.float32), jnp.asarray(txt, jnp.float32), jnp.float32(scale))
  for fn in (lambda i, t, s: contrastive_loss(i, t, s, group_size=g),
             lambda i, t, s: tiled_contrastive_loss(i, t, s, 4, group_size=g)):
    loss, grads = jax.value_and_grad(fn, argnums=(0, 1, 2))(*args)
    np.testing.assert_allclose(loss, ref[0], rtol=2e-5)
    for got, want in zip(grads, ref[1:]):
      np.testing.assert_allclose(got, want, rtol=1e-3, atol=5e-6 * np.abs(want).max())
  if g == 64:
    np.testing.assert_allclose(contrastive_loss(*args, group_size=g), contrastive_loss(*args), rtol=1e-7)
  else:
    assert abs(float(contrastive_loss(*args, group_size=g) - contrastive_loss(*args))) > 1e-3


def test_grouped_sigmoid_loss_counts_only_pairs_inside_groups():
  rng = np.random.default_rng(2)
  img, txt = _unit(rng, 32, 8), _unit(rng, 32, 8)
  logits = 10.0 * img @ txt.T - 10.0
  inside = np.kron(np.eye(4), np.ones((8, 8))).astype(bool)  # 4 groups of 8
  labels = 2 * np.eye(32) - 1
  ref = np.sum(np.log1p(np.exp(-labels * logits))[inside]) / 32
  for tile in (0, 4):
    got = sigmoid_loss(jnp.asarray(img, jnp.float32), jnp.asarray(txt, jnp.float32), 10.0, -10.0, tile,
                       group_size=8)
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_a_group_size_that_does_not_divide_the_batch_is_refused():
  x = jnp.ones((12, 4))
  with pytest.raises(ValueError, match="not divisible by loss group size 5"):
    contrastive_loss(x, x, jnp.float32(1.0), group_size=5)
