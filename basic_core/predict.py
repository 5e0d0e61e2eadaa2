"""Zero-shot classification of your own images with a trained run: a line per image with its top-k labels.

    python -m basic_core.predict --workdir runs/tiny --images photos/ --labels "a red circle,a blue star"
        [--templates FILE] [--top-k K] [--json] [--step N]

--images is a folder (its image files) or a glob pattern ('photos/**/*.png'); --templates a file of
prompts, one a line, each with '{}' where the label goes (CLIP's prompt ensembling; default: the label
itself). Probabilities are the softmax over the labels at the model's temperature (`api.Model.zero_shot`).
With --json each line is one object: {"path", "labels", "probs"} (the top-k, best first). Unreadable or
corrupt images are named on stderr, skipped, and counted at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from analysis import cli
from basic_core import api


def labels(text: str) -> list[str]:
  """Comma-separated, non-empty, distinct class labels."""
  names = [name.strip() for name in text.split(",")]
  if not all(names):
    raise argparse.ArgumentTypeError(f"expected comma-separated non-empty labels, got {text!r}")
  if len(set(names)) != len(names):
    raise argparse.ArgumentTypeError(f"labels repeat: {text!r}")
  return names


def read_templates(path) -> list[str]:
  templates = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
  if not templates or not all("{}" in t for t in templates):
    raise ValueError(f"{path}: expected prompts, one a line, each with '{{}}' where the label goes")
  return templates


def add_model_arguments(parser) -> None:
  parser.add_argument("--workdir", required=True, type=cli.existing_dir,
                      help="a training workdir or an export folder (python -m basic_core.export)")
  parser.add_argument("--step", type=cli.number(int, ge=0), help="a checkpoint step (default: the newest)")


def image_embeddings(model: api.Model, paths: list[Path]) -> Iterator[tuple[list[Path], np.ndarray]]:
  """(paths, embeddings [B, D]) per block (`Model.embed_files`); each unreadable or corrupt file is named
  on stderr and skipped, their count said at the end; none readable is an error of --images."""
  skipped = 0
  for read, image_BxD, lost in model.embed_files(paths):
    for reason in lost:
      print(f"skipped {reason}", file=sys.stderr)
    skipped += len(lost)
    if read:
      yield read, image_BxD
  if skipped:
    print(f"{skipped} of {len(paths)} images skipped (unreadable or corrupt)", file=sys.stderr)
  if skipped == len(paths):
    raise cli.CommandError("--images", f"none of the {len(paths)} images could be read")


def main(argv=None) -> int:
  parser = cli.Parser(description=__doc__.split("\n\n")[0])
  add_model_arguments(parser)
  parser.add_argument("--images", required=True, help="a folder of images or a glob pattern")
  parser.add_argument("--labels", required=True, type=labels, help='comma-separated, e.g. "a cat,a dog"')
  parser.add_argument("--templates", type=cli.existing_file, help="prompts, one a line, with '{}'")
  parser.add_argument("--top-k", type=cli.number(int, ge=1), default=1, help="labels per image (default 1)")
  parser.add_argument("--json", action="store_true", help="one JSON object per image and line")
  args = parser.parse_args(argv)
  with cli.blame("--images"):
    paths = api.find_images(args.images)
  with cli.blame("--templates"):
    templates = read_templates(args.templates) if args.templates else None
  with cli.blame("--workdir"):
    model = api.load(args.workdir, args.step)
  classes_CxD = model.class_embeddings(args.labels, templates)
  k = min(args.top_k, len(args.labels))
  for read, image_BxD in image_embeddings(model, paths):
    probs_BxC = model.probs(image_BxD, classes_CxD)
    for path, p_C in zip(read, probs_BxC):
      top = np.argsort(-p_C, kind="stable")[:k]
      if args.json:
        print(json.dumps(dict(path=str(path), labels=[args.labels[i] for i in top],
                              probs=[round(float(p_C[i]), 6) for i in top])))
      else:
        print("\t".join([str(path)] + [f"{args.labels[i]} {p_C[i]:.4f}" for i in top]))
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
