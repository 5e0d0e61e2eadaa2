"""Pieces every tower shares: the pre-LN Transformer block, stacks of identical blocks, dropout, remat.

Three conventions hold in every tower:
- Randomness is explicit. A block's `__call__(x, *, key=None)` takes a `jax.random` key and uses it
  only for dropout; with `key=None` the model is deterministic. No `nnx.Rngs` is read at call time, so
  replaying a key replays the function (BASIC's accumulation runs every microbatch twice).
- Parameters are float32; `Options.dtype` is the compute dtype (bfloat16 halves activation memory).
  Softmax logits are computed in float32.
- `Stack` holds n identical blocks. With `Options.scan` they are stored stacked (leading layer axis) and
  run under `lax.scan`; otherwise as a list in a Python loop. Either way each block runs under the remat
  policy. On XLA:CPU remat only saves memory inside a scan (see the project's jax_env_notes, section 3).
  Both layouts hold identical initial weights (the loop layout slices the stacked init), so switching
  layout changes the parameter paths (`blocks/attn/...` vs `blocks/3/attn/...`), never the function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec as P

from basic_core.models.attend import ATTENTION_PROBS, attend, reference_attend
from basic_core.models.matmul import DENSE_OUTPUT, dense_dot_general

ACTIVATION_RULES = {"batch": "data"}
"""Logical activation axis -> mesh axis; names not listed are replicated. A sharding module may extend it."""

SEQ = ("batch", "seq", "embed")  # logical names of B x L x D activations
IMAGE = ("batch", "height", "width", "embed")  # logical names of B x H x W x C activations

_cp = jax.checkpoint_policies
_NAMED = _cp.save_only_these_names(DENSE_OUTPUT, ATTENTION_PROBS)  # what our custom_vjps hide
REMAT_POLICIES = {
    "none": None,  # no checkpointing: the backward pass finds every activation saved
    "dots_saveable": _cp.save_from_both_policies(_cp.dots_saveable, _NAMED),  # keep matmul outputs
    "dots_with_no_batch_dims_saveable": _cp.save_from_both_policies(
        _cp.dots_with_no_batch_dims_saveable, _NAMED),
    "full": _cp.nothing_saveable,  # recompute the whole block in the backward pass
}
"""`model.remat` -> `jax.checkpoint` policy, cheapest first (least recomputation): the planner's order."""

LN_EPS = 1e-5  # OpenCLIP's LayerNorm epsilon


@dataclasses.dataclass(frozen=True)
class Options:
  """How blocks are run; shared by every tower."""
  dtype: jnp.dtype = jnp.float32  # compute dtype; parameters are always float32
  dropout: float = 0.0  # residual-branch dropout rate, applied only when a key is given
  remat: str = "none"  # a key of REMAT_POLICIES
  scan: bool = True  # stacked blocks under lax.scan, else a Python loop
  dense_grad: str = "ynn"  # ynn | autodiff: dense weight gradients (`models.matmul`; xla.dense_grad)
  attention_grad: str = "manual"  # manual | autodiff: attention's backward (`models.attend`; xla.*)


def constrain(x: jax.Array, names: Sequence[str]) -> jax.Array:
  """Shards activation `x` by logical axis `names` under the active mesh; a no-op without one."""
  if not jax.sharding.get_abstract_mesh().axis_names:
    return x
  return jax.lax.with_sharding_constraint(x, P(*[ACTIVATION_RULES.get(n) for n in names]))


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  """Inverted dropout driven by an explicit key; the identity when key is None or rate is 0.

  `key` is one key, or one key per example ([B]): then example b's mask depends only on its own key,
  so it is the same whichever microbatch the example sits in (BASIC's accumulation relies on this).
  """
  if key is None or rate == 0.0:
    return x
  if key.ndim == 0:
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  else:
    keep = jax.vmap(lambda k: jax.random.bernoulli(k, 1.0 - rate, x.shape[1:]))(key)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def fold(key: jax.Array | None, i: int) -> jax.Array | None:
  """`fold_in(key, i)` for one key or per-example keys, passing None through (no key = no dropout)."""
  if key is None:
    return None
  if key.ndim == 0:
    return jax.random.fold_in(key, i)
  return jax.vmap(jax.random.fold_in, in_axes=(0, None))(key, i)


def split(key: jax.Array, n: int) -> jax.Array:
  """n keys [n], or [n, B] for per-example keys [B] (the layer axis first, as scanned blocks need)."""
  if key.ndim == 0:
    return jax.random.split(key, n)
  return jax.vmap(lambda k: jax.random.split(k, n), out_axes=1)(key)


def gelu(x: jax.Array) -> jax.Array:
  return jax.nn.gelu(x, approximate=False)  # exact erf GELU, as torch.nn.GELU in OpenCLIP


def layer_norm(dim: int, opts: Options, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(dim, epsilon=LN_EPS, dtype=opts.dtype, param_dtype=jnp.float32, rngs=rngs)


def linear(d_in: int, d_out: int, opts: Options, rngs: nnx.Rngs, **kw) -> nnx.Linear:
  dot_general = dense_dot_general if opts.dense_grad == "ynn" else jax.lax.dot_general
  return nnx.Linear(d_in, d_out, dtype=opts.dtype, param_dtype=jnp.float32, dot_general=dot_general,
                    rngs=rngs, **kw)


def relative_index(h: int, w: int) -> np.ndarray:
  """[h*w, h*w] index into a (2h-1)(2w-1) table of the 2D offset between every pair of positions."""
  coords_2xL = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij")).reshape(2, -1)
  delta_2xLxL = coords_2xL[:, :, None] - coords_2xL[:, None, :]
  return (delta_2xLxL[0] + h - 1) * (2 * w - 1) + (delta_2xLxL[1] + w - 1)


class Attention(nnx.Module):
  """Multi-head self-attention with OpenCLIP's layout: one qkv projection and one out projection, biased.

  `causal` masks future positions (text). `rel_hw=(h, w)` adds a learned bias per head and 2D offset
  over an h x w feature map (CoAtNet's relative attention); its table size depends on the map size.
  `in_dim` may differ from `width` (CoAtNet's first block of a stage widens the features).
  """

  def __init__(self, in_dim: int, width: int, heads: int, *, causal: bool = False,
               rel_hw: tuple[int, int] | None = None, opts: Options, rngs: nnx.Rngs):
    self.qkv = linear(in_dim, 3 * width, opts, rngs)
    self.out = linear(width, width, opts, rngs)
    self.heads, self.causal, self.rel_hw = heads, causal, rel_hw
    self.attend = attend if opts.attention_grad == "manual" else reference_attend
    if rel_hw is not None:
      h, w = rel_hw
      init = nnx.initializers.normal(0.02)
      self.rel_bias = nnx.Param(init(rngs.params(), ((2 * h - 1) * (2 * w - 1), heads), jnp.float32))

  def __call__(self, x_BxLxD: jax.Array, rows_BxQ: jax.Array | None = None) -> jax.Array:
    """[B, L, D] -> [B, L, width]; with `rows_BxQ`, only those query positions: [B, Q, width].

    Keys and values always come from every position; asking for a few rows skips the query and output
    projections of the others (the last block of a tower pooled at one token needs only that token).
    """
    b, length, _ = x_BxLxD.shape
    width = self.out.in_features
    if rows_BxQ is None:
      qkv_BxLx3W = self.qkv(x_BxLxD)
      q_BxQxW, kv_BxLx2W = qkv_BxLx3W[..., :width], qkv_BxLx3W[..., width:]
      rows_BxQ = jnp.arange(length)[None]
    else:
      kernel, qkv_bias = self.qkv.kernel[...], self.qkv.bias[...]
      dtype = self.qkv.dtype or x_BxLxD.dtype
      rows_x_BxQxD = jnp.take_along_axis(x_BxLxD, rows_BxQ[..., None], axis=1)
      project = lambda x, cols: (x.astype(dtype) @ kernel[:, cols].astype(dtype)
                                 + qkv_bias[None, None, cols].astype(dtype))
      q_BxQxW = project(rows_x_BxQxD, slice(None, width))
      kv_BxLx2W = project(x_BxLxD, slice(width, None))
    q_BxQxHxK = q_BxQxW.reshape(b, -1, self.heads, width // self.heads)
    k_BxLxHxK, v_BxLxHxK = (kv_BxLx2W[..., i * width:(i + 1) * width].reshape(b, length, self.heads, -1)
                            for i in range(2))
    bias = None  # additive, broadcast to [B, H, Q, L]
    if self.rel_hw is not None:
      bias = jnp.moveaxis(self.rel_bias[...][relative_index(*self.rel_hw)], -1, 0)[None]
    if self.causal:
      future_BxQxL = jnp.arange(length)[None, None] > rows_BxQ[..., None]
      masked_Bx1xQxL = jnp.where(future_BxQxL[:, None], jnp.finfo(jnp.float32).min, 0.0)
      bias = masked_Bx1xQxL if bias is None else bias + masked_Bx1xQxL
    heads = lambda x: jnp.swapaxes(x, 1, 2)  # [B, L, H, K] <-> [B, H, L, K]
    out_BxHxQxK = self.attend(heads(q_BxQxHxK), heads(k_BxLxHxK), heads(v_BxLxHxK), bias,
                              scale=q_BxQxHxK.shape[-1] ** -0.5)
    out_BxQxHxK = heads(out_BxHxQxK)
    return self.out(out_BxQxHxK.reshape(b, out_BxQxHxK.shape[1], -1))


class Mlp(nnx.Module):
  """fc -> GELU -> proj, both biased."""

  def __init__(self, width: int, hidden: int, *, opts: Options, rngs: nnx.Rngs):
    self.fc = linear(width, hidden, opts, rngs)
    self.proj = linear(hidden, width, opts, rngs)

  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    return self.proj(gelu(self.fc(x_BxLxD)))


class Block(nnx.Module):
  """Pre-LN Transformer block, x += attn(ln_1(x)); x += mlp(ln_2(x)); used by ViT, text and CoAtNet.

  For CoAtNet's first block of a stage, `in_dim != width` adds a linear shortcut and the caller's `pool`
  downsamples both the residual stream and the normalised input: x <- proj(pool(x)) + attn(pool(ln(x))).
  """

  def __init__(self, width: int, heads: int, mlp_ratio: int, *, in_dim: int | None = None,
               causal: bool = False, rel_hw: tuple[int, int] | None = None, opts: Options,
               rngs: nnx.Rngs):
    in_dim = in_dim or width
    self.ln_1 = layer_norm(in_dim, opts, rngs)
    self.attn = Attention(in_dim, width, heads, causal=causal, rel_hw=rel_hw, opts=opts, rngs=rngs)
    self.ln_2 = layer_norm(width, opts, rngs)
    self.mlp = Mlp(width, mlp_ratio * width, opts=opts, rngs=rngs)
    self.shortcut = linear(in_dim, width, opts, rngs) if in_dim != width else None
    self.rate = opts.dropout

  def __call__(self, x_BxLxD: jax.Array, *, key: jax.Array | None = None,
               pool: Callable[[jax.Array], jax.Array] | None = None,
               rows_BxQ: jax.Array | None = None) -> jax.Array:
    """With `rows_BxQ` (no dropout), returns only those positions [B, Q, D], computing nothing else."""
    h_BxLxD = self.ln_1(x_BxLxD)
    if pool is not None:
      x_BxLxD, h_BxLxD = pool(x_BxLxD), pool(h_BxLxD)
    if self.shortcut is not None:
      x_BxLxD = self.shortcut(x_BxLxD)
    if rows_BxQ is not None:
      assert key is None or self.rate == 0.0, "row selection would change the dropout masks"
      x_BxLxD = jnp.take_along_axis(x_BxLxD, rows_BxQ[..., None], axis=1)
    x_BxLxD = x_BxLxD + dropout(self.attn(h_BxLxD, rows_BxQ), self.rate, fold(key, 0))
    return x_BxLxD + dropout(self.mlp(self.ln_2(x_BxLxD)), self.rate, fold(key, 1))


def run_block(block: nnx.Module, x: jax.Array, key: jax.Array | None, *, remat: str,
              names: Sequence[str], **kwargs) -> jax.Array:
  """`block(x, key=key, **kwargs)` under the remat policy, its output constrained to `names`.

  The block is split into (graphdef, state) so that `jax.checkpoint` sees a pure function of arrays.
  """
  graphdef, state = nnx.split(block)

  def apply(state, x, key):
    return constrain(nnx.merge(graphdef, state)(x, key=key, **kwargs), names)

  if remat != "none":
    apply = jax.checkpoint(apply, policy=REMAT_POLICIES[remat])
  return apply(state, x, key)


class Stack(nnx.Module):
  """`n` identical blocks built by `make_block(rngs)`, run one after another (see module docstring)."""

  def __init__(self, make_block: Callable[[nnx.Rngs], nnx.Module], n: int, names: Sequence[str], *,
               opts: Options, rngs: nnx.Rngs):
    keys = jax.random.split(rngs.params(), n)
    stacked = nnx.vmap(lambda k: make_block(nnx.Rngs(k)), in_axes=0, out_axes=0)(keys)
    if opts.scan:
      self.blocks = stacked
    else:  # the same weights, sliced (also keeps tracing linear in depth for eval_shape / jit init)
      graphdef, state = nnx.split(stacked)
      self.blocks = nnx.List(
          [nnx.merge(graphdef, jax.tree.map(lambda w, i=i: w[i], state)) for i in range(n)])
    self.n, self.scan, self.remat, self.names = n, opts.scan, opts.remat, tuple(names)
    self.blocks_rate = opts.dropout

  def __call__(self, x: jax.Array, *, key: jax.Array | None = None,
               rows_BxQ: jax.Array | None = None) -> jax.Array:
    """All positions, or with `rows_BxQ` only those rows of the output, [B, Q, D].

    A tower pooled at one token (ViT's class token, the text end token) needs the last block's output
    at that token only; without dropout the last block then runs its queries, MLP and residual on those
    rows alone (12% fewer training FLOPs for peer-vit's 6-block towers; the same function, tested).
    """
    keys = None if key is None else split(key, self.n)
    run = lambda block, x, key, **kw: run_block(block, x, key, remat=self.remat, names=self.names, **kw)
    prune = rows_BxQ is not None and (key is None or self.blocks_rate == 0.0)
    n_full = self.n - 1 if prune else self.n
    if not self.scan:
      for i, block in enumerate(self.blocks[:n_full]):
        x = run(block, x, None if keys is None else keys[i])
      if prune:
        x = run(self.blocks[-1], x, None, rows_BxQ=rows_BxQ)
    else:
      graphdef, state = nnx.split(self.blocks)

      def body(x, state_and_key):
        state_i, key_i = state_and_key
        return run(nnx.merge(graphdef, state_i), x, key_i), None

      head = lambda tree: jax.tree.map(lambda w: w[:n_full], tree)
      x, _ = jax.lax.scan(body, x, (head(state), head(keys)))
      if prune:
        last = nnx.merge(graphdef, jax.tree.map(lambda w: w[-1], state))
        x = run(last, x, None, rows_BxQ=rows_BxQ)
    if rows_BxQ is not None and not prune:
      x = jnp.take_along_axis(x, rows_BxQ[..., None], axis=1)
    return x
