"""Export a trained run for other programs: its parameters in safetensors (flat names), its config and its
tokenizer, in one folder that `basic_core.api.load` reads back (identical embeddings).

    python -m basic_core.export --workdir runs/tiny --out exported/tiny [--step N]

The weights need no JAX to read: `safetensors.numpy.load_file("exported/tiny/model.safetensors")` gives
{name: numpy array}, e.g. 'image/patch_embed/kernel' [4, 4, 3, 64] (README "Use a trained model").
"""

from __future__ import annotations

import sys

from analysis import cli
from basic_core import api
from basic_core.predict import add_model_arguments


def main(argv=None) -> int:
  parser = cli.Parser(description=__doc__.split("\n\n")[0])
  add_model_arguments(parser)
  parser.add_argument("--out", required=True, type=cli.out_dir, help="the folder to write")
  args = parser.parse_args(argv)
  with cli.blame("--workdir"):
    model = api.load(args.workdir, args.step, device="cpu")
  with cli.blame("--out"):
    paths = api.export_files(model, args.out)
  for path in paths:
    print(path)
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
