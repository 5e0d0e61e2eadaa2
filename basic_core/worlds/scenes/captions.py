"""Alt-text-like captions for scenes, from a small grammar.

Paraphrases, varied word order and partial descriptions mean that a caption rarely names every
attribute, as web alt-text rarely does; `mentions` parses a caption back into the attributes it names.
"""

from __future__ import annotations

import random
import re

import numpy as np

from basic_core.worlds.scenes import scenes as S

SHAPE_WORDS = {"circle": ("circle", "disc", "round shape"), "square": ("square", "box"),
               "triangle": ("triangle",), "diamond": ("diamond", "rhombus"), "cross": ("cross", "plus sign"),
               "hexagon": ("hexagon",), "heart": ("heart", "heart shape"), "star": ("star", "star shape")}
COLOUR_WORDS = {c: (c,) for c in S.COLOURS} | {"purple": ("purple", "violet"), "cyan": ("cyan", "turquoise")}
SIZE_WORDS = {"small": ("small", "tiny", "little"), "medium": ("medium", "medium-sized", "mid-sized"),
              "large": ("large", "big", "huge")}
FILL_ADJECTIVES = {"solid": ("solid", "filled"), "outlined": ("outlined", "hollow"),
                   "striped": ("striped", "stripy"), "checkered": ("checkered", "chequered", "checked")}
FILL_PHRASES = {"solid": ("with a solid fill",), "outlined": ("drawn in outline",),
                "striped": ("with stripes",), "checkered": ("with a checkerboard pattern",)}
POSITION_PHRASES = {
    "top left": ("in the top left", "in the upper left corner", "at the top left"),
    "top": ("at the top", "in the top middle"),
    "top right": ("in the top right", "in the upper right corner", "at the top right"),
    "left": ("on the left", "at the left side"),
    "center": ("in the center", "in the middle", "in the centre"),
    "right": ("on the right", "at the right side"),
    "bottom left": ("in the bottom left", "in the lower left corner", "at the bottom left"),
    "bottom": ("at the bottom", "in the bottom middle"),
    "bottom right": ("in the bottom right", "in the lower right corner", "at the bottom right"),
}
BACKGROUND_WORDS = {"black": ("black", "dark"), "gray": ("gray", "grey"), "white": ("white", "light"),
                    "noisy": ("noisy", "grainy")}
COUNT_WORDS = {1: ("one", "a single"), 2: ("two", "2", "a pair of"), 3: ("three", "3")}
GENERIC_NOUNS = ("shape", "object", "thing")
FRAMES = ("{}", "{}", "{}.", "a picture of {}", "an image of {}", "photo of {}", "clip art of {}",
          "illustration: {}", "{} (digital art)", "drawing of {}", "{} - stock image")


def plural(noun: str) -> str:
  return noun + ("es" if noun.endswith(("s", "x")) else "s")


def article(phrase: str) -> str:
  return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _and_list(items: list[str]) -> str:
  return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _describe(r: random.Random, obj: dict, count: int = 1) -> str:
  """One object (or `count` alike ones), naming a random subset of its attributes."""
  say_shape = r.random() < 0.85
  say_colour = r.random() < 0.8 or not say_shape
  say_size, say_fill = r.random() < 0.45, r.random() < 0.45
  fill_after = say_fill and r.random() < 0.3
  noun = r.choice(SHAPE_WORDS[obj["shape"]] if say_shape else GENERIC_NOUNS)
  adjectives = [r.choice(words) for say, words in (
      (say_size, SIZE_WORDS[obj["size"]]), (say_fill and not fill_after, FILL_ADJECTIVES[obj["fill"]]),
      (say_colour, COLOUR_WORDS[obj["colour"]])) if say]
  if r.random() < 0.25:
    r.shuffle(adjectives)
  tail = " " + r.choice(FILL_PHRASES[obj["fill"]]) if fill_after else ""
  if count > 1:
    return f"{r.choice(COUNT_WORDS[count])} {' '.join(adjectives + [plural(noun)])}{tail}"
  form = r.random()
  if form < 0.65 or not adjectives:
    return article(" ".join(adjectives + [noun])) + tail
  if form < 0.85:
    return f"{article(noun)} that is {_and_list(adjectives)}{tail}"
  return ", ".join([noun] + adjectives) + tail


def _locate(r: random.Random, phrase: str, position: str) -> str:
  """Adds the object's grid position about half of the time, after or before it."""
  where = r.random()
  if where < 0.4:
    return f"{phrase} {r.choice(POSITION_PHRASES[position])}"
  if where < 0.5:
    return f"{position}: {phrase}"
  if where < 0.55:
    return f"{r.choice(POSITION_PHRASES[position])}, {phrase}"
  return phrase


def _count_phrase(r: random.Random, n: int) -> str:
  return f"{r.choice(COUNT_WORDS[n])} {plural(r.choice(GENERIC_NOUNS))}"


def caption(scenes: S.Scenes, i: int) -> str:
  """Scene i's caption; a fixed function of the scene (its caption_seed draws the wording)."""
  r = random.Random(int(scenes.caption_seed_N[i]))
  record = scenes.record(i)
  objects, n = record["objects"], record["count"]
  alike = all(o | {"position": ""} == objects[0] | {"position": ""} for o in objects)
  if n == 1:
    core = _locate(r, _describe(r, objects[0]), objects[0]["position"])
    if r.random() < 0.15:
      core = f"{r.choice(COUNT_WORDS[1])} {r.choice(GENERIC_NOUNS)}: {core}"
  elif alike:
    core = _describe(r, objects[0], count=n)
  else:
    order = r.sample(objects, n)
    mode = r.random()
    if mode < 0.55:
      core = _and_list([_locate(r, _describe(r, o), o["position"]) for o in order])
      if r.random() < 0.4:
        core = f"{_count_phrase(r, n)}: {core}"
    elif mode < 0.85:
      one = _locate(r, _describe(r, order[0]), order[0]["position"])
      core = r.choice((f"{_count_phrase(r, n)}, including {one}", f"{one} and other shapes",
                       f"{one} among other objects"))
    else:
      core = _count_phrase(r, n)
  if r.random() < 0.35:
    ground = r.choice(BACKGROUND_WORDS[record["background"]]) + " background"
    core = r.choice((f"{core} on {article(ground)}", f"{core} against {article(ground)}",
                     f"{ground}, {core}"))
  text = r.choice(FRAMES).format(core)
  return text[0].upper() + text[1:] if r.random() < 0.3 else text


def captions(scenes: S.Scenes, idx: np.ndarray) -> list[str]:
  return [caption(scenes, int(i)) for i in idx]


def _lexicon() -> dict[str, tuple[str, object]]:
  """Every phrase of the grammar -> (attribute, value), plurals of shape words included."""
  table = {}
  for attribute, words in (("shape", SHAPE_WORDS), ("colour", COLOUR_WORDS), ("size", SIZE_WORDS),
                           ("fill", FILL_ADJECTIVES), ("fill", FILL_PHRASES), ("position", POSITION_PHRASES),
                           ("count", COUNT_WORDS)):
    for value, phrases in words.items():
      for phrase in phrases:
        table[phrase] = (attribute, value)
        if attribute == "shape":
          table[plural(phrase)] = (attribute, value)
  table |= {p: ("position", p) for p in S.POSITIONS}
  table |= {f"{w} background": ("background", b) for b, ws in BACKGROUND_WORDS.items() for w in ws}
  return table


_LEXICON = _lexicon()
_PHRASE_RE = re.compile(r"\b(" + "|".join(re.escape(p) for p in sorted(_LEXICON, key=len, reverse=True))
                        + r")\b")


def mentions(text: str) -> dict[str, set]:
  """The attribute values a caption names, e.g. {'colour': {'red'}, 'count': {2}, ...}."""
  found = {a: set() for a in ("shape", "colour", "size", "fill", "position", "background", "count")}
  for match in _PHRASE_RE.finditer(text.lower()):
    attribute, value = _LEXICON[match.group(1)]
    found[attribute].add(value)
  return found
