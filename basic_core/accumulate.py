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

Microbatch k holds examples k, k + K, k + 2K, ...: with the batch sharded contiguously over the
`data` mesh axis, every microbatch is then spread over all devices.
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
# head_loss_fn(image_emb [N, D], text_emb [N, D], params) -> scalar loss
HeadLossFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


def example_keys(key: jax.Array, n: int) -> jax.Array:
  """One key per example of the contrastive batch: fold_in(step key, global example index)."""
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(n))


def to_microbatches(tree, k: int):
  """[N, ...] -> [K, M, ...] with microbatch k = examples k, k + K, ... (strided; see module doc).

  Under a mesh, each microbatch stays split over the batch axis (all devices work on every one).
  """
  return jax.tree.map(lambda x: constrain(
      jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1), (None, "batch")), tree)


def from_microbatches(tree):
  """Inverse of `to_microbatches`: [K, M, ...] -> [N, ...] in the original example order, split over
  the batch axis under a mesh (the cached embeddings: global, but no device holds them all)."""
  return jax.tree.map(lambda x: constrain(jnp.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:]), ("batch",)),
                      tree)


def naive_value_and_grad(embed_fn: EmbedFn, head_loss_fn: HeadLossFn, params, batch: dict,
                         key: jax.Array):
  """Plain full-batch `value_and_grad`: activations of all N examples live at once."""
  keys = example_keys(key, jax.tree.leaves(batch)[0].shape[0])

  def loss_fn(p):
    image_emb, text_emb = embed_fn(p, batch, keys)
    return head_loss_fn(image_emb, text_emb, p)

  return jax.value_and_grad(loss_fn)(params)


def accumulated_value_and_grad(embed_fn: EmbedFn, head_loss_fn: HeadLossFn, params, batch: dict,
                               key: jax.Array, num_microbatches: int):
  """The BASIC step: same value and gradient as `naive_value_and_grad`, activations of M examples."""
  k = num_microbatches
  n = jax.tree.leaves(batch)[0].shape[0]
  micro = (to_microbatches(batch, k), to_microbatches(example_keys(key, n), k))
  keep_last = keeps_last_microbatch(k)
  micro_rest, micro_last = _split_last(micro) if keep_last else (micro, None)

  # 1. Embed the microbatches; no activations survive the map. The barrier orders the kept last one
  #    after them, so its activations (kept by `jax.vjp` for step 3) never overlap the map's.
  frozen = jax.lax.stop_gradient(params)
  embs = jax.lax.map(lambda a: embed_fn(frozen, *a), micro_rest)
  if keep_last:
    embs, micro_last = jax.lax.optimization_barrier((embs, micro_last))
    embs_last, vjp_last = jax.vjp(lambda p: embed_fn(p, *micro_last), params)
    embs = jax.tree.map(lambda rest, last: jnp.concatenate([rest, last[None]]), embs, embs_last)
  image_NxD, text_NxD = from_microbatches(embs)

  # 2. The loss once, over the whole contrastive batch; the gradient cache.
  loss, (d_image_NxD, d_text_NxD, head_grads) = jax.value_and_grad(head_loss_fn, argnums=(0, 1, 2))(
      image_NxD, text_NxD, params)

  # 3. Back-propagate each microbatch's slice of the cache: the kept one through its activations, the
  #    others recomputed. The head gradients (temperature, bias; zero for the towers) seed the sum, so
  #    they are counted exactly once.
  cache = to_microbatches((d_image_NxD, d_text_NxD), k)
  grads = head_grads
  if keep_last:
    cache, cache_last = _split_last(cache)
    grads = jax.tree.map(jnp.add, grads, vjp_last(cache_last)[0])

  def backward(grads, a):
    (batch_k, keys_k), cache_k = a
    _, vjp = jax.vjp(lambda p: embed_fn(p, batch_k, keys_k), params)
    (g,) = vjp(cache_k)
    return jax.tree.map(jnp.add, grads, g), None

  grads, _ = jax.lax.scan(backward, grads, (micro_rest, cache))
  return loss, grads


def keeps_last_microbatch(k: int) -> bool:
  """Whether step 1 keeps the last microbatch's activations. Not for K = 2: the loops left would run
  once, XLA inlines such loops, and its CPU scheduler then overlaps the two microbatches' activations."""
  return k > 2


def _split_last(tree):
  """[K, ...] leaves -> ([K - 1, ...] leaves, [...] leaves of the last microbatch)."""
  return jax.tree.map(lambda x: x[:-1], tree), jax.tree.map(lambda x: x[-1], tree)
