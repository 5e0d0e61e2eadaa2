"""The attribute-swap measure: its candidate captions differ in one attribute only, a model that reads every
fact scores 1, one blind to the attribute scores chance, and the command refuses a run of another world."""

import numpy as np
import pytest

from analysis import cli
from basic_core.worlds import objects
from experiments import attribute_swap


@pytest.mark.parametrize("attribute", list(objects.ATTRIBUTES))
def test_each_candidate_changes_only_that_attribute(attribute):
  scenes = objects.sample(np.random.default_rng(0), 12, count=1)
  values = objects.ATTRIBUTES[attribute]
  texts = attribute_swap.candidates(scenes, attribute)
  assert len(texts) == 12 * len(values)
  for i in range(12):
    own = objects.caption(scenes, i)
    rows = texts[i * len(values):(i + 1) * len(values)]
    value = getattr(scenes, f"{attribute}_NxK")[i, np.argmax(scenes.present_NxK[i])]
    assert rows[value] == own
    claimed = np.stack([objects.claims(t) for t in rows])
    assert (claimed.sum(axis=1) == 3).all()  # the object, the background, the count
    differs = claimed != objects.claims(own)
    assert [d.sum() for d in differs] == [0 if v == value else 2 for v in range(len(values))]


class _Facts:
  """An oracle for the measure: images embed as their scenes' facts, captions as the facts they claim
  (`blind` drops every fact bit of objects, so only background and count remain)."""

  def __init__(self, world, blind=False):
    self.world, self.blind, self.seen = world, blind, {}

  def render(self, scenes):
    images = self.world.render(scenes)
    self.seen.update({im.tobytes(): f for im, f in zip(images, objects.facts(scenes))})
    return images

  def sample(self, *args, **kwargs):
    return self.world.sample(*args, **kwargs)

  def class_prompts(self, *args, **kwargs):
    return self.world.class_prompts(*args, **kwargs)

  def _mask(self, x):
    x = np.asarray(x, np.float32)
    if self.blind:
      x[:, :objects.NUM_FACTS - len(objects.BACKGROUNDS) - objects.MAX_OBJECTS] = 0
    return x

  def images(self, images):
    return self._mask([self.seen[im.tobytes()] for im in images])

  def texts(self, captions):
    return self._mask([objects.claims(t) for t in captions])

  def encode(self, captions):  # the tokenizer: captions pass through to `texts`
    return captions


@pytest.mark.parametrize("attribute", list(objects.ATTRIBUTES))
def test_an_oracle_scores_one_and_a_blind_one_chance(attribute):
  world = objects.ObjectsWorld(0, 32, 16, 16)
  seeing = _Facts(world)
  row = attribute_swap.swap_scores(seeing, seeing, seeing, attribute, 120, prompts=4)
  assert row["swap"] == 1.0 and row["chance"] == 1 / len(objects.ATTRIBUTES[attribute])
  blind = _Facts(world, blind=True)
  row = attribute_swap.swap_scores(blind, blind, blind, attribute, 120, prompts=4)
  assert row["swap"] == pytest.approx(row["chance"])  # ties go to the first value; labels cycle


def test_a_run_of_another_world_is_refused(tiny_run, capsys):
  assert cli.run(attribute_swap.main, ["--workdir", str(tiny_run)]) == 2
  assert "needs a run of the objects world" in capsys.readouterr().err
