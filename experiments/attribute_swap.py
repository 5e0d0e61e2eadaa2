"""What a trained objects-world model tells apart: each attribute with everything else in the caption true.

    python -m experiments.attribute_swap --workdir W [--step S | --control] [--images 600] [--prompts 16]
                                         [--json] [--out F.jsonl]

    python -m experiments.attribute_swap --workdir runs/pilots/objects-p8-1000  # ~10 s on a 2-core VM

Zero-shot top-1 (the issue's measure of towers that learn) scores an image against one embedding per
class: the mean of captions of scenes drawn with that attribute fixed and everything else at random. A
tower can encode an attribute and still lose that vote if the attribute moves a caption's embedding much
less than the other words do. This asks the narrower question. For single-object scenes, the image's own
caption is rewritten once per value of one attribute (shape, colour, size or fill; the scene's other
attributes, cell and background kept) and the model picks the caption it scores highest: chance is one
over the number of values. Each attribute but size is also scored per object size (small shapes cover a few
pixels at 32x32), next to zero-shot top-1 on the same images with `--prompts` captions per class (the
evaluation's 16 by default; more of them average the other attributes out better).

What it does not show: which of the towers (image or text) limits an attribute, or whether that
attribute helps the contrastive loss. `--control` scores the run's initial weights (its config's seed),
the negative control: about chance.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from analysis import cli
from basic_core import evaluate, sharding
from basic_core import state as state_lib
from basic_core.worlds import objects


def candidates(scenes: objects.Scenes, attribute: str) -> list[str]:
  """For N single-object scenes, N x V captions: scene i's caption with its object's `attribute` set to
  each of the V values in turn (row-major: all of scene 0's, then scene 1's)."""
  values = objects.ATTRIBUTES[attribute]
  field = f"{attribute}_NxK"
  rewritten = []
  for v in range(len(values)):
    swapped = dataclasses.replace(scenes, **{field: np.full_like(getattr(scenes, field), v)})
    rewritten.append(objects.captions(swapped, np.arange(len(scenes))))
  return [rewritten[v][i] for i in range(len(scenes)) for v in range(len(values))]


def swap_scores(encoder: evaluate.Encoder, tokenizer, world, attribute: str, n: int,
                prompts: int = objects.PROMPTS_PER_CLASS) -> dict:
  """Accuracy of picking the true value among the rewritten captions, and zero-shot top-1, on n
  single-object scenes (labels cycling through the values), overall and per object size."""
  values = objects.ATTRIBUTES[attribute]
  labels_N = (np.arange(n) % len(values)).astype(np.int32)
  scenes = world.sample(f"swap/{attribute}", n, count=1, **{attribute: labels_N})
  image_NxD = encoder.images(world.render(scenes))
  text_NxVxD = encoder.texts(tokenizer.encode(candidates(scenes, attribute))).reshape(n, len(values), -1)
  swap_N = np.argmax(np.einsum("nd,nvd->nv", image_NxD, text_NxVxD), axis=1) == labels_N
  per_class = [world.class_prompts(attribute, v, prompts, count=1, **{attribute: v})
               for v in range(len(values))]
  class_VxD = evaluate.prompt_embeddings(encoder, tokenizer, per_class)
  zero_shot_N = np.argmax(image_NxD @ class_VxD.T, axis=1) == labels_N
  size_N = scenes.size_NxK[np.arange(n), np.argmax(scenes.present_NxK, axis=1)]
  by_size = {objects.SIZES[s]: dict(swap=float(swap_N[size_N == s].mean()),
                                    zero_shot=float(zero_shot_N[size_N == s].mean()),
                                    images=int(np.sum(size_N == s)))
             for s in range(len(objects.SIZES)) if attribute != "size" and np.any(size_N == s)}
  return dict(attribute=attribute, images=n, prompts=prompts, chance=1.0 / len(values),
              swap=float(swap_N.mean()), zero_shot=float(zero_shot_N.mean()), by_size=by_size)


def attribute_swap(workdir, step: int | None = None, n: int = 600, prompts: int = objects.PROMPTS_PER_CLASS,
                   control: bool = False) -> list[dict]:
  """One row per attribute for a run's checkpoint (`step`; default the latest), or with `control` for the
  initial weights of its config (step 0, nothing trained)."""
  run = evaluate.load(workdir, step)
  if run.config.data.world != "objects":
    raise ValueError(f"needs a run of the objects world, not data.world={run.config.data.world}")
  params, at = run.params, run.step
  if control:
    params, at = sharding.to_host(state_lib.build(run.config).state["params"]), 0
  world = objects.build(run.config)
  encoder = evaluate.Encoder(run.fns, params, chunk=256)
  return [dict(run=workdir.name, step=at, control=control,
               **swap_scores(encoder, run.tokenizer, world, a, n, prompts)) for a in objects.ATTRIBUTES]


def main(argv=None) -> int:
  parser = cli.Parser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, type=cli.existing_dir)
  which = parser.add_mutually_exclusive_group()
  which.add_argument("--step", type=cli.number(int, ge=0), help="a kept checkpoint (default: the latest)")
  which.add_argument("--control", action="store_true", help="the run's initial weights (negative control)")
  parser.add_argument("--images", type=cli.number(int, gt=0), default=600,
                      help="single-object images per attribute (600)")
  parser.add_argument("--prompts", type=cli.number(int, gt=0), default=objects.PROMPTS_PER_CLASS,
                      help=f"captions per class for zero-shot ({objects.PROMPTS_PER_CLASS}: as evaluated)")
  parser.add_argument("--json", action="store_true", help="one JSON object per attribute and line")
  parser.add_argument("--out", type=cli.out_file, help="append the rows to this JSON-lines file")
  args = parser.parse_args(argv)
  with cli.blame("--workdir"):
    rows = attribute_swap(args.workdir, args.step, args.images, args.prompts, args.control)
  for row in rows:
    if args.json:
      print(json.dumps(row))
    else:
      sizes = "  ".join(f"{s} {v['swap']:.2f}" for s, v in row["by_size"].items())
      print(f"{row['attribute']:7s} swap {row['swap']:.3f}  zero-shot {row['zero_shot']:.3f}  "
            f"chance {row['chance']:.3f}  {sizes}")
  if args.out:
    with open(args.out, "a") as f:
      f.writelines(json.dumps(row) + "\n" for row in rows)
  return 0


if __name__ == "__main__":
  raise SystemExit(cli.run(main))
