"""Subword tokenizers with one contract: int32 [N, L] rows of ids, exactly one end token, zero padding.

The text tower pools at the end token, so every row holds it exactly once, even when the caption is
truncated or contains the token's text. A tokenizer serialises to JSON so checkpoints carry it.
Backends: a HF `tokenizers` JSON (the shipped BPE for the built-in sets, or a user's), or CLIP's BPE.
"""

from __future__ import annotations

import json
import pathlib
import unicodedata
from collections.abc import Iterable

import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from basic_core.data import clip_bpe

BUILTIN = pathlib.Path(__file__).parent / "assets" / "scenes_bpe.json"  # `train-tokenizer` wrote it
PAD, EOT = "<pad>", "<eot>"
END_TOKENS = (EOT, "<|endoftext|>", "</s>", "[SEP]", "<eos>")  # looked for in a user's tokenizer
_FORMAT = "basic-jax-tokenizer/1"


class _HF:
  """A HF `tokenizers` model; an end token is added if the file has none of END_TOKENS."""

  def __init__(self, tok: tokenizers.Tokenizer):
    tok.no_padding()
    tok.no_truncation()
    if not any(tok.token_to_id(t) is not None for t in END_TOKENS):
      tok.add_special_tokens([EOT])
    self.tok = tok
    self.eot_id = next(tok.token_to_id(t) for t in END_TOKENS if tok.token_to_id(t) is not None)
    self.bos_id = None
    self.special_ids = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    self.vocab_size = tok.get_vocab_size(with_added_tokens=True)

  def ids(self, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

  def decode(self, ids: list[int]) -> str:
    return self.tok.decode(ids, skip_special_tokens=True).strip()

  def spec(self) -> dict:
    return dict(kind="hf", tokenizer=json.loads(self.tok.to_str()))


class _Clip:
  """CLIP's BPE: rows start with the start token, as CLIP's do."""

  def __init__(self, bpe: clip_bpe.ClipBPE):
    self.bpe = bpe
    self.eot_id, self.bos_id = bpe.eot_id, bpe.sot_id
    self.special_ids = {bpe.sot_id, bpe.eot_id}
    self.vocab_size = len(bpe.encoder)

  def ids(self, texts: list[str]) -> list[list[int]]:
    return [self.bpe.ids(t) for t in texts]

  def decode(self, ids: list[int]) -> str:
    return self.bpe.decode(ids)

  def spec(self) -> dict:
    return dict(kind="clip-bpe", merges=[" ".join(m) for m in self.bpe.merges])


class Tokenizer:
  """Texts -> int32 [N, context_length]: (start,) ids, one end token, then pad_id 0."""

  pad_id = 0

  def __init__(self, backend: _HF | _Clip, context_length: int):
    prefix = 1 if backend.bos_id is not None else 0
    if context_length < 1 + prefix:
      raise ValueError(f"context_length {context_length} leaves no room for the end token")
    self._backend = backend
    self.context_length = context_length
    self.vocab_size = backend.vocab_size
    self.eot_id = backend.eot_id

  def encode(self, texts: Iterable[str]) -> np.ndarray:
    texts = [normalise(t) for t in texts]
    b = self._backend
    prefix = [] if b.bos_id is None else [b.bos_id]
    room = self.context_length - 1 - len(prefix)
    out = np.full((len(texts), self.context_length), self.pad_id, np.int32)
    for row, ids in enumerate(b.ids(texts)):
      seq = prefix + [i for i in ids if i not in b.special_ids][:room] + [self.eot_id]
      out[row, :len(seq)] = seq
    return out

  def decode(self, ids) -> str:
    ids = [int(i) for i in ids]
    ids = ids[:ids.index(self.eot_id)] if self.eot_id in ids else ids
    return self._backend.decode([i for i in ids if i not in self._backend.special_ids])

  def to_json(self) -> str:
    return json.dumps(dict(format=_FORMAT, context_length=self.context_length, **self._backend.spec()))


def normalise(text: str) -> str:
  return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def tokenizer_from_json(s: str) -> Tokenizer:
  spec = json.loads(s)
  if spec.get("format") != _FORMAT:
    raise ValueError(f"not a basic-jax tokenizer (format {spec.get('format')!r})")
  if spec["kind"] == "hf":
    backend = _HF(tokenizers.Tokenizer.from_str(json.dumps(spec["tokenizer"])))
  else:
    backend = _Clip(clip_bpe.ClipBPE([tuple(m.split()) for m in spec["merges"]]))
  return Tokenizer(backend, spec["context_length"])


def get_tokenizer(data_config, context_length: int) -> Tokenizer:
  """data.tokenizer: 'builtin' (the shipped BPE), a tokenizers JSON path, or 'clip-bpe:PATH'."""
  name = data_config.tokenizer
  path = pathlib.Path(name.removeprefix("clip-bpe:")) if name != "builtin" else BUILTIN
  if not path.is_file():
    raise FileNotFoundError(f"data.tokenizer={name!r}: no file {path}")
  if name.startswith("clip-bpe:"):
    return Tokenizer(_Clip(clip_bpe.ClipBPE(clip_bpe.read_merges(str(path)))), context_length)
  return Tokenizer(_HF(tokenizers.Tokenizer.from_file(str(path))), context_length)


def train_bpe(texts: Iterable[str], vocab_size: int) -> tokenizers.Tokenizer:
  """A byte-level BPE (no unknown tokens) with <pad> = 0 and <eot> = 1, lowercasing its input."""
  tok = tokenizers.Tokenizer(models.BPE())
  tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOT], min_frequency=2,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  tok.train_from_iterator(texts, trainer)
  return tok
