"""The train step's plumbing: augmentation and dropout switched by the model functions, XLA options
from the config's `xla` section."""

import jax
import numpy as np

from basic_core import state as state_lib
from basic_core import step as step_lib
from basic_core.configs import get_config

RNG = np.random.default_rng(0)
BATCH = dict(image=RNG.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
             text=RNG.integers(1, 100, (4, 24), dtype=np.int32))


def embeddings(*overrides, keys=True):
  built = state_lib.build(get_config("tiny", ["model.image.vit.patch=8", *overrides]))
  example_keys = jax.random.split(jax.random.key(0), 4) if keys else None
  image, text = jax.jit(built.fns.embed)(built.state["params"], BATCH, example_keys)
  return np.asarray(image), np.asarray(text)


def test_keys_drive_augmentation_and_dropout_only_where_the_config_says():
  plain_image, plain_text = embeddings(keys=False)
  image, text = embeddings("data.augment=False")  # keys, but nothing random is on
  np.testing.assert_array_equal(image, plain_image)
  np.testing.assert_array_equal(text, plain_text)
  image, text = embeddings()  # augmentation on: images move, captions do not
  assert np.abs(image - plain_image).max() > 1e-3
  np.testing.assert_array_equal(text, plain_text)
  _, text = embeddings("data.augment=False", "model.dropout=0.3")
  assert np.abs(text - plain_text).max() > 1e-3


def test_compiler_options_come_from_the_xla_section():
  for scheduler, flag in (("concurrency", True), ("memory", False)):
    xla = get_config("tiny", [f"xla.cpu_scheduler={scheduler}"]).xla
    assert step_lib.compiler_options(xla) == {"xla_cpu_enable_concurrency_optimized_scheduler": flag}
  assert step_lib.compiler_options(None) == {}
