"""Rewrites the generated tables of the docs from the committed result files, so no table is typed by hand.

    python scripts/paste_tables.py           # rewrite every stale table in place
    python scripts/paste_tables.py --check   # list the stale ones, exit 1 if any (tests/test_docs.py)

A generated table sits between `<!-- table:NAME -->` and `<!-- /table:NAME -->` lines (invisible in rendered
markdown); `TABLES` says, per NAME, which page holds it and the function of the analysis code that prints
it from the committed files. `make grid-results` and `make mechanism-results` run it after their analyses.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from basic_core.perf import compare  # noqa: E402
from experiments import mechanism, negatives  # noqa: E402
from paper_figures import negatives_figures, towers_figure  # noqa: E402

DATA = ROOT / "paper_figures" / "data"
EXPERIMENTS = "experiments/README.md"


def _csv(name: str) -> pd.DataFrame:
  return pd.read_csv(DATA / name)


def _pilot_verdicts() -> str:
  summary = negatives.summarize(_csv("negatives_pilot.csv"), _csv("negatives_pilot_probes.csv"))
  return "\n".join(f"- {s}" for s in summary["verdicts"])


def _grid_verdicts() -> str:
  """The committed summary's verdicts that have an interval (one-seed arms say "no interval"), then its
  finding per arm that could be tested."""
  summary = json.loads((DATA / "negatives_grid_summary.json").read_text())
  verdicts = [f"- {s}" for s in summary["verdicts"] if "no interval" not in s]
  findings = [f"- **{arm}**: {s}" for arm, s in summary["findings"].items()
              if not s.startswith("not testable")]
  heading = "The candidate finding, per arm (`experiments/negatives.py`):"
  return "\n".join(verdicts + ["", heading, ""] + findings)


def _towers() -> str:
  """The (G, m) grid's cells so far, then the tables theory/README.md section 10 reads."""
  df = _csv("towers_grid.csv")
  seeds = df.groupby(["estimator", "group_size"]).seed.nunique()
  head = f"{len(df)} cells; seeds per estimator and G: " + ", ".join(
      f"{e} G = {g}: {n}" for (e, g), n in seeds.items())
  return head + "\n\n" + towers_figure.tables(df)


def _pilot_steps() -> str:
  """The 1,000-step towers pilot's evaluations (every 250 steps) from its metrics records."""
  records = [json.loads(line) for line in (DATA / "towers_pilot_objects_p8_1000_steps.jsonl").open()]
  tasks = ("shape", "colour", "size", "fill", "position", "count")
  rows = ["| step | " + " | ".join(tasks) + " | i2t R@1 |", "|---:|" + "---:|" * (len(tasks) + 1)]
  for r in records:
    cells = [f"{r[f'zeroshot_{t}_top1']:.3f}" for t in tasks] + [f"{r['retrieval_i2t_r1']:.3f}"]
    rows.append(f"| {r['step']:,} | " + " | ".join(cells) + " |")
  return "\n".join(rows)


def _attribute_swap() -> str:
  """Per run and prompts per class: each attribute's swap accuracy / zero-shot top-1 (make attribute-swap)."""
  rows = [json.loads(line) for line in (DATA / "attribute_swap.jsonl").open()]
  attributes = list(dict.fromkeys(r["attribute"] for r in rows))
  chance = {r["attribute"]: r["chance"] for r in rows}
  out = ["| run | step | prompts | " + " | ".join(f"{a} (chance {chance[a]:.2f})" for a in attributes) + " |",
         "|---|---:|---:|" + "---:|" * len(attributes)]
  runs = {}
  for r in rows:
    runs.setdefault((r["run"], r["step"], r["prompts"]), {})[r["attribute"]] = r
  for (run, step, prompts), by in runs.items():
    label = run + (" (initial weights)" if by[attributes[0]]["control"] else "")
    cells = [f"{by[a]['swap']:.3f} / {by[a]['zero_shot']:.3f}" for a in attributes]
    out.append(f"| {label} | {step:,} | {prompts} | " + " | ".join(cells) + " |")
  return "\n".join(out)


def _mechanism_summary() -> dict:
  return json.loads((DATA / "mechanism_summary.json").read_text())


def _openclip() -> str:
  lines = (DATA / "compare_openclip.jsonl").read_text().splitlines()
  return compare.table([json.loads(line) for line in lines if line.strip()])


TABLES = {
    "negatives-pilot": (EXPERIMENTS, lambda: negatives.means_table(_csv("negatives_pilot.csv"))),
    "negatives-pilot-verdicts": (EXPERIMENTS, _pilot_verdicts),
    "false-negatives": (EXPERIMENTS, lambda: negatives_figures.fn_table(
        negatives_figures.read_fn_rates(DATA / "false_negatives.jsonl"))),
    "towers-pilot-steps": (EXPERIMENTS, _pilot_steps),
    "attribute-swap": (EXPERIMENTS, _attribute_swap),
    "negatives-grid": (EXPERIMENTS, lambda: negatives.means_table(_csv("negatives_grid.csv"))),
    "negatives-grid-verdicts": (EXPERIMENTS, _grid_verdicts),
    "mechanism-means": (EXPERIMENTS, lambda: mechanism.means_table(_csv("mechanism.csv"))),
    "mechanism-recovered": (EXPERIMENTS, lambda: mechanism.recovered_table(_mechanism_summary())),
    "mechanism-answer": (EXPERIMENTS, lambda: "\n".join(f"- {a}" for a in _mechanism_summary()["answer"])),
    "mechanism-geometry": (EXPERIMENTS, lambda: mechanism.geometry_table(
        _csv("mechanism.csv"), pd.read_json(DATA / "mechanism_geometry.jsonl", lines=True))),
    "mechanism-queue": (EXPERIMENTS, lambda: mechanism.geometry_table(
        _csv("mechanism.csv"), pd.read_json(DATA / "mechanism_geometry.jsonl", lines=True),
        mechanism.QUEUE_GEOMETRY)),
    "towers-grid": ("theory/README.md", _towers),
    "openclip": ("basic_core/perf/README.md", _openclip),
}


def region(name: str) -> re.Pattern:
  return re.compile(rf"(<!-- table:{re.escape(name)} -->\n)(.*?)(<!-- /table:{re.escape(name)} -->)", re.S)


def paste(text: str, name: str, table: str) -> str:
  """`text` with NAME's region holding `table`; a page without the region is an error."""
  pattern = region(name)
  if not pattern.search(text):
    raise KeyError(f"no <!-- table:{name} --> region")
  return pattern.sub(lambda m: m.group(1) + table.rstrip("\n") + "\n" + m.group(3), text, count=1)


def stale(root: Path = ROOT) -> list[str]:
  """Names whose region differs from what the analysis prints now."""
  out = []
  for name, (page, make) in TABLES.items():
    text = (root / page).read_text()
    if paste(text, name, make()) != text:
      out.append(f"{name} ({page})")
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--check", action="store_true", help="list stale tables, change nothing")
  args = parser.parse_args(argv)
  if args.check:
    names = stale()
    print("\n".join(f"stale: {n}" for n in names) or "every generated table is current")
    return 1 if names else 0
  for name, (page, make) in TABLES.items():
    path = ROOT / page
    path.write_text(paste(path.read_text(), name, make()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
