"""The scenes world's zero-shot tasks: class names, prompt templates and labelled images.

In-distribution tasks ask for one attribute of single-object scenes (count asks for the number of
objects); `shape_colour_heldout` shows only (shape, colour) pairs never seen in training and asks
among all 72 names (composition); the robustness group asks the shape task under five shifts.
Labels cycle through the classes, so every task is balanced.
"""

from __future__ import annotations

import numpy as np

from basic_core.data.tasks import ZeroShotTask
from basic_core.worlds.scenes import captions as C
from basic_core.worlds.scenes import robustness
from basic_core.worlds.scenes import scenes as S
from basic_core.worlds.scenes.benchmark import ScenesBenchmark

TEMPLATES = {
    "shape": ("a {}.", "a picture of a {}.", "clip art of a {}.", "a {} shape.", "a drawing of a {}."),
    "colour": ("the {} shape.", "something {}.", "{} object.", "a picture of the {} thing."),
    "size": ("a {} shape.", "a picture of a {} object.", "something {}."),
    "fill": ("the {} shape.", "a picture of the {} object.", "something {}."),
    "position": ("a shape {}.", "something {}.", "a picture of an object {}."),
    "count": ("{}.", "a picture of {}.", "{} on a background."),
    "shape_colour": ("the {}.", "a picture of the {}.", "clip art of the {}.", "a drawing of the {}."),
}
CLASSNAMES = {
    "shape": list(S.SHAPES), "colour": list(S.COLOURS), "size": list(S.SIZES), "fill": list(S.FILLS),
    "position": [C.POSITION_PHRASES[p][0] for p in S.POSITIONS],
    "count": [f"{C.COUNT_WORDS[n][0]} {'shape' if n == 1 else 'shapes'}" for n in (1, 2, 3)],
    "shape_colour": [S.class_name(label) for label in range(S.NUM_CLASSES)],
}


def _task(name: str, group: str, kind: str, images: np.ndarray, labels: np.ndarray) -> ZeroShotTask:
  return ZeroShotTask(name, group, list(CLASSNAMES[kind]), list(TEMPLATES[kind]), images,
                      labels.astype(np.int32))


def scene_tasks(bench: ScenesBenchmark, n: int) -> list[ZeroShotTask]:
  """The built-in benchmark's tasks, n images each."""
  size = bench.image_size

  def single(kind: str, attribute: str) -> ZeroShotTask:
    labels = np.arange(n) % len(CLASSNAMES[kind])
    scenes = bench.sample(f"task/{kind}", n, count=1, **{attribute: labels})
    return _task(kind, "in_distribution", kind, S.render_scenes(scenes, size), labels)

  def pairs(name: str, group: str, pairs_Px2: np.ndarray) -> ZeroShotTask:
    chosen = pairs_Px2[np.arange(n) % len(pairs_Px2)]
    scenes = bench.sample(f"task/{name}", n, allowed_SxC=np.ones_like(bench.allowed_SxC), count=1,
                          shape=chosen[:, 0], colour=chosen[:, 1])
    return _task(name, group, "shape_colour", S.render_scenes(scenes, size), scenes.labels_N)

  counts = np.arange(n) % 3
  tasks = [single("shape", "shape"), single("colour", "colour"), single("size", "size"),
           single("fill", "fill"), single("position", "cell"),
           _task("count", "in_distribution", "count",
                 S.render_scenes(bench.sample("task/count", n, count=counts + 1), size), counts),
           pairs("shape_colour", "in_distribution", np.argwhere(bench.allowed_SxC)),
           pairs("shape_colour_heldout", "composition", bench.heldout_Px2)]
  for shift in robustness.SHIFTS:
    images, labels = robustness.shape_task_images(bench, shift, n)
    tasks.append(_task(f"shape@{shift}", "robustness", "shape", images, labels))
  return tasks


def prompts() -> list[str]:
  """Every prompt the scene tasks use (part of the tokenizer's training corpus)."""
  return [t.format(c) for kind, templates in TEMPLATES.items() for t in templates for c in CLASSNAMES[kind]]
