"""Compiled memory of the train step over a grid of contrastive batches, steps, microbatches and remat
policies, each optionally timed on random data: `python -m basic_core.bench memory`.

A row's `mode` is `naive` (the whole batch in one pass) or `accumulate` (BASIC's step over microbatches
of `microbatch` examples). paper_figures/memory_figure.py draws the rows.
"""

from __future__ import annotations

import statistics

from basic_core import state as state_lib
from basic_core.configs import microbatching
from basic_core.perf import compiled as compiled_lib
from basic_core.perf import timing

DEFAULT_BATCHES = (256, 512, 1024, 2048, 4096, 8192)
MODES = ("naive", "accumulate")


def configs(config, batches, microbatches, policies, modes):
  """Every config of the grid; `accumulate` takes each microbatch that splits the batch in K > 1."""
  if unknown := set(modes) - set(MODES):
    raise ValueError(f"unknown modes {sorted(unknown)}; one of {', '.join(MODES)}")
  for batch in batches:
    for mode in modes:
      micros = [m for m in microbatches if m < batch and batch % m == 0] if mode == "accumulate" else [0]
      for policy in policies:
        for micro in micros:
          yield compiled_lib.with_overrides(config, train__batch_size=batch, train__microbatch_size=micro,
                                            model__remat=policy)


def row(config, *, time_it: bool, steps: int) -> dict:
  """Compiled bytes of `config`'s step and, with `time_it`, its median time over `steps` quiet steps."""
  compiled = compiled_lib.lower_step(config).compile()
  n = config.train.batch_size
  micro, k = microbatching(config.train)
  out = dict(mode="naive" if k == 1 else "accumulate", batch=n, microbatch=micro, remat=config.model.remat,
             **compiled_lib.compiled_memory(compiled), step_s=None, samples_per_s=None, contended=None)
  if time_it:
    times = timing.time_steps(compiled, state_lib.build(config).state, timing.random_batch(config, n),
                              steps=steps, warmup=1, max_steps=3 * steps)
    median = statistics.median(times.clean)
    out.update(step_s=median, samples_per_s=n / median, contended=times.contended)
  return out


def format_table(rows: list[dict]) -> str:
  lines = [f"{'mode':<10} {'batch':>6} {'micro':>6} {'remat':<32} {'temp MiB':>9} {'args MiB':>9} "
           f"{'step s':>7} {'samples/s':>9}"]
  for r in rows:
    step = f"{r['step_s']:.3f}" if r["step_s"] else "-"
    sps = f"{r['samples_per_s']:.0f}" if r["samples_per_s"] else "-"
    lines.append(f"{r['mode']:<10} {r['batch']:>6} {r['microbatch']:>6} {r['remat']:<32} "
                 f"{r['temp_bytes'] / 2**20:>9.1f} {r['argument_bytes'] / 2**20:>9.1f} {step:>7} {sps:>9}")
  return "\n".join(lines)
