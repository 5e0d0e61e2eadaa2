"""Tokenizers: one end token per row, zero padding, round trips, CLIP's BPE file format."""

import gzip
import json

import ml_collections
import numpy as np
import pytest

from basic_core.data import clip_bpe
from basic_core.data.__main__ import main
from basic_core.data.tokenizer import get_tokenizer, tokenizer_from_json, train_bpe

TEXTS = ["A Red  Circle in the top left", "", "x " * 100, "<eot> two <pad> blue stars <|endoftext|>",
         "an octagon: never seen by the tokenizer", "three small striped hearts"]


def _data_config(tokenizer):
  return ml_collections.ConfigDict(dict(tokenizer=tokenizer))


def _check_rows(tok, ids):
  assert ids.dtype == np.int32 and ids.shape == (len(TEXTS), tok.context_length)
  for row in ids:
    ends = np.flatnonzero(row == tok.eot_id)
    assert len(ends) == 1
    assert (row[ends[0] + 1:] == tok.pad_id).all()
  assert ids.max() < tok.vocab_size


def test_builtin_tokenizer():
  tok = get_tokenizer(_data_config("builtin"), 24)
  assert tok.pad_id == 0 and tok.vocab_size <= 1024 and tok.context_length == 24
  ids = tok.encode(TEXTS)
  _check_rows(tok, ids)
  assert tok.decode(ids[0]) == "a red circle in the top left"
  assert tok.decode(ids[5]) == "three small striped hearts"
  assert tok.decode(ids[4]) == "an octagon: never seen by the tokenizer"  # subwords, no unknown token
  assert len(np.flatnonzero(ids[5])) < len(TEXTS[5])  # subword units, not characters
  assert ids[2, -1] == tok.eot_id  # truncated, end token kept
  again = tokenizer_from_json(tok.to_json())
  np.testing.assert_array_equal(again.encode(TEXTS), ids)
  assert (again.vocab_size, again.eot_id, again.context_length) == (tok.vocab_size, tok.eot_id, 24)


def test_trained_tokenizer_from_a_path(tmp_path):
  corpus = ["a red circle", "a blue square on the left", "two green stars"] * 50
  tok = train_bpe(corpus, vocab_size=300)
  path = tmp_path / "tok.json"
  tok.save(str(path))
  loaded = get_tokenizer(_data_config(str(path)), 16)
  assert loaded.decode(loaded.encode(["Two green  STARS"])[0]) == "two green stars"


def test_user_tokenizer_without_end_token_gets_one(tmp_path):
  tok = train_bpe(["hello world"] * 10, vocab_size=270)
  spec = json.loads(tok.to_str())
  spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] != "<eot>"]
  path = tmp_path / "no_eot.json"
  path.write_text(json.dumps(spec))
  loaded = get_tokenizer(_data_config(str(path)), 8)
  assert (loaded.encode(["hello world"]) == loaded.eot_id).sum() == 1


def _tiny_clip_vocab(path, merges):
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.write("\n".join(["#version: 0.2"] + merges) + "\n")


def test_clip_bpe_file_format(tmp_path):
  path = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
  _tiny_clip_vocab(path, ["t h", "th e</w>", "c a", "ca t</w>", "o n</w>"])
  tok = get_tokenizer(_data_config(f"clip-bpe:{path}"), 8)
  assert tok.vocab_size == 512 + 5 + 2
  sot, eot = 512 + 5, 512 + 6
  assert tok.eot_id == eot
  the, cat, on = 512 + 1, 512 + 3, 512 + 4
  byte = clip_bpe.ClipBPE([]).encoder  # the 512 byte-level entries
  ids = tok.encode(["The cat on a mat!", "the " * 20])
  assert ids[0].tolist() == [sot, the, cat, on, byte["a</w>"], byte["m"], byte["a"], eot]  # truncated
  assert ids[1, 0] == sot and ids[1, -1] == eot and (ids[1] == eot).sum() == 1
  assert tok.decode(ids[0]) == "the cat on a ma"
  assert tok.encode(["a!"]).tolist()[0][:4] == [sot, byte["a</w>"], byte["!</w>"], eot]
  np.testing.assert_array_equal(tokenizer_from_json(tok.to_json()).encode(TEXTS), tok.encode(TEXTS))


def test_missing_tokenizer_file_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.json"):
    get_tokenizer(_data_config(str(tmp_path / "nope.json")), 8)


def test_train_tokenizer_command(tmp_path):
  corpus = tmp_path / "captions.txt"
  corpus.write_text("a red circle\na blue square on the left\n" * 20)
  out = tmp_path / "bpe.json"
  main(["train-tokenizer", "--out", str(out), "--corpus", str(corpus), "--vocab-size", "300"])
  tok = get_tokenizer(_data_config(str(out)), 8)
  assert tok.decode(tok.encode(["A red  square"])[0]) == "a red square"
