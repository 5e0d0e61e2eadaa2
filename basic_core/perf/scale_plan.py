"""Scale plan on paper: memory per device of a config on a mesh, without allocating or compiling the model.

    python -m basic_core.plan --config basic-l --mesh data=64,model=8 --batch 65536 --microbatch 128
        [--rules tensor] [--memory 32GiB] [--set key=value ...] [--json]

Exact, from the abstract state (`state.build(config, abstract=True)`) placed by the config's sharding
rules, as the trainer places it:
  params      the parameters' bytes on one device;
  gradients   2 x params: the accumulated gradient and one microbatch's (same layout as the params);
  optimizer   the optimizer state's bytes on one device (mirrors the params; see sharding.py).
Formulas (N contrastive batch, m microbatch, D embedding dim, P = mesh.data, M = mesh.model, b = bytes
of the compute dtype; all float32 values are 4 bytes):
  batch       N (S^2 3 + 4 L) / P: uint8 images and int32 tokens, split over data;
  embeddings  2 N D 4 x 2 / P + 2 N D 4: the cached image and text embeddings and their gradients (split
              over data), plus the whole text embeddings and their [N, D] gradient that every device's rows
              of the loss need;
  loss        3 N T 4 / P with T = loss.tile (T = N for the dense loss): logits, their exponentials and
              their gradient for one row block, measured with XLA's memory analysis (the tiled and the
              dense loss alike shard the block's columns over data);
  activations m/P examples x [ sum over blocks of tokens x saved(policy)  +  2 x (tokens x saved(none))
              of the largest block, being differentiated (values and cotangents)  +  the stem ]
              + 3 float32 copies of the microbatch's pixels (decode, augment, normalise).
  saved(policy) per token of a block = b (r W + i W_inner / M') + 4 a H L / M', with (r, i, a) from
              `_TRANSFORMER` / `_MBCONV`: residual-stream values, inner values (qkv, MLP hidden; MBConv's
              expanded width) and float32 attention maps of H heads over L tokens that the policy keeps.
              M' = M when the rules split the inner widths over the model axis (tensor), else 1.
  peak        params + gradients + optimizer + batch + embeddings + max(loss, activations): the loss
              (step 2 of the accumulated step) and the towers' backward (step 3) are never live together.
Check against XLA (compiled temp bytes per device vs gradients + embeddings + max(loss, activations);
tests/test_plan.py asserts a factor of 2): ViT towers on 1 device 0.82-1.29 for every remat policy, on
8x1 / 2x4 / 4x2 / 1x8 meshes (tensor and fsdp rules) 0.75-1.14; CoAtNet with remat none 0.80. On
XLA:CPU remat saves memory only inside scans, so a CoAtNet whose stages are single (unscanned) blocks
compiles bigger than the formula says under remat (0.48 for a 1-block-per-stage CoAtNet, remat full).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from basic_core import sharding
from basic_core import state as state_lib
from basic_core.configs import microbatching

# Per token of a block, what the backward pass finds saved under each remat policy.
# Transformer block (pre-LN; attention then MLP of ratio R): (r, i_attn, i_mlp, a) meaning
#   r W residual-stream values, (i_attn + i_mlp R) W inner values, a attention maps (H x L floats).
#   none: x, ln_1(x), out-proj, ln_2, proj | qkv 3, heads' output 1, fc R, gelu R | logits, probs.
#   dots_saveable: the block input and every matmul / einsum output; no_batch_dims: not the einsums.
_TRANSFORMER = {"none": (5, 4, 2, 2), "dots_saveable": (3, 4, 1, 1),
                "dots_with_no_batch_dims_saveable": (3, 3, 1, 0), "full": (1, 0, 0, 0)}
# MBConv: (r, i) with inner width = expansion x width.
#   none: x, norm(x), project | expand, gelu, depthwise, norm, gelu, se; dots_saveable: input, convs.
_MBCONV = {"none": (3, 6), "dots_saveable": (2, 2), "dots_with_no_batch_dims_saveable": (1, 0),
           "full": (1, 0)}
_LOSS_BUFFERS = 3  # [T, N] float32 buffers live in the loss (measured: tiled and dense)
_PIXEL_COPIES = 3


@dataclasses.dataclass(frozen=True)
class Block:
  """A repeated unit of a tower: `count` blocks over `tokens` positions."""
  kind: str  # transformer | mbconv
  count: int
  tokens: int
  width: int
  inner: int  # transformer: width; mbconv: expanded width
  heads: int = 0
  mlp_ratio: int = 0

  def saved_bytes(self, policy: str, act_bytes: int, model_split: int) -> float:
    """Bytes one token of one block leaves for the backward pass under `policy`."""
    if self.kind == "mbconv":
      r, i = _MBCONV[policy]
      return act_bytes * (r * self.width + i * self.inner / model_split)
    r, i_attn, i_mlp, a = _TRANSFORMER[policy]
    inner = (i_attn + i_mlp * self.mlp_ratio) * self.inner / model_split
    return act_bytes * (r * self.width + inner) + 4 * a * self.heads * self.tokens / model_split


def tower_blocks(model_config) -> tuple[list[Block], int]:
  """(blocks of both towers, stem values per example) from the config alone."""
  m = model_config
  text = m.text
  blocks = [Block("transformer", text.layers, text.context, text.width, text.width, text.heads,
                  text.mlp_ratio)]
  stem = 2 * text.context * text.width  # token + position embeddings
  size = m.image.image_size
  if m.image.kind == "vit":
    v = m.image.vit
    tokens = 1 + (size // v.patch) ** 2
    blocks.append(Block("transformer", v.layers, tokens, v.width, v.width, v.heads, v.mlp_ratio))
    return blocks, stem + 2 * tokens * v.width
  c = m.image.coatnet
  size //= 2
  stem += 3 * size * size * c.stem  # two stem convs and their activation
  for kind, depth, width, stride in zip(c.types, c.blocks, c.widths, c.strides, strict=True):
    size //= stride
    if kind == "C":
      blocks.append(Block("mbconv", depth, size * size, width, c.expansion * width))
    else:
      blocks.append(Block("transformer", depth, size * size, width, width, width // c.head_dim,
                          c.expansion))
  return blocks, stem


def activation_bytes(config, examples: float, model_split: int) -> float:
  """Activation memory of the towers' backward pass over `examples` examples (see module docstring)."""
  m = config.model
  b = jnp.dtype(m.dtype).itemsize
  blocks, stem = tower_blocks(m)
  saved = sum(blk.count * blk.tokens * blk.saved_bytes(m.remat, b, model_split) for blk in blocks)
  working = max(blk.tokens * blk.saved_bytes("none", b, model_split) for blk in blocks)
  pixels = _PIXEL_COPIES * 4 * 3 * m.image.image_size ** 2
  return examples * (saved + 2 * working + b * stem + pixels)


def plan(config, data: int, model: int) -> dict:
  """Bytes per device of every part of the train step of `config` on a data x model mesh."""
  n = config.train.batch_size
  micro, _ = microbatching(config.train)
  for name, size in (("batch", n), ("microbatch", micro)):
    if size % data:
      raise sharding.ShardingError(f"{name} {size} is not divisible by mesh data={data}")
  mesh_shape = dict(data=data, model=model)
  state = state_lib.build(config, abstract=True).state
  specs, placement = sharding.state_specs(state, sharding.config_rules(config.mesh), mesh_shape)
  params = sharding.bytes_per_device(state["params"], specs["params"], mesh_shape)
  d, tile = config.model.embed_dim, config.loss.tile or n
  size, length = config.model.image.image_size, config.model.text.context
  split = model if config.mesh.rules == "tensor" else 1
  breakdown = dict(
      params=params,
      gradients=2 * params,
      optimizer=sharding.bytes_per_device(state["opt_state"], specs["opt_state"], mesh_shape),
      batch=n * (3 * size * size + 4 * length) / data,
      embeddings=2 * n * d * 4 * 2 / data + 2 * n * d * 4,
      loss=_LOSS_BUFFERS * n * tile * 4 / data,
      activations=activation_bytes(config, micro / data, split),
  )
  breakdown = {k: int(v) for k, v in breakdown.items()}
  transient = max(breakdown["loss"], breakdown["activations"])
  total = sum(v for k, v in breakdown.items() if k not in ("loss", "activations")) + transient
  shapes = sharding.param_shapes(state["params"])
  replicated = {name: shapes[name] for name in placement.replicated()}
  param_count = sum(int(np.prod(s)) for s in shapes.values())
  return dict(
      config=config.name, mesh=mesh_shape, rules=config.mesh.rules, batch=n, microbatch=micro,
      remat=config.model.remat, dtype=config.model.dtype, loss_tile=config.loss.tile,
      params=param_count, param_bytes=4 * param_count, bytes_per_device=int(total),
      breakdown=breakdown,
      replicated_params=int(sum(np.prod(s) for s in replicated.values())),
      replicated_names=len(replicated), fallbacks=placement.fallbacks)


def _gib(x: float) -> str:
  return f"{x / 2**30:9.2f} GiB"


def format_table(result: dict, budget: int) -> str:
  """A `plan` as text, against a budget of `budget` bytes per device."""
  mesh = result["mesh"]
  lines = [f"{result['config']}: {result['params'] / 1e9:.3f}B parameters ({_gib(result['param_bytes'])} "
           f"float32), mesh data={mesh['data']} x model={mesh['model']}, rules {result['rules']}",
           f"contrastive batch {result['batch']}, microbatch {result['microbatch']}, remat "
           f"{result['remat']}, {result['dtype']} activations, loss tile {result['loss_tile'] or 'dense'}"]
  lines += [f"  {name:<12}{_gib(value)}" for name, value in result["breakdown"].items()]
  verdict = "fits" if result["bytes_per_device"] <= budget else "does NOT fit"
  lines.append(f"  {'peak':<12}{_gib(result['bytes_per_device'])}  {verdict} in {budget / 2**30:.1f} GiB "
               f"per device (loss and activations are not live together)")
  lines.append(f"replicated: {result['replicated_names']} small tensors, {result['replicated_params']:,} "
               f"parameters")
  lines += [f"fallback: {line}" for line in result["fallbacks"]]
  return "\n".join(lines)
