"""experiments/tiny_bound.py: the PAC-Bayes bound of a trained `tiny` workdir, end to end on a few steps."""

import json

import jax
import numpy as np
import pytest

from basic_core import evaluate, train
from basic_core import state as state_lib
from basic_core.configs import get_config
from experiments import tiny_bound
from theory import empirical
from theory import pac_bayes as pb

# One xdist worker runs this module (make test: --dist loadgroup): the trained workdir, made once.
pytestmark = pytest.mark.xdist_group("tiny_bound")

# 8 steps of 32 pairs serve all 256 pool pairs; G = 4 gives 64 batches, so every family of bounds runs.
FEW_STEPS = [
  "train.steps=8",
  "train.batch_size=32",
  "loss.group_size=4",
  "train.log_every=4",
  "train.checkpoint_every=8",
  "train.progress=False",
  "data.num_train=256",
  "data.num_test=256",
  "eval.batch_size=64",
  "eval.num_pairs=256",
  "eval.num_images=64",
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tiny_bound")
  train.train(get_config("tiny", FEW_STEPS), path, final_eval=False)  # the bound reads the checkpoint
  return path


def test_the_cli_writes_every_number_of_the_bound(workdir):
  out = workdir / "bound.json"
  assert (
    tiny_bound.main(
      [
        "--workdir",
        str(workdir),
        "--out",
        str(out),
        "--pairs",
        "256",
        "--heldout",
        "256",
        "--mc-values",
        "64",
      ]
    )
    == 0
  )
  result = json.loads(out.read_text())
  for key in (
    "beta",
    "beta_learned",
    "group_size",
    "m",
    "n_batches",
    "trivial_bound",
    "loss_range",
    "train_loss",
    "heldout_loss",
    "gap",
    "squared_distance_to_init",
    "rules",
    "scan",
  ):
    assert key in result, key
  assert result["group_size"] == 4 and result["m"] == 256 and result["n_batches"] == 64
  assert abs(np.log(result["beta"] / result["beta_learned"])) <= 0.005  # the nearest 1% grid point
  assert set(result["rules"]) == {"fidelity", "tightest"} and len(result["scan"]) == len(pb.SIGMAS)
  lo, hi = result["loss_range"]
  for r in result["rules"].values():
    assert r["sigma"] in pb.SIGMAS and r["families"] == "mcdiarmid+kl+bernstein"
    assert r["bound"] == min(r[f"bound_{f}"] for f in pb.FAMILIES) > 0
    assert r["below_trivial"] == (r["bound"] < result["trivial_bound"])
    assert lo <= r["train_loss_q_lower"] <= r["train_loss_q"] + 1.0 and r["train_loss_q_upper"] <= hi
    assert np.isfinite([r["heldout_loss_q"], r["gap_q"], r["kl"]]).all()


def test_prior_is_the_seed_fixed_initialisation_and_the_temperature_is_not_perturbed(workdir):
  run = evaluate.load(workdir)
  prior = jax.device_get(state_lib.build(run.config).state["params"])
  again = jax.device_get(state_lib.build(run.config).state["params"])
  assert tiny_bound.squared_distance(prior, again) == 0.0
  manual = sum(
    float(np.sum((np.asarray(p) - q) ** 2))
    for p, q in zip(jax.tree.leaves(run.params), jax.tree.leaves(prior))
  )
  temperature = float((run.params["log_logit_scale"][...] - prior["log_logit_scale"][...]) ** 2)
  assert temperature > 0  # it was learned, yet theta leaves it out
  assert tiny_bound.squared_distance(run.params, prior) == pytest.approx(manual - temperature)
  noisy = tiny_bound.perturb(run.params, 0.5, np.random.default_rng(0))
  assert noisy["log_logit_scale"][...] == run.params["log_logit_scale"][...]
  spread = np.concatenate(
    [np.ravel(np.asarray(a) - b) for a, b in zip(jax.tree.leaves(noisy), jax.tree.leaves(run.params))]
  )
  assert np.std(spread) == pytest.approx(0.5, rel=0.02)


def test_theory_loss_is_the_trainers_loss_offset_by_log_g(workdir):
  run = evaluate.load(workdir)
  pairs, _ = tiny_bound.load_pairs(run, 64, 64)
  img, txt = tiny_bound.embed(run.fns, run.params, pairs)
  beta = 7.5
  assert empirical.train_objective(img, txt, 4, beta) == pytest.approx(
    evaluate.loss_at_batch(img, txt, beta, 4) - np.log(4), abs=1e-5
  )


def test_beta_grid_is_fixed_and_fine():
  grid = tiny_bound.beta_grid(100.0)
  assert grid[0] == 1.0 and grid[-1] >= 100.0 and np.allclose(np.diff(np.log(grid)), 0.01)
