"""Device mesh, sharding rules, and placement of the train state and batches.

Mesh axes: `data` (the batch is split over it) and `model` (weights are split over it).

Rules are data (as in big_vision / MaxText): an ordered tuple of `(regex, spec)`. The first rule whose
regex `re.search`es a parameter's path (`text/transformer/blocks/attn/qkv/kernel`) decides its
PartitionSpec; `spec` is a PartitionSpec or a tactic that derives one from the shape (`Split`,
`Largest`). Stacked (scanned) blocks carry a leading layer axis that rules never mention: their spec gets
a leading None. A split that does not divide its dimension falls back to replicating that dimension and
is reported (a warning). A rule that matches no parameter, or a parameter that no rule matches, is a
ShardingError: shipped rule sets end with a catch-all, so this guards user rules (`mesh.extra_rules`).
Shipped sets (`mesh.rules`): `tensor` (Megatron: qkv / fc / MBConv expand split their outputs over
`model`, out / proj / MBConv project their inputs, embeddings and projections their width), `fsdp` (each
tensor's largest divisible dimension over data x model), `replicate`, and `custom` (extra_rules alone).

Optimizer state is sharded like the parameter it mirrors (same path suffix and shape: Adam's mu and nu,
Adafactor's unfactored v). Leaves that mirror no parameter shape are replicated: Adafactor's factored
row / column statistics (O(rows + cols) per matrix) and scalar counters.

Because every array is global (jit / GSPMD), the loss is written once over the global [N, D]
embeddings: negatives are always the whole contrastive batch, never a device's shard of it.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


class ShardingError(ValueError):
  """A mesh or rule that cannot be applied; the message lists the offending names."""


# ---- tactics: a spec computed from the (per-layer) shape ------------------------------------------


@dataclasses.dataclass(frozen=True)
class Split:
  """Split dimension `dim` (negative counts from the end) over `axis`: rank-agnostic, so one rule
  covers a linear kernel [in, out] and a conv kernel [h, w, in, out]."""
  dim: int
  axis: str = "model"

  def __call__(self, shape: Sequence[int], mesh_shape: Mapping[str, int]) -> P:
    if not shape:
      return P()
    spec = [None] * len(shape)
    spec[self.dim] = self.axis
    return P(*spec)


@dataclasses.dataclass(frozen=True)
class Largest:
  """FSDP: split the largest dimension divisible by the product of `axes` over all of them."""
  axes: tuple[str, ...] = ("data", "model")

  def __call__(self, shape: Sequence[int], mesh_shape: Mapping[str, int]) -> P:
    size = math.prod(mesh_shape[a] for a in self.axes)
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
      if shape[dim] % size == 0 and shape[dim] > 1:
        spec = [None] * len(shape)
        spec[dim] = self.axes
        return P(*spec)
    return P()


COLUMN = Split(-1)  # Megatron column-parallel: the output features
ROW = Split(-2)  # Megatron row-parallel: the input features
FSDP = Largest(("data", "model"))  # ZeRO-3 style: every tensor split over all devices

TENSOR_RULES = (
    # Transformer blocks (ViT, text, CoAtNet T-stages): qkv / fc split their outputs (heads, hidden),
    # out / proj split their inputs, so each block needs one all-reduce per matmul pair.
    (r"(attn/qkv|mlp/fc)/(kernel|bias)$", COLUMN),
    (r"(attn/out|mlp/proj)/kernel$", ROW),
    (r"attn/rel_bias$", COLUMN),  # [offsets, heads]
    # MBConv (CoAtNet C-stages): the expanded width is split end to end.
    (r"(expand|depthwise|se/up)/(kernel|bias)$", COLUMN),
    (r"norm_mid/(scale|bias)$", COLUMN),
    (r"(se/down|project)/kernel$", ROW),
    # Stage entries, embeddings and projections: the width is split.
    (r"(shortcut|patch_embed)/(kernel|bias)$", COLUMN),
    (r"(token_embed/embedding|pos_embed|cls_token)$", COLUMN),
    (r"(image|text)_proj/kernel$", COLUMN),
    (r".*", P()),  # norms, remaining biases, stems, temperature: replicated
)
FSDP_RULES = ((r".*", FSDP),)
REPLICATE_RULES = ((r".*", P()),)
RULE_SETS = {"tensor": TENSOR_RULES, "fsdp": FSDP_RULES, "replicate": REPLICATE_RULES,
             "custom": ()}  # custom: mesh.extra_rules alone
# Shipped rules cover every tower (MBConv rules for a ViT model match nothing): only other rules must
# match something.
_SHIPPED = frozenset(rule for rules in RULE_SETS.values() for rule in rules)

_STACKED = re.compile(r"(^|/)blocks/(?!\d+(/|$))")  # a Stack's scanned blocks (not blocks/3/...)
_TACTICS = {"column": COLUMN, "row": ROW, "fsdp": FSDP}


def config_rules(mesh_config) -> tuple:
  """`mesh.extra_rules` (tried first) + the shipped set named by `mesh.rules`.

  An extra rule is `(regex, spec)` with spec a tuple of mesh axes / None (a PartitionSpec) or one of
  the tactic names column | row | fsdp, e.g. --set "mesh.extra_rules=(('qkv/kernel', (None, 'model')),)".
  """
  if mesh_config.rules not in RULE_SETS:
    raise ShardingError(f"unknown mesh.rules {mesh_config.rules!r}; one of {', '.join(RULE_SETS)}")
  extra = []
  for rule in mesh_config.extra_rules:
    if len(rule) != 2 or not (isinstance(rule[1], (tuple, list)) or rule[1] in _TACTICS):
      raise ShardingError(f"mesh.extra_rules: {rule!r} is not (regex, spec tuple or one of "
                          f"{', '.join(_TACTICS)})")
    regex, spec = rule
    extra.append((regex, _TACTICS[spec] if isinstance(spec, str) else P(*spec)))
  return tuple(extra) + RULE_SETS[mesh_config.rules]


# ---- resolving rules ------------------------------------------------------------------------------


def path_name(path) -> str:
  """A pytree key path as 'text/transformer/blocks/attn/qkv/kernel' (NNX's trailing /value dropped)."""
  name = jax.tree_util.keystr(path, simple=True, separator="/")
  return name.removesuffix("/value")


def shard_shape(shape: Sequence[int], spec: P, mesh_shape: Mapping[str, int]) -> tuple[int, ...]:
  """The per-device block of an array of `shape` laid out by `spec`."""
  out = list(shape)
  for dim, axes in enumerate(spec):
    for axis in (axes,) if isinstance(axes, str) else (axes or ()):
      out[dim] //= mesh_shape[axis]
  return tuple(out)


@dataclasses.dataclass
class Placement:
  """Where each parameter lives, and the splits that fell back to replication."""
  specs: dict[str, P]
  fallbacks: list[str]

  def replicated(self) -> list[str]:
    return [name for name, spec in self.specs.items() if not any(spec)]


def _spec_for(name: str, shape: tuple[int, ...], spec, mesh_shape, fallbacks: list[str]) -> P:
  """The rule's spec for one parameter: tactic applied, layer axis prepended, indivisible splits undone."""
  stacked = bool(_STACKED.search(name))
  inner = shape[1:] if stacked else shape
  if callable(spec):
    spec = spec(inner, mesh_shape)
  if len(spec) > len(inner):
    raise ShardingError(f"{name} has shape {shape}{' (stacked)' if stacked else ''}, too few "
                        f"dimensions for {spec}")
  entries = list(spec) + [None] * (len(inner) - len(spec))
  for dim, axes in enumerate(entries):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    unknown = [a for a in names if a not in mesh_shape]
    if unknown:
      raise ShardingError(f"{name}: {spec} names mesh axes {unknown}; the mesh has {list(mesh_shape)}")
    size = math.prod(mesh_shape[a] for a in names)
    if inner[dim] % size:
      fallbacks.append(f"{name} dim {dim + stacked} (size {inner[dim]}) not divisible by "
                       f"{'x'.join(names)}={size}: replicated")
      entries[dim] = None
  return P(*(([None] if stacked else []) + entries))


def resolve(shapes: Mapping[str, tuple[int, ...]], rules: Sequence, mesh_shape: Mapping[str, int]
            ) -> Placement:
  """Applies `rules` to parameters given as {path: shape}; errors name unused rules and unmatched params."""
  compiled = [(re.compile(regex), regex, spec) for regex, spec in rules]
  specs, chosen, fallbacks, unmatched = {}, {}, [], []
  for name, shape in shapes.items():
    hit = next(((regex, spec) for pattern, regex, spec in compiled if pattern.search(name)), None)
    if hit is None:
      unmatched.append(name)
      continue
    chosen[name] = hit[0]
    specs[name] = _spec_for(name, tuple(shape), hit[1], mesh_shape, fallbacks)
  unused = [regex for regex, spec in rules
            if regex not in chosen.values() and (regex, spec) not in _SHIPPED]
  problems = []
  if unused:
    problems.append(f"rules that match no parameter: {', '.join(map(repr, unused))}")
  if unmatched:
    problems.append(f"parameters matched by no rule: {', '.join(unmatched)} (end the rules with "
                    f"('.*', ()) to replicate the rest)")
  if problems:
    raise ShardingError("; ".join(problems))
  return Placement(specs, fallbacks)


def param_shapes(params) -> dict[str, tuple[int, ...]]:
  return {path_name(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}


def state_specs(state, rules: Sequence, mesh_shape: Mapping[str, int]) -> tuple[dict, Placement]:
  """PartitionSpecs for a train state {step, params, opt_state} (arrays or abstract arrays)."""
  shapes = param_shapes(state["params"])
  placement = resolve(shapes, rules, mesh_shape)

  def mirror(path, x):
    """The spec of the parameter whose path is the longest suffix of `path`, if the shapes agree."""
    parts = path_name(path).split("/")
    for i in range(len(parts)):
      name = "/".join(parts[i:])
      if name in shapes:
        return placement.specs[name] if tuple(x.shape) == shapes[name] else P()
    return P()

  return jax.tree_util.tree_map_with_path(mirror, state), placement


def state_shardings(state, mesh: Mesh, rules: Sequence):
  """NamedShardings for a train state under `rules`; indivisible splits are reported as a warning."""
  specs, placement = state_specs(state, rules, dict(mesh.shape))
  if placement.fallbacks:
    warnings.warn("sharding fell back to replication: " + "; ".join(placement.fallbacks),
                  stacklevel=2)
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))


def bytes_per_device(tree, specs, mesh_shape: Mapping[str, int]) -> int:
  """Bytes one device holds of `tree` (arrays or abstract arrays) laid out by the pytree `specs`."""
  leaves = jax.tree.leaves(tree)
  spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P))
  return sum(math.prod(shard_shape(x.shape, s, mesh_shape)) * np.dtype(x.dtype).itemsize
             for x, s in zip(leaves, spec_leaves, strict=True))


# ---- mesh and batches -----------------------------------------------------------------------------


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, int]:
  """(data, model) sizes; one of them may be -1 = whatever the devices leave."""
  data, model = int(mesh_config.data), int(mesh_config.model)
  if data == -1 and model == -1:
    raise ShardingError("mesh.data and mesh.model cannot both be -1")
  if data == -1:
    data = num_devices // model if model > 0 and num_devices % model == 0 else 0
  if model == -1:
    model = num_devices // data if data > 0 and num_devices % data == 0 else 0
  if data <= 0 or model <= 0 or data * model != num_devices:
    raise ShardingError(
        f"mesh data={mesh_config.data} x model={mesh_config.model} does not divide the "
        f"{num_devices} devices")
  return data, model


def make_mesh(mesh_config, devices=None) -> Mesh:
  """A ('data', 'model') mesh with Auto axes (GSPMD propagation; see the JAX notes on Explicit).

  Devices are in process order, so a process owns whole rows (model groups) of the mesh and thus a
  contiguous block of the batch: exactly the rows its data pipeline loads.
  """
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(mesh_config, len(devices))
  local = jax.local_device_count()
  if jax.process_count() > 1 and local % shape[1]:
    raise ShardingError(f"with {jax.process_count()} processes each must hold whole model groups: "
                        f"mesh.model={shape[1]} does not divide the {local} devices per process")
  return Mesh(np.asarray(devices).reshape(shape), ("data", "model"),
              axis_types=(AxisType.Auto, AxisType.Auto))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def check_batch(mesh: Mesh, batch_size: int, microbatch_size: int) -> None:
  data = mesh.shape["data"]
  for name, size in (("train.batch_size", batch_size), ("train.microbatch_size", microbatch_size)):
    if size % data:
      raise ShardingError(f"{name}={size} is not divisible by the mesh's data axis ({data})")


def put_batch(batch: dict, sharding: NamedSharding) -> dict:
  """This process's rows of the global batch -> global arrays sharded over `data`."""
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def to_host(tree):
  """NumPy copies of (possibly multi-process) global arrays; every process gets the whole value."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)
