"""How a trained model spreads its held-out embeddings: dimensional collapse, alignment, uniformity.

    python -m experiments.embedding_geometry --workdir W [--step S] [--pairs 2048] [--json] [--out F.jsonl]

    python -m experiments.embedding_geometry --pairs 2048 \
        --workdir runs/sweep-mechanism/runs/objects-s-N1024-G4-fresh-T0.07-queue1020-s0-de824381  # ~10 s

A loss can sit near log(G + Q) for two reasons: the towers learned nothing (embeddings still spread as at
initialisation), or they learned a degenerate solution. These numbers tell the two apart. On the run's
first n held-out pairs (evaluation's Encoder, unit rows), per side (image, text):

- effective_rank: the participation ratio (sum l)^2 / sum l^2 of the eigenvalues l of the embeddings'
  covariance, between 1 (every embedding on one line) and D (spread evenly over all D directions); for n
  isotropic Gaussian rows it is about D n / (n + D).
- mean_norm: |mean of the rows|, 0 when the embeddings are centred on the sphere, 1 when all are equal.
- Across the sides: the mean cosine of each image with its own caption (alignment), the mean and standard
  deviation of its cosine with the other captions (uniformity: near 0 and small for a model that spreads
  its pairs), and image-to-text R@1 over the n pairs.
"""

from __future__ import annotations

import json

import numpy as np

from analysis import cli
from experiments.gradient_bias import heldout_embeddings


def effective_rank(x_NxD: np.ndarray) -> float:
  """Participation ratio of the covariance eigenvalues of the rows of x: 1 (a line) to D (isotropic)."""
  s = np.linalg.svd(x_NxD - x_NxD.mean(axis=0), compute_uv=False) ** 2
  return float(s.sum() ** 2 / (s ** 2).sum())


def embedding_geometry(image_NxD: np.ndarray, text_NxD: np.ndarray) -> dict:
  """The numbers of the module docstring for n pairs of unit-norm embeddings (row i of each: pair i)."""
  sims_NxN = image_NxD @ text_NxD.T
  off_diagonal = sims_NxN[~np.eye(len(sims_NxN), dtype=bool)]
  return dict(pairs=len(sims_NxN),
              image_effective_rank=effective_rank(image_NxD), text_effective_rank=effective_rank(text_NxD),
              image_mean_norm=float(np.linalg.norm(image_NxD.mean(axis=0))),
              text_mean_norm=float(np.linalg.norm(text_NxD.mean(axis=0))),
              positive_cosine=float(np.diag(sims_NxN).mean()),
              negative_cosine=float(off_diagonal.mean()), negative_cosine_sd=float(off_diagonal.std()),
              i2t_r1=float(np.mean(sims_NxN.argmax(axis=1) == np.arange(len(sims_NxN)))))


def main(argv=None) -> int:
  parser = cli.Parser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, type=cli.existing_dir)
  parser.add_argument("--step", type=cli.number(int, ge=0), help="checkpoint step (default: the newest)")
  parser.add_argument("--pairs", type=cli.number(int, ge=2), default=2048,
                      help="at most this many held-out pairs")
  parser.add_argument("--json", action="store_true", help="one JSON object instead of a line of text")
  parser.add_argument("--out", type=cli.out_file, help="also append the JSON row to this file")
  args = parser.parse_args(argv)
  with cli.blame("--workdir"):
    step, _, image_NxD, text_NxD = heldout_embeddings(args.workdir, args.step, args.pairs)
  row = {"run": args.workdir.name, "step": step} | embedding_geometry(image_NxD, text_NxD)
  if args.out:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
      f.write(json.dumps(row) + "\n")
  if args.json:
    print(json.dumps(row))
  else:
    print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
  return 0


if __name__ == "__main__":
  raise SystemExit(cli.run(main))
