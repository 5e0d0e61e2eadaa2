"""The BASIC trainer: one readable loop with clearly marked phases.

    python -m basic_core.train --config tiny --workdir runs/tiny [--steps N] [--set key=value ...]

Re-running the same command on the same workdir resumes from its latest checkpoint and continues
bit-identically: batches come from a pipeline whose position is checkpointed, and every random number
from `fold_in(key(seed), step)`. SIGTERM / SIGINT save a checkpoint before exiting. Outputs in DIR:
`config.json`, `metrics.jsonl` (one object per logged step), `tb/` (TensorBoard), `checkpoints/`,
`eval.json` (the final evaluation).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import jax
import tqdm
from tensorboardX import SummaryWriter

from analysis import cli
from basic_core import checkpoint, data, distributed, evaluate, hostmem, optim, pretrain, sharding
from basic_core import state as state_lib
from basic_core import step as step_lib
from basic_core.configs import ConfigError, get_config, loss_group_size, microbatching
from basic_core.data.datasets import train_and_test
from basic_core.workdir_lock import WorkdirLocked, hold_workdir


class TrainingError(RuntimeError):
  """The run cannot go on (e.g. a NaN loss); checkpoints already written are left untouched."""


class MetricsWriter:
  """metrics.jsonl + TensorBoard scalars; only process 0 writes.

  A resumed run redoes the steps after its checkpoint, so the records past `resume_step` (and a line
  half-written by a killed run) are dropped first: metrics.jsonl holds each step once, as an
  uninterrupted run would have written it."""

  def __init__(self, workdir: Path, resume_step: int = 0):
    self.active = jax.process_index() == 0
    if self.active:
      self.path = workdir / "metrics.jsonl"
      if self.path.exists():
        kept = [line for line in self.path.read_text().splitlines() if _step_of(line) <= resume_step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(self.path)
      self.tb = SummaryWriter(str(workdir / "tb"))

  def write(self, record: dict) -> None:
    if not self.active:
      return
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    for k, v in record.items():
      if k != "step" and isinstance(v, (int, float)):
        self.tb.add_scalar(k, v, record["step"])
    self.tb.flush()

  def close(self) -> None:
    if self.active:
      self.tb.close()


def _step_of(line: str) -> float:
  """The step of one metrics.jsonl line; infinity for a line cut short by a kill."""
  try:
    return json.loads(line)["step"]
  except (json.JSONDecodeError, KeyError, TypeError):
    return float("inf")


class StopRequest:
  """Turns SIGTERM / SIGINT into a flag the loop checks after each step."""

  def __init__(self):
    self.signal = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    self.signal = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def check_tokenizer(tokenizer, model_config) -> None:
  if tokenizer.vocab_size > model_config.text.vocab_size:
    raise ConfigError(f"the tokenizer has {tokenizer.vocab_size} tokens but model.text.vocab_size is "
                      f"{model_config.text.vocab_size}")


def check_estimator_pool(config) -> None:
  """Refuses a SogCLR run whose pool has more pairs than its per-pair table (data.num_train rows)."""
  if config.loss.estimator != "sogclr":
    return
  pool = len(train_and_test(config)[0])
  if pool > config.data.num_train:
    raise ConfigError(f"loss.estimator=sogclr keeps one estimate per training pair in data.num_train="
                      f"{config.data.num_train} rows, but the training data has {pool} pairs: set "
                      f"data.num_train={pool}")


def check_evaluable(config, suite) -> None:
  """Refuses, before any training, a run whose final evaluation could not run: fewer usable held-out
  pairs (damaged samples are skipped) than the fixed evaluation batch."""
  n = len(suite.heldout["text"])
  if n < config.eval.batch_size:
    raise ConfigError(f"only {n} usable held-out pairs for eval.batch_size={config.eval.batch_size}: lower "
                      "eval.batch_size, or give more held-out pairs (data.test / data.num_test)")


def _log_record(step: int, metrics: dict, config, lr_fn, seconds: float, steps: int, skipped: int):
  batch = config.train.batch_size
  micro, _ = microbatching(config.train)
  return dict(
      step=step,
      loss=float(metrics["loss"]),
      logit_scale=float(metrics["logit_scale"]),
      lr=float(lr_fn(step - 1)),
      grad_norm=float(metrics["grad_norm"]),
      samples_per_s=batch * steps / max(seconds, 1e-9),
      contrastive_batch_size=batch,
      microbatch_size=micro,
      skipped_samples=skipped,
  )


def train(config, workdir: Path, *, final_eval: bool = True) -> dict:
  """Runs (or resumes) training; returns the final evaluation metrics. With final_eval=False (`--no-eval`)
  only {step, skipped_samples} and no eval.json, the mark of a finished, scored run that sweeps look for:
  for runs scored later (`python -m basic_core.evaluate`) or read only for their checkpoints."""
  workdir = Path(workdir)
  # ---- Phase 0: workdir, devices, state ------------------------------------------------------------
  distributed.initialize()
  mesh = sharding.make_mesh(config.mesh)  # bad sizes fail here, before the workdir is claimed
  micro, k = microbatching(config.train)
  sharding.check_batch(mesh, config.train.batch_size, micro)
  tokenizer = data.get_tokenizer(config.data, config.model.text.context)
  check_tokenizer(tokenizer, config.model)
  check_evaluable(config, _eval_suite(config, tokenizer))
  check_estimator_pool(config)
  ts = state_lib.build(config, mesh=mesh)
  # One writer: process 0 holds the workdir's lock for the whole run (a second trainer stops at once).
  with hold_workdir(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
    return _run(config, workdir, ts, tokenizer, mesh, k, final_eval)


def _run(config, workdir: Path, ts: state_lib.TrainState, tokenizer, mesh, k: int, final_eval: bool) -> dict:
  """Phases 1 to 3 of `train`, in a workdir this process may write."""
  fns, tx, state = ts.fns, ts.tx, ts.state
  if jax.process_index() == 0:  # one writer (processes would race)
    checkpoint.check_config(workdir, config)
  batch_sharding = sharding.batch_sharding(mesh)
  ckpt = checkpoint.Checkpointer(workdir, config.train.keep_checkpoints)

  # ---- Phase 1: resume, or pretrain the image tower (BASIC's supervised phase) ---------------------
  restored = ckpt.restore_latest(state, log=lambda line: print(line, file=sys.stderr))
  meta = None
  if restored is not None:  # the checkpoint's tokenizer and data position, not today's files
    start, state, meta = restored
    tokenizer = data.tokenizer_from_json(meta["tokenizer"])
  pipeline = data.train_pipeline(config, tokenizer, process_index=jax.process_index(),
                                 process_count=jax.process_count())
  if meta is not None:
    pipeline.set_state(meta["data"])
  else:
    if config.pretrain.steps:
      state["params"] = pretrain.pretrain_image_tower(fns, state["params"], config, tokenizer)
      state["opt_state"] = jax.device_put(tx.init(state["params"]), ts.sharding["opt_state"])
    start = 0
    ckpt.save(0, state, _meta(pipeline, tokenizer, config))

  # ---- Phase 2: contrastive training ---------------------------------------------------------------
  total = int(config.train.steps)
  step_fns = {}  # frozen_image -> jitted step (first_k freezing compiles two)
  lr_fn = optim.schedule(config.optim, total)
  writer = MetricsWriter(workdir, resume_step=start)
  mode = "naive" if k == 1 else "accumulate"
  progress = tqdm.tqdm(total=total, initial=start, disable=not config.train.progress,
                       desc=f"{config.name} N={config.train.batch_size} {mode}x{k}", dynamic_ncols=True)
  last_time, last_step = time.perf_counter(), start
  with StopRequest() as stop:
    for s in range(start, total):
      frozen = optim.image_frozen_at(config.train, s)
      batch = sharding.put_batch(next(pipeline), batch_sharding)
      if frozen not in step_fns:  # compiled ahead, so the compiler's freed memory goes back first
        step = step_lib.make_train_step(fns, tx, config.loss, seed=config.seed, microbatches=k,
                                        frozen_image=frozen)
        step_fns[frozen] = step_lib.jit_train_step(step, ts.sharding, batch_sharding,
                                                   xla=config.xla).lower(state, batch).compile()
        hostmem.release_freed_memory()
      state, metrics = step_fns[frozen](state, batch)
      loss = float(metrics["loss"])
      done = s + 1
      if not math.isfinite(loss):
        raise TrainingError(f"loss is {loss} at step {done}; stopping. The last checkpoint "
                            f"(step {ckpt.latest_step()}) in {workdir} is kept unchanged.")
      progress.update(1)
      if done % config.train.log_every == 0 or done == total:
        now = time.perf_counter()
        record = _log_record(done, metrics, config, lr_fn, now - last_time, done - last_step,
                             pipeline.skipped_samples)
        last_time, last_step = now, done
        writer.write(record)
        progress.set_postfix(loss=f"{loss:.3f}", T=f"{record['logit_scale']:.1f}",
                             sps=f"{record['samples_per_s']:.0f}")
      if config.train.eval_every and done % config.train.eval_every == 0 and done != total:
        writer.write(dict(step=done, **_evaluate(fns, state, tokenizer, config, pipeline)))
      if config.eval.probe_every and done % config.eval.probe_every == 0:
        writer.write(dict(step=done, **_probe(fns, state, tokenizer, config, pipeline)))
      if done % config.train.checkpoint_every == 0 or done == total or stop.signal:
        ckpt.save(done, state, _meta(pipeline, tokenizer, config))
      if stop.signal:
        progress.close()
        print(f"stopped by signal {stop.signal} at step {done}; checkpoint saved in {workdir}",
              file=sys.stderr)
        writer.close()
        ckpt.close()
        raise SystemExit(128 + stop.signal)
  progress.close()

  # ---- Phase 3: final evaluation -------------------------------------------------------------------
  results = dict(step=total)
  if final_eval:
    results.update(_evaluate(fns, state, tokenizer, config, pipeline))
  if pipeline.skipped_samples:
    print(f"run summary: {pipeline.skipped_samples} corrupt samples were skipped", file=sys.stderr)
  results["skipped_samples"] = pipeline.skipped_samples
  writer.write(results)
  writer.close()
  ckpt.close()
  if jax.process_index() == 0 and final_eval:
    (workdir / "eval.json").write_text(json.dumps(results, indent=2))
  return results


def _meta(pipeline, tokenizer, config) -> dict:
  return dict(data=pipeline.get_state(), tokenizer=tokenizer.to_json(), config_name=config.name)


def _evaluate(fns, state, tokenizer, config, pipeline) -> dict:
  suite = _eval_suite(config, tokenizer)
  trained = data.trained_pairs(pipeline, len(suite.heldout["text"]), tokenizer.encode)
  control = sharding.to_host(state_lib.build(config).state["params"]) if config.eval.control else None
  return evaluate.evaluate(fns, sharding.to_host(state["params"]), tokenizer, suite, trained, config.eval,
                           group_size=loss_group_size(config), control_params=control)


def _probe(fns, state, tokenizer, config, pipeline) -> dict:
  n = config.eval.probe_pairs
  heldout = {k: v[:n] for k, v in _eval_suite(config, tokenizer).heldout.items()}
  trained = data.trained_pairs(pipeline, n, tokenizer.encode)
  return evaluate.probe(fns, sharding.to_host(state["params"]), heldout, trained,
                        group_size=loss_group_size(config))


_SUITES = {}


def _eval_suite(config, tokenizer):
  """The evaluation sets are rendered once per process and config."""
  key = json.dumps([config.data.to_dict(), config.eval.to_dict(), config.model.image.image_size,
                    config.model.text.context], sort_keys=True, default=list)
  if key not in _SUITES:
    _SUITES.clear()
    _SUITES[key] = data.eval_suite(config, tokenizer)
  return _SUITES[key]


def parse_args(argv):
  parser = cli.Parser(description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True, help="preset name (tiny, small, peer-vit, basic-s, ...)")
  parser.add_argument("--workdir", required=True, type=cli.out_dir)
  parser.add_argument("--steps", type=cli.number(int, gt=0), help="shorthand for --set train.steps=N")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config key, e.g. --set model.text.layers=4 (repeatable)")
  parser.add_argument("--no-eval", action="store_true",
                      help="skip the final evaluation and eval.json (later: python -m basic_core.evaluate)")
  distributed.add_arguments(parser)
  return parser.parse_args(argv)


def _say_last(line: str) -> None:
  """Writes `line` as the command's last line on stderr. Library threads still finishing as the process
  stops (orbax's writers after a full disk print "Event loop is closed" tracebacks) would otherwise bury
  it, so stderr is closed to them; only for `python -m basic_core.train`, whose process ends here.
  `BASIC_TRACEBACK=1` raises instead and keeps everything."""
  sys.stderr.flush()
  ours = os.dup(2)
  os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
  os.write(ours, (line + "\n").encode())


def main(argv=None) -> int:
  args = parse_args(argv)
  distributed.configure_from_args(args)
  overrides = list(args.set) + ([f"train.steps={args.steps}"] if args.steps is not None else [])
  try:
    config = get_config(args.config, overrides)
    results = train(config, args.workdir, final_eval=not args.no_eval)
  except (ConfigError, checkpoint.CheckpointError, sharding.ShardingError, TrainingError, ValueError,
          OSError, WorkdirLocked) as e:  # bad input: one line (BASIC_TRACEBACK=1 shows the traceback)
    if os.environ.get("BASIC_TRACEBACK"):
      raise
    if __name__ == "__main__":
      _say_last(f"error: {e}")
    else:
      print(f"error: {e}", file=sys.stderr)
    return 2
  summary = {k: v for k, v in results.items() if k.endswith("top1") or "loss" in k or "gap" in k}
  print(json.dumps(summary, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
