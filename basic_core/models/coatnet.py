"""CoAtNet image tower (Dai et al. 2021), BASIC-L's image encoder (CoAtNet-7).

stem (3x3 conv stride 2, 3x3 conv) -> stages of MBConv ('C') or relative-attention Transformer ('T')
blocks -> global average pool -> LayerNorm. Each stage's first block downsamples by the stage's stride
and changes the width; the blocks after it are identical, so they are a `Stack` (scanned when
`model.scan_layers`).

No BatchNorm. The original MBConv uses BatchNorm, whose batch statistics make each example's
embedding depend on the other examples of its microbatch; BASIC's gradient accumulation could then not
equal the full-batch gradient (and passes 1 and 2 would see a "BN over M", not "BN over N", model).
MBConv here normalises per example: `norm='layer'` is LayerNorm over channels at each position,
`norm='group'` is GroupNorm (32 groups, fewer when the width has no such divisor).

Choices where the paper leaves freedom (they do not change the parameter count much):
- MBConv (pre-norm): x <- shortcut(x) + project(SE(act(norm(depthwise(act(expand(norm(x)))))))),
  expanded width = expansion * output width, stride on the depthwise conv, SE bottleneck
  se_ratio * output width (EfficientNet's convention), GELU everywhere.
- Downsampling shortcut: 2x2 average pool, then a 1x1 conv when the width changes.
- Transformer stages: layers.Block with a relative-position bias table per block over the stage's
  feature map; heads = width / head_dim; MLP ratio = `expansion` (4 in CoAtNet).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from basic_core.models.layers import (
  IMAGE,
  SEQ,
  Block,
  Options,
  Stack,
  constrain,
  dropout,
  fold,
  gelu,
  layer_norm,
  run_block,
)


def avg_pool(x_BxHxWxC: jax.Array, stride: int) -> jax.Array:
  """Non-overlapping stride x stride average pooling (identity for stride 1)."""
  if stride == 1:
    return x_BxHxWxC
  b, h, w, c = x_BxHxWxC.shape
  return x_BxHxWxC.reshape(b, h // stride, stride, w // stride, stride, c).mean(axis=(2, 4))


def make_norm(kind: str, dim: int, opts: Options, rngs: nnx.Rngs) -> nnx.Module:
  """Per-example normalisation over channels: LayerNorm or GroupNorm (see module docstring)."""
  if kind == "layer":
    return layer_norm(dim, opts, rngs)
  if kind == "group":
    return nnx.GroupNorm(dim, num_groups=math.gcd(32, dim), epsilon=1e-5, dtype=opts.dtype,
                         param_dtype=jnp.float32, rngs=rngs)
  raise ValueError(f"model.image.coatnet.norm must be 'layer' or 'group', got {kind!r}")


def conv(d_in: int, d_out: int, kernel: int, opts: Options, rngs: nnx.Rngs, **kw) -> nnx.Conv:
  return nnx.Conv(d_in, d_out, (kernel, kernel), padding="SAME", dtype=opts.dtype,
                  param_dtype=jnp.float32, rngs=rngs, **kw)


class SqueezeExcite(nnx.Module):
  """Channel gates from globally pooled features: x * sigmoid(up(act(down(mean_hw(x)))))."""

  def __init__(self, dim: int, hidden: int, *, opts: Options, rngs: nnx.Rngs):
    self.down = conv(dim, hidden, 1, opts, rngs)
    self.up = conv(hidden, dim, 1, opts, rngs)

  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    s_Bx1x1xC = x_BxHxWxC.mean(axis=(1, 2), keepdims=True)
    return x_BxHxWxC * jax.nn.sigmoid(self.up(gelu(self.down(s_Bx1x1xC))))


class MBConv(nnx.Module):
  """Pre-norm inverted bottleneck with squeeze-excitation (see module docstring for the layout)."""

  def __init__(self, in_dim: int, width: int, *, stride: int, expansion: int, se_ratio: float,
               norm: str, opts: Options, rngs: nnx.Rngs):
    mid = expansion * width
    self.norm = make_norm(norm, in_dim, opts, rngs)
    self.expand = conv(in_dim, mid, 1, opts, rngs)
    self.depthwise = conv(mid, mid, 3, opts, rngs, strides=stride, feature_group_count=mid,
                          use_bias=False)
    self.norm_mid = make_norm(norm, mid, opts, rngs)
    self.se = SqueezeExcite(mid, max(1, int(se_ratio * width)), opts=opts, rngs=rngs)
    self.project = conv(mid, width, 1, opts, rngs)
    self.shortcut = conv(in_dim, width, 1, opts, rngs) if in_dim != width else None
    self.stride, self.rate = stride, opts.dropout

  def __call__(self, x_BxHxWxC: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
    h = gelu(self.expand(self.norm(x_BxHxWxC)))
    h = self.project(self.se(gelu(self.norm_mid(self.depthwise(h)))))
    x_BxHxWxC = avg_pool(x_BxHxWxC, self.stride)
    if self.shortcut is not None:
      x_BxHxWxC = self.shortcut(x_BxHxWxC)
    return x_BxHxWxC + dropout(h, self.rate, key)


class Stage(nnx.Module):
  """`depth` blocks of one kind: a first block (stride, new width) then a Stack of identical ones."""

  def __init__(self, kind: str, in_dim: int, width: int, depth: int, stride: int,
               out_hw: tuple[int, int], *, head_dim: int, expansion: int, se_ratio: float, norm: str,
               opts: Options, rngs: nnx.Rngs):
    if kind == "C":
      make = lambda d_in, s, r: MBConv(d_in, width, stride=s, expansion=expansion,
                                       se_ratio=se_ratio, norm=norm, opts=opts, rngs=r)
      self.names = IMAGE
    elif kind == "T":
      make = lambda d_in, s, r: Block(width, width // head_dim, expansion, in_dim=d_in,
                                      rel_hw=out_hw, opts=opts, rngs=r)
      self.names = SEQ
    else:
      raise ValueError(f"model.image.coatnet.types: unknown stage type {kind!r} (C or T)")
    self.first = make(in_dim, stride, rngs)
    self.rest = Stack(lambda r: make(width, 1, r), depth - 1, self.names, opts=opts,
                      rngs=rngs) if depth > 1 else None
    self.kind, self.stride, self.remat = kind, stride, opts.remat

  def __call__(self, x_BxHxWxC: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
    b, h, w, _ = x_BxHxWxC.shape
    if self.kind == "T":  # attention stages work on the flattened map
      pool = None
      if self.stride > 1:
        pool = lambda t: avg_pool(t.reshape(b, h, w, -1), self.stride).reshape(b, -1, t.shape[-1])
      x = run_block(self.first, x_BxHxWxC.reshape(b, h * w, -1), fold(key, 0), remat=self.remat,
                    names=self.names, pool=pool)
    else:
      x = run_block(self.first, x_BxHxWxC, fold(key, 0), remat=self.remat, names=self.names)
    if self.rest is not None:
      x = self.rest(x, key=fold(key, 1))
    return x.reshape(b, h // self.stride, w // self.stride, -1)


class CoAtNet(nnx.Module):

  def __init__(self, *, image_size: int, stem: int, blocks: Sequence[int], widths: Sequence[int],
               types: str, strides: Sequence[int], head_dim: int, expansion: int, se_ratio: float,
               norm: str, opts: Options, rngs: nnx.Rngs):
    self.stem_1 = conv(3, stem, 3, opts, rngs, strides=2)
    self.stem_2 = conv(stem, stem, 3, opts, rngs)
    stages, size, in_dim = [], image_size // 2, stem
    for kind, depth, width, stride in zip(types, blocks, widths, strides):
      size //= stride
      stages.append(Stage(kind, in_dim, width, depth, stride, (size, size), head_dim=head_dim,
                          expansion=expansion, se_ratio=se_ratio, norm=norm, opts=opts, rngs=rngs))
      in_dim = width
    self.stages = nnx.List(stages)
    self.ln_post = layer_norm(in_dim, opts, rngs)
    self.out_dim = in_dim

  def __call__(self, images_BxHxWx3: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
    """Pooled features [B, widths[-1]]: mean over the last feature map, then LayerNorm."""
    x_BxHxWxC = self.stem_2(gelu(self.stem_1(images_BxHxWx3)))
    x_BxHxWxC = constrain(x_BxHxWxC, IMAGE)
    for i, stage in enumerate(self.stages):
      x_BxHxWxC = stage(x_BxHxWxC, key=fold(key, i))
    return self.ln_post(x_BxHxWxC.mean(axis=(1, 2)))
