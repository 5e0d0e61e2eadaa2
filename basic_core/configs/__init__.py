"""Configs as Python: one function per preset, overridden from the command line.

    python -m basic_core.train --config tiny --workdir runs/tiny --set model.text.layers=4

`get_config(name)` returns an `ml_collections.ConfigDict` with every key the trainer reads; presets
change values, never add keys, so a typo in `--set` is an error naming the key (`apply_overrides`).
Where each size comes from is written beside it in `presets.py`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

import ml_collections

from basic_core.configs import presets
from basic_core.configs.base import base_config
from basic_core.models.layers import REMAT_POLICIES

PRESETS = {
    "tiny": presets.tiny,
    "small": presets.small,
    "peer-vit": presets.peer_vit,
    "basic-s": presets.basic_s,
    "basic-m": presets.basic_m,
    "basic-l": presets.basic_l,
}


# Keys that moved; an override of the old name stops with the new one, and a saved workdir config that
# still has it is read under the new name (`renamed`).
MOVED_KEYS = {
    "model.cpu_scheduler": "xla.cpu_scheduler",
    "model.dense_grad": "xla.dense_grad",
    "model.attention_grad": "xla.attention_grad",
}


class ConfigError(ValueError):
  """A config name, key or value that cannot be used; the message names it."""


def renamed(key: str) -> str:
  """A key under its current name (see MOVED_KEYS)."""
  return MOVED_KEYS.get(key, key)


ESTIMATORS = ("plain", "sogclr", "queue")  # loss.estimator (basic_core/losses.py)


def resolve_group_size(group_size: int, batch_size: int) -> int:
  """G, the pairs each contrastive loss sees (G - 1 negatives per positive), of a batch of `batch_size`
  pairs split by loss.group_size = `group_size`: 0 means the whole batch. The one place that resolves
  that default (`loss_group_size` for a config, losses.py for the batch it is given)."""
  return int(group_size) or int(batch_size)


def loss_group_size(config) -> int:
  """G of a config: its loss.group_size resolved against the contrastive batch."""
  return resolve_group_size(config.loss.group_size, config.train.batch_size)


def world_name(data_config) -> str:
  """The built-in world a `data` section names: data.world, or data.name where an older config or
  command line sets that (the one place that resolves the two)."""
  name, world = data_config.get("name", ""), data_config.get("world", "scenes")
  if name and world not in ("scenes", name):
    raise ConfigError(f"data.name={name!r} and data.world={world!r} disagree; set data.world only")
  return name or world


def microbatching(train_config) -> tuple[int, int]:
  """(microbatch size M, number of microbatches K = N / M) of a validated config's `train` section.

  `train.microbatch_size = 0` means no accumulation (M = N, K = 1). The one place that resolves it.
  """
  n = int(train_config.batch_size)
  micro = int(train_config.microbatch_size) or n
  return micro, n // micro


def get_config(name: str, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
  """The preset `name` with `key=value` overrides applied, validated."""
  if name not in PRESETS:
    raise ConfigError(f"unknown config {name!r}; presets: {', '.join(sorted(PRESETS))}")
  config = base_config()
  PRESETS[name](config)
  config.name = name
  apply_overrides(config, overrides)
  validate(config)
  return config


def parse_value(text: str):
  """`4` -> 4, `1e-3` -> 0.001, `(2,3)` -> (2, 3), `true` -> True, anything else stays a string."""
  lowered = text.strip().lower()
  if lowered in ("true", "false"):
    return lowered == "true"
  if lowered in ("none", "null"):
    return None
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> None:
  """Applies `a.b.c=value` strings; unknown keys and ill-typed values raise ConfigError."""
  for item in overrides:
    if "=" not in item:
      raise ConfigError(f"override {item!r} is not of the form key=value")
    key, text = item.split("=", 1)
    if key.strip() in MOVED_KEYS:
      raise ConfigError(f"config key {key.strip()!r} moved to {MOVED_KEYS[key.strip()]!r}")
    *parents, leaf = key.strip().split(".")
    node = config
    for i, part in enumerate(parents):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise ConfigError(f"unknown config key {'.'.join(parents[: i + 1])!r} (in override {item!r})")
      node = node[part]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      raise ConfigError(f"unknown config key {key.strip()!r}")
    value = parse_value(text)
    old = node[leaf]
    if value is None and isinstance(old, str):  # e.g. model.remat=none is the string 'none'
      value = text.strip()
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    if isinstance(old, tuple) and isinstance(value, list):
      value = tuple(value)
    if old is not None and value is not None and type(old) is not type(value):
      raise ConfigError(
          f"config key {key.strip()!r} expects {type(old).__name__}, got {value!r} ({type(value).__name__})")
    with node.unlocked():
      node[leaf] = value


POSITIVE = ("train.batch_size", "train.steps", "train.log_every", "train.checkpoint_every",
            "train.keep_checkpoints", "model.embed_dim", "model.temperature_init", "model.max_logit_scale",
            "model.text.width", "model.text.layers", "model.text.heads", "model.text.context",
            "model.text.vocab_size", "model.image.image_size", "optim.lr", "eval.batch_size",
            "eval.num_pairs", "eval.num_images", "eval.probe_pairs", "data.num_train", "data.num_test",
            "pretrain.batch_size")
NON_NEGATIVE = ("optim.warmup_steps", "optim.weight_decay", "optim.clip_norm", "train.eval_every",
                "train.freeze_image_steps", "pretrain.steps", "eval.probe_every", "loss.tile",
                "loss.group_size", "loss.queue_size")
FRACTIONS = {"model.dropout": "[0, 1)", "data.noise": "[0, 1]", "optim.end_lr_frac": "[0, 1]"}


def _value(config, dotted: str):
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


def _check_numbers(config) -> None:
  """Sizes, counts and rates that make no sense stop here, naming the key (`--steps -5` included)."""
  for key in POSITIVE:
    if _value(config, key) <= 0:
      raise ConfigError(f"{key} must be positive, got {_value(config, key)}")
  for key in NON_NEGATIVE:
    if _value(config, key) < 0:
      raise ConfigError(f"{key} must be >= 0, got {_value(config, key)}")
  for key, interval in FRACTIONS.items():
    v = _value(config, key)
    if not (0 <= v < 1 if interval.endswith(")") else 0 <= v <= 1):
      raise ConfigError(f"{key} must be in {interval}, got {v}")


def validate(config: ml_collections.ConfigDict) -> None:
  """Rejects impossible sizes with one message naming the problem."""
  m, t = config.model, config.train

  def divisible(width, heads, where):
    if width % heads:
      raise ConfigError(f"{where}: width {width} is not divisible by heads {heads}")

  if m.image.kind == "vit":
    divisible(m.image.vit.width, m.image.vit.heads, "model.image.vit")
    if m.image.image_size % m.image.vit.patch:
      raise ConfigError(
          f"model.image: image_size {m.image.image_size} is not divisible by patch {m.image.vit.patch}")
  elif m.image.kind == "coatnet":
    c = m.image.coatnet
    if not len(c.blocks) == len(c.widths) == len(c.types) == len(c.strides):
      raise ConfigError("model.image.coatnet: blocks, widths, types and strides must have equal lengths")
    for w, kind in zip(c.widths, c.types):
      if kind == "T" and w % c.head_dim:
        raise ConfigError(f"model.image.coatnet: width {w} is not divisible by head_dim {c.head_dim}")
  else:
    raise ConfigError(f"model.image.kind must be 'vit' or 'coatnet', got {m.image.kind!r}")
  divisible(m.text.width, m.text.heads, "model.text")
  if m.remat not in REMAT_POLICIES:
    raise ConfigError(f"model.remat must be one of {tuple(REMAT_POLICIES)}, got {m.remat!r}")
  for key, allowed in (("cpu_scheduler", ("concurrency", "memory")), ("dense_grad", ("ynn", "autodiff")),
                       ("attention_grad", ("manual", "autodiff"))):
    if config.xla[key] not in allowed:
      raise ConfigError(f"xla.{key} must be one of {allowed}, got {config.xla[key]!r}")
  if m.dtype not in ("float32", "bfloat16"):
    raise ConfigError(f"model.dtype must be float32 or bfloat16, got {m.dtype!r}")
  if config.loss.kind not in ("softmax", "sigmoid"):
    raise ConfigError(f"loss.kind must be 'softmax' or 'sigmoid', got {config.loss.kind!r}")
  _check_numbers(config)
  _check_estimator(config)
  if t.microbatch_size < 0:
    raise ConfigError(f"train.microbatch_size must be 0 (no accumulation) or positive, "
                      f"got {t.microbatch_size}")
  micro, _ = microbatching(t)
  if t.batch_size % micro:
    raise ConfigError(
        f"train.batch_size {t.batch_size} is not divisible by train.microbatch_size {micro}")
  group = loss_group_size(config)
  if group < 2 or t.batch_size % group:
    raise ConfigError(f"loss.group_size must be 0 (the whole batch) or a divisor >= 2 of train.batch_size "
                      f"{t.batch_size}, got {config.loss.group_size}")
  tile = config.loss.tile
  if tile and group > tile and group % tile:
    raise ConfigError(f"the loss group ({group} pairs) is not divisible by loss.tile {tile}")
  if config.data.fresh and (config.data.train != "builtin" or world_name(config.data) == "digits"):
    raise ConfigError("data.fresh=true needs a procedural built-in world (data.train=builtin, data.world="
                      "scenes or objects): only those have an unlimited stream of pairs")
  if t.freeze_image not in ("none", "all", "first_k"):
    raise ConfigError(f"train.freeze_image must be none, all or first_k, got {t.freeze_image!r}")
  if config.optim.name not in ("adamw", "adafactorw"):
    raise ConfigError(f"optim.name must be adamw or adafactorw, got {config.optim.name!r}")
  if config.optim.schedule not in ("cosine", "linear", "constant"):
    raise ConfigError(f"optim.schedule must be cosine, linear or constant, got {config.optim.schedule!r}")


def _check_estimator(config) -> None:
  """loss.estimator and its keys (losses.py says what each estimator computes)."""
  loss = config.loss
  if loss.estimator not in ESTIMATORS:
    raise ConfigError(f"loss.estimator must be one of {ESTIMATORS}, got {loss.estimator!r}")
  if loss.estimator != "plain" and loss.kind != "softmax":
    raise ConfigError(f"loss.estimator={loss.estimator} estimates the softmax loss: it needs "
                      f"loss.kind=softmax, got {loss.kind!r}")
  if not 0 < loss.sogclr_gamma <= 1:
    raise ConfigError(f"loss.sogclr_gamma must be in (0, 1], got {loss.sogclr_gamma}")
  if loss.estimator == "sogclr" and config.data.fresh:
    raise ConfigError("loss.estimator=sogclr keeps an estimate per pair of a pool, so its pairs must repeat: "
                      "it cannot run on data.fresh=true (use loss.estimator=queue there)")
