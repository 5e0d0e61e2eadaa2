"""The built-in benchmark: determinism, captions that tell the truth, held-out combinations, tasks."""

import re
import time

import numpy as np
import pytest

from basic_core.worlds.scenes import captions as C
from basic_core.worlds.scenes import scenes as S
from basic_core.worlds.scenes.benchmark import ScenesBenchmark
from basic_core.worlds.scenes.tasks import scene_tasks


@pytest.fixture(scope="module")
def bench():
  return ScenesBenchmark(seed=3, image_size=32, num_train=3000, num_test=300)


def test_same_seed_same_pairs_other_seed_other_pairs(bench):
  again = ScenesBenchmark(seed=3, image_size=32, num_train=3000, num_test=300)
  other = ScenesBenchmark(seed=4, image_size=32, num_train=3000, num_test=300)
  idx = np.arange(0, 3000, 97)
  a, b, c = (s.train.load(idx) for s in (bench, again, other))
  np.testing.assert_array_equal(a.images_NxHxWx3, b.images_NxHxWx3)
  assert a.captions == b.captions
  assert not np.array_equal(a.images_NxHxWx3, c.images_NxHxWx3)
  assert a.captions != c.captions


def test_render_shapes_and_sizes():
  scenes = S.sample(np.random.default_rng(0), 50, np.ones((len(S.SHAPES), len(S.COLOURS)), bool))
  for size in (32, 64):
    images = S.render_scenes(scenes, size)
    assert images.shape == (50, size, size, 3) and images.dtype == np.uint8
  # A single object changes pixels only near its cell.
  one = S.sample(np.random.default_rng(1), 1, np.ones((8, 9), bool), count=1, cell=0, size=0, background=0)
  image = S.render_scenes(one, 48)[0]
  painted = np.argwhere((image != S.BACKGROUND_RGB_3x3[0]).any(-1))
  assert painted.size and painted.max() < 28


def test_renderer_speed_loose_floor():
  """The 5,000 images/s target is measured by `python -m basic_core.data bench`; this only catches a
  regression by an order of magnitude on a shared CI machine."""
  scenes = S.sample(np.random.default_rng(0), 1000, np.ones((8, 9), bool))
  S.render_scenes(scenes, 32)
  start = time.process_time()
  S.render_scenes(scenes, 32)
  assert 1000 / (time.process_time() - start) > 1000


def test_captions_name_only_true_attributes(bench):
  scenes = bench.scenes["train"]
  named = {a: 0 for a in ("shape", "colour", "size", "fill", "position", "background", "count")}
  for i in range(len(scenes)):
    record = scenes.record(i)
    truth = {a: {o[a] for o in record["objects"]} for a in ("shape", "colour", "size", "fill", "position")}
    truth |= dict(background={record["background"]}, count={record["count"]})
    found = C.mentions(C.caption(scenes, i))
    for attribute, values in found.items():
      assert values <= truth[attribute], (C.caption(scenes, i), attribute, values, truth[attribute])
      named[attribute] += bool(values)
  # Partial descriptions: every attribute is named often, none always.
  assert all(0.15 * len(scenes) < k < 0.95 * len(scenes) for k in named.values()), named


def test_single_object_captions_parse_back():
  scenes = S.sample(np.random.default_rng(5), 400, np.ones((8, 9), bool), count=1)
  hits = 0
  for i in range(400):
    found = C.mentions(C.caption(scenes, i))
    if found["colour"] and found["shape"]:
      assert found["colour"] == {S.COLOURS[scenes.colour_NxK[i, 0]]}
      assert found["shape"] == {S.SHAPES[scenes.shape_NxK[i, 0]]}
      hits += 1
  assert hits > 200


def test_noise_replaces_the_requested_fraction():
  noisy = ScenesBenchmark(seed=3, image_size=32, num_train=3000, num_test=10, noise=0.3)
  swapped = noisy.train.caption_source_N != np.arange(3000)
  assert 0.25 < swapped.mean() < 0.35
  clean = ScenesBenchmark(seed=3, image_size=32, num_train=3000, num_test=10)
  idx = np.flatnonzero(~swapped)[:20]
  assert noisy.train.load(idx).captions == clean.train.load(idx).captions


def test_heldout_combinations_never_in_training(bench):
  heldout = {tuple(p) for p in bench.heldout_Px2}
  assert len(heldout) == len(S.SHAPES) and len({c for _, c in heldout}) == len(S.SHAPES)
  scenes = bench.scenes["train"]
  active = scenes.active_NxK
  seen = set(zip(scenes.shape_NxK[active], scenes.colour_NxK[active]))
  assert not seen & heldout
  assert len(seen) == len(S.SHAPES) * len(S.COLOURS) - len(heldout)
  phrases = [rf"\b{c} {w}" for shape, colour in heldout for c in C.COLOUR_WORDS[S.COLOURS[colour]]
             for w in C.SHAPE_WORDS[S.SHAPES[shape]]]
  pattern = re.compile("|".join(phrases))  # nor in captions: no "<colour> <shape>" of a held-out pair
  assert not [text for text in C.captions(scenes, np.arange(len(scenes))) if pattern.search(text.lower())]


def test_tasks(bench):
  tasks = {t.name: t for t in scene_tasks(bench, 72)}
  assert set(tasks) == {"shape", "colour", "size", "fill", "position", "count", "shape_colour",
                        "shape_colour_heldout", "shape@v2", "shape@sketch", "shape@r", "shape@a",
                        "shape@objectnet"}
  for t in tasks.values():
    assert t.images.shape == (72, 32, 32, 3) and t.images.dtype == np.uint8
    assert t.labels.dtype == np.int32 and t.labels.max() < len(t.classnames)
    assert all("{}" in template for template in t.templates)
    assert t.group == ("composition" if t.name == "shape_colour_heldout" else
                       "robustness" if "@" in t.name else "in_distribution")
  heldout_labels = {s * len(S.COLOURS) + c for s, c in bench.heldout_Px2}
  assert set(tasks["shape_colour_heldout"].labels) == heldout_labels
  assert not set(tasks["shape_colour"].labels) & heldout_labels
  assert tasks["shape@v2"].classnames == tasks["shape"].classnames
  sketch = tasks["shape@sketch"].images
  assert (sketch == sketch[..., :1]).all()  # no colour in sketches
  for name in ("shape@v2", "shape@r", "shape@a", "shape@objectnet"):
    assert not np.array_equal(tasks[name].images, tasks["shape"].images)
