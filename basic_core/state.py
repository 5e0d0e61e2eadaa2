"""The train state of a config, built in one place: concrete (to train), abstract (to compile and plan
without allocating a parameter), placed on a mesh, or restored from a workdir.

The trainer, evaluation, the benchmarks, the memory tools and the scale planner all start here, so they
all see the same model, optimizer and placement of the same config.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import optax
from flax import nnx

from basic_core import checkpoint, losses, optim, sharding
from basic_core.configs import get_config, renamed
from basic_core.models import build_model
from basic_core.step import ModelFns, init_state, split_model


@dataclasses.dataclass(frozen=True)
class TrainState:
  """What a train step needs besides the batch."""
  fns: ModelFns
  tx: optax.GradientTransformation
  state: dict  # {step, params, opt_state[, estimator]}: arrays, or ShapeDtypeStruct leaves when abstract
  mesh: jax.sharding.Mesh | None = None
  sharding: Any = None  # NamedShardings shaped like `state` when placed on `mesh`


def build(config, *, abstract: bool = False, mesh: jax.sharding.Mesh | None = None) -> TrainState:
  """Fresh state of `config` (weights from `config.seed`); `abstract` allocates nothing.

  With a `mesh`, the state is placed by the config's sharding rules (`mesh.rules`): concrete arrays are
  put on the devices, abstract leaves carry the sharding (as `.lower()` and orbax restore want them).
  """
  make = lambda: build_model(config.model, config.seed, config.xla)  # noqa: E731
  model = nnx.eval_shape(make) if abstract else make()
  fns, params = split_model(model, dropout=bool(config.model.dropout), augment=config.data.augment)
  tx = optim.make_optimizer(config.optim, config.train)
  new_state = lambda p: init_state(p, tx, losses.init_estimator_state(  # noqa: E731
      config.loss, pool_size=config.data.num_train, embed_dim=config.model.embed_dim))
  state = jax.eval_shape(new_state, params) if abstract else new_state(params)
  if mesh is None:
    return TrainState(fns, tx, state)
  shardings = sharding.state_shardings(state, mesh, sharding.config_rules(config.mesh))
  if abstract:
    state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
  else:
    state = jax.device_put(state, shardings)
  return TrainState(fns, tx, state, mesh, shardings)


def workdir_config(workdir: Path):
  """The config a workdir was trained with (its `config.json`), validated; moved keys are renamed."""
  path = Path(workdir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: is {workdir} a training workdir?")
  saved = checkpoint.flatten(json.loads(path.read_text()))
  return get_config(saved.pop("name"), [f"{renamed(k)}={v!r}" for k, v in saved.items()])


def restore(workdir: Path, step: int | None = None) -> tuple[Any, TrainState, dict, int]:
  """(config, restored TrainState, checkpoint meta, step) of a workdir's checkpoint `step`, or of its
  newest intact one (damaged newer ones are set aside: `Checkpointer.restore_latest`)."""
  config = workdir_config(workdir)
  ckpt = checkpoint.Checkpointer(workdir, config.train.keep_checkpoints)
  try:
    abstract = build(config, abstract=True, mesh=sharding.make_mesh(config.mesh))
    if step is None:
      restored = ckpt.restore_latest(abstract.state)
      if restored is None:
        raise FileNotFoundError(f"no checkpoint in {Path(workdir) / 'checkpoints'}")
      step, state, meta = restored
    else:
      state, meta = ckpt.restore(abstract.state, step)
  finally:
    ckpt.close()
  return config, dataclasses.replace(abstract, state=state), meta, step
