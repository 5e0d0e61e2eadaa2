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
- For a run trained with a queue (`loss.estimator=queue`), how its checkpointed queue (the last Q pairs'
  embeddings, made by the weights of the step before) sits against today's embeddings: the mean cosine of
  the held-out images with the queued captions and of the held-out captions with the queued images
  (`queue_negative_cosine`, beside `negative_cosine`), and `queue_minus_current_lme`, the loss's negative
  term over the queue minus over today's other pairs (mean log-mean-exp of scale x cosine, nats, both
  directions). Towers that exploited stale entries (moving every embedding away from where the queue
  holds them) would show a queue term well below the current one; about 0 says the queue looks to the
  final weights like any other draw of negatives.
"""

from __future__ import annotations

import json

import numpy as np
from scipy.special import logsumexp

from analysis import cli
from basic_core import sharding, state
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


def _log_mean_exp(logits_NxM: np.ndarray, keep_NxM: np.ndarray | None = None) -> float:
  """Mean over rows of log mean_k exp(logits), over the entries `keep` marks (all by default)."""
  keep_NxM = np.ones(logits_NxM.shape, bool) if keep_NxM is None else keep_NxM
  per_row = logsumexp(np.where(keep_NxM, logits_NxM, -np.inf), axis=1) - np.log(keep_NxM.sum(axis=1))
  return float(per_row.mean())


def queue_geometry(image_NxD: np.ndarray, text_NxD: np.ndarray, queue_image_QxD: np.ndarray,
                   queue_text_QxD: np.ndarray, scale: float) -> dict:
  """Queued negatives (unit rows) against today's (`image_NxD`, `text_NxD`, row i of each: pair i)."""
  others_NxN = ~np.eye(len(image_NxD), dtype=bool)
  to_queue = (image_NxD @ queue_text_QxD.T, text_NxD @ queue_image_QxD.T)
  current = (image_NxD @ text_NxD.T, text_NxD @ image_NxD.T)
  lme = [_log_mean_exp(scale * q) - _log_mean_exp(scale * c, others_NxN) for q, c in zip(to_queue, current)]
  return dict(queue_size=len(queue_image_QxD),
              queue_negative_cosine=float(np.mean([q.mean() for q in to_queue])),
              queue_minus_current_lme=float(np.mean(lme)))


def queued_embeddings(workdir, step: int | None) -> tuple[np.ndarray, np.ndarray] | None:
  """(images, captions) in the checkpoint's queue (unit rows; filled entries only), or None for a run
  trained without a queue (its checkpoint is then not read a second time)."""
  if state.workdir_config(workdir).loss.estimator != "queue":
    return None
  estimator = state.restore(workdir, step)[1].state["estimator"]
  filled = int(estimator["queue_filled"])
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
  return tuple(unit(np.asarray(sharding.to_host(estimator[k]), np.float64)[len(estimator[k]) - filled:])
               for k in ("queue_image", "queue_text"))


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
    step, scale, image_NxD, text_NxD = heldout_embeddings(args.workdir, args.step, args.pairs)
    queue = queued_embeddings(args.workdir, step)
  row = {"run": args.workdir.name, "step": step} | embedding_geometry(image_NxD, text_NxD)
  if queue is not None and len(queue[0]):
    row |= queue_geometry(image_NxD, text_NxD, *queue, scale)
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
