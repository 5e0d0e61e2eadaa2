"""Device mesh and placement of the train state and batches.

Mesh axes: `data` (the batch is split over it) and `model` (weights are split over it).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P


class ShardingError(ValueError):
  """A mesh or rule that cannot be applied; the message lists the offending names."""


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
  """A ('data', 'model') mesh with Auto axes (GSPMD propagation; see the JAX notes on Explicit)."""
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(mesh_config, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), ("data", "model"),
              axis_types=(AxisType.Auto, AxisType.Auto))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch(mesh: Mesh, batch_size: int, microbatch_size: int) -> None:
  data = mesh.shape["data"]
  for name, size in (("train.batch_size", batch_size), ("train.microbatch_size", microbatch_size)):
    if size % data:
      raise ShardingError(f"{name}={size} is not divisible by the mesh's data axis ({data})")


def state_shardings(state, mesh: Mesh):
  """Replicated placement of every leaf."""
  return jax.tree.map(lambda _: replicated(mesh), state)


def put_batch(batch: dict, sharding: NamedSharding) -> dict:
  """This process's rows of the global batch -> global arrays sharded over `data`."""
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
