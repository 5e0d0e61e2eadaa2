"""CSV / TSV files of (image path, caption[, label]) rows, the layout OpenCLIP reads.

Column names come from config (OpenCLIP's defaults: `filepath`, `title`). Relative image paths are
looked up beside the CSV first, then from the working directory. Every image file is checked when
the file is read, so a missing one stops the run at once with its name, not hours later.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from basic_core.data.source import EncodedPairs, warn_skipped


def _resolve(path: str, base: str) -> str:
  beside = os.path.join(base, path)
  return beside if not os.path.isabs(path) and os.path.exists(beside) else path


def _label(text: str | None, path: str, row: int) -> int:
  try:
    return int(text or -1)
  except ValueError:
    raise ValueError(f"{path} line {row + 2}: label {text!r} is not an integer") from None


def read_csv(path: str, image_size: int, image_key: str, caption_key: str,
             label_key: str = "") -> EncodedPairs:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"CSV file {path} does not exist")
  delimiter = "\t" if path.lower().endswith(".tsv") else ","
  try:
    with open(path, newline="", encoding="utf-8") as f:
      reader = csv.DictReader(f, delimiter=delimiter)
      wanted = [k for k in (image_key, caption_key, label_key) if k]
      if missing := [k for k in wanted if k not in (reader.fieldnames or [])]:
        raise ValueError(f"{path} has no column(s) {missing}; its columns are {reader.fieldnames} "
                         "(set data.csv_image_key / csv_caption_key / csv_label_key)")
      rows = list(reader)
  except (UnicodeDecodeError, csv.Error) as e:
    raise ValueError(f"{path} is not a UTF-8 {'TSV' if delimiter == chr(9) else 'CSV'} file: {e}") from None
  base = os.path.dirname(os.path.abspath(path))
  files = [_resolve(row[image_key] or "", base) for row in rows]
  if absent := [f"line {i + 2}: {f!r}" for i, f in enumerate(files) if not os.path.isfile(f)]:
    raise FileNotFoundError(f"{len(absent)} image file(s) named in {path} do not exist: "
                            + "; ".join(absent[:5]) + (" ..." if len(absent) > 5 else ""))
  keep, skipped = [], []
  for i, row in enumerate(rows):
    if (row[caption_key] or "").strip():
      keep.append(i)
    else:
      skipped.append((files[i], "empty caption"))
  warn_skipped(path, skipped)
  labels_N = np.array([_label(rows[i][label_key], path, i) if label_key else -1 for i in keep], np.int32)

  def read(i: int) -> bytes:
    with open(files[keep[i]], "rb") as f:
      return f.read()

  return EncodedPairs(keys=[files[i] for i in keep], captions=[rows[i][caption_key].strip() for i in keep],
                      labels_N=labels_N, read=read, image_size=image_size,
                      num_classes=int(labels_N.max(initial=-1)) + 1, num_skipped=len(skipped))
