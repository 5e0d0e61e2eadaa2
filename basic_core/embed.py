"""Embeddings of images or texts with a trained run, as a .npy array (L2-normalised float32 [N, D]).

    python -m basic_core.embed --workdir runs/tiny --images photos/ --out photos.npy [--step N]
    python -m basic_core.embed --workdir runs/tiny --texts captions.txt --out captions.npy

--images is a folder (its image files) or a glob pattern; --texts a UTF-8 file, one text a line (empty
lines are skipped). Row i of the images' array belongs to line i of OUT's `.paths.txt` beside it:
unreadable or corrupt images are named on stderr, skipped, and counted at the end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from analysis import cli
from basic_core import api
from basic_core.predict import add_model_arguments, image_embeddings


def npy_file(text: str) -> Path:
  path = cli.out_file(text)
  if path.suffix != ".npy":
    raise argparse.ArgumentTypeError(f"{text} must end in .npy")
  return path


def read_texts(path: Path) -> list[str]:
  texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
  if not texts:
    raise ValueError(f"{path} holds no text")
  return texts


def main(argv=None) -> int:
  parser = cli.Parser(description=__doc__.split("\n\n")[0])
  add_model_arguments(parser)
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--images", help="a folder of images or a glob pattern")
  source.add_argument("--texts", type=cli.existing_file, help="a text file, one text a line")
  parser.add_argument("--out", required=True, type=npy_file, help="the .npy file to write")
  args = parser.parse_args(argv)
  with cli.blame("--images" if args.images else "--texts"):
    inputs = api.find_images(args.images) if args.images else read_texts(args.texts)
  with cli.blame("--workdir"):
    model = api.load(args.workdir, args.step)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  if args.texts:
    emb_NxD = model.encode_text(inputs)
  else:
    blocks = list(image_embeddings(model, inputs))
    emb_NxD = np.concatenate([b for _, b in blocks])
    paths = args.out.with_suffix(".paths.txt")
    paths.write_text("".join(f"{p}\n" for read, _ in blocks for p in read))
    print(f"rows -> {paths}")
  np.save(args.out, emb_NxD)
  print(f"{args.out}: {emb_NxD.shape[0]} x {emb_NxD.shape[1]} float32 (step {model.step})")
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
