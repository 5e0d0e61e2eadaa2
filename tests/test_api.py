"""The public API and its commands (basic_core/api.py, predict, embed, export) on a run trained here: the
same numbers as evaluation, an export that reloads to the same embeddings, corrupt images skipped and
named."""

import json

import numpy as np
import pytest
import safetensors.numpy
from PIL import Image

from basic_core import api, data, embed, evaluate, export, predict

# One xdist worker runs this module (make test: --dist loadgroup): the loaded model, made once.
pytestmark = pytest.mark.xdist_group("api")

LABELS = ["a red circle", "a blue star", "a green square"]


@pytest.fixture(scope="module")
def workdir(tiny_run):
  return tiny_run  # tests/conftest.py: trained once per session, read only


@pytest.fixture(scope="module")
def model(workdir):
  return api.load(workdir)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  """Good images of several sizes, modes and formats, and one corrupt file among them."""
  folder = tmp_path_factory.mktemp("images")
  Image.new("RGB", (40, 30), (200, 30, 30)).save(folder / "a_red.png")
  Image.new("RGBA", (20, 20), (0, 0, 255, 128)).save(folder / "b_blue_alpha.png")
  Image.new("L", (64, 64), 90).save(folder / "c_grey.jpg")
  Image.new("RGB", (7, 50), (0, 180, 0)).save(folder / "d_green.bmp")
  (folder / "c_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
  return folder


def test_zero_shot_and_embeddings_are_evaluations(workdir, model):
  """Every built-in task: the API's top-1 is evaluation's, on the run loaded and as the trainer reported
  it (eval.json), and its image and prompt embeddings are evaluation's."""
  run = evaluate.load(workdir)
  encoder = evaluate.Encoder(run.fns, run.params, chunk=int(run.config.eval.batch_size))
  reported = json.loads((workdir / "eval.json").read_text())
  suite = data.eval_suite(run.config, run.tokenizer)
  assert model.step == run.step == 5
  for task in suite.tasks:
    probs_NxC = model.zero_shot(task.images, task.classnames, prompts=task.prompts())
    assert probs_NxC.shape == (len(task.images), len(task.classnames))
    np.testing.assert_allclose(probs_NxC.sum(axis=1), 1.0, atol=1e-5)
    top1 = float(np.mean(probs_NxC.argmax(axis=1) == task.labels))
    assert top1 == pytest.approx(evaluate.zero_shot(encoder, run.tokenizer, task)["top1"], abs=1e-6)
    assert top1 == pytest.approx(reported[f"zeroshot_{task.name}_top1"], abs=1e-6)
    np.testing.assert_allclose(model.encode_image(task.images), encoder.images(task.images), atol=1e-6)
    np.testing.assert_allclose(model.class_embeddings(task.classnames, prompts=task.prompts()),
                               evaluate.prompt_embeddings(encoder, run.tokenizer, task.prompts()), atol=1e-6)
  task = suite.tasks[0]  # labels x templates: evaluation's class_embeddings
  classes_CxD = evaluate.class_embeddings(encoder, run.tokenizer, task.classnames, task.templates)
  np.testing.assert_allclose(model.class_embeddings(task.classnames, task.templates), classes_CxD, atol=1e-6)
  texts = [task.templates[0].format(c) for c in task.classnames]
  np.testing.assert_allclose(model.encode_text(texts), encoder.texts(run.tokenizer.encode(texts)), atol=1e-6)


def test_any_size_and_mode_is_decoded_as_the_readers_decode_it(model, images):
  """A path, the PIL image and its uint8 array give the same embedding; embeddings are unit rows."""
  paths = sorted(p for p in images.iterdir() if "corrupt" not in p.name)
  from_paths = model.encode_image(paths)
  opened = [Image.open(p) for p in paths]
  arrays = [np.asarray(im) for im in opened]  # [H, W, 3], [H, W, 4] (RGBA) and [H, W] (L)
  assert {a.ndim for a in arrays} == {2, 3} and {a.shape[-1] for a in arrays if a.ndim == 3} == {3, 4}
  np.testing.assert_allclose(model.encode_image(opened), from_paths, atol=1e-6)
  np.testing.assert_allclose(model.encode_image(arrays), from_paths, atol=1e-6)
  assert from_paths.dtype == np.float32 and from_paths.shape == (len(paths), model.config.model.embed_dim)
  np.testing.assert_allclose(np.linalg.norm(from_paths, axis=1), 1.0, atol=1e-5)
  with pytest.raises(ValueError, match="put a single image in a list"):
    model.encode_image(arrays[0])
  with pytest.raises(data.images.CorruptImage, match="c_corrupt.png"):
    model.encode_image([*paths, images / "c_corrupt.png"])


def test_any_n_in_bounded_chunks_one_compile_per_bucket(model):
  """N = 3 and 4 share one compiled bucket; N = 150 runs in chunks of eval.batch_size, each row as
  evaluation would embed it."""
  images_Nx32x32x3 = np.random.default_rng(0).integers(0, 256, (150, 32, 32, 3), dtype=np.uint8)
  jitted = evaluate._encoders(model.fns)[0]
  model.encode_image(images_Nx32x32x3[:3])
  compiled = jitted._cache_size()
  model.encode_image(images_Nx32x32x3[:4])
  assert jitted._cache_size() == compiled
  all_NxD = model.encode_image(images_Nx32x32x3)
  assert all_NxD.shape[0] == 150
  np.testing.assert_allclose(all_NxD[:3], model.encode_image(images_Nx32x32x3[:3]), atol=1e-5)


def test_export_reloads_to_the_same_embeddings(workdir, model, images, tmp_path, capsys):
  assert export.main(["--workdir", str(workdir), "--out", str(tmp_path / "exported")]) == 0
  weights = safetensors.numpy.load_file(tmp_path / "exported" / "model.safetensors")  # numpy alone
  expected = api.named_params(model.params)
  assert sorted(weights) == sorted(expected) and "image/patch_embed/kernel" in weights
  assert all(weights[k].shape == expected[k].shape for k in weights)
  reloaded = api.load(tmp_path / "exported")
  assert reloaded.step == model.step and reloaded.logit_scale == pytest.approx(model.logit_scale)
  paths = sorted(p for p in images.iterdir() if "corrupt" not in p.name)
  np.testing.assert_allclose(reloaded.encode_image(paths), model.encode_image(paths), atol=1e-6)
  np.testing.assert_allclose(reloaded.encode_text(LABELS), model.encode_text(LABELS), atol=1e-6)
  with pytest.raises(ValueError, match="export of step 5"):
    api.load(tmp_path / "exported", step=3)


def test_predict_names_and_skips_a_corrupt_image(workdir, model, images, capsys):
  argv = ["--workdir", str(workdir), "--images", str(images), "--labels", ",".join(LABELS), "--top-k", "2"]
  assert predict.main([*argv, "--json"]) == 0
  out = capsys.readouterr()
  rows = [json.loads(line) for line in out.out.splitlines()]
  good = sorted(p for p in images.iterdir() if "corrupt" not in p.name)
  assert [r["path"] for r in rows] == [str(p) for p in good]
  assert all(set(r) == {"path", "labels", "probs"} and len(r["labels"]) == len(r["probs"]) == 2 for r in rows)
  assert "skipped" in out.err and "c_corrupt.png" in out.err
  assert out.err.strip().splitlines()[-1] == "1 of 5 images skipped (unreadable or corrupt)"
  probs_NxC = model.zero_shot(good, LABELS)
  for r, p_C in zip(rows, probs_NxC):
    assert r["labels"][0] == LABELS[int(p_C.argmax())]
    assert r["probs"][0] == pytest.approx(float(p_C.max()), abs=1e-5) and r["probs"][0] >= r["probs"][1]
  assert predict.main(argv) == 0  # the plain form: a line per image, path then label and probability
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 4 and lines[0].startswith(str(good[0]) + "\t")


def test_embed_writes_the_apis_embeddings(workdir, model, images, tmp_path, capsys):
  assert embed.main(["--workdir", str(workdir), "--images", str(images / "*.png"),
                     "--out", str(tmp_path / "img.npy")]) == 0
  read = (tmp_path / "img.paths.txt").read_text().splitlines()
  assert read == [str(images / "a_red.png"), str(images / "b_blue_alpha.png")]  # corrupt one skipped
  np.testing.assert_allclose(np.load(tmp_path / "img.npy"), model.encode_image(read), atol=1e-6)
  (tmp_path / "texts.txt").write_text("\n".join(LABELS) + "\n\n")
  assert embed.main(["--workdir", str(workdir), "--texts", str(tmp_path / "texts.txt"),
                     "--out", str(tmp_path / "txt.npy")]) == 0
  np.testing.assert_allclose(np.load(tmp_path / "txt.npy"), model.encode_text(LABELS), atol=1e-6)
  assert "c_corrupt.png" in capsys.readouterr().err
