"""The dual encoder: two towers, linear projections (no bias) to a shared space, L2 norm, temperature.

The only module that reads the config (`model.*`, and `xla.*` for the hand-written backward passes).
The contrastive logits are `logit_scale() * img @ txt.T` (+ `logit_bias` for the sigmoid loss); the
loss itself lives outside the model.
Temperature: `log_logit_scale` starts at log(1 / temperature_init); the scale used is
exp(min(log_logit_scale, log(max_logit_scale))), so the gradient is zero while clipped (CLIP clips at
100). With `learn_temperature=False` its gradient is stopped (zero), which freezes it under Adam-type
optimisers as long as weight decay skips it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from basic_core.models.coatnet import CoAtNet
from basic_core.models.layers import Options, fold
from basic_core.models.text import TextTransformer
from basic_core.models.vit import ViT


def l2_normalize(x_BxD: jax.Array) -> jax.Array:
  return x_BxD * jax.lax.rsqrt(jnp.sum(x_BxD * x_BxD, axis=-1, keepdims=True) + 1e-12)


class TwoTower(nnx.Module):

  def __init__(self, model_config: ml_collections.ConfigDict,
               xla_config: ml_collections.ConfigDict | None = None, *, rngs: nnx.Rngs):
    m = model_config
    kernels = {} if xla_config is None else dict(dense_grad=xla_config.dense_grad,
                                                  attention_grad=xla_config.attention_grad)
    opts = Options(dtype=jnp.dtype(m.dtype), dropout=m.dropout, remat=m.remat, scan=m.scan_layers,
                   **kernels)
    if m.image.kind == "vit":
      self.image = ViT(image_size=m.image.image_size, **m.image.vit.to_dict(), opts=opts, rngs=rngs)
    elif m.image.kind == "coatnet":
      self.image = CoAtNet(image_size=m.image.image_size, **m.image.coatnet.to_dict(), opts=opts,
                           rngs=rngs)
    else:
      raise ValueError(f"model.image.kind must be 'vit' or 'coatnet', got {m.image.kind!r}")
    self.text = TextTransformer(**m.text.to_dict(), opts=opts, rngs=rngs)
    # Projections run in float32: they are cheap, and the embeddings feed float32 logits.
    self.image_proj, self.text_proj = (
        nnx.Linear(tower.out_dim, m.embed_dim, use_bias=False, rngs=rngs,
                   kernel_init=nnx.initializers.normal(tower.out_dim**-0.5))
        for tower in (self.image, self.text))
    self.log_logit_scale = nnx.Param(jnp.asarray(math.log(1.0 / m.temperature_init), jnp.float32))
    self.logit_bias = nnx.Param(jnp.asarray(m.logit_bias_init, jnp.float32))
    self.max_log_logit_scale = math.log(m.max_logit_scale)
    self.learn_temperature = m.learn_temperature

  def encode_image(self, images_BxHxWx3: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
    """Unit-norm float32 embeddings [B, embed_dim]."""
    features_BxW = self.image(images_BxHxWx3, key=key).astype(jnp.float32)
    return l2_normalize(self.image_proj(features_BxW))

  def encode_text(self, tokens_BxL: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
    """Unit-norm float32 embeddings [B, embed_dim]; pad id 0, pooled at the last non-pad token."""
    features_BxW = self.text(tokens_BxL, key=key).astype(jnp.float32)
    return l2_normalize(self.text_proj(features_BxW))

  def logit_scale(self) -> jax.Array:
    """exp(log_logit_scale) clipped at max_logit_scale; zero gradient when clipped or frozen."""
    log_scale = self.log_logit_scale[...]
    if not self.learn_temperature:
      log_scale = jax.lax.stop_gradient(log_scale)
    return jnp.exp(jnp.minimum(log_scale, self.max_log_logit_scale))

  def __call__(self, images_BxHxWx3: jax.Array, tokens_BxL: jax.Array, *,
               key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    return (self.encode_image(images_BxHxWx3, key=fold(key, 0)),
            self.encode_text(tokens_BxL, key=fold(key, 1)))


def build_model(model_config: ml_collections.ConfigDict, seed: int,
                xla_config: ml_collections.ConfigDict | None = None) -> TwoTower:
  """The model with freshly initialised weights; initialisation is jitted (eager NNX init is slow)."""
  return nnx.jit(lambda: TwoTower(model_config, xla_config, rngs=nnx.Rngs(seed)))()


def count_params(model_config: ml_collections.ConfigDict) -> dict[str, int]:
  """Parameter counts from shapes only (`nnx.eval_shape`: nothing is allocated, fine for basic-l).

  'image' and 'text' include their tower's projection (as OpenCLIP counts 'vision' and 'text');
  'head' is the temperature and the logit bias; 'total' is the sum.
  """
  model = nnx.eval_shape(lambda: TwoTower(model_config, rngs=nnx.Rngs(0)))
  size = lambda *modules: sum(leaf.size for m in modules for leaf in jax.tree.leaves(
      nnx.state(m, nnx.Param)))
  counts = dict(image=size(model.image, model.image_proj), text=size(model.text, model.text_proj),
                head=model.log_logit_scale.size + model.logit_bias.size)
  counts["total"] = sum(counts.values())
  return counts
