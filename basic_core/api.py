"""Use a trained model: load a run, embed images and texts, classify images zero-shot on your own labels.

    from basic_core import api
    model = api.load("runs/tiny")                # newest checkpoint; step=500, device="cpu"; or an export
    image_NxD = model.encode_image(["a.png", pil_image, array_HxWx3])
    text_NxD = model.encode_text(["a red circle", "a blue star"])
    probs_NxC = model.zero_shot(images, ["a red circle", "a blue star"], templates=["a picture of {}."])

Everything is evaluation's own code (basic_core/evaluate.py), so the numbers are evaluation's: an image
is decoded as the readers decode it (basic_core/data/images.py: RGB with alpha over white, centre crop
to a square, bicubic resize to the model's image size), then the eval transform (no augmentation);
texts go through the run's own tokenizer; a class is CLIP's prompt ensemble (`class_embeddings`).
Encoders run in evaluation's fixed chunks of `eval.batch_size` rows (fewer rows pad to a power of two),
so any N runs in bounded memory with one compile per shape bucket.

An export (`python -m basic_core.export`) is a folder of model.safetensors (every parameter under a
flat name such as `image/patch_embed/kernel`; stacked blocks carry a leading layer axis), config.json
and tokenizer.json; `load` reads it as it reads a workdir.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import jax
import numpy as np
import safetensors
import safetensors.numpy
from PIL import Image

from basic_core import data, evaluate
from basic_core import state as state_lib
from basic_core.checkpoint import config_json
from basic_core.data import images as image_io
from basic_core.data.wds import IMAGE_EXTS

WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.json", "tokenizer.json"
DEFAULT_TEMPLATES = ("{}",)  # a label is its own prompt unless templates are given


def named_params(params) -> dict[str, jax.Array]:
  """The parameter pytree as {flat name: array}, e.g. 'text/transformer/blocks/mlp/fc/kernel'."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {jax.tree_util.keystr(path, simple=True, separator="/").removesuffix("/value"): leaf
          for path, leaf in flat}


def _params_from(weights: dict[str, np.ndarray], abstract_params, source: Path):
  """`abstract_params` filled from named arrays; names and shapes must match exactly."""
  expected = named_params(abstract_params)
  if missing := sorted(set(expected) - set(weights)):
    raise ValueError(f"{source} lacks parameters {', '.join(missing[:5])} (not this config's model)")
  if extra := sorted(set(weights) - set(expected)):
    raise ValueError(f"{source} has parameters this config's model lacks: {', '.join(extra[:5])}")
  for name, leaf in expected.items():
    if weights[name].shape != leaf.shape:
      raise ValueError(f"{source}: {name} has shape {weights[name].shape}, the model {leaf.shape}")
  leaves = iter(weights[name] for name in expected)
  return jax.tree.map(lambda _: next(leaves), abstract_params)


class Model:
  """A trained two-tower model and its tokenizer: evaluation's encoders applied to the caller's inputs."""

  def __init__(self, config, fns, params, tokenizer: data.Tokenizer, step: int):
    self.config, self.fns, self.params, self.tokenizer, self.step = config, fns, params, tokenizer, step
    self.image_size = int(config.model.image.image_size)
    self.encoder = evaluate.Encoder(fns, params, chunk=int(config.eval.batch_size))
    self.logit_scale = self.encoder.logit_scale

  def pixels(self, images) -> np.ndarray:
    """uint8 [N, S, S, 3] as evaluation sees them. `images`: a sequence of paths, PIL images or uint8
    arrays [H, W] (L), [H, W, 3] (RGB), [H, W, 4] (RGBA) of any size; or one uint8 array [N, H, W, C].
    An image that cannot be read raises CorruptImage naming it."""
    if isinstance(images, np.ndarray) and images.ndim != 4:
      raise ValueError(f"an array of images is [N, H, W, C], got shape {list(images.shape)}; "
                       "put a single image in a list")
    if not len(images):
      raise ValueError("no images")
    return np.stack([read_image(image, self.image_size) for image in images])

  def encode_image(self, images) -> np.ndarray:
    """L2-normalised float32 [N, D]."""
    return self.encoder.images(self.pixels(images))

  def encode_text(self, texts: Sequence[str]) -> np.ndarray:
    """L2-normalised float32 [N, D], through the run's own tokenizer."""
    return self.encoder.texts(self.tokenizer.encode(list(texts)))

  def class_embeddings(self, labels: Sequence[str], templates: Sequence[str] | None = None, *,
                       prompts: Sequence[Sequence[str]] | None = None) -> np.ndarray:
    """[C, D]: per label, the re-normalised mean of its prompts' embeddings (evaluation's ensemble).
    The prompts are `templates` with the label put in, or `prompts`: per label its own, as many each
    (a built-in task's `prompts()`)."""
    if prompts is None:
      templates = list(templates or DEFAULT_TEMPLATES)
      if bad := [t for t in templates if "{}" not in t]:
        raise ValueError(f"templates must contain '{{}}' where the label goes: {bad[:3]}")
      prompts = [[t.format(label) for t in templates] for label in labels]
    if len(prompts) != len(labels) or len({len(p) for p in prompts}) != 1:
      raise ValueError(f"prompts: one non-empty list per label, as many each, for {len(labels)} labels")
    return evaluate.prompt_embeddings(self.encoder, self.tokenizer, [list(p) for p in prompts])

  def zero_shot(self, images, labels: Sequence[str], templates: Sequence[str] | None = None, *,
                prompts: Sequence[Sequence[str]] | None = None) -> np.ndarray:
    """Probabilities float32 [N, C] over `labels`: softmax of the cosine similarities at the model's
    temperature (its logit scale); the argmax is evaluation's zero-shot prediction."""
    return self.probs(self.encode_image(images), self.class_embeddings(labels, templates, prompts=prompts))

  def probs(self, image_NxD: np.ndarray, classes_CxD: np.ndarray) -> np.ndarray:
    logits_NxC = self.logit_scale * image_NxD @ classes_CxD.T
    e_NxC = np.exp(logits_NxC - logits_NxC.max(axis=1, keepdims=True))
    return (e_NxC / e_NxC.sum(axis=1, keepdims=True)).astype(np.float32)

  def embed_files(self, paths: Sequence[Path], block: int = 1024
                  ) -> Iterator[tuple[list[Path], np.ndarray | None, list[str]]]:
    """(read paths, their embeddings [B, D], why each skipped file was skipped) per block of `block`
    files: memory stays bounded for any number of files; an unreadable or corrupt file is not fatal."""
    for start in range(0, len(paths), block):
      read, pixels_list, skipped = [], [], []
      for path in paths[start:start + block]:
        try:
          pixels_list.append(read_image(path, self.image_size))
          read.append(path)
        except image_io.CorruptImage as e:
          skipped.append(str(e))
      yield read, (self.encoder.images(np.stack(pixels_list)) if read else None), skipped


def read_image(image, size: int) -> np.ndarray:
  """uint8 [size, size, 3] of one image (a path, PIL image or uint8 array), decoded as the readers do."""
  if isinstance(image, str | os.PathLike):
    try:
      return image_io.decode(Path(image).read_bytes(), size)
    except (OSError, image_io.CorruptImage) as e:
      raise image_io.CorruptImage(f"{image}: {e}") from e
  if isinstance(image, Image.Image):
    try:
      return image_io.fit(image, size)
    except OSError as e:  # a lazily loaded PIL image whose file is damaged
      raise image_io.CorruptImage(f"{image!r}: {e}") from e
  array = np.asarray(image)
  if array.ndim == 3 and array.shape[2] == 1:
    array = array[:, :, 0]
  if array.dtype != np.uint8 or array.ndim < 2 or array.shape[2:] not in ((), (3,), (4,)):
    raise ValueError(f"an image array must be uint8 [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]; got "
                     f"{array.dtype} {list(array.shape)}")
  return image_io.fit(Image.fromarray(array), size)


def find_images(spec: str) -> list[Path]:
  """The image files (by extension, sorted) of a folder, or the files a glob pattern matches."""
  path = Path(spec)
  if path.is_dir():
    found = sorted(p for p in path.iterdir() if p.suffix.lower().lstrip(".") in IMAGE_EXTS and p.is_file())
    if not found:
      raise FileNotFoundError(f"{spec} holds no image files ({', '.join(sorted(IMAGE_EXTS))})")
    return found
  found = sorted(Path(p) for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
  if not found:
    raise FileNotFoundError(f"{spec} is not a folder and matches no file")
  return found


def load(path: str | os.PathLike, step: int | None = None, device: str | jax.Device | None = None) -> Model:
  """The model of a training workdir (checkpoint `step`, default the newest) or of an export folder,
  its parameters on `device` ('cpu', a jax.Device; default: JAX's default device)."""
  path = Path(path)
  if (path / WEIGHTS).is_file():
    config = state_lib.workdir_config(path)
    with safetensors.safe_open(str(path / WEIGHTS), "numpy") as f:
      meta = f.metadata() or {}
    if meta.get("format") != "basic-jax":
      raise ValueError(f"{path / WEIGHTS} was not written by basic_core.export (no basic-jax metadata)")
    saved_step = int(meta["step"])
    if step is not None and step != saved_step:
      raise ValueError(f"{path} is an export of step {saved_step}, not {step}")
    abstract = state_lib.build(config, abstract=True)
    weights = safetensors.numpy.load_file(path / WEIGHTS)
    params = _params_from(weights, abstract.state["params"], path / WEIGHTS)
    fns, tokenizer, step = abstract.fns, data.tokenizer_from_json((path / TOKENIZER).read_text()), saved_step
  else:
    run = evaluate.load(path, step)
    config, fns, params, tokenizer, step = run.config, run.fns, run.params, run.tokenizer, run.step
  device = jax.devices(device)[0] if isinstance(device, str) else device
  return Model(config, fns, jax.device_put(params, device), tokenizer, step)


def export_files(model: Model, out: Path) -> list[Path]:
  """Writes `model` to the folder `out` in the format `load` reads (module docstring)."""
  out.mkdir(parents=True, exist_ok=True)
  weights = {name: np.asarray(x) for name, x in named_params(model.params).items()}
  safetensors.numpy.save_file(weights, out / WEIGHTS, metadata=dict(format="basic-jax", step=str(model.step)))
  (out / CONFIG).write_text(json.dumps(config_json(model.config), indent=2, sort_keys=True))
  (out / TOKENIZER).write_text(model.tokenizer.to_json())
  return [out / WEIGHTS, out / CONFIG, out / TOKENIZER]
