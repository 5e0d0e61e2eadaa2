"""Zero-shot classification, image-text retrieval, and contrastive losses at a FIXED evaluation batch.

    python -m basic_core.evaluate --workdir runs/tiny [--json]

Zero-shot follows CLIP's protocol: each class name is put into every prompt template, the normalised
text embeddings are averaged over templates and re-normalised (prompt ensembling), and an image is
assigned the class of highest cosine similarity.

A contrastive loss depends on its batch size (it is log N at chance), so losses of runs trained at
different batch sizes are only comparable at one evaluation batch size: `eval.batch_size` chunks the
held-out pairs and a fixed subset of training pairs alike, with the model's own temperature. Their
difference is the generalization gap the batch-size sweeps measure (big_vision's contrastive evaluator
warns "DON'T COMPARE ACROSS RUNS" for exactly this reason).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from basic_core import data, sharding
from basic_core import state as state_lib
from basic_core.augment import preprocess
from basic_core.losses import contrastive_loss


def _in_chunks(fn, x: np.ndarray, chunk: int) -> np.ndarray:
  """Applies a jitted `fn` to fixed-size chunks (the last one padded) so it compiles once."""
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
  prompts = [t.format(c) for c in classnames for t in templates]
  emb_CxTxD = encoder.texts(tokenizer.encode(prompts)).reshape(len(classnames), len(templates), -1)
  mean_CxD = emb_CxTxD.mean(axis=1)
  return mean_CxD / np.linalg.norm(mean_CxD, axis=1, keepdims=True)


def topk_accuracy(scores_NxC: np.ndarray, labels_N: np.ndarray, k: int) -> float:
  k = min(k, scores_NxC.shape[1])
  topk = np.argsort(-scores_NxC, axis=1)[:, :k]
  return float(np.mean(np.any(topk == labels_N[:, None], axis=1)))


def zero_shot(encoder: Encoder, tokenizer, task) -> dict:
  classes_CxD = class_embeddings(encoder, tokenizer, task.classnames, task.templates)
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
  img_KxBxD = image_NxD.reshape(-1, batch, image_NxD.shape[-1])
  txt_KxBxD = text_NxD.reshape(-1, batch, text_NxD.shape[-1])
  return jax.vmap(contrastive_loss, in_axes=(0, 0, None))(img_KxBxD, txt_KxBxD, scale).mean()


def loss_at_batch(image_NxD: np.ndarray, text_NxD: np.ndarray, logit_scale: float, batch: int) -> float:
  """Mean contrastive loss over consecutive chunks of `batch` pairs (the remainder is dropped)."""
  n = (len(image_NxD) // batch) * batch
  if n == 0:
    raise ValueError(f"need at least eval.batch_size={batch} pairs, got {len(image_NxD)}")
  return float(_chunked_loss(jnp.asarray(image_NxD[:n]), jnp.asarray(text_NxD[:n]),
                             jnp.float32(logit_scale), batch))


def evaluate(fns, params, tokenizer, suite, eval_config) -> dict:
  """Every metric of one model as a flat dict (names used by metrics.jsonl and results.csv)."""
  batch = int(eval_config.batch_size)
  encoder = Encoder(fns, params, chunk=batch)
  out = dict(logit_scale=encoder.logit_scale, eval_batch_size=batch)
  held_img, held_txt = encoder.images(suite.heldout["image"]), encoder.texts(suite.heldout["text"])
  train_img, train_txt = encoder.images(suite.train_pairs["image"]), encoder.texts(suite.train_pairs["text"])
  out["heldout_loss"] = loss_at_batch(held_img, held_txt, encoder.logit_scale, batch)
  out["train_loss_at_eval_batch"] = loss_at_batch(train_img, train_txt, encoder.logit_scale, batch)
  out["gap_fixed_eval"] = out["heldout_loss"] - out["train_loss_at_eval_batch"]
  # All held-out pairs as one batch, offset by log n: the estimate of the infinite-batch (population)
  # loss L_inf of theory/README.md; its bias is O(1/n) (theory/montecarlo.py measures it).
  n = len(held_img)
  out["heldout_loss_offset_all"] = loss_at_batch(held_img, held_txt, encoder.logit_scale, n) - np.log(n)
  out["train_loss_offset_all"] = (loss_at_batch(train_img, train_txt, encoder.logit_scale, n)
                                  - np.log(n))
  out.update({f"retrieval_{k}": v for k, v in retrieval(held_img, held_txt).items()})
  for task in suite.tasks:
    for k, v in zero_shot(encoder, tokenizer, task).items():
      out[f"zeroshot_{task.name}_{k}"] = v
  return out


class Trained(NamedTuple):
  """A workdir's model as evaluation needs it: host parameters and the checkpoint's own tokenizer."""
  config: Any
  fns: Any
  params: Any
  tokenizer: data.Tokenizer
  step: int


def load(workdir: Path) -> Trained:
  """The latest checkpoint of a training workdir (`state.restore`), ready for `Encoder` / `evaluate`."""
  config, restored, meta, step = state_lib.restore(workdir)
  return Trained(config, restored.fns, sharding.to_host(restored.state["params"]),
                 data.tokenizer_from_json(meta["tokenizer"]), step)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, type=Path)
  parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
  args = parser.parse_args(argv)
  run = load(args.workdir)
  suite = data.eval_suite(run.config, run.tokenizer)
  results = dict(step=run.step, **evaluate(run.fns, run.params, run.tokenizer, suite, run.config.eval))
  (args.workdir / "eval.json").write_text(json.dumps(results, indent=2))
  if args.json:
    print(json.dumps(results))
  else:
    width = max(map(len, results))
    for k, v in results.items():
      print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
