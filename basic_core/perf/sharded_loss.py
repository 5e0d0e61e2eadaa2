"""Global negatives on a data mesh, measured: the tiled loss on P devices against the same loss on one.

    python -m basic_core.perf.sharded_loss --batch 65536 --dim 64 --tile 1024 --devices 8 [--json]

Simulates P CPU devices (set before JAX starts, so run it as its own process), draws N unit-norm pairs,
and computes the tiled softmax loss and its gradients (a) on one device and (b) with the batch split over
P devices, where each device streams its own rows against the gathered text embeddings
(basic_core/losses.py). Reports the loss difference, the largest relative gradient error, XLA's temp
bytes per device of both, and what the dense N x N logits alone would take. At N = 65,536 the dense
loss needs 16 GiB of logits (48 GiB with its exponentials and gradient), more than this machine has.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def measure(n: int, d: int, tile: int, devices: int, seed: int = 0) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import AxisType, Mesh, NamedSharding
  from jax.sharding import PartitionSpec as P

  from basic_core.losses import tiled_contrastive_loss

  unit = lambda x: x / jnp.linalg.norm(x, axis=1, keepdims=True)
  k_img, k_txt = jax.random.split(jax.random.key(seed))
  img, txt = unit(jax.random.normal(k_img, (n, d))), unit(jax.random.normal(k_txt, (n, d)))
  scale = jnp.float32(1 / 0.07)
  grad = jax.value_and_grad(lambda i, t, s: tiled_contrastive_loss(i, t, s, tile), argnums=(0, 1, 2))
  out = {}
  for p in (1, devices):
    mesh = Mesh(np.asarray(jax.devices()[:p]).reshape(p, 1), ("data", "model"),
                axis_types=(AxisType.Auto, AxisType.Auto))
    rows = NamedSharding(mesh, P("data"))

    def on_mesh(i, t, s, mesh=mesh):
      with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        return grad(i, t, s)

    compiled = jax.jit(on_mesh, in_shardings=(rows, rows, None)).lower(img, txt, scale).compile()
    t0 = time.perf_counter()
    value = jax.block_until_ready(compiled(jax.device_put(img, rows), jax.device_put(txt, rows), scale))
    out[p] = (jax.device_get(value), time.perf_counter() - t0, compiled.memory_analysis().temp_size_in_bytes)
  (loss_1, grads_1), seconds_1, temp_1 = out[1]
  (loss_p, grads_p), seconds_p, temp_p = out[devices]
  errors = [float(np.max(np.abs(a - b)) / np.max(np.abs(b))) for a, b in zip(grads_p, grads_1)]
  return dict(batch=n, dim=d, tile=tile, devices=devices, loss_one_device=float(loss_1),
              loss_on_mesh=float(loss_p), loss_abs_diff=abs(float(loss_p - loss_1)),
              max_grad_rel_error=max(errors), temp_bytes_one_device=int(temp_1),
              temp_bytes_per_device_on_mesh=int(temp_p), dense_logits_bytes=4 * n * n,
              seconds_one_device=seconds_1, seconds_on_mesh=seconds_p)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=65536)
  parser.add_argument("--dim", type=int, default=64)
  parser.add_argument("--tile", type=int, default=1024, help="rows per block (tile / P on each device)")
  parser.add_argument("--devices", type=int, default=8)
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args(argv)
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + f" --xla_force_host_platform_device_count={args.devices}")
  row = measure(args.batch, args.dim, args.tile, args.devices)
  if args.json:
    print(json.dumps(row))
  else:
    print(f"N={row['batch']}: one device {row['loss_one_device']:.6f}, {row['devices']} devices "
          f"{row['loss_on_mesh']:.6f}; largest relative gradient error {row['max_grad_rel_error']:.1e}; "
          f"temp {row['temp_bytes_one_device'] / 2**20:.0f} MiB on one device, "
          f"{row['temp_bytes_per_device_on_mesh'] / 2**20:.0f} MiB per device on the mesh "
          f"(dense logits alone: {row['dense_logits_bytes'] / 2**30:.0f} GiB)")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
