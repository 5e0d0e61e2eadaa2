"""BASIC's exact gradient accumulation for the contrastive loss: the one place where the contrastive
batch N and the microbatch M differ.

A contrastive loss couples every pair of the batch, so averaging per-microbatch gradients (what generic
accumulation does) silently shrinks the contrastive batch to M. BASIC instead:
  1. embeds all K = N / M microbatches with stop-gradient parameters, keeping only the [N, D] embeddings;
  2. computes the loss ONCE on the full batch, and its gradients w.r.t. the image embeddings, the text
     embeddings and the head parameters (temperature, bias): the "gradient cache";
  3. recomputes each microbatch's forward pass and pulls its slice of the cached embedding gradients back
     through the towers with `jax.vjp`, summing parameter gradients.
One refinement (K > 2): the last microbatch is embedded in step 1 by `jax.vjp`, and its activations are
spent on its backward pass right after step 2, before any other microbatch is recomputed; so it is never
recomputed, and at most one microbatch's activations are alive at a time. They are alive during step 2,
so the peak grows where the loss's own temporaries are large (dense N x N logits; tile the loss).
Since the loss depends on the tower parameters only through the embeddings, sum_k J_k^T dL/dz_k equals
dL/dparams exactly; the temperature gradient comes from step 2 alone, so it is counted once (OpenCLIP's
accumulation counts it K times). Randomness (dropout, augmentation) is keyed per *example* from the
step key and the example's global index, so both passes, and any microbatch size, see the same masks
and pixels: the run does not depend on M.

Microbatch j holds examples j, j + K, j + 2K, ...: with the batch sharded contiguously over the
`data` mesh axis, every microbatch is then spread over all devices; and since that is column j of the
batch viewed as [M, K, ...], a microbatch is sliced out of the batch without copying the rest, and the
embeddings are written into [M, K, D] buffers that are the [N, D] embeddings in example order.
Cost: the extra forward passes of K - 1 microbatches (of all K when K <= 2), (4 - 1/K)F / 3F of the
naive step's FLOPs, 1.25x at K = 4; memory: activations of one microbatch plus O(N * D) embeddings and
the loss (O(N * tile) when tiled).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from basic_core.models.layers import constrain

# embed_fn(params, batch, example_keys) -> (image_emb [B, D], text_emb [B, D])
EmbedFn = Callable[[Any, dict, jax.Array], tuple[jax.Array, jax.Array]]
# head_loss_fn(image_emb [N, D], text_emb [N, D], params) -> scalar loss, or (loss, aux) with has_aux
HeadLossFn = Callable[[jax.Array, jax.Array, Any], Any]


def example_keys(key: jax.Array, index_B: jax.Array) -> jax.Array:
  """One key per example: fold_in(step key, the example's global index in the contrastive batch)."""
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, index_B)


def microbatch(tree, k: int, j):
  """Microbatch j of K: examples j, j + K, j + 2K, ... of every [N, ...] leaf, as [M, ...].

  The [N, ...] array is viewed as [M, K, ...] (a reshape: no copy) and column j is sliced out, so only
  one microbatch is ever copied, never the whole batch. Under a mesh, both stay split over the batch
  axis (all devices work on every microbatch).
  """
  def take(x):
    x_MxK = constrain(x.reshape(x.shape[0] // k, k, *x.shape[1:]), ("batch",))
    return constrain(jax.lax.dynamic_index_in_dim(x_MxK, j, axis=1, keepdims=False), ("batch",))

  return jax.tree.map(take, tree)


def naive_value_and_grad(embed_fn: EmbedFn, head_loss_fn: HeadLossFn, params, batch: dict,
                         key: jax.Array, *, has_aux: bool = False):
  """Plain full-batch `value_and_grad`: activations of all N examples live at once. With `has_aux`,
  `head_loss_fn` returns (loss, aux) and so does the value, as in `jax.value_and_grad`."""
  keys = example_keys(key, jnp.arange(jax.tree.leaves(batch)[0].shape[0]))

  def loss_fn(p):
    image_emb, text_emb = embed_fn(p, batch, keys)
    return head_loss_fn(image_emb, text_emb, p)

  return jax.value_and_grad(loss_fn, has_aux=has_aux)(params)


def accumulated_value_and_grad(embed_fn: EmbedFn, head_loss_fn: HeadLossFn, params, batch: dict,
                               key: jax.Array, num_microbatches: int, *, has_aux: bool = False):
  """The BASIC step: same value and gradient as `naive_value_and_grad`, activations of M examples.

  With `has_aux`, the aux output (a loss estimator's next state, losses.py) comes from step 2, the one
  loss on the whole batch's embeddings: the same as the naive step's, whatever K."""
  k = num_microbatches
  n = jax.tree.leaves(batch)[0].shape[0]
  m = n // k
  keep_last = keeps_last_microbatch(k)
  rest = k - 1 if keep_last else k

  def inputs(j):
    return microbatch(batch, k, j), example_keys(key, jnp.arange(m) * k + j)

  # 1. Embed the microbatches into [M, K, D] buffers (microbatch j is column j, so the buffers are the
  #    [N, D] embeddings in example order, no reordering copy); no activations survive the loop. The
  #    barrier orders the kept last one after it, so its activations (kept by `jax.vjp` for step 3)
  #    never overlap the loop's.
  frozen = jax.lax.stop_gradient(params)
  shapes = jax.eval_shape(lambda: embed_fn(frozen, *inputs(0)))
  embs = tuple(constrain(jnp.zeros((m, k, *s.shape[1:]), s.dtype), ("batch",)) for s in shapes)
  put = lambda embs, j, new: tuple(jax.lax.dynamic_update_index_in_dim(buf, x, j, axis=1)
                                   for buf, x in zip(embs, new, strict=True))
  embs = jax.lax.fori_loop(0, rest, lambda j, embs: put(embs, j, embed_fn(frozen, *inputs(j))), embs)
  if keep_last:
    embs, last = jax.lax.optimization_barrier((embs, inputs(k - 1)))
    embs_last, vjp_last = jax.vjp(lambda p: embed_fn(p, *last), params)
    embs = put(embs, k - 1, embs_last)
  image_NxD, text_NxD = (constrain(e.reshape(n, -1), ("batch",)) for e in embs)

  # 2. The loss once, over the whole contrastive batch; the gradient cache.
  value, (d_image_NxD, d_text_NxD, head_grads) = jax.value_and_grad(
      head_loss_fn, argnums=(0, 1, 2), has_aux=has_aux)(image_NxD, text_NxD, params)

  # 3. Back-propagate each microbatch's slice of the cache: the kept one through its activations, the
  #    others recomputed. The head gradients (temperature, bias; zero for the towers) seed the sum, so
  #    they are counted exactly once.
  cache = (d_image_NxD, d_text_NxD)
  grads = head_grads
  if keep_last:
    grads = jax.tree.map(jnp.add, grads, vjp_last(microbatch(cache, k, k - 1))[0])

  def backward(j, grads):
    _, vjp = jax.vjp(lambda p: embed_fn(p, *inputs(j)), params)
    (g,) = vjp(microbatch(cache, k, j))
    return jax.tree.map(jnp.add, grads, g)

  return value, jax.lax.fori_loop(0, rest, backward, grads)


def keeps_last_microbatch(k: int) -> bool:
  """Whether step 1 keeps the last microbatch's activations. Not for K = 2: the loops left would run
  once, XLA inlines such loops, and its CPU scheduler then overlaps the two microbatches' activations."""
  return k > 2
