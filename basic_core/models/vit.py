"""ViT image tower with OpenCLIP's parameter layout, so that a config counts (and could load) like OpenCLIP.

patch conv (no bias) -> [class token; patches] + learned positions -> ln_pre -> pre-LN blocks
-> ln_post on the class token. The projection to the shared space lives in TwoTower.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from basic_core.models.layers import SEQ, Block, Options, Stack, constrain, layer_norm


class ViT(nnx.Module):

  def __init__(self, *, image_size: int, patch: int, width: int, layers: int, heads: int,
               mlp_ratio: int, opts: Options, rngs: nnx.Rngs):
    self.patch_embed = nnx.Conv(3, width, (patch, patch), strides=patch, padding="VALID",
                                use_bias=False, dtype=opts.dtype, param_dtype=jnp.float32, rngs=rngs)
    init = nnx.initializers.normal(width**-0.5)  # OpenCLIP's scale for both
    self.cls_token = nnx.Param(init(rngs.params(), (width,), jnp.float32))
    self.pos_embed = nnx.Param(init(rngs.params(), (1 + (image_size // patch)**2, width), jnp.float32))
    self.ln_pre = layer_norm(width, opts, rngs)
    self.transformer = Stack(lambda r: Block(width, heads, mlp_ratio, opts=opts, rngs=r), layers, SEQ,
                        opts=opts, rngs=rngs)
    self.ln_post = layer_norm(width, opts, rngs)
    self.out_dim = width

  def __call__(self, images_BxHxWx3: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
    """Pooled features [B, width] (the class token after ln_post)."""
    patches_BxhxwxD = self.patch_embed(images_BxHxWx3)
    b, d = patches_BxhxwxD.shape[0], patches_BxhxwxD.shape[-1]
    dtype = patches_BxhxwxD.dtype
    cls_Bx1xD = jnp.broadcast_to(self.cls_token[...].astype(dtype), (b, 1, d))
    x_BxLxD = jnp.concatenate([cls_Bx1xD, patches_BxhxwxD.reshape(b, -1, d)], axis=1)
    x_BxLxD = self.ln_pre(x_BxLxD + self.pos_embed[...].astype(dtype)[None])
    x_BxLxD = self.transformer(constrain(x_BxLxD, SEQ), key=key)
    return self.ln_post(x_BxLxD[:, 0])
