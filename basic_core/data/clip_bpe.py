"""OpenAI CLIP's byte-level BPE, read from its `bpe_simple_vocab_16e6.txt.gz`, without torch.

Follows CLIP's `simple_tokenizer.py` (MIT). Two dependencies are left out: `ftfy` (mojibake repair;
we only unescape HTML) and `regex` (Unicode classes; `re` equivalents below match CLIP on ASCII and on
letters/digits of other scripts, and may split rare symbols such as superscripts differently).
"""

from __future__ import annotations

import functools
import gzip
import html
import re

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
NUM_MERGES = 49152 - 256 - 2  # CLIP reads merge lines 1..48894 of the file
_PATTERN = re.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+", re.IGNORECASE)


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
  """GPT-2's reversible map from bytes to printable characters."""
  bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
  cs = bs[:]
  extra = 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + extra)
      extra += 1
  return dict(zip(bs, map(chr, cs)))


def read_merges(path: str) -> list[tuple[str, str]]:
  with gzip.open(path, "rt", encoding="utf-8") as f:
    lines = f.read().split("\n")
  return [tuple(line.split()) for line in lines[1:NUM_MERGES + 1] if line.strip()]


def clean(text: str) -> str:
  return " ".join(html.unescape(html.unescape(text)).split()).lower()


class ClipBPE:
  """CLIP's vocabulary: 256 bytes, 256 word-final bytes, the merges, then SOT and EOT."""

  def __init__(self, merges: list[tuple[str, str]]):
    self.merges = [tuple(m) for m in merges]
    units = list(bytes_to_unicode().values())
    vocab = units + [u + "</w>" for u in units] + ["".join(m) for m in self.merges] + [SOT, EOT]
    self.encoder = {token: i for i, token in enumerate(vocab)}
    self.decoder = dict(enumerate(vocab))
    self.ranks = {m: i for i, m in enumerate(self.merges)}
    self.byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
    self.sot_id, self.eot_id = self.encoder[SOT], self.encoder[EOT]
    self._cache = {SOT: SOT, EOT: EOT}

  def bpe(self, token: str) -> list[str]:
    if token in self._cache:
      return self._cache[token].split(" ")
    word = list(token[:-1]) + [token[-1] + "</w>"]
    while len(word) > 1:
      pairs = {(a, b) for a, b in zip(word, word[1:])}
      best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
      if best not in self.ranks:
        break
      merged, i = [], 0
      while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == best:
          merged.append(word[i] + word[i + 1])
          i += 2
        else:
          merged.append(word[i])
          i += 1
      word = merged
    self._cache[token] = " ".join(word)
    return word

  def ids(self, text: str) -> list[int]:
    units = bytes_to_unicode()
    out = []
    for token in _PATTERN.findall(clean(text)):
      out.extend(self.encoder[t] for t in self.bpe("".join(units[b] for b in token.encode("utf-8"))))
    return out

  def decode(self, ids) -> str:
    text = "".join(self.decoder[int(i)] for i in ids)
    raw = bytearray(self.byte_decoder[c] for c in text)
    return raw.decode("utf-8", errors="replace").replace("</w>", " ").strip()
