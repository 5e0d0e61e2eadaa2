"""Real-format readers: WebDataset export round trip, CSV, image folders, and every kind of bad input."""

import io
import json
import logging
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset
from PIL import Image

from basic_core.configs import get_config
from basic_core.data import eval_suite, get_tokenizer, train_pipeline
from basic_core.data.__main__ import brace_pattern, main
from basic_core.data.csv_pairs import read_csv
from basic_core.data.image_folder import folder_task
from basic_core.data.wds import ShardError, expand, read_shards, write_shards
from basic_core.worlds.scenes.benchmark import ScenesBenchmark

SIZE = 16


def _config(*overrides):
  return get_config("tiny", ["model.image.image_size=16", "model.image.vit.patch=4", "data.num_test=8",
                             "eval.num_images=8", "train.batch_size=8", *overrides])


def _image_bytes(mode="RGB", fmt="PNG", colour=None, size=(20, 12)):
  colour = colour if colour is not None else {"RGB": (200, 30, 30), "L": 90, "RGBA": (0, 0, 255, 0),
                                              "CMYK": (0, 255, 255, 0), "P": 3}[mode]
  buf = io.BytesIO()
  Image.new(mode, size, colour).save(buf, format=fmt)
  return buf.getvalue()


def _sample(key, caption="a red thing", image=None, ext="png", label=None):
  files = {ext: image if image is not None else _image_bytes(), "txt": caption.encode()}
  if label is not None:
    files["json"] = json.dumps(dict(label=label, url="http://example.com")).encode()
  return key, files


@pytest.fixture
def tokenizer():
  config = _config()
  return get_tokenizer(config.data, config.model.text.context)


def test_brace_and_comma_expansion():
  assert expand("d/s-{000008..000011}.tar") == [f"d/s-{i:06d}.tar" for i in range(8, 12)]
  assert expand("a.tar, b/{x,y}-{1..2}.tar") == ["a.tar", "b/x-1.tar", "b/x-2.tar", "b/y-1.tar", "b/y-2.tar"]


def test_export_round_trip(tmp_path, caplog):
  out = tmp_path / "shards"
  main(["export", "--out", str(out), "--num", "40", "--shard-size", "16",
        "--set", "model.image.image_size=16", "--set", "model.image.vit.patch=4"])
  paths = sorted(str(p) for p in out.iterdir())
  assert len(paths) == 3 and expand(brace_pattern(paths)) == paths
  bench = ScenesBenchmark(0, SIZE, num_train=40, num_test=8)
  expected = bench.train.load(np.arange(40))
  pairs = read_shards(paths, SIZE)
  got = pairs.load(np.arange(40))
  assert not got.failures and pairs.num_skipped == 0 and pairs.num_classes == 72
  np.testing.assert_array_equal(got.images_NxHxWx3, expected.images_NxHxWx3)
  assert got.captions == expected.captions
  np.testing.assert_array_equal(got.labels_N, expected.labels_N)
  # The webdataset library reads the same layout.
  library = list(webdataset.WebDataset(paths, shardshuffle=False).decode("rgb8"))
  assert [s["txt"] for s in library] == expected.captions
  np.testing.assert_array_equal(np.stack([s["png"] for s in library]), expected.images_NxHxWx3)
  assert library[0]["json"]["scene"] == bench.scenes["train"].record(0)


def test_pipeline_on_shards(tmp_path, tokenizer):
  write_shards((_sample(f"{i:04d}", f"caption {i}", _image_bytes(colour=(i, 0, 0)), label=i % 5)
                for i in range(60)), str(tmp_path), 25, "real")
  config = _config(f"data.train={tmp_path}/real-{{000000..000002}}.tar")
  p = train_pipeline(config, tokenizer)
  batch = next(p)
  assert batch["image"].shape == (8, SIZE, SIZE, 3) and p.num_classes == 5
  captions = [tokenizer.decode(t) for t in batch["text"]]
  assert [int(c.split()[1]) % 5 for c in captions] == batch["label"].tolist()
  assert [int(c.split()[1]) for c in captions] == batch["image"][:, 0, 0, 0].tolist()
  suite = eval_suite(config, tokenizer)
  assert suite.heldout["image"].shape[0] == 6  # a tenth of 60 kept out of training
  heldout = {tokenizer.decode(t) for t in suite.heldout["text"]}
  seen = {tokenizer.decode(t) for b in (next(p) for _ in range(20)) for t in b["text"]}
  assert not heldout & seen and len(seen) == 54


def test_corrupt_and_empty_samples_are_skipped_and_named(tmp_path, tokenizer, caplog):
  good = [_sample(f"{i:04d}", f"caption {i}") for i in range(20)]
  bad = [_sample("corrupt", image=_image_bytes()[:40]), _sample("garbage", image=b"not an image at all"),
         _sample("empty", caption="  "), ("nocaption", {"png": _image_bytes()}),
         ("noimage", {"txt": b"words"})]
  paths = write_shards(good[:10] + bad + good[10:], str(tmp_path), 100, "mixed")
  with caplog.at_level(logging.WARNING):
    pairs = read_shards(paths, SIZE)
  assert len(pairs) == 22 and pairs.num_skipped == 3
  for key in ("empty", "nocaption", "noimage"):
    assert f"mixed-000000.tar:{key}" in caplog.text
  config = _config(f"data.train={paths[0]}", "data.test=" + paths[0], "train.batch_size=22")
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    p = train_pipeline(config, tokenizer)
    batch = next(p)
  assert "corrupt" in caplog.text and "garbage" in caplog.text
  assert p.skipped_samples == 3 + 2
  assert all(tokenizer.decode(t).startswith("caption") for t in batch["text"])  # substitutes are good pairs
  # Substitution is decided per position: two processes together still form the single-process batch.
  halves = [next(train_pipeline(config, tokenizer, process_index=i, process_count=2)) for i in range(2)]
  np.testing.assert_array_equal(np.concatenate([h["text"] for h in halves]), batch["text"])
  state = p.get_state()
  expected = next(p)
  resumed = train_pipeline(config, tokenizer)
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)["text"], expected["text"])
  assert resumed.skipped_samples == p.skipped_samples


@pytest.mark.parametrize("mode,fmt,expected", [("L", "PNG", (90, 90, 90)), ("RGBA", "PNG", (255, 255, 255)),
                                               ("CMYK", "JPEG", (255, 0, 0)), ("P", "GIF", None),
                                               ("RGB", "JPEG", (200, 30, 30))])
def test_image_modes_are_converted_to_rgb(tmp_path, mode, fmt, expected):
  ext = {"PNG": "png", "JPEG": "jpg", "GIF": "gif"}[fmt]
  paths = write_shards([_sample("x", image=_image_bytes(mode, fmt), ext=ext)], str(tmp_path), 10, "modes")
  loaded = read_shards(paths, SIZE).load(np.arange(1))
  assert not loaded.failures
  image = loaded.images_NxHxWx3[0]
  assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
  if expected is not None:
    np.testing.assert_allclose(image[SIZE // 2, SIZE // 2], expected, atol=12)


def test_truncated_shard_keeps_complete_samples(tmp_path, caplog):
  big = _image_bytes(size=(64, 64), colour=(1, 2, 3))
  samples = [_sample(f"{i:04d}", f"caption {i}", big) for i in range(6)]
  paths = write_shards(samples, str(tmp_path), 100, "cut")
  with tarfile.open(paths[0]) as tf:
    fifth_image = [m for m in tf.getmembers() if m.name == "0004.png"][0]
  data = Path(paths[0]).read_bytes()
  with open(paths[0], "wb") as f:
    f.write(data[:fifth_image.offset_data + 10])  # cut inside sample 0004's image
  with caplog.at_level(logging.WARNING):
    pairs = read_shards(paths, SIZE)
  assert pairs.captions == [f"caption {i}" for i in range(4)] and pairs.num_skipped == 1
  assert "cut-000000.tar:0004" in caplog.text and "truncated" in caplog.text
  assert not pairs.load(np.arange(4)).failures


def test_unreadable_or_missing_shard_stops_with_its_name(tmp_path):
  garbage = tmp_path / "garbage.tar"
  garbage.write_bytes(os.urandom(3000))
  with pytest.raises(ShardError, match="garbage.tar"):
    read_shards([str(garbage)], SIZE)
  empty = tmp_path / "empty.tar"
  empty.write_bytes(b"")
  with pytest.raises(ShardError, match="empty.tar"):
    read_shards([str(empty)], SIZE)
  with pytest.raises(ShardError, match="missing-000003.tar"):
    read_shards([str(tmp_path / "missing-000003.tar")], SIZE)


def _write_csv(tmp_path, rows, name="pairs.csv", sep=","):
  path = tmp_path / name
  path.write_text("\n".join(sep.join(r) for r in [("filepath", "title", "label")] + rows) + "\n")
  return str(path)


def test_csv_pairs(tmp_path, tokenizer):
  (tmp_path / "img").mkdir()
  rows = []
  for i in range(12):
    (tmp_path / "img" / f"{i}.png").write_bytes(_image_bytes(colour=(10 * i, 0, 0)))
    rows.append((f"img/{i}.png", f"picture {i}", str(i % 3)))
  rows.append(("img/0.png", "", "0"))
  tsv = _write_csv(tmp_path, rows, "pairs.tsv", "\t")
  pairs = read_csv(tsv, SIZE, "filepath", "title", "label")
  assert len(pairs) == 12 and pairs.num_skipped == 1 and pairs.num_classes == 3
  loaded = pairs.load(np.arange(12))
  assert loaded.captions[4] == "picture 4" and loaded.images_NxHxWx3[4, 0, 0, 0] == 40
  config = _config(f"data.train={tsv}", "data.csv_label_key=label")
  batch = next(train_pipeline(config, tokenizer))
  assert batch["image"].shape == (8, SIZE, SIZE, 3) and set(batch["label"]) <= {0, 1, 2}
  with pytest.raises(ValueError, match="columns"):
    read_csv(tsv, SIZE, "path", "title")


def test_csv_row_with_missing_file_stops_with_its_name(tmp_path):
  (tmp_path / "a.png").write_bytes(_image_bytes())
  path = _write_csv(tmp_path, [("a.png", "fine", "0"), ("gone.png", "lost", "0")])
  with pytest.raises(FileNotFoundError, match="gone.png"):
    read_csv(path, SIZE, "filepath", "title")
  with pytest.raises(FileNotFoundError, match="nothere.csv"):
    read_csv(str(tmp_path / "nothere.csv"), SIZE, "filepath", "title")


def test_image_folder_task(tmp_path, tokenizer, caplog):
  root = tmp_path / "colours"
  for name, colour in (("00_red", (220, 20, 20)), ("01_blue", (20, 20, 220))):
    (root / name).mkdir(parents=True)
    for i in range(3):
      (root / name / f"{i}.png").write_bytes(_image_bytes(colour=colour))
  (root / "01_blue" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
  (root / "classnames.json").write_text(json.dumps({"00_red": "red", "01_blue": "blue"}))
  (root / "templates.json").write_text(json.dumps(["a {c} square.", "something {}."]))
  with caplog.at_level(logging.WARNING):
    task = folder_task(str(root), SIZE, 100, 0)
  assert "broken.jpg" in caplog.text
  assert task.name == "colours" and task.classnames == ["red", "blue"]
  assert task.templates == ["a {} square.", "something {}."]
  assert task.labels.tolist() == [0, 0, 0, 1, 1, 1] and task.images.shape == (6, SIZE, SIZE, 3)
  suite = eval_suite(_config("data.num_train=64", f"data.eval_folder={root}"), tokenizer)
  assert suite.tasks[-1].name == "colours" and len(suite.tasks[-1].labels) == 6
