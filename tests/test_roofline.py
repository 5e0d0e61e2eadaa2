"""The dense-matmul ceiling: every dense matmul of the forward pass is found, scan lengths counted."""

import collections

from basic_core.configs import get_config
from basic_core.perf import compiled, roofline


def config(**values):
  return compiled.with_overrides(get_config("tiny"), train__batch_size=8, **values)


def test_scan_and_loop_layouts_count_the_same_matmuls():
  """Scanned blocks appear once in the program; their count must be multiplied by the scan length."""
  scanned, looped = (roofline.dense_matmuls(config(model__scan_layers=s)) for s in (True, False))
  assert scanned == looped


def test_one_more_layer_adds_one_block_of_matmuls_per_tower():
  c = config(model__image__vit__layers=3, model__text__layers=3)
  more = config(model__image__vit__layers=4, model__text__layers=4)
  added = roofline.dense_matmuls(more) - roofline.dense_matmuls(c)
  vit, text = c.model.image.vit, c.model.text
  tokens = (c.model.image.image_size // vit.patch) ** 2 + 1  # patches and the class token
  expected = collections.Counter()
  for rows, width, ratio in ((8 * tokens, vit.width, vit.mlp_ratio),
                             (8 * text.context, text.width, text.mlp_ratio)):
    hidden = width * ratio
    expected.update({(rows, width, 3 * width): 1, (rows, width, width): 1, (rows, width, hidden): 1,
                     (rows, hidden, width): 1})
  assert added == expected


def test_ceiling_times_every_shape():
  out = roofline.dense_ceiling(config(), repeats=1)
  assert len(out["shapes"]) == len(roofline.dense_matmuls(config()))
  assert all(r["forward_gflop_per_s"] > 0 and r["backward_gflop_per_s"] > 0 for r in out["shapes"])
  assert out["dense_gflop_per_s"] > 0 and out["dense_train_flops"] > 0
