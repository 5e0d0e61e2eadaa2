"""The one-line error contract of every command: bad input is answered by ONE line on stderr that names
the argument at fault (`error: argument --results: ...`), exit status 2, no traceback;
`BASIC_TRACEBACK=1` keeps the traceback (as the trainer does).

    parser = cli.Parser(description=...)
    parser.add_argument("--results", required=True, type=cli.csv_with("batch_size", "seed"))
    parser.add_argument("--beta", type=cli.number(float, gt=0))
    ...
    with cli.blame("--workdir"):      # an error found after parsing, tied to its argument
      run = load(args.workdir)
    ...
    if __name__ == "__main__":
      sys.exit(cli.run(main))

The argparse `type=` checks below run before a command imports or computes anything heavy, so a bad
path or number costs no JAX start-up. Standard library only: the lowest layer, used by all of them.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import operator
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

# Errors that mean "bad input" (the trainer's set): a pandas EmptyDataError, a json error, a ConfigError
# and a CorruptImage are ValueErrors; FileNotFoundError and NotADirectoryError are OSErrors; a KeyError
# is a column or key a file lacks. Anything else is a bug and keeps its traceback.
EXPECTED = (ValueError, OSError, KeyError)


class CommandError(Exception):
  """Bad input found after parsing, phrased with the argument it came from."""

  def __init__(self, argument: str, message: str):
    super().__init__(f"argument {argument}: {message}")


def one_line(e: BaseException | str) -> str:
  """The message on one line (a KeyError says which key is missing, not its repr)."""
  if isinstance(e, KeyError) and e.args:
    return f"missing key or column {e.args[0]!r}"
  return " ".join(str(e).split()) or type(e).__name__


class Parser(argparse.ArgumentParser):
  """argparse whose usage errors are one line, `error: argument --x: why`, with exit status 2."""

  def error(self, message: str):
    self.exit(2, f"error: {one_line(message)}\n")


@contextlib.contextmanager
def blame(argument: str) -> Iterator[None]:
  """Expected errors raised inside are reported as the fault of `argument`."""
  try:
    yield
  except EXPECTED as e:
    raise CommandError(argument, one_line(e)) from e


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
  """`main(argv)`'s exit status; expected errors become one line on stderr and status 2."""
  try:
    return main(argv) or 0
  except (CommandError, *EXPECTED) as e:
    if os.environ.get("BASIC_TRACEBACK"):
      raise
    print(f"error: {one_line(e)}", file=sys.stderr)
    return 2


# ---- argparse types: each returns the parsed value or raises ArgumentTypeError with the reason -------


def _existing(text: str, kind: str) -> Path:
  path = Path(text)
  if not path.exists():
    raise argparse.ArgumentTypeError(f"{text} does not exist")
  if not (path.is_file() if kind == "file" else path.is_dir()):
    raise argparse.ArgumentTypeError(f"{text} is not a {kind}")
  return path


def existing_file(text: str) -> Path:
  return _existing(text, "file")


def existing_dir(text: str) -> Path:
  return _existing(text, "directory")


def out_dir(text: str) -> Path:
  """A folder to write into: absent (it will be made) or a directory, and no file on its path."""
  path = Path(text)
  for part in (path, *path.parents):
    if part.exists() and not part.is_dir():
      raise argparse.ArgumentTypeError(f"{part} is a file, not a directory")
  return path


def out_file(text: str) -> Path:
  """A file to write: not a directory, and its folder is not a file."""
  path = Path(text)
  if path.is_dir():
    raise argparse.ArgumentTypeError(f"{text} is a directory, not a file")
  out_dir(str(path.parent))
  return path


_COMPARE = {"gt": (">", operator.gt), "ge": (">=", operator.ge), "lt": ("<", operator.lt),
            "le": ("<=", operator.le)}


def number(kind: type = float, **bounds: float) -> Callable[[str], float]:
  """A number of `kind` (int or float) within `bounds`: gt (greater than), ge (at least), lt, le."""
  checks = [(*_COMPARE[name], bound) for name, bound in bounds.items() if bound is not None]

  def parse(text: str):
    try:
      value = kind(text)
    except ValueError:
      value = float("nan")
    if value != value:  # not a number, or NaN
      expected = "an integer" if kind is int else "a number"
      raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    for op, holds, bound in checks:
      if not holds(value, bound):
        raise argparse.ArgumentTypeError(f"must be {op} {bound}, got {text}")
    return value

  return parse


def ints(*, ge: int | None = None) -> Callable[[str], tuple[int, ...]]:
  """Comma-separated integers, e.g. '16,64,256', each at least `ge`."""
  one = number(int, ge=ge)

  def parse(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",")]
    if not all(parts):
      raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return tuple(one(p) for p in parts)

  return parse


def choices(*allowed: str) -> Callable[[str], tuple[str, ...]]:
  """Comma-separated names, each one of `allowed`."""

  def parse(text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(","))
    if unknown := [n for n in names if n not in allowed]:
      raise argparse.ArgumentTypeError(f"unknown {', '.join(map(repr, unknown))}; choose from "
                                       f"{', '.join(allowed)}")
    return names

  return parse


def csv_with(*columns: str) -> Callable[[str], Path]:
  """An existing CSV file whose header has every one of `columns`."""

  def parse(text: str) -> Path:
    path = existing_file(text)
    try:
      with path.open(newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), None)
    except (UnicodeDecodeError, csv.Error) as e:
      raise argparse.ArgumentTypeError(f"{text} is not a CSV file ({one_line(e)})") from None
    if not header:
      raise argparse.ArgumentTypeError(f"{text} is empty (no header row)")
    if missing := [c for c in columns if c not in header]:
      raise argparse.ArgumentTypeError(f"{text} has no column {', '.join(missing)} "
                                       f"(its columns: {', '.join(header[:12])})")
    return path

  return parse
