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

  def embed_patches(self, images_BxHxWx3: jax.Array) -> jax.Array:
    """The strided patch convolution as one matmul over flattened patches, [B, h*w, width].

    Same arithmetic as `self.patch_embed(images)` (whose kernel it uses), but XLA:CPU runs the
    convolution's weight gradient inside a loop as a slow generic convolution (2.7 s of a 44 s
    accumulated peer-vit step, measured); as a matmul it takes milliseconds.
    """
    p = self.patch_embed.kernel_size[0]
    b, h, w, c = images_BxHxWx3.shape
    dtype = self.patch_embed.dtype or images_BxHxWx3.dtype
    patches_BxhxpxwxpxC = images_BxHxWx3.reshape(b, h // p, p, w // p, p, c)
    patches_BxPxF = patches_BxhxpxwxpxC.transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, p * p * c)
    kernel_FxD = self.patch_embed.kernel[...].reshape(p * p * c, -1)
    return patches_BxPxF.astype(dtype) @ kernel_FxD.astype(dtype)

  def __call__(self, images_BxHxWx3: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
    """Pooled features [B, width] (the class token after ln_post)."""
    patches_BxPxD = self.embed_patches(images_BxHxWx3)
    b, d, dtype = patches_BxPxD.shape[0], patches_BxPxD.shape[-1], patches_BxPxD.dtype
    cls_Bx1xD = jnp.broadcast_to(self.cls_token[...].astype(dtype), (b, 1, d))
    x_BxLxD = jnp.concatenate([cls_Bx1xD, patches_BxPxD], axis=1)
    x_BxLxD = self.ln_pre(x_BxLxD + self.pos_embed[...].astype(dtype)[None])
    cls_Bx1 = jnp.zeros((b, 1), jnp.int32)
    cls_Bx1xD = self.transformer(constrain(x_BxLxD, SEQ), key=key, rows_BxQ=cls_Bx1)
    return self.ln_post(cls_Bx1xD[:, 0])
