"""Contrastive losses on embeddings: softmax (CLIP/ALIGN/BASIC), tiled softmax, and sigmoid (SigLIP).

Losses take arrays, never models. All arithmetic is float32 whatever the towers' compute dtype.

The tiled softmax loss exists because at BASIC's contrastive batch of 65,536 the N x N float32 logit
matrix alone is 16 GiB. It streams row blocks of `tile` rows: the image-to-text log-sum-exp of a row
needs only its block, the text-to-image log-sum-exp of a column is accumulated across blocks with the
usual running-max trick, and a custom VJP recomputes each block's logits in the backward pass. Peak
memory is O(N * tile), results equal the dense loss to float32 rounding. Under a mesh that splits the
batch over P devices, each device streams its own N / P rows against the gathered [N, D] text
embeddings (`jax.shard_map`): the negatives stay global, the column statistics are combined across
devices once, and no device holds more than a [tile / P, N] block (tests/test_losses.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from basic_core.models.layers import ACTIVATION_RULES


def grouped(loss_fn, group_size: int):
  """`loss_fn(img [N, D], txt [N, D], *rest)` applied to consecutive groups of `group_size` pairs
  (G - 1 negatives per positive) and averaged over the N / G groups; 0 or N = the whole batch.

  This is how the number of negatives is varied at a fixed optimizer batch (experiments/): the
  gradient still averages over all N pairs, only the softmax sees G of them.
  """

  def fn(img_NxD, txt_NxD, *rest):
    n = img_NxD.shape[0]
    if not group_size or group_size == n:
      return loss_fn(img_NxD, txt_NxD, *rest)
    if n % group_size:
      raise ValueError(f"batch {n} is not divisible by loss group size {group_size}")
    split = lambda x: x.reshape(n // group_size, group_size, x.shape[-1])
    per_group = jax.vmap(loss_fn, in_axes=(0, 0) + (None,) * len(rest))
    return per_group(split(img_NxD), split(txt_NxD), *rest).mean()

  return fn


def contrastive_loss(image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array, *,
                     group_size: int = 0) -> jax.Array:
  """Mean of the image->text and text->image softmax cross-entropies over in-batch negatives.

  Args:
    image_emb: [N, D] image embeddings (BASIC L2-normalises them; this function does not).
    text_emb: [N, D] text embeddings; row i is the caption of image i.
    logit_scale: scalar multiplier of the cosine logits (exp of the model's log parameter, 1/tau).
    group_size: G > 0 computes the loss inside each of the N / G consecutive groups of G pairs and
      averages over groups (G - 1 negatives per positive); 0 (default) = the whole batch.
  Returns:
    scalar: 0.5 * (CE_rows + CE_cols), natural log, averaged over the N pairs.
  """
  return grouped(_contrastive_loss, group_size)(image_emb, text_emb, logit_scale)


def _contrastive_loss(image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array) -> jax.Array:
  img_NxD, txt_NxD = image_emb.astype(jnp.float32), text_emb.astype(jnp.float32)
  scale = logit_scale.astype(jnp.float32)
  logits_NxN = scale * img_NxD @ txt_NxD.T
  positives_N = scale * jnp.sum(img_NxD * txt_NxD, axis=1)  # the diagonal, without gathering it
  image_to_text = jax.nn.logsumexp(logits_NxN, axis=1) - positives_N
  text_to_image = jax.nn.logsumexp(logits_NxN, axis=0) - positives_N
  return 0.5 * (image_to_text.mean() + text_to_image.mean())


def _blocks(x_NxD: jax.Array, tile: int) -> jax.Array:
  n, d = x_NxD.shape
  if n % tile:
    raise ValueError(f"batch {n} is not divisible by loss tile {tile}")
  return x_NxD.reshape(n // tile, tile, d)


def batch_axis() -> str | None:
  """The mesh axis the batch is split over, when the active mesh splits it (else None)."""
  mesh, name = jax.sharding.get_abstract_mesh(), ACTIVATION_RULES["batch"]
  return name if name in mesh.axis_names and mesh.shape[name] > 1 else None


def _on_rows(fn, axis, in_specs, out_specs):
  """`fn` run on each device's rows (`jax.shard_map` over `axis`); `fn` itself when there is no axis."""
  if axis is None:
    return fn
  return jax.shard_map(fn, in_specs=in_specs, out_specs=out_specs, axis_names={axis})


def _collectives(axis):
  """(all_gather, psum, pmax, psum_scatter, vary, this device's index) over `axis`; identities without
  one. `vary` marks a value as different per device (shard_map's types), as a scan's carry must be."""
  if axis is None:
    same = lambda x: x
    return same, same, same, same, same, 0
  return (lambda x: jax.lax.all_gather(x, axis, tiled=True), lambda x: jax.lax.psum(x, axis),
          lambda x: jax.lax.pmax(x, axis), lambda x: jax.lax.psum_scatter(x, axis, tiled=True),
          lambda x: jax.lax.pcast(x, (axis,), to="varying"), jax.lax.axis_index(axis))


def _tiled_statistics(img_RxD, txt_RxD, scale, tile, axis):
  """Per device: the row log-sum-exps of its R rows, the column log-sum-exps of its R columns and the
  loss, one block of `tile` rows against all N columns at a time (the columns' running max and sum are
  combined across devices once, at the end)."""
  gather, psum, pmax, _, vary, index = _collectives(axis)
  txt_NxD = gather(txt_RxD)
  n, r = txt_NxD.shape[0], img_RxD.shape[0]

  def body(carry, img_TxD):
    col_max_N, col_sum_N = carry
    logits_TxN = scale * img_TxD @ txt_NxD.T
    row_lse_T = jax.nn.logsumexp(logits_TxN, axis=1)
    new_max_N = jnp.maximum(col_max_N, logits_TxN.max(axis=0))
    col_sum_N = col_sum_N * jnp.exp(col_max_N - new_max_N) + jnp.exp(logits_TxN - new_max_N[None]).sum(0)
    return (new_max_N, col_sum_N), row_lse_T

  init = (vary(jnp.full((n,), -jnp.inf, jnp.float32)), vary(jnp.zeros((n,), jnp.float32)))
  (col_max_N, col_sum_N), row_lse_KxT = jax.lax.scan(body, init, _blocks(img_RxD, tile))
  max_N = pmax(col_max_N)
  col_lse_N = max_N + jnp.log(psum(col_sum_N * jnp.exp(col_max_N - max_N)))
  col_lse_R = jax.lax.dynamic_slice_in_dim(col_lse_N, index * r, r)
  row_lse_R = row_lse_KxT.reshape(r)
  loss = psum(0.5 * (row_lse_R.sum() + col_lse_R.sum()) - scale * jnp.sum(img_RxD * txt_RxD)) / n
  return loss, row_lse_R, col_lse_R


def _tiled_gradients(img_RxD, txt_RxD, scale, row_lse_R, col_lse_R, g, tile, axis):
  """Per device: dL/dlogits = (softmax_rows + softmax_cols) / 2N - I / N applied block by block to its
  rows; the text gradients of all N columns are summed over devices and each keeps its own R."""
  gather, psum, _, psum_scatter, vary, index = _collectives(axis)
  txt_NxD, col_lse_N = gather(txt_RxD), gather(col_lse_R)
  n, r = txt_NxD.shape[0], img_RxD.shape[0]

  def body(carry, inputs):
    d_txt_NxD, d_scale = carry
    img_TxD, row_lse_T, first_row = inputs
    sims_TxN = img_TxD @ txt_NxD.T
    logits_TxN = scale * sims_TxN
    eye_TxN = jax.nn.one_hot(first_row + jnp.arange(tile), n, dtype=jnp.float32)
    grad_TxN = (0.5 * (jnp.exp(logits_TxN - row_lse_T[:, None]) + jnp.exp(logits_TxN - col_lse_N[None]))
                - eye_TxN) * (g / n)
    d_img_TxD = scale * grad_TxN @ txt_NxD
    d_txt_NxD = d_txt_NxD + scale * grad_TxN.T @ img_TxD
    d_scale = d_scale + jnp.sum(grad_TxN * sims_TxN)
    return (d_txt_NxD, d_scale), d_img_TxD

  k = r // tile
  init = (vary(jnp.zeros(txt_NxD.shape, jnp.float32)), vary(jnp.zeros((), jnp.float32)))
  inputs = (_blocks(img_RxD, tile), row_lse_R.reshape(k, tile), index * r + tile * jnp.arange(k))
  (d_txt_NxD, d_scale), d_img_KxTxD = jax.lax.scan(body, init, inputs)
  return d_img_KxTxD.reshape(img_RxD.shape), psum_scatter(d_txt_NxD), psum(d_scale)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _tiled_softmax(img_NxD, txt_NxD, scale, tile, axis):
  return _tiled_softmax_fwd(img_NxD, txt_NxD, scale, tile, axis)[0]


def _tiled_softmax_fwd(img_NxD, txt_NxD, scale, tile, axis):
  rows, whole = P(axis), P()
  stats = _on_rows(functools.partial(_tiled_statistics, tile=tile, axis=axis), axis,
                   (rows, rows, whole), (whole, rows, rows))
  loss, row_lse_N, col_lse_N = stats(img_NxD, txt_NxD, scale)
  return loss, (img_NxD, txt_NxD, scale, row_lse_N, col_lse_N)


def _tiled_softmax_bwd(tile, axis, residuals, g):
  rows, whole = P(axis), P()
  grads = _on_rows(functools.partial(_tiled_gradients, tile=tile, axis=axis), axis,
                   (rows, rows, whole, rows, rows, whole), (rows, rows, whole))
  return grads(*residuals, g)


_tiled_softmax.defvjp(_tiled_softmax_fwd, _tiled_softmax_bwd)


def tiled_contrastive_loss(image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array,
                           tile: int, *, group_size: int = 0) -> jax.Array:
  """`contrastive_loss` computed in row blocks of `tile` rows: O(N * tile) memory, same value.

  Under a mesh that splits the batch over P devices (and a loss over the whole batch), each device
  streams its own N / P rows in blocks of tile / P rows against the gathered [N, D] text embeddings:
  per device O(N * tile / P + N * D) memory, no N x N anywhere, the negatives still global. With
  `group_size` G, each group is tiled on its own (O(N * min(tile, G)) memory).
  """
  n = image_emb.shape[0]
  axis = batch_axis() if not group_size or group_size == n else None
  devices = jax.sharding.get_abstract_mesh().shape[axis] if axis else 1

  def one(img_NxD, txt_NxD, scale):
    rows = img_NxD.shape[0] // devices
    return _tiled_softmax(img_NxD.astype(jnp.float32), txt_NxD.astype(jnp.float32),
                          jnp.asarray(scale, jnp.float32), max(1, min(tile // devices, rows)), axis)

  return grouped(one, group_size)(image_emb, text_emb, logit_scale)


def sigmoid_loss(image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array,
                 logit_bias: jax.Array, tile: int = 0, *, group_size: int = 0) -> jax.Array:
  """SigLIP: every pair is an independent binary problem, positives on the diagonal.

  Normalised as in SigLIP: summed over the N x N pairs, divided by N. With `tile`, row blocks are
  scanned under `jax.checkpoint`, so the backward pass also holds only one block of logits. With
  `group_size` G only the G x G pairs inside each group of consecutive pairs count (G - 1 negatives).
  """
  return grouped(functools.partial(_sigmoid_loss, tile=tile), group_size)(
      image_emb, text_emb, logit_scale, logit_bias)


def _sigmoid_loss(image_emb, text_emb, logit_scale, logit_bias, *, tile: int) -> jax.Array:
  img_NxD, txt_NxD = image_emb.astype(jnp.float32), text_emb.astype(jnp.float32)
  n = img_NxD.shape[0]
  scale, bias = jnp.asarray(logit_scale, jnp.float32), jnp.asarray(logit_bias, jnp.float32)

  def block_loss(img_TxD, first_row):
    logits_TxN = scale * img_TxD @ txt_NxD.T + bias
    rows = first_row + jnp.arange(img_TxD.shape[0])
    labels_TxN = 2.0 * jax.nn.one_hot(rows, n, dtype=jnp.float32) - 1.0
    return -jnp.sum(jax.nn.log_sigmoid(labels_TxN * logits_TxN))

  if not tile or tile >= n:
    return block_loss(img_NxD, 0) / n
  img_KxTxD = _blocks(img_NxD, tile)
  body = jax.checkpoint(lambda acc, xs: (acc + block_loss(*xs), None))
  total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32),
                          (img_KxTxD, tile * jnp.arange(img_KxTxD.shape[0])))
  return total / n


def make_loss_fn(loss_config):
  """`fn(image_emb, text_emb, logit_scale, logit_bias) -> scalar` for config.loss."""
  tile, groups = int(loss_config.tile), int(loss_config.group_size)
  if loss_config.kind == "sigmoid":
    return lambda i, t, s, b: sigmoid_loss(i, t, s, b, tile, group_size=groups)
  if tile:
    return lambda i, t, s, b: tiled_contrastive_loss(i, t, s, tile, group_size=groups)
  return lambda i, t, s, b: contrastive_loss(i, t, s, group_size=groups)
