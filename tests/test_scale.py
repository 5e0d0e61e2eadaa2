"""BASIC's step at large contrastive batches: exact against the dense loss, and memory that grows by the
embeddings and one loss block per pair, not by a copy of the batch (basic_core/perf/scale.py)."""

from basic_core.configs import get_config
from basic_core.perf import scale


def test_accumulated_tiled_step_equals_the_plain_dense_step():
  row = scale.exact(get_config("tiny"), 256, 32, 64)
  assert row["loss_abs_error"] < 1e-5 * row["dense_loss"]
  assert row["max_grad_rel_error"] < 1e-4, row


def test_step_memory_grows_by_the_method_per_pair():
  """Compiled temp bytes per extra pair: 16 D (embeddings and their gradients) + 12 T (the loss block).
  A copy of the uint8 batch (3 S^2 = 3,072 bytes per pair at S = 32) would more than double it."""
  config = get_config("tiny")
  rows = [scale.memory_row(scale.step_config(config, n, 256, 64)) for n in (65536, 262144)]
  growth = scale.growth(rows)
  assert 0.8 < growth["ratio"] < 1.2, growth
