"""train_pipeline / eval_suite contract: shapes, exact resume, process sharding, digits."""

import json

import jax
import numpy as np
import pytest

from basic_core.augment import preprocess
from basic_core.configs import get_config
from basic_core.data import eval_suite, get_tokenizer, train_pipeline, trained_pairs


def _config(*overrides):
  return get_config("tiny", ["data.num_train=600", "data.num_test=100", "eval.num_images=24",
                             "train.batch_size=32", *overrides])


@pytest.fixture(scope="module")
def tokenizer():
  config = _config()
  return get_tokenizer(config.data, config.model.text.context)


def _take(p, k):
  return [next(p) for _ in range(k)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def test_batch_contract(tokenizer):
  config = _config()
  p = train_pipeline(config, tokenizer)
  batch = next(p)
  assert batch["image"].shape == (32, 32, 32, 3) and batch["image"].dtype == np.uint8
  assert batch["text"].shape == (32, 24) and batch["text"].dtype == np.int32
  assert batch["label"].shape == (32,) and batch["label"].dtype == np.int32
  assert ((batch["text"] == tokenizer.eot_id).sum(1) == 1).all()
  assert p.num_classes == 72 and batch["label"].min() >= 0 and batch["label"].max() < 72
  assert p.skipped_samples == 0
  assert next(p)["image"].shape[0] == 32
  assert next(train_pipeline(config, tokenizer, batch_size=8))["image"].shape[0] == 8
  big = next(train_pipeline(_config("model.image.image_size=64"), tokenizer))
  assert big["image"].shape == (32, 64, 64, 3)


def test_order_depends_on_seeds_only(tokenizer):
  a = _take(train_pipeline(_config(), tokenizer), 2)
  _assert_batches_equal(a, _take(train_pipeline(_config(), tokenizer), 2))
  for other in ("seed=1", "data.seed=1"):
    assert not np.array_equal(a[0]["image"], next(train_pipeline(_config(other), tokenizer))["image"])


@pytest.mark.parametrize("k", [1, 19, 23])  # 600 pairs / 32: epoch boundary at batch 18.75
def test_resume_is_exact(tokenizer, k):
  config = _config()
  p = train_pipeline(config, tokenizer)
  _take(p, k)
  state = json.loads(json.dumps(p.get_state()))
  expected = _take(p, 3)
  resumed = train_pipeline(config, tokenizer)
  resumed.set_state(state)
  _assert_batches_equal(_take(resumed, 3), expected)


def test_state_of_another_dataset_is_refused(tokenizer):
  state = train_pipeline(_config(), tokenizer).get_state()
  with pytest.raises(ValueError, match="another dataset"):
    train_pipeline(_config("data.num_train=700"), tokenizer).set_state(state)


def test_an_epoch_visits_every_pair_once(tokenizer):
  config = _config("data.num_train=64", "train.batch_size=16")
  seen = sorted(image.tobytes() for b in _take(train_pipeline(config, tokenizer), 4) for image in b["image"])
  everything = next(train_pipeline(config, tokenizer, batch_size=64))["image"]
  assert seen == sorted(image.tobytes() for image in everything)


@pytest.mark.parametrize("overrides", [(), ("data.name=digits",)])
def test_process_shards_concatenate_to_the_single_process_batch(tokenizer, overrides):
  config = _config(*overrides)
  whole = _take(train_pipeline(config, tokenizer), 3)
  shards = [_take(train_pipeline(config, tokenizer, process_index=i, process_count=4), 3) for i in range(4)]
  for step in range(3):
    for key in ("image", "text", "label"):
      np.testing.assert_array_equal(np.concatenate([s[step][key] for s in shards]), whole[step][key])


def test_batch_larger_than_dataset_is_refused(tokenizer):
  with pytest.raises(ValueError, match="cannot fill"):
    train_pipeline(_config("data.name=digits", "train.batch_size=2048"), tokenizer)
  with pytest.raises(ValueError, match="not divisible"):
    train_pipeline(_config(), tokenizer, process_count=3)


def test_eval_suite_scenes(tokenizer):
  config = _config()
  suite = eval_suite(config, tokenizer)
  assert suite.heldout["image"].shape == (100, 32, 32, 3) and suite.heldout["text"].shape == (100, 24)
  assert {t.group for t in suite.tasks} == {"in_distribution", "composition", "robustness"}
  assert all(t.images.shape == (24, 32, 32, 3) for t in suite.tasks)


def test_digits(tokenizer):
  config = _config("data.name=digits")
  batch = next(train_pipeline(config, tokenizer))
  assert batch["image"].shape == (32, 32, 32, 3) and set(batch["label"]) <= set(range(10))
  assert (batch["image"][..., 0] == batch["image"][..., 1]).all()  # gray scans as RGB
  for text, label in zip(batch["text"], batch["label"]):
    words = tokenizer.decode(text)
    assert str(label) in words or ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                   "nine"][label] in words
  suite = eval_suite(config, tokenizer)
  assert [t.name for t in suite.tasks] == ["digit"]
  assert suite.tasks[0].images.shape == (24, 32, 32, 3) and len(suite.tasks[0].classnames) == 10
  assert suite.heldout["image"].shape[0] == 100


def test_preprocess_is_keyed():
  config = _config()
  images = next(train_pipeline(config, get_tokenizer(config.data, 24)))["image"][:8]
  run = jax.jit(preprocess)
  a, b = run(images, jax.random.key(1)), run(images, jax.random.key(1))
  c = run(images, jax.random.key(2))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert a.shape == (8, 32, 32, 3) and a.dtype == np.float32
  assert float(np.abs(np.asarray(a) - np.asarray(c)).mean()) > 1e-3
  plain = np.asarray(preprocess(images))
  np.testing.assert_allclose(plain, images / 127.5 - 1.0, atol=1e-6)
  assert float(np.abs(np.asarray(a) - plain).mean()) < 0.3  # mild: the scene is still there


def _served(pipeline, batches: int) -> list[bytes]:
  """Each served pair as bytes (image and tokens), in order."""
  out = []
  for _ in range(batches):
    batch = next(pipeline)
    out += [img.tobytes() + txt.tobytes() for img, txt in zip(batch["image"], batch["text"])]
  return out


@pytest.mark.parametrize("fresh", [False, True])
def test_trained_pairs_are_pairs_the_run_was_served(tokenizer, fresh):
  pipeline = train_pipeline(_config(f"data.fresh={fresh}"), tokenizer, batch_size=50)
  served = set(_served(pipeline, 3))
  trained = trained_pairs(pipeline, 100, tokenizer.encode)
  keys = [img.tobytes() + txt.tobytes() for img, txt in zip(trained["image"], trained["text"])]
  assert len(set(keys)) == 100 and set(keys) <= served
  more = trained_pairs(pipeline, 1000, tokenizer.encode)
  assert len(more["text"]) == 150  # no more than were served


def test_after_a_whole_pass_every_pool_pair_counts_as_trained(tokenizer):
  pipeline = train_pipeline(_config(), tokenizer, batch_size=300)  # 600 training pairs
  _served(pipeline, 3)
  assert len(pipeline.seen_indices(5000)) == 600


def test_fresh_stream_never_repeats_and_resumes_bit_identically(tokenizer):
  config = _config("data.fresh=True")
  pipeline = train_pipeline(config, tokenizer, batch_size=64)
  first = _served(pipeline, 2)
  state = pipeline.get_state()
  rest = _served(pipeline, 70)  # 4,608 pairs: across a block boundary of the stream
  assert len(set(first + rest)) == len(first + rest)
  resumed = train_pipeline(config, tokenizer, batch_size=64)
  resumed.set_state(state)
  assert _served(resumed, 70) == rest
  other_seed = train_pipeline(_config("data.fresh=True", "seed=1"), tokenizer, batch_size=64)
  assert not set(_served(other_seed, 2)) & set(first)
  with pytest.raises(ValueError, match="another dataset"):
    train_pipeline(_config(), tokenizer, batch_size=64).set_state(state)  # a pool is not the stream
