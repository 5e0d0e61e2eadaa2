"""Phase 1 of BASIC's recipe: supervised pretraining of the image tower on labelled images.

BASIC pretrains its CoAtNet image tower on labelled JFT-5B before contrastive training [secondary
sources; see basic_core/configs/presets.py]. Here the labels of the built-in data stand in for JFT's: a
linear classifier on the tower's pooled features is trained with softmax cross-entropy and AdamW for
`pretrain.steps`, then dropped; only the tower's weights carry over to phase 2, where the tower is
either trained on or frozen (`train.freeze_image`, LiT-style).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from basic_core import data
from basic_core.augment import preprocess


class _Classifier(nnx.Module):
  def __init__(self, tower: nnx.Module, num_classes: int, *, rngs: nnx.Rngs):
    self.tower = tower
    self.head = nnx.Linear(tower.out_dim, num_classes, rngs=rngs)

  def __call__(self, images, key=None):
    return self.head(self.tower(images, key=key).astype(jnp.float32))


def pretrain_image_tower(fns, params, config, tokenizer, *, log=print) -> nnx.State:
  """Returns `params` with the image tower replaced by its supervised-pretrained weights."""
  p = config.pretrain
  model = fns.merge(params)
  pipeline = data.train_pipeline(config, tokenizer, batch_size=p.batch_size)
  classifier = _Classifier(model.image, pipeline.num_classes, rngs=nnx.Rngs(config.seed))
  graphdef, weights, rest = nnx.split(classifier, nnx.Param, ...)
  tx = optax.adamw(optax.cosine_decay_schedule(p.lr, p.steps), weight_decay=p.weight_decay,
                   mask=lambda t: jax.tree.map(lambda x: x.ndim >= 2, t))
  base_key = jax.random.key(config.seed + 1)

  @jax.jit
  def step(weights, opt_state, batch, i):
    key = jax.random.fold_in(base_key, i)

    def loss_fn(w):
      images = preprocess(batch["image"], key if config.data.augment else None)
      logits = nnx.merge(graphdef, w, rest)(images)
      return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean(), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(weights)
    updates, opt_state = tx.update(grads, opt_state, weights)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return optax.apply_updates(weights, updates), opt_state, loss, accuracy

  opt_state = tx.init(weights)
  for i in range(p.steps):
    batch = next(pipeline)
    if (batch["label"] < 0).any():
      raise ValueError("supervised pretraining needs labels for every image; this dataset has none")
    weights, opt_state, loss, accuracy = step(weights, opt_state, batch, i)
    if (i + 1) % max(p.steps // 5, 1) == 0:
      log(f"pretrain step {i + 1}/{p.steps}: loss {float(loss):.3f}, accuracy {float(accuracy):.3f}")
  nnx.update(classifier, weights)
  _, new_params, _ = nnx.split(model, nnx.Param, ...)
  return new_params
