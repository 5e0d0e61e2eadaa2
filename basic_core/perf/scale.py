"""The paper's contrastive batch on one machine: BASIC's accumulated step with the tiled loss, measured.

    python -m basic_core.bench scale --config tiny --batches 4096,16384,65536,262144,1048576 \
        --microbatch 512 --tile 128 [--check 4096] [--train 65536 --steps 3] [--json] [--out ROWS.jsonl]

Four kinds of JSON rows (`kind`):
  memory  the step compiled for each contrastive batch N (abstract inputs, nothing allocated): XLA's temp,
          argument and peak bytes per N, and pairs per GiB of step memory (N / peak);
  growth  temp(N) = A + b N fitted over the largest batches' memory rows, against the bytes per pair
          the method should cost: b = 16 D (the cached [N, D] image and text embeddings and their
          float32 gradients) + 4 B T (B float32 [T, N] buffers of the tiled loss's row block;
          `scale_plan.LOSS_BUFFERS`), and A = one microbatch's activations (the kept last microbatch is alive
          during the loss: accumulate.py);
  exact   the accumulated step with the tiled loss against the plain step with the dense N x N loss at
          a small N, same towers, same batch, same key: the loss and the largest relative gradient error;
  train   the trainer itself (`python -m basic_core.train`, built-in fresh pairs) at N for a few steps, in
          a child process: seconds per step after the first (compilation), and the child's peak RSS
          (its VmHWM, sampled every 0.1 s: Linux only).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from basic_core import accumulate, losses
from basic_core import state as state_lib
from basic_core.configs import microbatching
from basic_core.perf import compiled as compiled_lib
from basic_core.perf import memory_grid, timing
from basic_core.perf.scale_plan import LOSS_BUFFERS


def step_config(config, n: int, micro: int, tile: int):
  """`config` at contrastive batch n, BASIC's step over microbatches of `micro`, loss tiles of `tile`."""
  return compiled_lib.with_overrides(config, train__batch_size=n, train__microbatch_size=micro,
                                     loss__tile=tile)


def memory_row(config) -> dict:
  """Compiled bytes of the step (no timing) and pairs per GiB of its peak."""
  row = memory_grid.row(config, time_it=False, steps=0)
  return dict(kind="memory", config=config.name, tile=config.loss.tile,
              embed_dim=config.model.embed_dim, **row,
              pairs_per_gib=row["batch"] / (row["peak_bytes"] / 2**30))


def growth(rows: list[dict], largest: int = 3) -> dict:
  """temp(N) = A + b N by least squares over the `largest` batches of memory rows (one microbatch and
  tile), against the method's bytes per pair. At small N the loss block fits in memory the microbatch's
  activations leave free, so growth is read where the loss dominates."""
  rows = sorted(rows, key=lambda r: r["batch"])[-largest:]
  n = np.array([r["batch"] for r in rows], float)
  temp = np.array([r["temp_bytes"] for r in rows], float)
  slope, intercept = np.polyfit(n, temp, 1)
  d, tile = rows[0]["embed_dim"], rows[0]["tile"]
  predicted = 16 * d + 4 * LOSS_BUFFERS * tile
  worst = float(np.max(np.abs(intercept + slope * n - temp) / temp))
  return dict(kind="growth", microbatch=rows[0]["microbatch"], tile=tile, embed_dim=d,
              bytes_per_pair=float(slope), predicted_bytes_per_pair=predicted,
              ratio=float(slope / predicted), intercept_bytes=float(intercept),
              worst_fit_error=worst, batches=[int(x) for x in n])


def exact(config, n: int, micro: int, tile: int, seed: int = 0) -> dict:
  """BASIC's accumulated step with the tiled loss vs the plain step with the dense loss, at batch n."""
  cfg = step_config(config, n, micro, tile)
  built = state_lib.build(cfg)
  fns, params = built.fns, built.state["params"]
  batch = jax.tree.map(jnp.asarray, timing.random_batch(cfg, n, seed))
  key, (_, k) = jax.random.key(seed), microbatching(cfg.train)

  def head(loss_fn):
    return fns.head_loss(lambda i, t, s, b: loss_fn(i, t, s))

  dense = head(losses.contrastive_loss)
  tiled = head(lambda i, t, s: losses.tiled_contrastive_loss(i, t, s, tile))
  ref_loss, ref_grads = jax.jit(lambda p: accumulate.naive_value_and_grad(fns.embed, dense, p, batch,
                                                                          key))(params)
  loss, grads = jax.jit(lambda p: accumulate.accumulated_value_and_grad(fns.embed, tiled, p, batch, key,
                                                                        k))(params)
  errors = jax.tree.map(lambda g, r: float(jnp.max(jnp.abs(g - r)) / (jnp.max(jnp.abs(r)) + 1e-30)),
                        grads, ref_grads)
  return dict(kind="exact", config=cfg.name, batch=n, microbatch=micro, tile=tile,
              loss=float(loss), dense_loss=float(ref_loss),
              loss_abs_error=abs(float(loss) - float(ref_loss)),
              max_grad_rel_error=max(jax.tree.leaves(errors)))


def train(config_name: str, overrides: list[str], n: int, micro: int, tile: int, steps: int,
          workdir: Path | None = None) -> dict:
  """Trains `steps` steps at contrastive batch n with the trainer in a child process (fresh pairs)."""
  with tempfile.TemporaryDirectory(dir=workdir) as tmp:
    run = Path(tmp) / "run"
    sets = [*overrides, f"train.batch_size={n}", f"train.microbatch_size={micro}", f"loss.tile={tile}",
            "data.fresh=True", "train.log_every=1", f"train.checkpoint_every={steps}",
            "train.progress=False"]
    cmd = [sys.executable, "-m", "basic_core.train", "--config", config_name, "--workdir", str(run),
           "--steps", str(steps), *[arg for s in sets for arg in ("--set", s)]]
    peak_bytes = _run_watching_rss(cmd)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
  train_records = [r for r in records if "samples_per_s" in r and "loss" in r]
  seconds = [n / r["samples_per_s"] for r in train_records[1:]]  # the first step also compiles
  return dict(kind="train", config=config_name, batch=n, microbatch=micro, tile=tile, steps=steps,
              step_s=float(np.median(seconds)) if seconds else None, step_s_all=seconds,
              losses=[r["loss"] for r in train_records],
              peak_rss_bytes=peak_bytes)


def _run_watching_rss(cmd: list[str], every_s: float = 0.1) -> int:
  """Runs `cmd` to completion; returns its peak RSS in bytes (Linux: VmHWM, sampled every `every_s`).

  Not getrusage: a child's ru_maxrss also counts the parent's pages it shared between fork and exec,
  so after this process compiled a large step it reports this process's peak, not the child's.
  """
  child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
  peak_kib = 0
  while child.poll() is None:
    try:
      status = Path(f"/proc/{child.pid}/status").read_text()
      peak_kib = max(peak_kib, int(status.split("VmHWM:")[1].split()[0]))
    except (OSError, IndexError):
      pass
    time.sleep(every_s)
  if child.returncode:
    raise subprocess.CalledProcessError(child.returncode, cmd)
  return peak_kib * 1024


def describe(row: dict) -> str:
  """One line of text per row."""
  kind = row["kind"]
  if kind == "memory":
    return (f"N={row['batch']:>8} micro {row['microbatch']} tile {row['tile']}: temp "
            f"{row['temp_bytes'] / 2**30:.2f} GiB, arguments {row['argument_bytes'] / 2**30:.2f} GiB, "
            f"peak {row['peak_bytes'] / 2**30:.2f} GiB, {row['pairs_per_gib']:,.0f} pairs per GiB")
  if kind == "growth":
    return (f"temp grows by {row['bytes_per_pair']:.0f} bytes per pair (method: "
            f"{row['predicted_bytes_per_pair']} = 16 D + {4 * LOSS_BUFFERS} T, ratio {row['ratio']:.2f}) "
            f"over "
            f"{row['intercept_bytes'] / 2**30:.2f} GiB (one microbatch); worst fit error "
            f"{row['worst_fit_error']:.1%}")
  if kind == "exact":
    return (f"N={row['batch']}: accumulated + tiled loss {row['loss']:.6f} vs plain + dense "
            f"{row['dense_loss']:.6f}; largest relative gradient error {row['max_grad_rel_error']:.1e}")
  rss = f"{row['peak_rss_bytes'] / 2**30:.2f} GiB" if row["peak_rss_bytes"] else "unknown"
  step = f"{row['step_s']:.1f} s" if row["step_s"] else "-"
  return f"trained N={row['batch']} for {row['steps']} steps: {step} per step, peak RSS {rss}"
