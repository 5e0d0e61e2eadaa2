"""BASIC accumulation == full-batch gradient, on toy towers with per-example dropout (fast, exact)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from basic_core import accumulate
from basic_core.losses import contrastive_loss, make_loss_fn


def _toy_params(key, d_in=12, width=32, d=8, vocab=50):
  k = jax.random.split(key, 4)
  return dict(
      image=dict(w1=jax.random.normal(k[0], (d_in, width)) / 3, w2=jax.random.normal(k[1], (width, d)) / 5),
      text=dict(emb=jax.random.normal(k[2], (vocab, width)), w=jax.random.normal(k[3], (width, d)) / 5),
      log_scale=jnp.log(1 / 0.07),
  )


def _dropout(x_BxW, keys_B, rate=0.3):
  keep = jax.vmap(lambda k: jax.random.bernoulli(k, 1 - rate, x_BxW.shape[1:]))(keys_B)
  return jnp.where(keep, x_BxW / (1 - rate), 0.0)


def _embed(params, batch, keys):
  h = _dropout(jnp.tanh(batch["image"] @ params["image"]["w1"]), keys)
  img = h @ params["image"]["w2"]
  text_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, 1)
  t = _dropout(params["text"]["emb"][batch["text"]].mean(axis=1), text_keys)
  txt = t @ params["text"]["w"]
  norm = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
  return norm(img), norm(txt)


def _head_loss(img, txt, params):
  return contrastive_loss(img, txt, jnp.exp(params["log_scale"]))


def _batch(n=64, seed=0):
  rng = np.random.default_rng(seed)
  return dict(image=jnp.asarray(rng.normal(size=(n, 12)), jnp.float32),
              text=jnp.asarray(rng.integers(0, 50, size=(n, 5)), jnp.int32))


def _max_rel_err(a, b):
  return max(float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(y)) + 1e-30))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("k,group", [(1, 0), (2, 0), (4, 0), (8, 0), (64, 0), (4, 8), (8, 16)])
def test_accumulated_equals_full_batch_with_dropout(k, group):
  """Also with grouped negatives (loss.group_size): the loss still runs once on the cached embeddings,
  in the original example order, so the groups are the same consecutive pairs as in the naive step."""
  params, batch, key = _toy_params(jax.random.key(0)), _batch(), jax.random.key(7)
  head_loss = lambda img, txt, p: contrastive_loss(img, txt, jnp.exp(p["log_scale"]), group_size=group)
  loss_ref, grads_ref = jax.jit(
      lambda p: accumulate.naive_value_and_grad(_embed, head_loss, p, batch, key))(params)
  loss, grads = jax.jit(lambda p: accumulate.accumulated_value_and_grad(
      _embed, head_loss, p, batch, key, k))(params)
  np.testing.assert_allclose(loss, loss_ref, rtol=1e-6)
  assert _max_rel_err(grads, grads_ref) <= 1e-5
  # The temperature gradient is counted once, not K times (OpenCLIP's accumulation multiplies it by K).
  np.testing.assert_allclose(grads["log_scale"], grads_ref["log_scale"], rtol=1e-5)
  assert abs(float(grads_ref["log_scale"])) > 1e-3


def test_dropout_is_really_on():
  """Guard for the test above: another step key changes the loss, so masks were applied."""
  params, batch = _toy_params(jax.random.key(0)), _batch()
  a = accumulate.naive_value_and_grad(_embed, _head_loss, params, batch, jax.random.key(1))[0]
  b = accumulate.naive_value_and_grad(_embed, _head_loss, params, batch, jax.random.key(2))[0]
  assert abs(float(a - b)) > 1e-4


def test_microbatches_are_strided():
  x = jnp.arange(12)
  micro = [accumulate.microbatch(x, 3, j) for j in range(3)]
  np.testing.assert_array_equal(micro, [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]])
  np.testing.assert_array_equal(jax.jit(accumulate.microbatch, static_argnums=1)(x, 3, 2), micro[2])


def test_per_microbatch_averaging_is_not_exact():
  """The generic accumulation BASIC replaces really differs: it shrinks the contrastive batch to M."""
  params, batch, key = _toy_params(jax.random.key(0)), _batch(), jax.random.key(7)
  _, grads_ref = accumulate.naive_value_and_grad(_embed, _head_loss, params, batch, key)
  per_micro = [accumulate.naive_value_and_grad(_embed, _head_loss, params,
                                               accumulate.microbatch(batch, 4, i), key)[1]
               for i in range(4)]
  averaged = jax.tree.map(lambda *g: sum(g) / 4, *per_micro)
  assert _max_rel_err(averaged, grads_ref) > 1e-2


def test_real_model_accumulation_is_exact_with_dropout():
  """The trainer's own step functions on the tiny two-tower model, dropout on, K = 4 vs naive."""
  from basic_core import state as state_lib
  from basic_core.configs import get_config
  from basic_core.perf.timing import random_batch

  config = get_config("tiny", ["model.dropout=0.2", "model.image.vit.patch=8", "train.batch_size=32",
                               "train.microbatch_size=8"])
  built = state_lib.build(config)
  fns, params = built.fns, built.state["params"]
  head_loss = fns.head_loss(make_loss_fn(config.loss))
  batch = jax.tree.map(jnp.asarray, random_batch(config, 32))
  key = jax.random.key(3)
  naive = jax.jit(lambda p, key: accumulate.naive_value_and_grad(fns.embed, head_loss, p, batch, key))
  ref = naive(params, key)
  acc = jax.jit(lambda p: accumulate.accumulated_value_and_grad(fns.embed, head_loss, p, batch, key, 4))(
      params)
  np.testing.assert_allclose(acc[0], ref[0], rtol=1e-6)
  assert _max_rel_err(acc[1], ref[1]) <= 1e-5
  off = naive(params, jax.random.key(4))
  assert abs(float(off[0] - ref[0])) > 1e-5  # dropout really changes the loss
