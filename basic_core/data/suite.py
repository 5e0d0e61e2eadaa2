"""What evaluation reads: held-out pairs and zero-shot tasks (`eval_suite`), and pairs the run trained on
(`trained_pairs`).

Trained pairs are drawn from the pipeline's own history (`Pipeline.seen_indices`), so a gap compares
held-out pairs with pairs the model actually saw, whatever the pool size, batch or number of steps.
Tasks come from the built-in world's own set (data.world), plus a task from data.eval_folder when set.
"""

from __future__ import annotations

import dataclasses

from basic_core.data import worlds
from basic_core.data.datasets import train_and_test
from basic_core.data.image_folder import folder_task
from basic_core.data.source import first_pairs, pairs
from basic_core.data.tasks import ZeroShotTask


@dataclasses.dataclass
class EvalSuite:
  heldout: dict  # image uint8 [n, H, W, 3], text int32 [n, L]
  tasks: list[ZeroShotTask]


def eval_suite(config, tokenizer) -> EvalSuite:
  world, n = worlds.build(config), config.eval.num_images
  _, test = train_and_test(config, world)
  heldout = first_pairs(test, min(config.data.num_test, config.eval.num_pairs), tokenizer.encode)
  tasks = world.tasks(n)
  if config.data.eval_folder:
    tasks.append(folder_task(config.data.eval_folder, config.model.image.image_size, n, config.data.seed))
  return EvalSuite(heldout=heldout, tasks=tasks)


def trained_pairs(pipeline, n: int, tokenize) -> dict:
  """Up to n distinct pairs among those the pipeline has served so far, as model inputs."""
  return pairs(pipeline.source, pipeline.seen_indices(n), tokenize)
