"""Checkpoints with orbax: train state (sharded arrays) + a JSON item (data position, tokenizer, config).

Orbax writes each step to a temporary directory and renames it when complete, so a kill mid-save never
leaves a half-written checkpoint that `latest_step` would pick. Saving is synchronous here: a resumed
run must find everything the interrupted one promised, and our checkpoints are small.
The workdir's `config.json` records the run's config; re-running a different config on the same
workdir is refused (`check_config`) instead of silently mixing two runs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint._src.metadata import array_metadata_store  # orbax is pinned (pyproject.toml)
from orbax.checkpoint._src.serialization import type_handler_registry

from basic_core.configs.base import base_config

# Keys that may differ between the run that wrote a workdir and the one resuming it: they change how a
# run is reported, not what it computes. `train.steps` may grow to extend a run (its schedule changes).
RESUMABLE_DIFFERENCES = (
    "train.log_every", "train.checkpoint_every", "train.keep_checkpoints", "train.eval_every",
    "train.progress", "train.steps", "eval.num_images", "eval.num_pairs", "eval.control",
)


class CheckpointError(RuntimeError):
  """A workdir that cannot be resumed by this run; the message says why."""


def flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    name = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(flatten(v, name + "."))
    else:
      out[name] = v
  return out


def config_json(config) -> dict:
  """The config as plain JSON (tuples become lists), for the workdir record."""
  return json.loads(config.to_json())


def check_config(workdir: Path, config) -> list[str]:
  """Writes DIR/config.json on a fresh workdir; else compares and returns the allowed differences."""
  path = workdir / "config.json"
  current = config_json(config)
  if not path.exists():
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=2, sort_keys=True))
    return []
  saved = _comparable(flatten(json.loads(path.read_text())))
  now = _comparable(flatten(current))
  defaults = flatten(config_json(base_config()))
  # A key added since the run began, at its default, changes nothing the run computed.
  differing = sorted(k for k in set(saved) | set(now) if saved.get(k, defaults.get(k)) != now.get(k))
  blocking = [k for k in differing if k not in RESUMABLE_DIFFERENCES]
  if blocking:
    detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in blocking[:8])
    raise CheckpointError(
        f"workdir {workdir} holds a run of another config (differing keys: {detail}); "
        "use a new --workdir, or the same config to resume")
  if differing:
    path.write_text(json.dumps(current, indent=2, sort_keys=True))
  return differing


def _comparable(flat: dict) -> dict:
  """The older key data.name read as data.world (configs.world_name), so renaming it is no difference."""
  if flat.get("data.name"):
    flat = flat | {"data.world": flat["data.name"], "data.name": ""}
  return flat


def _whole_replicas_on_cpu() -> None:
  """On CPU, write each replicated array from one replica instead of one slice per replica.

  Orbax's replica-parallel saving lets the hosts of a pod each write a part of a replicated array; it is
  on by default except on GPU. In one process on simulated CPU devices it only cuts every array into
  one device slice per replica (about 900 slices per save of `tiny` on 8 devices: 7 s of a 28 s run,
  most of it compiling the slices). Either way the same arrays are restored; other platforms keep
  orbax's default.
  """
  if jax.default_backend() == "cpu":
    handler = ocp.type_handlers.ArrayHandler(use_replica_parallel=False,
                                             array_metadata_store=array_metadata_store.Store())
    type_handler_registry.GLOBAL_TYPE_HANDLER_REGISTRY.add(jax.Array, handler, override=True,
                                                           ignore_warnings=True)


class Checkpointer:
  """Save / restore `(state pytree, json meta)` under DIR/checkpoints/<step>."""

  def __init__(self, workdir: Path, keep: int):
    _whole_replicas_on_cpu()
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False)
    self.directory = Path(workdir).absolute() / "checkpoints"
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, meta: dict) -> None:
    """Writes step `step`; a failed write (disk full, file size limit, ...) removes its partial files and
    raises CheckpointError saying that the previous checkpoint is intact and a re-run resumes from it."""
    if step in self.manager.all_steps():
      return
    try:
      self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                       meta=ocp.args.JsonSave(meta)))
      self.manager.wait_until_finished()
    except Exception as e:  # orbax / tensorstore report a full disk as ValueError, OSError, ...
      if jax.process_index() == 0:
        for partial in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
          shutil.rmtree(partial, ignore_errors=True)
      previous = self.latest_step()
      kept = (f"the last complete checkpoint (step {previous}) is intact" if previous is not None
              else "no earlier checkpoint exists")
      reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
      raise CheckpointError(f"could not write the checkpoint of step {step} in {self.directory} "
                            f"({reason}); {kept}. Free space and re-run the same command to resume.") from e

  def restore(self, abstract_state, step: int | None = None) -> tuple[Any, dict]:
    """Restores into the structure and shardings of `abstract_state` (e.g. from `jax.eval_shape`)."""
    step = self.latest_step() if step is None else step
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                              meta=ocp.args.JsonRestore()))
    return out["state"], out["meta"]

  def restore_latest(self, abstract_state, log=print) -> tuple[int, Any, dict] | None:
    """(step, state, meta) of the newest checkpoint that restores; None when there is none.

    Damaged newer checkpoints (unreadable array data or metadata, missing files) are reported one line
    each and, once an intact one is found, moved aside to `checkpoints/damaged-<step>` (never deleted),
    so the run continues from the intact one and later saves do not collide with them. If none is
    intact, CheckpointError, and nothing is moved.
    """
    damaged = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        state, meta = self.restore(abstract_state, step)
      except Exception as e:  # orbax, tensorstore and json raise many types for damaged files
        reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
        damaged.append(step)
        log(f"checkpoint step {step} ({self.directory / str(step)}) is damaged ({reason})")
        continue
      for bad in damaged:
        log(f"moved damaged checkpoint step {bad} to {self._move_aside(bad)}; resuming from step {step}")
      if damaged:
        self.manager.reload()
      return step, state, meta
    if damaged:
      raise CheckpointError(f"no intact checkpoint in {self.directory} (damaged: steps "
                            f"{', '.join(map(str, damaged))}); nothing was moved or deleted")
    return None

  def _move_aside(self, step: int) -> Path:
    target = self.directory / f"damaged-{step}"
    k = 1
    while target.exists():
      k += 1
      target = self.directory / f"damaged-{step}-{k}"
    if jax.process_index() == 0:
      (self.directory / str(step)).rename(target)
    return target

  def close(self) -> None:
    self.manager.close()
