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
