"""A zero-shot classification task: class names, prompts and labelled images.

A class's prompts are CLIP's templates with its name put in, or, where the classes cannot share
templates (an object count changes the whole caption), a list of its own; evaluation averages each
class's prompt embeddings either way (prompt ensembling). Every world builds its own tasks
(`basic_core/worlds/*`); evaluation and the public API only read this record, so a task from a folder
of the user's images has the same shape as a built-in one.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class ZeroShotTask:
  name: str  # e.g. "shape", "shape_colour_heldout", "shape@sketch"
  group: str  # in_distribution | composition | robustness
  classnames: list[str]
  templates: list[str]  # each contains "{}"
  images: np.ndarray  # uint8 [n, H, W, 3]
  labels: np.ndarray  # int32 [n]
  class_prompts: list[list[str]] | None = None  # per class, as many each; replaces the templates

  def prompts(self) -> list[list[str]]:
    """Per class, the prompts whose mean embedding stands for it."""
    if self.class_prompts is not None:
      return self.class_prompts
    return [[t.format(c) for t in self.templates] for c in self.classnames]
