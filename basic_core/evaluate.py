"""Zero-shot classification, image-text retrieval, and contrastive losses of held-out and trained pairs.

    python -m basic_core.evaluate --workdir runs/tiny [--json]

Zero-shot follows CLIP's protocol: each class name is put into every prompt template, the normalised
text embeddings are averaged over templates and re-normalised (prompt ensembling), and an image is
assigned the class of highest cosine similarity.

A contrastive loss depends on its batch size (it is log N at chance), so a gap compares held-out pairs
with pairs the run trained on at the SAME batch: the fixed `eval.batch_size` (comparable across runs;
big_vision's contrastive evaluator warns "DON'T COMPARE ACROSS RUNS" otherwise), the run's own loss
group G (its training objective), and all pairs as one batch (the infinite-batch estimate); all at the
final weights, without augmentation, with the model's own temperature (`contrastive_metrics`).
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from analysis import cli
from basic_core import data, sharding
from basic_core import state as state_lib
from basic_core.augment import preprocess
from basic_core.configs import loss_group_size
from basic_core.losses import contrastive_loss


def _in_chunks(fn, x: np.ndarray, chunk: int) -> np.ndarray:
  """Applies a jitted `fn` to fixed-size chunks (the last one padded) so it compiles once; fewer rows
  than a chunk are padded to the next power of two only (one compile per size bucket)."""
  if not len(x):
    raise ValueError("nothing to encode (no rows)")
  chunk = min(chunk, 1 << (len(x) - 1).bit_length())
  out = []
  for start in range(0, len(x), chunk):
    part = x[start:start + chunk]
    pad = chunk - len(part)
    if pad:
      part = np.concatenate([part, np.repeat(part[-1:], pad, axis=0)])
    out.append(np.asarray(fn(part))[:chunk - pad])
  return np.concatenate(out)


_ENCODERS: dict = {}


def _encoders(fns):
  """Jitted encoders; params are arguments, so new params (e.g. the next run of a sweep) never
  recompile. Models without non-parameter state share them per graph."""
  key = fns if jax.tree.leaves(fns.rest) else fns.graphdef
  if key not in _ENCODERS:
    images = jax.jit(lambda p, x: fns.merge(p).encode_image(preprocess(x)))
    texts = jax.jit(lambda p, t: fns.merge(p).encode_text(t))
    _ENCODERS[key] = (images, texts)
  return _ENCODERS[key]


class Encoder:
  """Image / text encoders of one set of parameters (no augmentation, no dropout)."""

  def __init__(self, fns, params, chunk: int):
    self.chunk = chunk
    self.logit_scale = float(fns.merge(params).logit_scale())
    images, texts = _encoders(fns)
    self._images = functools.partial(images, params)
    self._texts = functools.partial(texts, params)

  def images(self, images_u8: np.ndarray) -> np.ndarray:
    return _in_chunks(self._images, images_u8, self.chunk)

  def texts(self, tokens: np.ndarray) -> np.ndarray:
    return _in_chunks(self._texts, tokens, self.chunk)


def class_embeddings(encoder: Encoder, tokenizer, classnames, templates) -> np.ndarray:
  """[C, D]: per class, the re-normalised mean of its normalised prompt embeddings."""
  return prompt_embeddings(encoder, tokenizer, [[t.format(c) for t in templates] for c in classnames])


def prompt_embeddings(encoder: Encoder, tokenizer, prompts_per_class: list[list[str]]) -> np.ndarray:
  """[C, D]: `class_embeddings` for classes that each have their own prompts (as many per class)."""
  flat = [p for prompts in prompts_per_class for p in prompts]
  num_classes, per_class = len(prompts_per_class), len(prompts_per_class[0])
  emb_CxTxD = encoder.texts(tokenizer.encode(flat)).reshape(num_classes, per_class, -1)
  mean_CxD = emb_CxTxD.mean(axis=1)
  return mean_CxD / np.linalg.norm(mean_CxD, axis=1, keepdims=True)


def topk_accuracy(scores_NxC: np.ndarray, labels_N: np.ndarray, k: int) -> float:
  k = min(k, scores_NxC.shape[1])
  topk = np.argsort(-scores_NxC, axis=1)[:, :k]
  return float(np.mean(np.any(topk == labels_N[:, None], axis=1)))


def zero_shot(encoder: Encoder, tokenizer, task) -> dict:
  classes_CxD = prompt_embeddings(encoder, tokenizer, task.prompts())
  scores = encoder.images(task.images) @ classes_CxD.T
  return dict(top1=topk_accuracy(scores, task.labels, 1), top5=topk_accuracy(scores, task.labels, 5))


def retrieval(image_NxD: np.ndarray, text_NxD: np.ndarray, ks=(1, 5, 10)) -> dict:
  """Recall@k both ways; pair i is the only correct match of row i."""
  sims = image_NxD @ text_NxD.T
  target = np.arange(len(sims))
  out = {}
  for name, s in (("i2t", sims), ("t2i", sims.T)):
    rank = (s > s[target, target][:, None]).sum(axis=1)  # how many candidates beat the true one
    for k in ks:
      out[f"{name}_r{k}"] = float(np.mean(rank < k))
  return out


@functools.partial(jax.jit, static_argnums=(3,))
def _chunked_loss(image_NxD, text_NxD, scale, batch):
  return contrastive_loss(image_NxD, text_NxD, scale, group_size=batch)


def loss_at_batch(image_NxD: np.ndarray, text_NxD: np.ndarray, logit_scale: float, batch: int) -> float:
  """Mean contrastive loss over consecutive chunks of `batch` pairs (the remainder is dropped)."""
  n = (len(image_NxD) // batch) * batch
  if n == 0:
    raise ValueError(f"need at least {batch} evaluation pairs, got {len(image_NxD)}")
  return float(_chunked_loss(jnp.asarray(image_NxD[:n]), jnp.asarray(text_NxD[:n]),
                             jnp.float32(logit_scale), batch))


@jax.jit
def bias_constant(image_NxD, text_NxD, logit_scale) -> jax.Array:
  """Plug-in estimate of kappa = lim N (L_N - L_inf) of theory/README.md (Proposition 1) from n pairs.

  kappa = rho - E[sigma^2(x) / (2 Z(x)^2)], rho = E[e^{beta s(x,y)} / Z(x)] - 1, with Z(x) and sigma^2(x)
  the mean and variance of e^{beta s(x, y')} over the n texts y' (images, for the text-to-image half);
  the two halves of the symmetric loss are averaged. A fixed model's loss at batch G then exceeds its
  infinite-batch loss by about kappa / G (+ O(1/G^2)).
  """

  def one_direction(logits_NxN):
    e_NxN = jnp.exp(logits_NxN - logits_NxN.max(axis=1, keepdims=True))  # each row rescaled alike
    z_N = e_NxN.mean(axis=1)
    rho = jnp.mean(jnp.diagonal(e_NxN) / z_N) - 1.0
    jensen = jnp.mean(((e_NxN**2).mean(axis=1) / z_N**2 - 1.0) / 2.0)
    return rho - jensen

  logits_NxN = logit_scale * image_NxD @ text_NxD.T
  return 0.5 * (one_direction(logits_NxN) + one_direction(logits_NxN.T))


def contrastive_metrics(heldout: tuple[np.ndarray, np.ndarray], trained: tuple[np.ndarray, np.ndarray],
                        logit_scale: float, *, eval_batch: int, group_size: int) -> dict:
  """Losses of held-out pairs and of pairs the run trained on, and the gaps between them.

  Three batch sizes, each the same for both sets (a contrastive loss grows like log of its batch):
    `*_loss` / `*_at_eval_batch` at the fixed eval.batch_size, comparable across runs (gap_fixed_eval);
    `*_at_group` at the run's own loss group G: its training objective (gap_sample = held-out - trained);
    `*_offset_all`: all n pairs as one batch minus log n, the estimate of the infinite-batch loss L_inf
      (bias O(1/n); gap_offset_all = held-out - trained).
  `bias` = (held-out loss at G - log G) - heldout_loss_offset_all estimates L_G - L_n, a property of the
  objective, not of overfitting; `bias_predicted` = kappa (1/G - 1/n) is theory's first-order value.
  A metric at a batch larger than the n pairs (e.g. G = 65,536 with 1,024 evaluation pairs) is NaN.
  """
  n = min(len(heldout[0]), len(trained[0]))
  held, seen = [(img[:n], txt[:n]) for img, txt in (heldout, trained)]
  loss = lambda pairs, batch: loss_at_batch(*pairs, logit_scale, batch) if batch <= n else float("nan")
  out = dict(eval_pairs=n, group_size=group_size,
             heldout_loss=loss(held, eval_batch), train_loss_at_eval_batch=loss(seen, eval_batch),
             heldout_loss_at_group=loss(held, group_size), train_loss_at_group=loss(seen, group_size),
             heldout_loss_offset_all=loss(held, n) - np.log(n),
             train_loss_offset_all=loss(seen, n) - np.log(n))
  out["gap_fixed_eval"] = out["heldout_loss"] - out["train_loss_at_eval_batch"]
  out["gap_sample"] = out["heldout_loss_at_group"] - out["train_loss_at_group"]
  out["gap_offset_all"] = out["heldout_loss_offset_all"] - out["train_loss_offset_all"]
  out["bias"] = out["heldout_loss_at_group"] - np.log(group_size) - out["heldout_loss_offset_all"]
  out["kappa"] = float(bias_constant(*held, jnp.float32(logit_scale)))
  out["bias_predicted"] = out["kappa"] * (1.0 / group_size - 1.0 / n)
  return out | split_bias_check(held, logit_scale, group_size)


def split_bias_check(heldout: tuple[np.ndarray, np.ndarray], logit_scale: float, group_size: int) -> dict:
  """Proposition 1 tested out of sample: kappa estimated on the first half of the held-out pairs, the
  bias L_G - L_{n/2} measured on the second half, and kappa (1/G - 2/n) predicted for it.

  `bias_predicted` above uses the same pairs for kappa and for the bias, so measured / predicted near 1 is
  close to a delta-method identity for ANY fixed embeddings; here the two halves are independent draws,
  so a wrong kappa (or a model the expansion does not fit) shows as a ratio away from 1. Agreement is a
  statement about a fixed model's objective, not about learning: run it on an untrained model too
  (`eval.control`). NaN when G exceeds half of the pairs.
  """
  half = len(heldout[0]) // 2
  first = (heldout[0][:half], heldout[1][:half])
  second = (heldout[0][half:2 * half], heldout[1][half:2 * half])
  if group_size > half:
    return dict(kappa_split=float("nan"), bias_split=float("nan"), bias_predicted_split=float("nan"))
  kappa = float(bias_constant(*first, jnp.float32(logit_scale)))
  at_group = loss_at_batch(*second, logit_scale, group_size) - np.log(group_size)
  at_half = loss_at_batch(*second, logit_scale, half) - np.log(half)
  return dict(kappa_split=kappa, bias_split=at_group - at_half,
              bias_predicted_split=kappa * (1.0 / group_size - 1.0 / half))


def evaluate(fns, params, tokenizer, suite, trained_pairs: dict, eval_config, *, group_size: int,
             control_params=None) -> dict:
  """Every metric of one model as a flat dict (names used by metrics.jsonl and results.csv).

  `trained_pairs` (image, text) are pairs the run trained on (`data.trained_pairs`); `group_size` is
  the number of pairs each training loss saw (loss.group_size, or the contrastive batch).
  `control_params` (the run's initial weights) add `control_*`: `split_bias_check` on an untrained model.
  """
  batch = int(eval_config.batch_size)
  encoder = Encoder(fns, params, chunk=batch)
  held = encoder.images(suite.heldout["image"]), encoder.texts(suite.heldout["text"])
  seen = encoder.images(trained_pairs["image"]), encoder.texts(trained_pairs["text"])
  out = dict(logit_scale=encoder.logit_scale, eval_batch_size=batch)
  out.update(contrastive_metrics(held, seen, encoder.logit_scale, eval_batch=batch, group_size=group_size))
  if control_params is not None:
    control = Encoder(fns, control_params, chunk=batch)
    held_0 = control.images(suite.heldout["image"]), control.texts(suite.heldout["text"])
    check = split_bias_check(held_0, control.logit_scale, group_size)
    out.update({f"control_{k}": v for k, v in check.items()})
  out.update({f"retrieval_{k}": v for k, v in retrieval(*held).items()})
  for task in suite.tasks:
    for k, v in zero_shot(encoder, tokenizer, task).items():
      out[f"zeroshot_{task.name}_{k}"] = v
  return out


def probe(fns, params, heldout: dict, trained_pairs: dict, *, group_size: int) -> dict:
  """The losses of `contrastive_metrics` on a few thousand pairs, cheap enough to run along training
  (eval.probe_every): gaps can then be compared at matched training loss, not only at the end."""
  encoder = Encoder(fns, params, chunk=min(len(heldout["text"]), 1024))
  held = encoder.images(heldout["image"]), encoder.texts(heldout["text"])
  seen = encoder.images(trained_pairs["image"]), encoder.texts(trained_pairs["text"])
  metrics = contrastive_metrics(held, seen, encoder.logit_scale, eval_batch=group_size,
                                group_size=group_size)
  keep = ("heldout_loss_at_group", "train_loss_at_group", "gap_sample", "heldout_loss_offset_all",
          "train_loss_offset_all", "gap_offset_all", "bias", "eval_pairs")
  return {f"probe_{k}": metrics[k] for k in keep} | {"logit_scale": encoder.logit_scale}


class Trained(NamedTuple):
  """A workdir's model as evaluation needs it: host parameters and the checkpoint's own tokenizer."""
  config: Any
  fns: Any
  params: Any
  tokenizer: data.Tokenizer
  step: int
  data_state: dict  # the training pipeline's position: which pairs the run trained on


def load(workdir: Path, step: int | None = None) -> Trained:
  """Checkpoint `step` (default: the newest) of a training workdir (`state.restore`), ready for
  `Encoder` / `evaluate`."""
  config, restored, meta, step = state_lib.restore(workdir, step)
  return Trained(config, restored.fns, sharding.to_host(restored.state["params"]),
                 data.tokenizer_from_json(meta["tokenizer"]), step, meta["data"])


def main(argv=None) -> int:
  parser = cli.Parser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, type=cli.existing_dir)
  parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
  args = parser.parse_args(argv)
  with cli.blame("--workdir"):
    run = load(args.workdir)
  suite = data.eval_suite(run.config, run.tokenizer)
  pipeline = data.train_pipeline(run.config, run.tokenizer)
  pipeline.set_state(run.data_state)
  trained = data.trained_pairs(pipeline, len(suite.heldout["text"]), run.tokenizer.encode)
  pipeline.close()
  results = dict(step=run.step, **evaluate(run.fns, run.params, run.tokenizer, suite, trained,
                                           run.config.eval, group_size=loss_group_size(run.config)))
  (args.workdir / "eval.json").write_text(json.dumps(results, indent=2))
  if args.json:
    print(json.dumps(results))
  else:
    width = max(map(len, results))
    for k, v in results.items():
      print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
