"""experiments/embedding_geometry.py: the numbers on embeddings whose geometry is known, and the command."""

import json

import numpy as np
import pytest

from experiments import embedding_geometry as eg


def unit(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_isotropic_embeddings_use_every_direction_and_a_line_uses_one():
  rng = np.random.default_rng(0)
  n, d = 4096, 16
  spread = unit(rng.normal(size=(n, d)))
  assert eg.effective_rank(spread) == pytest.approx(d * n / (n + d), rel=0.05)
  signs = rng.choice([-1.0, 1.0], size=(n, 1))
  line = unit(signs * np.eye(d)[0] + 0.01 * rng.normal(size=(n, d)))  # every row near +e or -e
  assert eg.effective_rank(line) < 1.05


def test_a_collapsed_model_and_a_spread_one_are_told_apart():
  """Collapse: each image and its caption at the same end of one line -> alignment ~1, rank ~1, negatives
  at +-1 (sd ~1), R@1 at chance. Spread pairs: rank near D, negatives near 0 with a small sd, R@1 high."""
  rng = np.random.default_rng(1)
  n, d = 2048, 16
  side = rng.choice([-1.0, 1.0], size=(n, 1)) * np.eye(d)[0]
  near_line = lambda: unit(side + 0.01 * rng.normal(size=(n, d)))  # noqa: E731
  collapsed = eg.embedding_geometry(near_line(), near_line())
  assert collapsed["positive_cosine"] > 0.99
  assert collapsed["image_effective_rank"] < 1.05 and collapsed["negative_cosine_sd"] > 0.9
  assert collapsed["i2t_r1"] < 0.01
  image = unit(rng.normal(size=(n, d)))
  spread = eg.embedding_geometry(image, unit(image + 0.1 * rng.normal(size=(n, d))))
  assert spread["image_effective_rank"] > 14 and spread["text_effective_rank"] > 14
  assert abs(spread["negative_cosine"]) < 0.01 and spread["negative_cosine_sd"] < 0.3
  assert spread["positive_cosine"] > 0.9 and spread["i2t_r1"] > 0.9
  assert spread["image_mean_norm"] < 0.05 and collapsed["pairs"] == spread["pairs"] == n


def test_the_command_on_a_trained_workdir(tiny_run, tmp_path, capsys):
  out = tmp_path / "geometry.jsonl"
  assert eg.main(["--workdir", str(tiny_run), "--pairs", "128", "--json", "--out", str(out)]) == 0
  row = json.loads(capsys.readouterr().out)
  assert row == json.loads(out.read_text())
  assert (row["run"], row["step"], row["pairs"]) == (tiny_run.name, 5, 128)
  assert 1 <= row["image_effective_rank"] <= 64 and -1 <= row["negative_cosine"] <= 1
  assert "queue_size" not in row  # no queue in a plain run's checkpoint


def test_the_queue_check_finds_towers_that_flee_their_stale_entries_and_passes_a_fair_queue():
  """A planted exploit: today's embeddings are yesterday's (the queue's) turned by 45 degrees, so every
  queued entry sits farther from today's anchors than today's negatives do -> the queue's negative term is
  well below the current one. A fair queue (other draws of today's distribution) -> about 0."""
  rng = np.random.default_rng(2)
  n, q, d, scale = 1024, 1024, 16, 14.3
  centre = np.eye(d)[0]
  draw = lambda m: unit(centre + 0.3 * rng.normal(size=(m, d)))  # noqa: E731  (clustered, as trained towers)
  image = draw(n)
  text = unit(image + 0.05 * rng.normal(size=(n, d)))
  fair = eg.queue_geometry(image, text, draw(q), draw(q), scale)
  assert abs(fair["queue_minus_current_lme"]) < 0.1 and fair["queue_size"] == q
  angle = np.pi / 4
  turn = np.eye(d)
  turn[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
  stale = lambda x: x @ turn  # noqa: E731  (where yesterday's towers put today's draws)
  fled = eg.queue_geometry(image, text, stale(draw(q)), stale(draw(q)), scale)
  assert fled["queue_minus_current_lme"] < -0.5
  assert fled["queue_negative_cosine"] < fair["queue_negative_cosine"] - 0.05


def test_the_command_reads_a_queue_runs_checkpointed_queue(tmp_path, capsys):
  """A 3-step queue run (fresh pairs, Q = 48 > the batch of 32): the row gains the queue's numbers; a run
  without a queue (the plain tiny run) does not."""
  from basic_core import train
  from basic_core.configs import get_config

  workdir = tmp_path / "queue"
  train.train(get_config("tiny", QUEUE_RUN), workdir, final_eval=False)
  assert eg.main(["--workdir", str(workdir), "--pairs", "64", "--json"]) == 0
  row = json.loads(capsys.readouterr().out)
  assert row["queue_size"] == 48 and np.isfinite(row["queue_minus_current_lme"])
  assert -1 <= row["queue_negative_cosine"] <= 1


QUEUE_RUN = ["train.batch_size=32", "train.steps=3", "train.log_every=3", "train.checkpoint_every=3",
             "train.progress=False", "model.image.image_size=16", "model.image.vit.patch=8",
             "model.image.vit.width=32", "model.image.vit.layers=1", "model.text.width=32",
             "model.text.layers=1", "model.embed_dim=16", "loss.estimator=queue", "data.fresh=true",
             "loss.queue_size=48", "data.num_test=128", "eval.batch_size=64", "eval.num_pairs=64",
             "eval.num_images=64"]
