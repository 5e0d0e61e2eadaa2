"""The train step: towers + loss (naive or BASIC-accumulated) + optimizer update, as one jitted function.

The model is split once into a static graph and a parameter pytree (Flax NNX's split/merge pattern), so
the step is a pure function of `(state, batch)`: jit can donate the state, shard it, and hand back a
`Compiled` object whose `memory_analysis()` the benchmarks read. All randomness comes from
`fold_in(key(seed), step)`, then per example from its global index (see accumulate.py), so a resumed
run and a run with another microbatch size draw exactly the same numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from basic_core import accumulate
from basic_core.augment import preprocess
from basic_core.losses import make_estimator_loss_fn
from basic_core.optim import in_image_tower


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: jit caches key on it
class ModelFns:
  """Pure functions of the parameter pytree, built once from an NNX model (`split_model`)."""
  graphdef: Any
  rest: Any  # non-parameter NNX state (empty for our models), kept static
  dropout: bool  # whether the towers draw dropout masks from the example keys (model.dropout > 0)
  augment: bool  # whether images are augmented from the example keys (data.augment)

  def merge(self, params):
    return nnx.merge(self.graphdef, params, self.rest)

  def embed(self, params, batch: dict, keys: jax.Array | None, *, frozen_image: bool = False):
    """Normalised (image, text) embeddings of a batch; `keys` [B] drive augmentation and dropout."""
    if frozen_image:
      params = freeze_image(params)
    model = self.merge(params)
    augment_keys = image_keys = text_keys = None
    if keys is not None:
      augment_keys, image_keys, text_keys = (
          jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, i) for i in range(3))
      if not self.dropout:
        image_keys = text_keys = None
      if not self.augment:
        augment_keys = None
    images = preprocess_images(batch["image"], augment_keys)
    return (model.encode_image(images, key=image_keys),
            model.encode_text(batch["text"], key=text_keys))

  def head_loss(self, loss_fn: Callable) -> Callable:
    """`(image_emb, text_emb, params) -> loss_fn(image_emb, text_emb, temperature, bias)`: the loss with
    the model's temperature and bias."""

    def fn(image_emb, text_emb, params):
      model = self.merge(params)
      return loss_fn(image_emb, text_emb, model.logit_scale(), model.logit_bias[...])

    return fn


def preprocess_images(images_u8: jax.Array, keys: jax.Array | None) -> jax.Array:
  """uint8 -> float32; with per-example keys, augmentation that does not depend on the batch it sits in."""
  if keys is None:
    return preprocess(images_u8)
  return jax.vmap(lambda im, k: preprocess(im[None], k)[0])(images_u8, keys)


def freeze_image(params):
  """Stop gradients into the image tower (LiT-style locking skips its backward pass entirely)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: jax.lax.stop_gradient(x) if in_image_tower(path) else x, params)


def split_model(model: nnx.Module, *, dropout: bool, augment: bool) -> tuple[ModelFns, Any]:
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  return ModelFns(graphdef, rest, dropout=dropout, augment=augment), params


def init_state(params, tx: optax.GradientTransformation, estimator: dict | None = None) -> dict:
  """{step, params, opt_state}, and the loss estimator's state (losses.init_estimator_state) if it has
  one: kept, donated and checkpointed with the rest."""
  state = dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
  if estimator is not None:
    state["estimator"] = estimator
  return state


def make_train_step(fns: ModelFns, tx: optax.GradientTransformation, loss_config, *, seed: int,
                    microbatches: int = 1, frozen_image: bool = False) -> Callable:
  """`step(state, batch) -> (state, metrics)`, not yet jitted (see `jit_train_step`).

  `microbatches` K > 1 runs BASIC's accumulated step (accumulate.py) over K microbatches of the batch;
  K = 1 the plain step. `seed` keys every random number of the run (`fold_in(key(seed), step)`).
  The loss's estimator (loss.estimator) reads and returns `state["estimator"]` and, for SogCLR, each
  row's pool index `batch["index"]`; it is updated once a step, from the whole batch's embeddings.
  """
  loss_fn = make_estimator_loss_fn(loss_config)
  base_key = jax.random.key(seed)

  def embed(params, batch, keys):
    return fns.embed(params, batch, keys, frozen_image=frozen_image)

  def step(state, batch):
    key = jax.random.fold_in(base_key, state["step"])
    head_loss = fns.head_loss(
        lambda i, t, s, b: loss_fn(i, t, s, b, state.get("estimator"), batch.get("index")))
    if microbatches == 1:
      (loss, estimator), grads = accumulate.naive_value_and_grad(
          embed, head_loss, state["params"], batch, key, has_aux=True)
    else:
      (loss, estimator), grads = accumulate.accumulated_value_and_grad(
          embed, head_loss, state["params"], batch, key, microbatches, has_aux=True)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = dict(loss=loss, grad_norm=optax.tree.norm(grads),
                   logit_scale=fns.merge(params).logit_scale())
    next_state = dict(state, step=state["step"] + 1, params=params, opt_state=opt_state)
    if estimator is not None:
      next_state["estimator"] = estimator
    return next_state, metrics

  return step


def compiler_options(xla_config) -> dict:
  """XLA options for the train step: `xla.cpu_scheduler` on XLA:CPU.

  XLA:CPU's default scheduler orders the program for concurrency (the two towers run side by side) and
  keeps rematerialised activations alive anyway when layers are unrolled; its memory-minimising
  scheduler makes remat save memory without `lax.scan`, at some speed (peer-vit, batch 256, layers
  unrolled, `dots_saveable`: compiled temp 4835 -> 2947 MiB).
  """
  if xla_config is None or jax.default_backend() != "cpu":
    return {}
  return {"xla_cpu_enable_concurrency_optimized_scheduler": xla_config.cpu_scheduler == "concurrency"}


def jit_train_step(step: Callable, state_sharding=None, batch_sharding=None, *, xla=None) -> Callable:
  """Jit with the state donated; shardings pin the layout so every step reuses the same buffers.

  With shardings the step is traced under their mesh, so the towers' activation constraints apply.
  `xla` (the config's `xla` section) adds its compiler options (see `compiler_options`).
  """
  options = compiler_options(xla)
  if state_sharding is None:
    return jax.jit(step, donate_argnums=(0,), compiler_options=options)
  mesh = batch_sharding.mesh

  def step_on_mesh(state, batch):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return step(state, batch)

  return jax.jit(step_on_mesh, donate_argnums=(0,), in_shardings=(state_sharding, batch_sharding),
                 out_shardings=(state_sharding, None), compiler_options=options)
