"""The documentation is a short landing page (README.md) and pages beside the code: every relative link
resolves (file and heading), every folder README is one click from the landing page, and the tables that
a command generates are still what that command prints from the committed result files."""

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
LANDING = ROOT / "README.md"
MAX_LANDING_LINES = 250
PAGES = ("README.md", "ARCHITECTURE.md", "experiments/README.md", "basic_core/perf/README.md",
         "theory/README.md", "notebooks/README.md")
SKIP_DIRS = {"runs", "node_modules", "__pycache__"}

FENCE = re.compile(r"^```.*?^```", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def prose(text: str) -> str:
  """The text without code blocks and code spans, where brackets and '#' are code, not links or headings."""
  return CODE_SPAN.sub("", FENCE.sub("", text))


def anchors(page: Path) -> set[str]:
  """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
  seen: dict[str, int] = {}
  ids = set()
  for title in HEADING.findall(FENCE.sub("", page.read_text())):
    slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
    n = seen.get(slug, 0)
    seen[slug] = n + 1
    ids.add(slug if n == 0 else f"{slug}-{n}")
  return ids


def relative_links(page: Path) -> list[tuple[Path, str]]:
  """(target file, anchor or '') of every link that is neither a URL nor mail."""
  out = []
  for target in LINK.findall(prose(page.read_text())):
    if re.match(r"[a-z][a-z0-9+.-]*:", target):
      continue
    path, _, anchor = target.partition("#")
    out.append(((page.parent / path).resolve() if path else page.resolve(), anchor))
  return out


def folder_readmes() -> list[Path]:
  """Every README.md below the root, outside hidden, build and run folders."""
  found = []
  for here, dirs, files in os.walk(ROOT):
    dirs[:] = [d for d in dirs if not (d.startswith(".") or d in SKIP_DIRS or d.endswith(".egg-info"))]
    if "README.md" in files and Path(here) != ROOT:
      found.append(Path(here, "README.md").resolve())
  return sorted(found)


def test_landing_page_is_short():
  n = len(LANDING.read_text().splitlines())
  assert n <= MAX_LANDING_LINES, (f"README.md has {n} lines (at most {MAX_LANDING_LINES}): move the long "
                                  "part next to its code, into that folder's README, and link it")


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page):
  broken = []
  for target, anchor in relative_links(ROOT / page):
    if not target.exists():
      broken.append(f"{target.relative_to(ROOT)} (no such file)")
    elif anchor and target.suffix == ".md" and anchor not in anchors(target):
      broken.append(f"{target.relative_to(ROOT)}#{anchor} (no such heading)")
  assert not broken, f"{page} links to: " + "; ".join(broken)


def test_every_folder_readme_is_one_click_from_the_landing_page():
  linked = {target for target, _ in relative_links(LANDING)}
  missing = [str(p.relative_to(ROOT)) for p in [*folder_readmes(), ROOT / "ARCHITECTURE.md"]
             if p not in linked]
  assert not missing, f"README.md does not link {missing}"


def test_link_check_sees_a_broken_link_and_a_missing_heading(tmp_path):
  """The checks above can fail: a page with one dead file link and one dead heading link."""
  (tmp_path / "a.md").write_text("# Title\n\n[ok](#title) [dead](b.md) [gone](a.md#nothing)\n"
                                 "`[code](c.md)`\n```\n[code](d.md)\n```\n")
  links = relative_links(tmp_path / "a.md")
  assert [(t.name, a) for t, a in links] == [("a.md", "title"), ("b.md", ""), ("a.md", "nothing")]
  assert anchors(tmp_path / "a.md") == {"title"}


def test_negatives_table_and_verdicts_are_what_the_analysis_prints():
  """experiments/README.md holds `python -m experiments.negatives` output for the committed pilot."""
  from experiments import negatives
  data = ROOT / "paper_figures/data"
  results = pd.read_csv(data / "negatives_pilot.csv")
  summary = negatives.summarize(results, pd.read_csv(data / "negatives_pilot_probes.csv"))
  page = (ROOT / "experiments/README.md").read_text()
  assert negatives.means_table(results) in page, "the negatives table differs from the analysis: re-paste it"
  verdicts = "\n".join(f"- {s}" for s in summary["verdicts"])
  assert verdicts in page, "the negatives verdicts differ from the analysis: re-paste them"


def test_openclip_table_is_what_compare_table_prints():
  """basic_core/perf/README.md holds `python -m basic_core.bench compare-table` of the committed lines."""
  from basic_core.perf import compare
  lines = (ROOT / "paper_figures/data/compare_openclip.jsonl").read_text().splitlines()
  table = compare.table([json.loads(line) for line in lines if line.strip()])
  assert table in (ROOT / "basic_core/perf/README.md").read_text(), (
      "the OpenCLIP table differs from compare-table's output: re-paste it")


def test_false_negative_table_is_the_committed_rates():
  """experiments/README.md's false-negative table is `negatives_figures.fn_table` of the committed rates
  (`make fn-rates`), and the objects world meets its target there: at most 1% at G = 4,096."""
  from paper_figures import negatives_figures
  rates = negatives_figures.read_fn_rates(ROOT / "paper_figures/data/false_negatives.jsonl")
  assert negatives_figures.fn_table(rates) in (ROOT / "experiments/README.md").read_text(), "re-paste it"
  objects = rates[(rates["world"] == "objects") & (rates["group_size"] == 4096)]
  assert len(objects) == 1 and objects["rate"].iloc[0] <= 0.01


def test_grid_table_is_what_the_analysis_prints():
  """experiments/README.md's table of the testbed grid is `negatives.means_table` of the committed grid."""
  from experiments import negatives
  results = pd.read_csv(ROOT / "paper_figures/data/negatives_grid.csv")
  assert negatives.means_table(results) in (ROOT / "experiments/README.md").read_text(), "re-paste it"
