"""Scale plan on paper: memory per device of a config on a mesh, without allocating or compiling the model.

    python -m basic_core.plan --config basic-l --mesh data=64,model=8 --batch 65536 --microbatch 128
        [--rules tensor] [--memory 32GiB] [--set key=value ...] [--json] [--measure]

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
  activations m/P examples x [ stems + sum over unscanned blocks of live(block) + sum over scanned
              blocks of tokens x saved(policy) + max over scanned blocks of (live(block) - tokens x
              saved(policy)), the one being differentiated ] + 3 float32 copies of the microbatch's
              pixels (decode, augment, normalise). Scanned blocks are a `Stack`'s identical blocks under
              `model.scan_layers` (ViT, text, a CoAtNet stage after its first block); unscanned are a
              CoAtNet stage's first block (it downsamples) and every block of unrolled layers: XLA:CPU
              rematerialises only inside loops, so an unscanned block keeps its values and cotangents
              whatever the policy (the VJP of 64 examples through BASIC-S's image tower cut to one block
              per stage: 11.39 GB temp with remat full, 11.24 GB with none).
  saved(policy) per token of a block = b (r W + i W_inner / M') + 4 a H L / M', with (r, i, a) from
              `_TRANSFORMER` / `_MBCONV`: residual-stream values, inner values (qkv, MLP hidden; MBConv's
              expanded width) and float32 attention maps of H heads over L tokens that the policy keeps.
              M' = M when the rules split the inner widths over the model axis (tensor), else 1.
  live(block) per example, what one block holds while it is differentiated (values and cotangents):
              transformer  tokens x (saved(none), the cotangents, + its forward values: `forward`,
                           recomputed, or saved(none) under remat none);
              MBConv       `_LIVE` (XLA:CPU, measured): the inner width at the input resolution (a
                           stage's first block expands before its strided depthwise conv) and at the
                           output resolution, the output width, and a first block's input; CoAtNet's
                           stem likewise.
  peak        params + gradients + optimizer + batch + embeddings + max(loss, activations): the loss
              (step 2 of the accumulated step) and the towers' backward (step 3) are never live together.
Check against XLA (`--measure`, basic_core/perf/plan_xla.py: peak = arguments + outputs - aliased + temp
per device of the compiled step, simulated CPU devices; 2026-11-27, jax 0.10.2, XLA:CPU, a 2-core
x86-64 machine, FAST_COMPILE; `make plan-check` writes paper_figures/data/plan_vs_xla.jsonl), formula /
XLA at N = 65,536, remat full, tensor rules:
  basic-s  8x1 micro 512: 16.93 / 17.62 GiB = 0.96    64x1 micro 512: 3.76 / 3.87 GiB = 0.97
  basic-m  8x1 micro 256: 20.44 / 20.77 GiB = 0.98    16x4 micro 256: 5.33 / 5.21 GiB = 1.02
  basic-l  8x8 micro 128:  9.75 / 10.37 GiB = 0.94    64x8 micro 128: 5.47 / 5.44 GiB = 1.01
(each compiled in 22-38 s). Arguments match to a few bytes; the temporaries differ by 0.92-1.03. Before
the CoAtNet terms above (unscanned first blocks, expansion at the input resolution, XLA:CPU's float32
convolution buffers) the same rows were 0.32, 0.61, 0.41, 0.55, 0.71 and 0.95: the activations (2.6 GiB
planned for basic-s 8x1, where XLA's temp was 16 GiB). tests/test_plan.py holds 0.8-1.2 on reduced cases
(tiny ViT and CoAtNet, remat full and none; basic-s with fewer blocks on 2x4: 0.95-1.17). What XLA:CPU
does and an accelerator need not: keep unscanned blocks whole under remat, and hold convolution buffers in
float32 under bfloat16; on such a backend the plan likely overstates the activations (not checked here).
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
#   none: x, ln_1(x), x + attention, ln_2 | qkv 3, heads' output 1, fc R, gelu R | probs (what autodiff
#   keeps: a linear layer's backward needs its input, not its output; softmax's needs its probabilities).
#   dots_saveable: the block input and every matmul / einsum output; no_batch_dims: not the einsums.
#   forward (not a policy): what a block's forward pass materialises, so what recomputing it brings
#   back: none's values, the two output projections and the logits.
_TRANSFORMER = {"none": (4, 4, 2, 1), "dots_saveable": (3, 4, 1, 1),
                "dots_with_no_batch_dims_saveable": (3, 3, 1, 0), "full": (1, 0, 0, 0),
                "forward": (5, 4, 2, 2)}
# MBConv: (r, i) with inner width = expansion x width.
#   none: x, norm(x), project | expand, gelu, depthwise, norm, gelu, se; dots_saveable: input, convs.
_MBCONV = {"none": (3, 6), "dots_saveable": (2, 2), "dots_with_no_batch_dims_saveable": (1, 0),
           "full": (1, 0)}
# What XLA:CPU holds of one example while it differentiates a block (values and their cotangents), per
# channel and position, as (values in the compute dtype, float32 values): measured from the compiled temp
# bytes of one microbatch's VJP through single CoAtNet blocks (bfloat16 and float32; expansion 2, 4, 8;
# stride 1 and 2; stem 32 to 192 channels). XLA:CPU runs convolutions and their gradients in float32,
# hence the float32 values beside bfloat16 ones.
#   inner_in   MBConv inner width at the block's input resolution (expand, its GELU): the stride is on
#              the depthwise conv, so a stage's first block expands at the previous stage's resolution;
#   inner_out  MBConv inner width at the output resolution (depthwise, norm, GELU, SE, project's input);
#   width      MBConv output width (project, the shortcut, the sum);
#   entry      a stage's first block, per input channel at the input resolution (x, norm(x));
#   stem       CoAtNet's stem, per stem channel at half the image size (two convs and a GELU).
# inner_in and inner_out fit both dtypes exactly; stem + entry (a first block's input is the stem) are
# 34 bytes per channel measured at bfloat16, 41 at float32 (these counts: 36, 44); width is 8 bytes
# measured at bfloat16, its float32 count assumed.
_LIVE = dict(inner_in=(3, 1), inner_out=(3, 6), width=(2, 1), entry=(2, 1), stem=(2, 6))
LOSS_BUFFERS = 3  # [T, N] float32 buffers live in the loss (measured: tiled and dense; perf/scale.py)
_PIXEL_COPIES = 3


def _live(part: str, act_bytes: int) -> int:
  """Bytes per channel and position of a `_LIVE` part."""
  in_dtype, in_float32 = _LIVE[part]
  return in_dtype * act_bytes + in_float32 * 4


@dataclasses.dataclass(frozen=True)
class Block:
  """A repeated unit of a tower: `count` blocks over `tokens` positions.

  A CoAtNet stage's first block is its own Block (`scanned=False`, `in_width` its input width,
  `in_tokens` its input positions): it downsamples, so it is never part of a scanned stack.
  """
  kind: str  # transformer | mbconv
  count: int
  tokens: int
  width: int
  inner: int  # transformer: width; mbconv: expanded width
  heads: int = 0
  mlp_ratio: int = 0
  scanned: bool = True  # one of the identical blocks of a `Stack` (lax.scan when model.scan_layers)
  in_width: int = 0  # a stage's first block: its input width (0 for the others)
  in_tokens: int = 0  # a stage's first block: its input positions

  def saved_bytes(self, policy: str, act_bytes: int, model_split: int) -> float:
    """Bytes one token of one block leaves for the backward pass under `policy`."""
    if self.kind == "mbconv":
      r, i = _MBCONV[policy]
      return act_bytes * (r * self.width + i * self.inner / model_split)
    r, i_attn, i_mlp, a = _TRANSFORMER[policy]
    inner = (i_attn + i_mlp * self.mlp_ratio) * self.inner / model_split
    return act_bytes * (r * self.width + inner) + 4 * a * self.heads * self.tokens / model_split

  def live_bytes(self, act_bytes: int, model_split: int, policy: str = "full") -> float:
    """Bytes of one example live while one of these blocks is differentiated (values and cotangents).

    Transformer: the cotangents of what `none` saves, beside the values: the forward pass's, recomputed
    (any policy but `none`), or what `none` saved. MBConv: `_LIVE`, measured (recomputed).
    """
    in_tokens = self.in_tokens or self.tokens
    entry = in_tokens * self.in_width * _live("entry", act_bytes)
    if self.kind == "transformer":
      values = self.saved_bytes("none" if policy == "none" else "forward", act_bytes, model_split)
      return entry + self.tokens * (values + self.saved_bytes("none", act_bytes, model_split))
    inner = self.inner / model_split
    outputs = inner * _live("inner_out", act_bytes) + self.width * _live("width", act_bytes)
    return entry + in_tokens * inner * _live("inner_in", act_bytes) + self.tokens * outputs


def tower_blocks(model_config, act_bytes: int) -> tuple[list[Block], float]:
  """(blocks of both towers, bytes per example of their stems) from the config alone."""
  m = model_config
  text = m.text
  blocks = [Block("transformer", text.layers, text.context, text.width, text.width, text.heads,
                  text.mlp_ratio)]
  stem = act_bytes * 2 * text.context * text.width  # token + position embeddings
  size = m.image.image_size
  if m.image.kind == "vit":
    v = m.image.vit
    tokens = 1 + (size // v.patch) ** 2
    blocks.append(Block("transformer", v.layers, tokens, v.width, v.width, v.heads, v.mlp_ratio))
    return blocks, stem + act_bytes * 2 * tokens * v.width
  c = m.image.coatnet
  size //= 2
  stem += size * size * c.stem * _live("stem", act_bytes)
  in_width = c.stem
  for kind, depth, width, stride in zip(c.types, c.blocks, c.widths, c.strides, strict=True):
    in_tokens = size * size
    size //= stride
    if kind == "C":
      block = Block("mbconv", depth, size * size, width, c.expansion * width)
    else:
      block = Block("transformer", depth, size * size, width, width, width // c.head_dim, c.expansion)
    blocks.append(dataclasses.replace(block, count=1, scanned=False, in_width=in_width,
                                      in_tokens=in_tokens))
    if depth > 1:
      blocks.append(dataclasses.replace(block, count=depth - 1))
    in_width = width
  return blocks, stem


def activation_bytes(config, examples: float, model_split: int) -> float:
  """Activation memory of the towers' backward pass over `examples` examples (see module docstring)."""
  m = config.model
  b = jnp.dtype(m.dtype).itemsize
  blocks, stem = tower_blocks(m, b)
  scanned = [blk for blk in blocks if blk.scanned and m.scan_layers]
  unscanned = sum(blk.count * blk.live_bytes(b, model_split)
                  for blk in blocks if not (blk.scanned and m.scan_layers))
  saved = sum(blk.count * blk.tokens * blk.saved_bytes(m.remat, b, model_split) for blk in scanned)
  working = max((blk.live_bytes(b, model_split, m.remat)
                  - blk.tokens * blk.saved_bytes(m.remat, b, model_split) for blk in scanned), default=0.0)
  pixels = _PIXEL_COPIES * 4 * 3 * m.image.image_size ** 2
  return examples * (stem + unscanned + saved + working + pixels)


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
      loss=LOSS_BUFFERS * n * tile * 4 / data,
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
