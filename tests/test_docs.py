"""The documentation is a short landing page (README.md) and pages beside the code: every relative link
resolves (file and heading), every folder README is one click from the landing page, and the tables that
a command generates are still what that command prints from the committed result files."""

import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import paste_tables  # noqa: E402

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


def test_every_generated_table_is_what_the_analysis_prints_now():
  """Each `<!-- table:NAME -->` region of the docs is what scripts/paste_tables.py's analysis prints from the
  committed result files (`python scripts/paste_tables.py` rewrites them)."""
  stale = paste_tables.stale()
  assert not stale, f"stale generated tables (run `python scripts/paste_tables.py`): {stale}"


def test_the_table_check_sees_a_stale_table_and_a_missing_region():
  page = "x\n<!-- table:t -->\n| old |\n<!-- /table:t -->\ny\n"
  assert paste_tables.paste(page, "t", "| new |") == page.replace("old", "new")
  assert paste_tables.paste(page, "t", "| old |") == page
  with pytest.raises(KeyError):
    paste_tables.paste("no region", "t", "| new |")


def test_the_objects_world_meets_its_false_negative_target():
  """At most 1% at G = 4,096 in the committed rates (`make fn-rates`)."""
  from paper_figures import negatives_figures
  rates = negatives_figures.read_fn_rates(ROOT / "paper_figures/data/false_negatives.jsonl")
  objects = rates[(rates["world"] == "objects") & (rates["group_size"] == 4096)]
  assert len(objects) == 1 and objects["rate"].iloc[0] <= 0.01
