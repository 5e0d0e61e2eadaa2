"""Hostile inputs, each tried through the path a training run takes (reader -> pipeline -> evaluation
pairs): a bad sample is skipped and named, a bad source is one clean error naming it; never another
exception (a traceback), never a hang. Plus numeric arguments that make no sense, and every command's
answer to a missing / empty / wrong-kind path, a file without the expected columns and an out-of-range
number: one line naming the argument, exit status 2 (analysis/cli.py)."""

import gzip
import io
import json
import logging
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from basic_core.configs import ConfigError, get_config
from basic_core.data import eval_suite, get_tokenizer, train_pipeline
from basic_core.data.wds import write_shards
from basic_core.perf.xla_flags import child_env

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16
GOOD = 12  # good samples around every bad one, so a batch can always be filled
CLEAN_ERRORS = (ValueError, OSError)  # ConfigError, ShardError, FileNotFoundError, CorruptImage, ...


def png(mode="RGB", size=(20, 12), colour=None, fmt="PNG", **save) -> bytes:
  colour = colour if colour is not None else {"RGB": (200, 30, 30), "L": 90, "RGBA": (0, 0, 255, 0),
                                              "LA": (90, 0), "1": 1, "I;16": 40000, "P": 3,
                                              "CMYK": (0, 255, 255, 0)}[mode]
  buf = io.BytesIO()
  Image.new(mode, size, colour).save(buf, format=fmt, **save)
  return buf.getvalue()


def bomb() -> bytes:
  """A tiny PNG that claims 30000 x 30000 pixels (PIL's decompression-bomb guard refuses it)."""
  return png("1", size=(30000, 30000), colour=0, optimize=True)


# name -> (key, {ext: bytes}) of one bad sample written among good ones: skipped (and named) or kept.
BAD_SAMPLES = {
    "garbage_png": {"png": os.urandom(300), "txt": b"a red circle"},
    "garbage_jpg": {"jpg": os.urandom(300), "txt": b"a red circle"},
    "truncated_png": {"png": png()[:40], "txt": b"a red circle"},
    "zero_length_image": {"png": b"", "txt": b"a red circle"},
    "image_only": {"png": png()},
    "caption_only": {"txt": b"a red circle"},
    "empty_caption": {"png": png(), "txt": b""},
    "whitespace_caption": {"png": png(), "txt": b" \n\t "},
    "invalid_utf8_caption": {"png": png(), "txt": b"\xff\xfe\x84 red"},
    "huge_caption": {"png": png(), "txt": ("red " * 250_000).encode()},
    "control_chars_caption": {"png": png(), "txt": b"a \x00red\x07 circle\x1b[31m"},
    "mode_1": {"png": png("1"), "txt": b"a red circle"},
    "mode_I16": {"png": png("I;16"), "txt": b"a red circle"},
    "mode_LA": {"png": png("LA"), "txt": b"a red circle"},
    "mode_P_transparent": {"png": png("P", transparency=3), "txt": b"a red circle"},
    "cmyk_jpeg": {"jpg": png("CMYK", fmt="JPEG"), "txt": b"a red circle"},
    "one_pixel": {"png": png(size=(1, 1)), "txt": b"a red circle"},
    "absurd_aspect": {"png": png(size=(4000, 1)), "txt": b"a red circle"},
    "decompression_bomb": {"png": bomb(), "txt": b"a red circle"},
    "garbage_json_label": {"png": png(), "txt": b"a red circle", "json": b"{not json"},
    "non_integer_label": {"png": png(), "txt": b"a red circle", "json": b'{"label": "seven"}'},
    "unknown_extension": {"png": png(), "txt": b"a red circle", "xyz": os.urandom(50)},
}


def config_for(train: str, *overrides):
  return get_config("tiny", ["model.image.image_size=16", "model.image.vit.patch=4", "data.num_test=4",
                             "eval.num_images=4", "eval.batch_size=4", "train.batch_size=8",
                             f"data.train={train}", *overrides])


@pytest.fixture(scope="module")
def tokenizer():
  config = config_for("builtin")
  return get_tokenizer(config.data, config.model.text.context)


def run_input_path(config, tokenizer) -> int:
  """What a run does with its data before and after training; returns the skipped-sample count."""
  pipeline = train_pipeline(config, tokenizer)
  for _ in range(3):
    next(pipeline)
  eval_suite(config, tokenizer)
  pipeline.close()
  return pipeline.skipped_samples


def good_samples(n=GOOD):
  return [(f"good{i:03d}", {"png": png(colour=(i * 20, 0, 0)), "txt": f"caption {i}".encode()})
          for i in range(n)]


@pytest.mark.parametrize("kind", sorted(BAD_SAMPLES))
def test_a_bad_sample_is_skipped_or_used_never_a_traceback(kind, tmp_path, tokenizer, caplog):
  samples = good_samples()
  samples.insert(GOOD // 2, (kind, BAD_SAMPLES[kind]))
  path = write_shards(samples, str(tmp_path), 100, "shard")[0]
  with caplog.at_level(logging.WARNING):
    skipped = run_input_path(config_for(path), tokenizer)
  assert skipped == 0 or kind in caplog.text  # every skipped sample is named


def shard_bytes(samples) -> bytes:
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
    for key, files in samples:
      for ext, data in files.items():
        info = tarfile.TarInfo(f"{key}.{ext}")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
  return buf.getvalue()


def _csv(tmp_path, text: str | bytes, name="pairs.csv") -> str:
  (tmp_path / "img.png").write_bytes(png())
  path = tmp_path / name
  path.write_bytes(text if isinstance(text, bytes) else text.encode())
  return str(path)


# name -> a function of tmp_path returning data.train: a bad SOURCE (one clean error, or usable).
BAD_SOURCES = {
    "missing_shard": lambda t: str(t / "absent.tar"),
    "zero_length_shard": lambda t: _write(t / "zero.tar", b""),
    "random_bytes_shard": lambda t: _write(t / "random.tar", os.urandom(5000)),
    "gzip_shard": lambda t: _write(t / "packed.tar", gzip.compress(shard_bytes(good_samples()))),
    "truncated_shard": lambda t: _write(t / "cut.tar", shard_bytes(good_samples(40))[:20_000]),
    "shard_is_a_directory": lambda t: (t / "dir.tar").mkdir() or str(t / "dir.tar"),
    "shard_without_usable_samples": lambda t: _write(t / "bad.tar", shard_bytes(
        [(f"x{i}", {"png": b"junk", "txt": b"words"}) for i in range(12)])),
    "empty_brace_pattern": lambda t: str(t / "s-{000003..000001}.tar"),
    "csv_missing_column": lambda t: _csv(t, "path,caption\nimg.png,a red circle\n"),
    "csv_wrong_separator": lambda t: _csv(t, "filepath;title\nimg.png;a red circle\n"),
    "csv_missing_image": lambda t: _csv(t, "filepath,title\nnowhere.png,a red circle\n"),
    "csv_image_is_directory": lambda t: (t / "adir").mkdir() or _csv(t, "filepath,title\nadir,red\n"),
    "csv_empty_file": lambda t: _csv(t, ""),
    "csv_header_only": lambda t: _csv(t, "filepath,title\n"),
    "csv_invalid_utf8": lambda t: _csv(t, b"filepath,title\nimg.png,\xff\xfe red\n"),
    "csv_non_integer_label": lambda t: _csv(t, "filepath,title,label\n" + "img.png,red,seven\n" * 12),
    "csv_garbage_image": lambda t: _write(t / "junk.png", b"junk") and _csv(
        t, "filepath,title\n" + "junk.png,a red circle\n" + "img.png,a red circle\n" * 12),
    "csv_binary_garbage": lambda t: _csv(t, os.urandom(2000)),
}


def _write(path, data: bytes) -> str:
  path.write_bytes(data)
  return str(path)


@pytest.mark.parametrize("kind", sorted(BAD_SOURCES))
def test_a_bad_source_is_one_clean_error_naming_it(kind, tmp_path, tokenizer, caplog):
  train = BAD_SOURCES[kind](tmp_path)
  overrides = ("data.csv_label_key=label",) if kind == "csv_non_integer_label" else ()
  try:
    with caplog.at_level(logging.WARNING):
      run_input_path(config_for(train, *overrides), tokenizer)
  except CLEAN_ERRORS as e:
    message = str(e)
    assert "\n" not in message.strip(), message
    assert os.path.basename(train.split("{")[0]) in message or "data.train" in message, message
  else:
    assert kind in ("truncated_shard", "gzip_shard") or caplog.text, kind  # usable: what was lost is said


@pytest.mark.parametrize("override,message", [
    ("train.steps=-5", "train.steps must be positive"),
    ("train.batch_size=0", "train.batch_size must be positive"),
    ("train.log_every=0", "train.log_every must be positive"),
    ("train.microbatch_size=-8", "train.microbatch_size must be 0"),
    ("model.dropout=1.5", "model.dropout must be in [0, 1)"),
    ("data.noise=-0.1", "data.noise must be in [0, 1]"),
    ("optim.lr=-0.001", "optim.lr must be positive"),
    ("optim.warmup_steps=-1", "optim.warmup_steps must be >= 0"),
    ("model.embed_dim=0", "model.embed_dim must be positive"),
    ("model.text.layers=0", "model.text.layers must be positive"),
    ("eval.batch_size=0", "eval.batch_size must be positive"),
    ("eval.num_pairs=-1", "eval.num_pairs must be positive"),
    ("model.temperature_init=0.0", "model.temperature_init must be positive"),
])
def test_numeric_arguments_that_make_no_sense_are_refused(override, message):
  with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
    get_config("tiny", [override])


def test_the_corpus_is_large_enough():
  assert len(BAD_SAMPLES) + len(BAD_SOURCES) >= 30
  assert np.unique(list(BAD_SAMPLES) + list(BAD_SOURCES)).size == len(BAD_SAMPLES) + len(BAD_SOURCES)


# ---- every command: one line naming the argument, exit status 2, no traceback ----------------------------

# Every `python -m` command, each case run through the module's real `__main__` block (runpy) in ONE child
# process: its stderr captured at the file-descriptor level (the trainer writes its last line there).
RUN_CASES = r"""
import json, os, runpy, sys, tempfile, warnings
warnings.filterwarnings("ignore", category=RuntimeWarning, module="runpy")  # modules imported before
results = []
for module, argv, env in json.loads(sys.argv[1]):
  os.environ.pop("BASIC_TRACEBACK", None)
  os.environ.update(env)
  sys.argv = [module, *argv]
  saved = os.dup(2)
  with tempfile.TemporaryFile() as err:
    sys.stderr.flush()
    os.dup2(err.fileno(), 2)
    raised = None
    try:
      runpy.run_module(module, run_name="__main__", alter_sys=True)
      code = 0
    except SystemExit as e:
      code = e.code
    except BaseException as e:  # what the user would see as a traceback
      code, raised = None, type(e).__name__
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    err.seek(0)
    results.append(dict(code=code, raised=raised, stderr=err.read().decode(errors="replace")))
print("RESULTS " + json.dumps(results))
"""


def hostile_commands(t) -> dict:
  """module -> [(bad argv, what the one line must name)]; `t` is a folder of bad inputs."""
  run, img = str(t / "run"), str(t / "imgs")
  return {
      "basic_core.train": [
          (["--config", "tiny", "--workdir", f"{t}/file.txt"], "--workdir"),
          (["--config", "tiny", "--workdir", run, "--steps", "0"], "--steps"),
          (["--config", "tiny", "--workdir", run, "--set", "train.batch_size=0"], "train.batch_size"),
          (["--config", "no-such-preset", "--workdir", run], "no-such-preset"),
      ],
      "basic_core.evaluate": [
          (["--workdir", f"{t}/absent"], "--workdir"),
          (["--workdir", f"{t}/empty"], "--workdir"),
          (["--workdir", f"{t}/file.txt"], "--workdir"),
          (["--workdir", f"{t}/garbage_run"], "--workdir"),
      ],
      "basic_core.data": [
          (["export", "--out", f"{t}/file.txt"], "--out"),
          (["export", "--out", f"{t}/shards", "--num", "0"], "--num"),
          (["bench", "--seconds", "-1"], "--seconds"),
          (["train-tokenizer", "--out", f"{t}/tok.json", "--corpus", f"{t}/absent.txt"], "--corpus"),
      ],
      "basic_core.bench": [
          (["memory", "--batch", "0"], "--batch"),
          (["compare-table", f"{t}/absent.jsonl"], "files"),
          (["compare-table", f"{t}/rows_without_keys.jsonl"], "files"),
          (["compare-table", f"{t}/file.txt"], "files"),
      ],
      "basic_core.plan": [
          (["--config", "tiny", "--mesh", "data=two"], "--mesh"),
          (["--config", "tiny", "--mesh", "data=1,model=1", "--batch", "0"], "--batch"),
          (["--config", "tiny", "--mesh", "data=1,model=1", "--memory", "12XB"], "--memory"),
      ],
      "experiments.batch_size_sweep": [
          (["--preset", "smoke", "--out", f"{t}/file.txt"], "--out"),
          (["--preset", "smoke", "--out", f"{t}/sweep", "--batch-sizes", "0,abc"], "--batch-sizes"),
          (["--preset", "smoke", "--out", f"{t}/sweep", "--jobs", "0"], "--jobs"),
      ],
      "experiments.negatives": [
          (["--results", f"{t}/absent.csv"], "--results"),
          (["--results", f"{t}/empty.csv"], "--results"),
          (["--results", f"{t}/wrong_columns.csv"], "--results"),
          (["--results", f"{t}/empty"], "--results"),
      ],
      "experiments.mechanism": [
          (["--results", f"{t}/absent.csv"], "--results"),
          (["--results", f"{t}/empty.csv"], "--results"),
          (["--results", f"{t}/wrong_columns.csv"], "--results"),
          (["--results", f"{ROOT}/paper_figures/data/mechanism.csv", "--gradients", f"{t}/absent.jsonl"],
           "--gradients"),
          (["--results", f"{ROOT}/paper_figures/data/mechanism.csv", "--gradients",
            f"{t}/rows_without_keys.jsonl"], "--gradients"),
      ],
      "paper_figures.mechanism_figure": [
          (["--results", f"{t}/absent.csv", "--out", f"{t}/fig"], "--results"),
          (["--results", f"{t}/empty.csv", "--out", f"{t}/fig"], "--results"),
          (["--results", f"{t}/wrong_columns.csv", "--out", f"{t}/fig"], "--results"),
      ],
      "experiments.tiny_bound": [
          (["--workdir", f"{t}/absent"], "--workdir"),
          (["--workdir", f"{t}/empty"], "--workdir"),
          (["--workdir", f"{t}/empty", "--pairs", "0"], "--pairs"),
      ],
      "experiments.gradient_bias": [
          (["--workdir", f"{t}/absent"], "--workdir"),
          (["--workdir", f"{t}/empty"], "--workdir"),
          (["--workdir", f"{t}/empty", "--groups", "0,abc"], "--groups"),
      ],
      "experiments.embedding_geometry": [
          (["--workdir", f"{t}/absent"], "--workdir"),
          (["--workdir", f"{t}/empty"], "--workdir"),
          (["--workdir", f"{t}/empty", "--pairs", "1"], "--pairs"),
      ],
      "experiments.attribute_swap": [
          (["--workdir", f"{t}/absent"], "--workdir"),
          (["--workdir", f"{t}/empty"], "--workdir"),
          (["--workdir", f"{t}/empty", "--images", "0"], "--images"),
      ],
      "paper_figures.sweep_figures": [
          (["--results", f"{t}/absent.csv", "--out", f"{t}/fig"], "--results"),
          (["--results", f"{t}/empty.csv", "--out", f"{t}/fig"], "--results"),
          (["--results", f"{t}/wrong_columns.csv", "--out", f"{t}/fig"], "--results"),
      ],
      "paper_figures.theory_figures": [
          (["--data", f"{t}/absent", "--out", f"{t}/fig"], "--data"),
          (["--data", f"{t}/empty", "--out", f"{t}/fig"], "--data"),
          (["--results", f"{t}/wrong_columns.csv", "--out", f"{t}/fig"], "--results"),
          (["--data", f"{t}/empty", "--out", f"{t}/fig", "--fit-from", "0"], "--fit-from"),
      ],
      "paper_figures.memory_figure": [
          (["--rows", f"{t}/absent.jsonl", "--out", f"{t}/fig.png"], "--rows"),
          (["--rows", f"{t}/empty.csv", "--out", f"{t}/fig.png"], "--rows"),
          (["--rows", f"{t}/rows_without_keys.jsonl", "--out", f"{t}/fig.png"], "--rows"),
          (["--rows", f"{t}/file.txt", "--out", f"{t}/fig.png"], "--rows"),
      ],
      "paper_figures.negatives_figures": [
          (["--results", f"{t}/absent.csv", "--out", f"{t}/fig"], "--results"),
          (["--results", f"{t}/empty.csv", "--out", f"{t}/fig"], "--results"),
          (["--results", f"{t}/wrong_columns.csv", "--out", f"{t}/fig"], "--results"),
      ],
      "theory.check": [
          (["--quick", "--trials", "0"], "--trials"),
          (["--quick", "--trials", "-5"], "--trials"),
          (["--quick", "--trials", "abc"], "--trials"),
      ],
      "theory.bias": [
          (["--dim", "16", "--beta", "0", "--noise", "0.5"], "--beta"),
          (["--dim", "1", "--beta", "2", "--noise", "0.5"], "--dim"),
          (["--dim", "16", "--beta", "2", "--noise", "-1"], "--noise"),
          (["--dim", "16", "--beta", "2", "--noise", "0.5", "--batches", "0,abc"], "--batches"),
          (["--dim", "16", "--beta", "2", "--noise", "0.5", "--level", "1.5"], "--level"),
      ],
      "theory.tables": [
          (["--out", f"{t}/file.txt", "--quick"], "--out"),
          (["--out", f"{t}/file.txt/tables", "--quick"], "--out"),
          (["--out", f"{t}/tables", "--only", "nonsense"], "--only"),
      ],
      "theory.pac_bayes": [
          (["--out", f"{t}/file.txt", "--quick"], "--out"),
          (["--out", f"{t}/file.txt/pb", "--quick"], "--out"),
          (["--quick"], "--out"),
      ],
      "basic_core.predict": [
          (["--workdir", f"{t}/absent", "--images", img, "--labels", "a,b"], "--workdir"),
          (["--workdir", f"{t}/empty", "--images", img, "--labels", "a,b"], "--workdir"),
          (["--workdir", f"{t}/empty", "--images", f"{t}/empty", "--labels", "a,b"], "--images"),
          (["--workdir", f"{t}/empty", "--images", img, "--labels", "a,,b"], "--labels"),
          (["--workdir", f"{t}/empty", "--images", img, "--labels", "a,b", "--top-k", "0"], "--top-k"),
          (["--workdir", f"{t}/empty", "--images", img, "--labels", "a,b", "--templates", f"{t}/file.txt"],
           "--templates"),
      ],
      "basic_core.embed": [
          (["--workdir", f"{t}/absent", "--texts", f"{t}/file.txt", "--out", f"{t}/e.npy"], "--workdir"),
          (["--workdir", f"{t}/empty", "--texts", f"{t}/file.txt", "--out", f"{t}/e.npy"], "--workdir"),
          (["--workdir", f"{t}/empty", "--texts", f"{t}/absent.txt", "--out", f"{t}/e.npy"], "--texts"),
          (["--workdir", f"{t}/empty", "--texts", f"{t}/file.txt", "--out", f"{t}/e.txt"], "--out"),
          (["--workdir", f"{t}/empty", "--images", f"{t}/empty", "--out", f"{t}/e.npy"], "--images"),
      ],
      "basic_core.export": [
          (["--workdir", f"{t}/absent", "--out", f"{t}/exported"], "--workdir"),
          (["--workdir", f"{t}/empty", "--out", f"{t}/exported"], "--workdir"),
          (["--workdir", f"{t}/empty", "--out", f"{t}/file.txt"], "--out"),
          (["--workdir", f"{t}/empty", "--out", f"{t}/exported", "--step", "-1"], "--step"),
      ],
  }


def bad_inputs(t) -> None:
  """The files and folders the cases name."""
  (t / "empty").mkdir()
  (t / "file.txt").write_text("a line of text without a label slot\n")
  (t / "empty.csv").write_text("")
  (t / "wrong_columns.csv").write_text("a,b\n1,2\n")
  (t / "rows_without_keys.jsonl").write_text('{"a": 1}\n')
  (t / "garbage_run").mkdir()
  (t / "garbage_run" / "config.json").write_text("{not json")
  (t / "imgs").mkdir()
  (t / "imgs" / "one.png").write_bytes(png())


def run_cases(cases: list) -> list[dict]:
  env = child_env(1)
  env.pop("BASIC_TRACEBACK", None)
  proc = subprocess.run([sys.executable, "-c", RUN_CASES, json.dumps(cases)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS ")]
  assert lines, proc.stdout[-2000:] + proc.stderr[-3000:]
  return json.loads(lines[-1].removeprefix("RESULTS "))


def test_every_command_answers_bad_input_with_one_line_naming_the_argument(tmp_path):
  bad_inputs(tmp_path)
  commands = hostile_commands(tmp_path)
  cases = [(module, argv, {}) for module, tried in commands.items() for argv, _ in tried]
  cases.append(("basic_core.evaluate", ["--workdir", str(tmp_path / "empty")], {"BASIC_TRACEBACK": "1"}))
  *results, kept = run_cases(cases)
  failures = []
  for (module, argv, _), (_, named), r in zip(cases, [x for t in commands.values() for x in t], results):
    lines = r["stderr"].strip().splitlines()
    last = lines[-1] if lines else ""
    if r["code"] != 2 or "Traceback" in r["stderr"] or not last.startswith("error: ") or named not in last:
      failures.append(f"python -m {module} {' '.join(argv)}: exit {r['code']}, raised {r['raised']}, "
                      f"stderr ends {r['stderr'][-600:]!r}")
  assert not failures, "\n".join(failures)
  assert all(len(tried) >= 3 for tried in commands.values())
  assert kept["code"] is None and kept["raised"] == "CommandError", kept  # BASIC_TRACEBACK=1: a traceback
