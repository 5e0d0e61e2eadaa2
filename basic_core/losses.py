"""Contrastive losses on embeddings: softmax (CLIP/ALIGN/BASIC), tiled softmax, sigmoid (SigLIP), and
the softmax loss's estimators of the global objective (loss.estimator: plain, sogclr, queue).

Losses take arrays, never models. All arithmetic is float32 whatever the towers' compute dtype.

The tiled softmax loss exists because at BASIC's contrastive batch of 65,536 the N x N float32 logit
matrix alone is 16 GiB. It streams row blocks of `tile` rows: the image-to-text log-sum-exp of a row
needs only its block, the text-to-image log-sum-exp of a column is accumulated across blocks with the
usual running-max trick, and a custom VJP recomputes each block's logits in the backward pass. Peak
memory is O(N * tile), results equal the dense loss to float32 rounding. Under a mesh that splits the
batch over P devices, each device streams its own N / P rows against the gathered [N, D] text
embeddings (`jax.shard_map`): the negatives stay global, the column statistics are combined across
devices once, and no device holds more than a [tile / P, N] block (tests/test_losses.py).

Every softmax loss is made of the per-pair cross-entropies of `pair_losses`, so the estimators, which
only reweight them (SogCLR) or add negatives to them (the queue), inherit the dense, tiled and mesh
paths; their state is an input and an output, so BASIC's accumulation (accumulate.py), which runs the
loss once on the whole batch, updates it once per step (tests/test_estimators.py).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from basic_core.configs import resolve_group_size
from basic_core.models.layers import ACTIVATION_RULES


def grouped(fn, group_size: int):
  """`fn(img [G, D], txt [G, D], *rest)` applied to each of the N / G consecutive groups of `group_size`
  pairs (G - 1 negatives per positive; 0 = the whole batch), its outputs stacked over groups: [N / G, ...].

  This is how the number of negatives is varied at a fixed optimizer batch (experiments/): the
  gradient still averages over all N pairs, only the softmax sees G of them.
  """

  def fn_per_group(img_NxD, txt_NxD, *rest):
    n = img_NxD.shape[0]
    g = resolve_group_size(group_size, n)
    if g == n:
      return jax.tree.map(lambda x: x[None], fn(img_NxD, txt_NxD, *rest))
    if n % g:
      raise ValueError(f"batch {n} is not divisible by loss group size {g}")
    split = lambda x: x.reshape(n // g, g, x.shape[-1])
    return jax.vmap(fn, in_axes=(0, 0) + (None,) * len(rest))(split(img_NxD), split(txt_NxD), *rest)

  return fn_per_group


def pair_losses(image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array, *, group_size: int = 0,
                tile: int = 0) -> tuple[jax.Array, jax.Array]:
  """Each pair's two softmax cross-entropies against its group, ([N], [N]) float32: what every softmax
  loss and estimator here is made of.

  With logits l_ij = logit_scale * <image_i, text_j> over the pairs of i's group,
  image->text CE_i = log sum_j exp(l_ij) - l_ii and text->image CE_i = log sum_j exp(l_ji) - l_ii.
  `tile` > 0 streams row blocks (`_tiled_ce`: O(N * tile) memory, same values); under a mesh that
  splits the batch, with the whole batch as one group, each device streams its own rows.
  """
  img_NxD, txt_NxD = image_emb.astype(jnp.float32), text_emb.astype(jnp.float32)
  scale = jnp.asarray(logit_scale, jnp.float32)
  n = img_NxD.shape[0]
  axis = batch_axis() if tile and resolve_group_size(group_size, n) == n else None
  devices = jax.sharding.get_abstract_mesh().shape[axis] if axis else 1

  def ce(img_GxD, txt_GxD):
    if tile:
      rows = img_GxD.shape[0] // devices
      return _tiled_ce(img_GxD, txt_GxD, scale, max(1, min(tile // devices, rows)), axis)
    logits_GxG = scale * img_GxD @ txt_GxD.T
    positives_G = _positives(img_GxD, txt_GxD, scale)
    return (jax.nn.logsumexp(logits_GxG, axis=1) - positives_G,
            jax.nn.logsumexp(logits_GxG, axis=0) - positives_G)

  ce_img_N, ce_txt_N = (x.reshape(n) for x in grouped(ce, group_size)(img_NxD, txt_NxD))
  return ce_img_N, ce_txt_N


def _positives(img_NxD, txt_NxD, scale):
  """The positive logits l_ii as row dot products: the diagonal, without building or gathering it."""
  return scale * jnp.sum(img_NxD * txt_NxD, axis=1)


def _mean_of_both(ce_img_N, ce_txt_N):
  return 0.5 * (ce_img_N.mean() + ce_txt_N.mean())


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
  return _mean_of_both(*pair_losses(image_emb, text_emb, logit_scale, group_size=group_size))


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
  """Per device: the row log-sum-exps of its R rows and the column log-sum-exps of its R columns, one
  block of `tile` rows against all N columns at a time (the columns' running max and sum are combined
  across devices once, at the end)."""
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
  return row_lse_KxT.reshape(r), jax.lax.dynamic_slice_in_dim(col_lse_N, index * r, r)


def _tiled_gradients(img_RxD, txt_RxD, scale, row_lse_R, col_lse_R, d_row_R, d_col_R, tile, axis):
  """Per device: with cotangents a of the image->text and b of the text->image cross-entropies,
  dL/dlogits_ij = a_i softmax_rows_ij + b_j softmax_cols_ij - (a_i + b_i) [i = j], applied block by
  block to its rows (the positives inside the blocks, so no [N, D] gradient of them is built apart); the
  text gradients of all N columns are summed over devices and each keeps its own R."""
  gather, psum, _, psum_scatter, vary, index = _collectives(axis)
  txt_NxD, col_lse_N, d_col_N = gather(txt_RxD), gather(col_lse_R), gather(d_col_R)
  n, r = txt_NxD.shape[0], img_RxD.shape[0]

  def body(carry, inputs):
    d_txt_NxD, d_scale = carry
    img_TxD, row_lse_T, d_row_T, d_diag_T, first_row = inputs
    sims_TxN = img_TxD @ txt_NxD.T
    logits_TxN = scale * sims_TxN
    eye_TxN = jax.nn.one_hot(first_row + jnp.arange(tile), n, dtype=jnp.float32)
    grad_TxN = (d_row_T[:, None] * jnp.exp(logits_TxN - row_lse_T[:, None])
                + d_col_N[None] * jnp.exp(logits_TxN - col_lse_N[None]) - d_diag_T[:, None] * eye_TxN)
    d_img_TxD = scale * grad_TxN @ txt_NxD
    d_txt_NxD = d_txt_NxD + scale * grad_TxN.T @ img_TxD
    d_scale = d_scale + jnp.sum(grad_TxN * sims_TxN)
    return (d_txt_NxD, d_scale), d_img_TxD

  k = r // tile
  init = (vary(jnp.zeros(txt_NxD.shape, jnp.float32)), vary(jnp.zeros((), jnp.float32)))
  inputs = (_blocks(img_RxD, tile), row_lse_R.reshape(k, tile), d_row_R.reshape(k, tile),
            (d_row_R + d_col_R).reshape(k, tile), index * r + tile * jnp.arange(k))
  (d_txt_NxD, d_scale), d_img_KxTxD = jax.lax.scan(body, init, inputs)
  return d_img_KxTxD.reshape(img_RxD.shape), psum_scatter(d_txt_NxD), psum(d_scale)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _tiled_ce(img_NxD, txt_NxD, scale, tile, axis):
  """(image->text [N], text->image [N]) cross-entropies of the logits scale * img @ txt.T, streamed."""
  return _tiled_ce_fwd(img_NxD, txt_NxD, scale, tile, axis)[0]


def _tiled_ce_fwd(img_NxD, txt_NxD, scale, tile, axis):
  rows, whole = P(axis), P()
  stats = _on_rows(functools.partial(_tiled_statistics, tile=tile, axis=axis), axis,
                   (rows, rows, whole), (rows, rows))
  row_lse_N, col_lse_N = stats(img_NxD, txt_NxD, scale)
  positives_N = _positives(img_NxD, txt_NxD, scale)
  return (row_lse_N - positives_N, col_lse_N - positives_N), (img_NxD, txt_NxD, scale, row_lse_N, col_lse_N)


def _tiled_ce_bwd(tile, axis, residuals, cotangents):
  rows, whole = P(axis), P()
  grads = _on_rows(functools.partial(_tiled_gradients, tile=tile, axis=axis), axis,
                   (rows, rows, whole, rows, rows, rows, rows), (rows, rows, whole))
  return grads(*residuals, *cotangents)


_tiled_ce.defvjp(_tiled_ce_fwd, _tiled_ce_bwd)


def tiled_contrastive_loss(image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array,
                           tile: int, *, group_size: int = 0) -> jax.Array:
  """`contrastive_loss` computed in row blocks of `tile` rows: O(N * tile) memory, same value.

  Under a mesh that splits the batch over P devices (and a loss over the whole batch), each device
  streams its own N / P rows in blocks of tile / P rows against the gathered [N, D] text embeddings:
  per device O(N * tile / P + N * D) memory, no N x N anywhere, the negatives still global. With
  `group_size` G, each group is tiled on its own (O(N * min(tile, G)) memory).
  """
  return _mean_of_both(*pair_losses(image_emb, text_emb, logit_scale, group_size=group_size, tile=tile))


def sigmoid_loss(image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array,
                 logit_bias: jax.Array, tile: int = 0, *, group_size: int = 0) -> jax.Array:
  """SigLIP: every pair is an independent binary problem, positives on the diagonal.

  Normalised as in SigLIP: summed over the N x N pairs, divided by N. With `tile`, row blocks are
  scanned under `jax.checkpoint`, so the backward pass also holds only one block of logits. With
  `group_size` G only the G x G pairs inside each group of consecutive pairs count (G - 1 negatives).
  """
  return grouped(functools.partial(_sigmoid_loss, tile=tile), group_size)(
      image_emb, text_emb, logit_scale, logit_bias).mean()


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


# ---- estimators of the global objective (loss.estimator) -----------------------------------------------


def init_estimator_state(loss_config, *, pool_size: int, embed_dim: int) -> dict | None:
  """What config.loss's estimator carries from step to step (the train state's "estimator", checkpointed
  with it); None for plain. sogclr: log u of each pool pair's two normaliser estimates (image->text,
  text->image), -inf until the pair is first seen; queue: the last Q image and text embeddings, oldest
  first, and how many of the Q are filled."""
  if loss_config.estimator == "sogclr":
    never = lambda: jnp.full((pool_size,), -jnp.inf, jnp.float32)  # noqa: E731  (two buffers)
    return dict(log_u_image=never(), log_u_text=never())
  if loss_config.estimator == "queue":
    empty = lambda: jnp.zeros((int(loss_config.queue_size), embed_dim), jnp.float32)  # noqa: E731
    return dict(queue_image=empty(), queue_text=empty(), queue_filled=jnp.zeros((), jnp.int32))
  return None


def sogclr_loss(image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array, state: dict,
                index_N: jax.Array, *, gamma: float, group_size: int = 0, tile: int = 0):
  """SogCLR's estimator: each pool pair's softmax normaliser estimated from its group and averaged over
  the steps that visit the pair. Returns (loss, next state).

  Yuan et al., ICML 2022, "Provable stochastic optimization for global contrastive learning: small batch
  does not harm performance", in the bimodal form of its authors' CLIP code (`SogCLR_Loss`,
  github.com/zhqiu/contrastive-learning-iSogCLR, bimodal_exps/models/losses.py). For pair i (pool index
  `index_N[i]`) of a group of G pairs, on each side (image->text below; text->image with l_ji):
    g_i(w) = (1/G) sum_{j in group} exp(l_ij - l_ii),        l = logit_scale * cosine;
    u_i <- (1 - gamma) u_i + gamma g_i(w)                   (u_i <- g_i when i is seen the first time);
    gradient: (1/u_i) grad g_i(w), u held fixed, averaged over the pairs and the two sides.
  The value returned is the plain grouped loss, mean(log g_i) + log G, so logs compare across
  estimators. With gamma = 1, u_i = g_i and (1/g_i) grad g_i = grad log g_i: the plain loss's gradient.

  Where it differs from the published estimator:
  - g_i includes the positive (j = i) and divides by G; SogCLR's sums the G - 1 negatives only (its
    normaliser is positive-free, as in DCL). So gamma = 1 here is BASIC's InfoNCE, and the estimator
    is the only thing an experiment changes.
  - No outer temperature factor and no epsilon: SogCLR's objective is tau * log(eps + g), with gradient
    tau / (eps + u) grad g; here log g, like the cross-entropy this repository trains.
  - The temperature is BASIC's learned one, and its gradient goes through the same (1/u) grad g;
    SogCLR fixes tau (iSogCLR learns one per pair; not this).
  - u is stored as log u (float32; -inf = never seen): g reaches exp(2 * logit_scale), e^200 at the
    largest scale, past float32 (the authors' code subtracts a running maximum for the same reason).
  - A pair seen the first time takes u = g; the authors' code sets u = g throughout the first epoch (the
    same, where each pair is seen once an epoch, as with the pipeline's permutations).
  - The negatives are those of the pair's group (loss.group_size), within the contrastive batch.
  A pair twice in one batch (at an epoch boundary) updates from the same old u in both rows; the table
  keeps one of the two.
  """
  if index_N is None:
    raise ValueError("loss.estimator=sogclr needs each row's pool index: the batch's 'index', which the "
                     "training pipeline adds to batches of a pool")
  ce_img_N, ce_txt_N = pair_losses(image_emb, text_emb, logit_scale, group_size=group_size, tile=tile)
  log_group = jnp.log(jnp.float32(resolve_group_size(group_size, ce_img_N.shape[0])))
  keep, take = jnp.log1p(-jnp.float32(gamma)), jnp.log(jnp.float32(gamma))
  weighted, next_state = [], {}
  for side, ce_N in (("image", ce_img_N), ("text", ce_txt_N)):
    log_g_N = jax.lax.stop_gradient(ce_N) - log_group
    table_M = state[f"log_u_{side}"]
    old_N = table_M[index_N]
    log_u_N = jnp.where(jnp.isfinite(old_N), jnp.logaddexp(keep + old_N, take + log_g_N), log_g_N)
    next_state[f"log_u_{side}"] = table_M.at[index_N].set(log_u_N)
    weighted.append(jnp.exp(ce_N - log_group - log_u_N).mean())  # g_i / u_i: gradient (1/u_i) grad g_i
  surrogate = 0.5 * (weighted[0] + weighted[1])
  value = jax.lax.stop_gradient(_mean_of_both(ce_img_N, ce_txt_N))
  return value + surrogate - jax.lax.stop_gradient(surrogate), next_state


# The logit of an unfilled queue entry: exp() of it is 0 in float32, and, unlike -inf, it keeps the
# gradient finite on a row whose queue is still empty.
_UNFILLED = -1e30


def _queue_lse(x_NxD, queue_QxD, scale, filled_Q, tile):
  """log sum_k exp(scale <x_i, queue_k>) over the filled queue entries, per row ([N]); in row blocks of
  at most `tile` rows under `jax.checkpoint` (O(tile * Q) memory, backward included), each device its
  own rows under a mesh that splits the batch."""
  axis = batch_axis()
  devices = jax.sharding.get_abstract_mesh().shape[axis] if axis else 1

  def on_rows(x_RxD, queue_QxD, scale, filled_Q):
    def block(x_TxD):
      return jax.nn.logsumexp(jnp.where(filled_Q[None], scale * x_TxD @ queue_QxD.T, _UNFILLED), axis=1)

    r = x_RxD.shape[0]
    rows = math.gcd(r, max(1, tile // devices)) if tile else r
    return jax.lax.map(jax.checkpoint(block), _blocks(x_RxD, rows)).reshape(r)

  return _on_rows(on_rows, axis, (P(axis), P(), P(), P()), P(axis))(x_NxD, queue_QxD, scale, filled_Q)


def queue_loss(image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array, state: dict, *,
               group_size: int = 0, tile: int = 0):
  """A MoCo-style queue: the embeddings of the last Q pairs of earlier steps (stop-gradient) are extra
  negatives of every group. Returns (loss, next state).

  He et al., CVPR 2020, "Momentum contrast for unsupervised visual representation learning", with one
  queue per side as in its cross-modal uses: image i's softmax runs over its group's G texts and the Q
  queued texts, text i's over the G images and the Q queued images; the loss is the mean of the two
  cross-entropies, as the plain loss's. After the loss the batch's N embeddings enter the queue and the
  oldest leave; until Q pairs have been seen only the filled entries count, and with Q = 0 (or an empty
  queue) this is the plain grouped loss. Meant for fresh pairs, where no queued pair is a positive; on
  a pool, a pair back within Q pairs of itself would meet its own caption as a negative.

  Where it differs from MoCo: no momentum encoder (the queued embeddings are those the towers gave at
  their step, as in a memory bank; MoCo encodes them with a slowly moving copy of the key encoder);
  both sides are queued and both directions use them; the temperature is BASIC's learned one, which the
  queued logits do reach (the towers do not: the queue carries no gradient).
  """
  img_NxD, txt_NxD = image_emb.astype(jnp.float32), text_emb.astype(jnp.float32)
  scale = jnp.asarray(logit_scale, jnp.float32)
  ce_img_N, ce_txt_N = pair_losses(img_NxD, txt_NxD, scale, group_size=group_size, tile=tile)
  queue_img_QxD, queue_txt_QxD, filled = state["queue_image"], state["queue_text"], state["queue_filled"]
  n, q = img_NxD.shape[0], queue_img_QxD.shape[0]
  filled_Q = jnp.arange(q) >= q - filled  # the newest entries are last
  positives_N = _positives(img_NxD, txt_NxD, scale)
  ce_img_N = jnp.logaddexp(ce_img_N, _queue_lse(img_NxD, queue_txt_QxD, scale, filled_Q, tile) - positives_N)
  ce_txt_N = jnp.logaddexp(ce_txt_N, _queue_lse(txt_NxD, queue_img_QxD, scale, filled_Q, tile) - positives_N)
  push = lambda queue_QxD, x_NxD: jnp.concatenate([queue_QxD, jax.lax.stop_gradient(x_NxD)])[n:]  # noqa: E731
  next_state = dict(queue_image=push(queue_img_QxD, img_NxD), queue_text=push(queue_txt_QxD, txt_NxD),
                    queue_filled=jnp.minimum(filled + n, q))
  return _mean_of_both(ce_img_N, ce_txt_N), next_state


def make_estimator_loss_fn(loss_config):
  """`fn(image_emb, text_emb, logit_scale, logit_bias, state, index_N) -> (loss, next state)` for
  config.loss with its estimator: `state` is the estimator's (`init_estimator_state`; None for plain,
  passed through) and `index_N` each row's pool index (the batch's "index"; only SogCLR reads it)."""
  tile, groups = int(loss_config.tile), int(loss_config.group_size)
  if loss_config.estimator == "sogclr":
    gamma = float(loss_config.sogclr_gamma)
    return lambda i, t, s, b, state, index: sogclr_loss(i, t, s, state, index, gamma=gamma,
                                                        group_size=groups, tile=tile)
  if loss_config.estimator == "queue":
    return lambda i, t, s, b, state, index: queue_loss(i, t, s, state, group_size=groups, tile=tile)
  plain = make_loss_fn(loss_config)
  return lambda i, t, s, b, state, index: (plain(i, t, s, b), state)
