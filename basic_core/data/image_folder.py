"""A zero-shot task from an image folder: root/<class dir>/<images> + classnames.json + templates.json.

Class directories sorted by name give the label order (as torchvision's ImageFolder); classnames.json
is a list in that order or a {directory: class name} map; templates.json is a list of prompts
containing "{}" (CLIP_benchmark's "{c}" is accepted too). Undecodable images are skipped and named.
"""

from __future__ import annotations

import json
import os

import numpy as np

from basic_core.data import images as image_io
from basic_core.data.source import warn_skipped
from basic_core.data.tasks import ZeroShotTask
from basic_core.data.wds import IMAGE_EXTS


def _load_json(root: str, name: str):
  path = os.path.join(root, name)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"zero-shot folder {root} has no {name}")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def folder_task(root: str, image_size: int, max_images: int, seed: int) -> ZeroShotTask:
  """Up to max_images images (a seeded random subset when there are more)."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"zero-shot folder {root} does not exist")
  dirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  names = _load_json(root, "classnames.json")
  classnames = [names[d] for d in dirs] if isinstance(names, dict) else list(names)
  if len(classnames) != len(dirs):
    raise ValueError(f"{root}: {len(classnames)} class names for {len(dirs)} class directories")
  templates = [t.replace("{c}", "{}") for t in _load_json(root, "templates.json")]
  files = [(os.path.join(root, d, f), label) for label, d in enumerate(dirs)
           for f in sorted(os.listdir(os.path.join(root, d))) if f.rsplit(".", 1)[-1].lower() in IMAGE_EXTS]
  if len(files) > max_images:
    chosen = np.sort(np.random.default_rng(seed).choice(len(files), max_images, replace=False))
    files = [files[i] for i in chosen]
  images, labels, skipped = [], [], []
  for path, label in files:
    try:
      with open(path, "rb") as f:
        images.append(image_io.decode(f.read(), image_size))
      labels.append(label)
    except image_io.CorruptImage as e:
      skipped.append((path, str(e)))
  warn_skipped(root, skipped)
  return ZeroShotTask(name=os.path.basename(os.path.normpath(root)), group="in_distribution",
                      classnames=classnames, templates=templates,
                      images=np.array(images, np.uint8).reshape(-1, image_size, image_size, 3),
                      labels=np.array(labels, np.int32))
