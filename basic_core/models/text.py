"""Causal Transformer text tower (OpenCLIP / CLIP layout), pooled at the end token.

token + learned position embeddings -> causal pre-LN blocks -> ln_final at the end token.
The end token is the last non-pad token (pad id 0), so pooling needs no particular end-of-text id.
Because attention is causal and pooling reads the end position, tokens after it (padding) cannot
change the output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from basic_core.models.layers import SEQ, Block, Options, Stack, constrain, layer_norm


def end_positions(tokens_BxL: jax.Array) -> jax.Array:
  """[B] index of the last non-zero token of each row (0 for an all-pad row)."""
  positions_1xL = jnp.arange(tokens_BxL.shape[1])[None]
  return jnp.argmax(positions_1xL * (tokens_BxL != 0), axis=1)


class TextTransformer(nnx.Module):

  def __init__(self, *, vocab_size: int, context: int, width: int, layers: int, heads: int,
               mlp_ratio: int, opts: Options, rngs: nnx.Rngs):
    self.token_embed = nnx.Embed(vocab_size, width, dtype=opts.dtype, param_dtype=jnp.float32,
                                 embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
    self.pos_embed = nnx.Param(nnx.initializers.normal(0.01)(rngs.params(), (context, width)))
    self.transformer = Stack(lambda r: Block(width, heads, mlp_ratio, causal=True, opts=opts, rngs=r),
                        layers, SEQ, opts=opts, rngs=rngs)
    self.ln_final = layer_norm(width, opts, rngs)
    self.out_dim = width

  def __call__(self, tokens_BxL: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
    """Pooled features [B, width]; L may be shorter than the context."""
    x_BxLxD = self.token_embed(tokens_BxL)
    x_BxLxD = x_BxLxD + self.pos_embed[...][: tokens_BxL.shape[1]].astype(x_BxLxD.dtype)[None]
    end_Bx1 = end_positions(tokens_BxL)[:, None]
    end_Bx1xD = self.transformer(constrain(x_BxLxD, SEQ), key=key, rows_BxQ=end_Bx1)
    return self.ln_final(end_Bx1xD[:, 0])
