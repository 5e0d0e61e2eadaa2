"""The PAC-Bayes bound of theory/pac_bayes.py for a trained `tiny` model, at its learned temperature and
its loss group G, next to the measured sample gap.

    python -m basic_core.train --config tiny --workdir runs/tiny_bound/run --steps 300 \
        --set data.num_train=8192 --set data.num_test=4096 --set train.progress=False   # 33 s
    python -m experiments.tiny_bound --workdir runs/tiny_bound/run \
        --out paper_figures/data/tiny_bound.json                                        # 94 s

(wall times on the project's shared 2-core CPU). The run sees its pool of 8192 pairs 2.3 times, so every
pool pair is a training pair.

What is bounded. theta = every parameter except the log temperature; the predictor embeds with unit-norm
towers, so |s| <= 1 for every theta and each batch loss lies in the range of theory/pac_bayes.py. The
inverse temperature beta is the learned logit scale rounded to `beta_grid` (data-independent: steps
of 1% from 1 to model.max_logit_scale), and delta is shared over that grid too (a union bound), so the
temperature may be learned from the data. N = G, the run's loss group size. The sample is the pairs the
run trained on, as evaluation picks them (`data.trained_pairs`: a selection fixed by the seeds among the
pairs served, no augmentation), cut into consecutive batches of G; a PAC-Bayes bound holds for any
data-independent subset of the training pairs, since Q may depend on the rest. The prior is
P = N(theta_0, sigma^2 I) with theta_0 the initial parameters of the same config and seed, the posterior
Q = N(theta_hat, sigma^2 I), sigma from theory.pac_bayes.SIGMAS chosen by both rules of `choose_sigmas`.
Held-out pairs are the run's test split; L_G of a model is estimated on them by random re-batching.
All losses are the symmetric loss offset by log G (so equal similarities give 0).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from analysis import cli
from basic_core import data, evaluate
from basic_core import state as state_lib
from basic_core.configs import loss_group_size
from basic_core.data.datasets import train_and_test
from basic_core.data.source import first_pairs
from theory import bound, empirical
from theory import pac_bayes as pb

TEMPERATURE = "log_logit_scale"  # the parameter that is not part of theta (beta is on a grid instead)
RUN_KEYS = (
  "train.batch_size",
  "loss.group_size",
  "data.num_train",
  "data.fresh",
  "data.num_test",
  "model.temperature_init",
  "optim.lr",
)  # copied into the JSON: how the run was trained


def beta_grid(max_logit_scale: float) -> np.ndarray:
  """Inverse temperatures 1, 1.01, ... up to the model's cap: fixed before the data."""
  return np.exp(np.arange(0.0, np.log(max_logit_scale) + 0.01, 0.01))


def _is_temperature(path) -> bool:
  return any(getattr(k, "key", None) == TEMPERATURE for k in path)


def squared_distance(params, prior) -> float:
  """|theta - theta_0|^2 over every parameter but the temperature."""
  parts = jax.tree_util.tree_map_with_path(
    lambda path, p, p0: 0.0 if _is_temperature(path) else float(np.sum((np.asarray(p) - p0) ** 2)),
    params,
    prior,
  )
  return float(sum(jax.tree.leaves(parts)))


def perturb(params, sigma: float, rng: np.random.Generator):
  """One draw of Q = N(params, sigma^2 I) (the temperature left as it is)."""
  return jax.tree_util.tree_map_with_path(
    lambda path, p: (
      p
      if _is_temperature(path)
      else (np.asarray(p) + sigma * rng.normal(size=np.shape(p))).astype(np.asarray(p).dtype)
    ),
    params,
  )


def embed(fns, params, pairs: dict) -> tuple[np.ndarray, np.ndarray]:
  """Unit-norm image and text embeddings of `pairs` (no augmentation), in chunks of at most 256."""
  encoder = evaluate.Encoder(fns, params, chunk=min(256, len(pairs["text"])))
  return encoder.images(pairs["image"]), encoder.texts(pairs["text"])


def losses_per_batch_draw(
  fns, params, sigma: float, pairs: dict, group: int, beta: float, draws: int, rng: np.random.Generator
) -> np.ndarray:
  """[B, draws]: l_b under an independent draw of Q for every batch and column (what certify needs)."""
  batches = len(pairs["text"]) // group
  out = np.empty((batches, draws))
  for b in range(batches):
    part = {k: v[b * group : (b + 1) * group] for k, v in pairs.items()}
    for k in range(draws):
      img, txt = embed(fns, perturb(params, sigma, rng), part)
      out[b, k] = empirical.batch_losses((img @ txt.T)[None], beta)[0]
  return out


def model_losses(
  fns, params, train: dict, heldout: dict, group: int, beta: float, rng: np.random.Generator
) -> tuple[float, float, float]:
  """(L^_G on the training pairs, estimated L_G on held-out pairs, its standard error)."""
  l_hat = empirical.train_objective(*embed(fns, params, train), group, beta)
  l_pop, l_pop_se = empirical.population_loss(*embed(fns, params, heldout), group, beta, rng)
  return l_hat, l_pop, l_pop_se


def load_pairs(run, n_train: int, n_heldout: int) -> tuple[dict, dict]:
  """Up to n_train pairs the run trained on (a multiple of G) and the first n_heldout held-out pairs."""
  pipeline = data.train_pipeline(run.config, run.tokenizer)
  pipeline.set_state(run.data_state)
  try:
    train = data.trained_pairs(pipeline, n_train, run.tokenizer.encode)
  finally:
    pipeline.close()
  m = len(train["text"]) // loss_group_size(run.config) * loss_group_size(run.config)
  _, test = train_and_test(run.config)
  return {k: v[:m] for k, v in train.items()}, first_pairs(test, n_heldout, run.tokenizer.encode)


def evaluate_bound(
  workdir: Path,
  *,
  n_train: int = 8192,
  n_heldout: int = 4096,
  delta: float = 0.05,
  fidelity: float = 0.1,
  mc_values: int = 1024,
  pilot_pairs: int = 1024,
  eval_draws: int = 4,
  seed: int = 0,
) -> dict:
  """Every number of the JSON: the bound per sigma rule next to the deterministic and E_Q losses."""
  start, rng = time.time(), np.random.default_rng(seed)
  run = evaluate.load(workdir)
  group = loss_group_size(run.config)
  betas = beta_grid(run.config.model.max_logit_scale)
  beta_learned = float(run.fns.merge(run.params).logit_scale())
  beta = float(betas[np.argmin(np.abs(np.log(betas / beta_learned)))])
  prior = jax.device_get(state_lib.build(run.config).state["params"])
  dist2 = squared_distance(run.params, prior)
  train, heldout = load_pairs(run, n_train, n_heldout)
  problem = pb.Problem(len(train["text"]), group, beta, delta, n_choices=len(pb.SIGMAS) * len(betas))
  train_loss, heldout_loss, heldout_se = model_losses(run.fns, run.params, train, heldout, group, beta, rng)
  pilot = {k: v[: pilot_pairs // group * group] for k, v in train.items()}
  scan = []
  for sig in pb.SIGMAS:  # one shared draw per sigma on a few batches: only to choose sigma
    pilot_B = empirical.batch_loss_values(*embed(run.fns, perturb(run.params, sig, rng), pilot), group, beta)
    scan.append(
      {"sigma": sig, "kl": dist2 / (2 * sig**2)}
      | pb.estimate(problem, dist2 / (2 * sig**2), pilot_B[:, None])
    )
  scan, rules = pd.DataFrame(scan), {}
  for rule, sigma in pb.choose_sigmas(scan, train_loss, fidelity).items():
    kl = dist2 / (2 * sigma**2)
    losses = None
    if len(problem.families) > 1:
      draws = 2 * -(-mc_values // problem.n_batches)
      losses = losses_per_batch_draw(run.fns, run.params, sigma, train, group, beta, draws, rng)
    cert = pb.certify(problem, kl, losses)
    q = np.array(
      [
        model_losses(run.fns, perturb(run.params, sigma, rng), train, heldout, group, beta, rng)
        for _ in range(eval_draws)
      ]
    )
    gap_q = q[:, 1] - q[:, 0]
    rules[rule] = {
      "sigma": sigma,
      "kl": kl,
      **cert,
      "train_loss_q": q[:, 0].mean(),
      "heldout_loss_q": q[:, 1].mean(),
      "gap_q": gap_q.mean(),
      "gap_q_se": gap_q.std(ddof=1) / np.sqrt(len(gap_q)),
      "below_trivial": bool(cert["bound"] < bound.own_row_range(group, beta)),
    }
  lo, hi = problem.loss_range
  return {
    "workdir": str(workdir),
    "step": run.step,
    "run_config": {k: run.config[k.split(".")[0]][k.split(".")[1]] for k in RUN_KEYS}
    | {"seed": run.config.seed},
    "group_size": group,
    "beta_learned": beta_learned,
    "beta": beta,
    "beta_grid_size": len(betas),
    "m": problem.m,
    "n_batches": problem.n_batches,
    "heldout_pairs": len(heldout["text"]),
    "delta": delta,
    "fidelity": fidelity,
    "trivial_bound": bound.own_row_range(group, beta),
    "loss_range": [lo, hi],
    "train_loss": train_loss,
    "heldout_loss": heldout_loss,
    "heldout_loss_se": heldout_se,
    "gap": heldout_loss - train_loss,
    "squared_distance_to_init": dist2,
    "parameters": sum(np.size(p) for p in jax.tree.leaves(run.params)) - 1,
    "rules": rules,
    "scan": scan.to_dict(orient="records"),
    "runtime_s": time.time() - start,
  }


def main(argv=None) -> int:
  parser = cli.Parser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, type=cli.existing_dir)
  parser.add_argument("--out", type=cli.out_file,
                      help="write the JSON here (default: WORKDIR/tiny_bound.json)")
  positive = cli.number(int, gt=0)
  parser.add_argument("--pairs", type=positive, default=8192, help="at most this many trained pairs")
  parser.add_argument("--heldout", type=positive, default=4096, help="at most this many held-out pairs")
  parser.add_argument("--mc-values", type=positive, default=1024, help="Monte Carlo values per half")
  args = parser.parse_args(argv)
  with cli.blame("--workdir"):
    result = evaluate_bound(args.workdir, n_train=args.pairs, n_heldout=args.heldout,
                            mc_values=args.mc_values)
  out = args.out or args.workdir / "tiny_bound.json"
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=2, default=float))
  for rule, r in result["rules"].items():
    print(
      f"{rule}: sigma {r['sigma']:.4g}, KL {r['kl']:.4g}, bound {r['bound']:.4g} ({r['bound_family']}) "
      f"vs trivial {result['trivial_bound']:.4g}; measured gap {result['gap']:.4g} (theta_hat), "
      f"{r['gap_q']:.4g} (Q); train loss {result['train_loss']:.4g} (theta_hat), "
      f"{r['train_loss_q']:.4g} (Q)"
    )
  print(f"-> {out} ({result['runtime_s']:.0f} s)")
  return 0


if __name__ == "__main__":
  raise SystemExit(cli.run(main))
