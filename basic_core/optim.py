"""Optimizers: AdaFactorW (BASIC's) and AdamW, warmup + decay schedules, clipping, decay masks, LiT freezing.

AdaFactorW is Adafactor's factored second moment with *decoupled* weight decay, as BASIC's optimizer is
described (Lion, arXiv 2302.06675, replaces it in BASIC's recipe). The paper's hyper-parameters were not
available; ours are in the configs. The chain is: clip the global gradient norm; scale by the factored
RMS; clip each parameter block's update RMS to 1 (Adafactor's update clipping); add wd * param; scale
by -lr. Weight decay skips every parameter with fewer than two dimensions (norm scales, biases, the
temperature, the logit bias, the class token), as OpenCLIP does.

Freezing the image tower (LiT-style, `train.freeze_image`) lives here too: `all` gives the image tower
`set_to_zero` (no optimizer state at all); `first_k` gives it a learning rate that is zero for the first
k steps and then follows its own warmup + decay.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def schedule(optim_config, total_steps: int, offset: int = 0) -> optax.Schedule:
  """Linear warmup to `lr`, then cosine / linear decay to `end_lr_frac * lr`; zero before `offset`."""
  c = optim_config
  warmup = max(int(c.warmup_steps), 1)
  decay_steps = max(total_steps - offset - warmup, 1)
  end = c.lr * c.end_lr_frac
  if c.schedule == "cosine":
    decay = optax.cosine_decay_schedule(c.lr, decay_steps, alpha=c.end_lr_frac)
  elif c.schedule == "linear":
    decay = optax.linear_schedule(c.lr, end, decay_steps)
  else:
    decay = optax.constant_schedule(c.lr)
  warm = optax.linear_schedule(c.lr / warmup, c.lr, warmup - 1)
  main = optax.join_schedules([warm, decay], [warmup])
  if offset:
    return optax.join_schedules([optax.constant_schedule(0.0), main], [offset])
  return main


def decay_mask(params):
  """True where weight decay applies: matrices and kernels, not vectors or scalars."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def _base_transform(optim_config, lr: optax.Schedule) -> optax.GradientTransformation:
  c = optim_config
  if c.name == "adamw":
    return optax.adamw(lr, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay, mask=decay_mask)
  return optax.chain(
      optax.scale_by_factored_rms(),
      optax.clip_by_block_rms(1.0),
      optax.add_decayed_weights(c.weight_decay, mask=decay_mask),
      optax.scale_by_learning_rate(lr),
  )


def in_image_tower(path) -> bool:
  """Whether a pytree path (of the params or anything shaped like them) is in the image tower."""
  first = path[0]
  return getattr(first, "key", getattr(first, "name", None)) == "image"


def tower_labels(params):
  """'image' for the image tower's parameters, 'rest' for everything else (text tower, heads)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: "image" if in_image_tower(path) else "rest", params)


def make_optimizer(optim_config, train_config) -> optax.GradientTransformation:
  """The full optimizer for the contrastive phase, including LiT-style freezing of the image tower.

  Reads `optim.*`, and from `train.*` the run length (the schedule) and the freezing mode.
  """
  c, t = optim_config, train_config
  steps = int(t.steps)
  main = _base_transform(c, schedule(c, steps))
  if t.freeze_image == "none":
    tx = main
  else:
    image = (optax.set_to_zero() if t.freeze_image == "all"
             else _base_transform(c, schedule(c, steps, offset=int(t.freeze_image_steps))))
    tx = optax.multi_transform({"image": image, "rest": main}, tower_labels)
  if c.clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(c.clip_norm), tx)
  return tx


def image_frozen_at(train_config, step: int) -> bool:
  """Whether the image tower is frozen at optimizer step `step` (0-based): its backward pass is skipped."""
  t = train_config
  return t.freeze_image == "all" or (t.freeze_image == "first_k" and step < t.freeze_image_steps)
