"""WebDataset tar shards in img2dataset's layout: key.jpg|png|webp + key.txt (+ key.json or key.cls).

Shards are indexed once: member offsets, plus captions and labels (small) kept in memory. Images are
then read by seeking, so any sample is readable by index, which is what a resumable shuffled order
needs. A truncated shard keeps its complete samples; samples missing their image or caption, or
with an empty caption, are skipped and named. A shard that is missing or is not a tar archive stops
the run with an error naming it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import re
import tarfile
from collections.abc import Iterable

import numpy as np

from basic_core.data.source import EncodedPairs, warn_skipped

log = logging.getLogger(__name__)
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm")


class ShardError(OSError):
  """A shard that cannot be read at all."""


def expand(spec: str) -> list[str]:
  """'a.tar,b.tar' or 'dir/shard-{000000..000003}.tar' (brace lists and zero-padded ranges) -> paths."""
  parts, depth, start = [], 0, 0
  for i, ch in enumerate(spec + ","):
    depth += {"{": 1, "}": -1}.get(ch, 0)
    if ch == "," and depth == 0:
      parts.append(spec[start:i].strip())
      start = i + 1
  return [path for part in parts if part for path in _expand_braces(part)]


def _expand_braces(pattern: str) -> list[str]:
  m = re.search(r"\{([^{}]*)\}", pattern)
  if m is None:
    return [pattern]
  if r := re.fullmatch(r"(\d+)\.\.(\d+)", m.group(1)):
    width = len(r.group(1))
    items = [f"{i:0{width}d}" for i in range(int(r.group(1)), int(r.group(2)) + 1)]
  else:
    items = m.group(1).split(",")
  return [p for item in items for p in _expand_braces(pattern[:m.start()] + item + pattern[m.end():])]


@dataclasses.dataclass
class _Sample:
  image: tuple[int, int] | None = None  # (offset, size) of the image member
  caption: str | None = None
  label: int = -1
  damage: str | None = None


def _unusable(s: _Sample) -> str | None:
  """Why a sample cannot be trained on, if it cannot."""
  if s.damage:
    return s.damage
  if s.image is None:
    return "no image"
  if s.caption is None:
    return "missing caption"
  return None if s.caption else "empty caption"


def _label(ext: str, data: bytes) -> int:
  try:
    value = json.loads(data).get("label", -1) if ext == "json" else int(data.strip())
  except (ValueError, AttributeError):
    return -1
  return value if isinstance(value, int) else -1


def _scan(path: str) -> tuple[dict[str, _Sample], str | None]:
  """Key -> sample of one shard, and a note if the shard is truncated."""
  if not os.path.isfile(path):
    raise ShardError(f"WebDataset shard {path} does not exist (or is not a file)")
  file_size = os.path.getsize(path)
  samples: dict[str, _Sample] = {}
  try:
    tf = tarfile.open(path, "r:")  # noqa: SIM115 (closed by the `with tf:` below)
  except (tarfile.TarError, OSError) as e:
    raise ShardError(f"cannot read WebDataset shard {path} as an uncompressed tar archive: {e}") from e
  note, end = None, 0
  with tf:
    while True:
      try:
        member = tf.next()
      except (tarfile.TarError, EOFError, OSError) as e:
        note = f"stops early ({e})"
        break
      if member is None:
        break
      end = member.offset_data + member.size
      if not member.isfile():
        continue
      name = os.path.basename(member.name)
      key = os.path.join(os.path.dirname(member.name), name.split(".", 1)[0])
      ext = name.split(".", 1)[1].lower() if "." in name else ""
      sample = samples.setdefault(key, _Sample())
      if end > file_size:
        sample.damage = f"member {member.name} is truncated"
        note = "is truncated"
        break
      if ext in IMAGE_EXTS:
        sample.image = (member.offset_data, member.size)
      elif ext in ("txt", "json", "cls"):
        data = tf.extractfile(member).read()
        if ext == "txt":
          try:
            sample.caption = data.decode("utf-8").strip()
          except UnicodeDecodeError:
            sample.damage = "caption is not UTF-8"
        elif sample.label < 0:
          sample.label = _label(ext, data)
  if note is None and _has_trailing_data(path, end):
    note = "ends inside a member header"
  return samples, note


def _has_trailing_data(path: str, end: int) -> bool:
  """A complete tar ends in zero blocks; anything else after the last member means it was cut."""
  with open(path, "rb") as f:
    f.seek(end)
    return any(f.read())


def read_shards(paths: list[str], image_size: int) -> EncodedPairs:
  """All usable samples of the shards, in shard order."""
  keys, captions, labels, locations, skipped = [], [], [], [], []
  for shard_id, path in enumerate(paths):
    samples, note = _scan(path)
    if note:
      log.warning("WebDataset shard %s %s; its complete samples are kept", path, note)
    for key, s in samples.items():
      name = f"{os.path.basename(path)}:{key}"
      if problem := _unusable(s):
        skipped.append((name, problem))
        continue
      keys.append(name)
      captions.append(s.caption)
      labels.append(s.label)
      locations.append((shard_id, *s.image))
  warn_skipped(", ".join(paths) if len(paths) < 4 else f"{len(paths)} shards", skipped)

  def read(i: int) -> bytes:
    shard_id, offset, size = locations[i]
    with open(paths[shard_id], "rb") as f:
      f.seek(offset)
      return f.read(size)

  labels_N = np.array(labels, np.int32)
  return EncodedPairs(keys=keys, captions=captions, labels_N=labels_N, read=read, image_size=image_size,
                      num_classes=int(labels_N.max(initial=-1)) + 1, num_skipped=len(skipped))


def write_shards(samples: Iterable[tuple[str, dict[str, bytes]]], out_dir: str, shard_size: int,
                 prefix: str) -> list[str]:
  """Writes (key, {ext: bytes}) samples as `prefix-000000.tar`, ... (reproducible bytes)."""
  os.makedirs(out_dir, exist_ok=True)
  paths, tf = [], None
  for i, (key, files) in enumerate(samples):
    if i % shard_size == 0:
      if tf is not None:
        tf.close()
      paths.append(os.path.join(out_dir, f"{prefix}-{len(paths):06d}.tar"))
      tf = tarfile.open(paths[-1], "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 (one per shard)
    for ext, data in files.items():
      info = tarfile.TarInfo(f"{key}.{ext}")
      info.size, info.mode, info.mtime = len(data), 0o644, 0
      tf.addfile(info, io.BytesIO(data))
  if tf is not None:
    tf.close()
  return paths
