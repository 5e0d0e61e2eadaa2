"""The direction of imports, written once as data (LAYERS): an import may only go to its own layer or a
lower one, function-level imports included; on top of the order a few imports are never made (NEVER),
there are no cycles, and the results layer (statistics, figures) loads without JAX or the trainer.
ARCHITECTURE.md shows the same order: its block between the markers is `render()` of this data.

    python tests/test_structure.py --root /some/checkout    # the climbing imports of another tree
    python tests/test_structure.py --write                  # rewrite ARCHITECTURE.md's layer block

The data lives here, beside the tests that hold it: nothing in the packages needs it at run time."""

import argparse
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first: (dotted prefixes, what lives there). A module belongs to the layer of its longest prefix,
# so `basic_core.perf` (and its command-line doors `basic_core.bench`, `basic_core.plan`) sits above the
# rest of `basic_core`. Every top-level folder and every basic_core subpackage is named here.
LAYERS = (
  (("analysis",), "statistics, verdicts, the command-line error contract"),
  (("theory",), "the bias and the bounds, with their checks; no model"),
  (("paper_figures",), "figures drawn from result files; no JAX"),
  (("basic_core.models",), "the towers and their blocks"),
  (("basic_core.configs",), "configs and presets (remat names from models)"),
  (("basic_core.data",), "readers, tokenizer, pipeline, the world registry"),
  (("basic_core.worlds",), "the built-in worlds, benchmarks, robustness suites"),
  (("basic_core",), "the method: losses, step, state, train, evaluate..."),
  (("basic_core.perf", "basic_core.bench", "basic_core.plan"), "benchmarks, compiled memory, the scale plan"),
  (("experiments",), "sweeps: presets, the runner, the Ray backend"),
  (("scripts", "notebooks", "tests"), "launchers, notebooks, tests: may import anything"),
)
# Imports the order allows but the design does not: (importing prefix, imported prefixes).
NEVER = (
  ("basic_core", ("theory", "paper_figures")),  # the method and its tools write results; others read them
  ("paper_figures", ("basic_core", "experiments")),  # figures read result files only
  ("basic_core.step", ("basic_core.data", "basic_core.worlds")),  # augmentation is basic_core/augment.py
)
NOT_CODE = ("runs", "build", "dist", "__pycache__")  # top-level folders that hold no code (.gitignore)


def within(name: str, prefix: str) -> bool:
  return name == prefix or name.startswith(prefix + ".")


def layer_of(name: str) -> int | None:
  """Index in LAYERS of the longest prefix that contains `name`; None for a third-party module."""
  matches = [(len(p), i) for i, (prefixes, _) in enumerate(LAYERS) for p in prefixes if within(name, p)]
  return max(matches)[1] if matches else None


def layer_name(index: int) -> str:
  return ", ".join(LAYERS[index][0])


def module_name(path: Path, root: Path) -> str:
  parts = path.relative_to(root).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
  """Every Python file under the top-level folders LAYERS names, by module name."""
  tops = sorted({p.split(".")[0] for prefixes, _ in LAYERS for p in prefixes})
  return {module_name(p, root): p for top in tops for p in sorted((root / top).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> list[tuple[int, str]]:
  """(line, first-party module) of every import in the file, function-level ones included."""
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  found = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      targets = [f"{base}.{alias.name}" for alias in node.names]
    else:
      continue
    for target in targets:
      while target and target not in known:  # `from pkg import name`: name is a module, or lives in pkg
        target = target.rpartition(".")[0]
      if target and not within(name, target):  # not itself or its package
        found.append((node.lineno, target))
  return sorted(set(found))


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
  mods = modules(root)
  return {name: {t for _, t in imports_of(name, path, set(mods))} for name, path in mods.items()}


def wrong_imports(root: Path = ROOT) -> list[str]:
  """'file:line: module (layer) imports target (layer)' for every import that climbs or that NEVER
  forbids (every module found has a layer: `modules` reads only the folders LAYERS names)."""
  mods = modules(root)
  out = []
  for name, path in mods.items():
    where, source = path.relative_to(root), layer_of(name)
    for line, target in imports_of(name, path, set(mods)):
      layer = layer_of(target)
      if layer > source:
        out.append(f"{where}:{line}: {name} (layer {source + 1}: {layer_name(source)}) imports {target} "
                   f"(layer {layer + 1}: {layer_name(layer)}), a higher layer")
      out += [f"{where}:{line}: {name} imports {target}, which {prefix} never imports"
              for prefix, forbidden in NEVER
              if within(name, prefix) and any(within(target, f) for f in forbidden)]
  return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


BEGIN, END = "<!-- layers: begin (rendered from tests/test_structure.py) -->", "<!-- layers: end -->"


def render() -> str:
  """The layer block of ARCHITECTURE.md, highest layer first: each row imports only its own row and the
  rows below it."""
  width = max(len(layer_name(i)) for i in range(len(LAYERS)))
  rows = [f"{i + 1:>3}  {layer_name(i):<{width}}  {what}" for i, (_, what) in enumerate(LAYERS)][::-1]
  never = [f"  {prefix} never imports {', '.join(forbidden)}" for prefix, forbidden in NEVER]
  head = ["layer (an import goes down this list or stays in its row, never up)"]
  tail = ["", "and, though the order would allow it:", *never]
  return "\n".join([BEGIN, "```", *head, *rows, *tail, "```", END])


def architecture_block(text: str) -> str:
  start, end = text.index(BEGIN), text.index(END) + len(END)
  return text[start:end]


def test_layers_of_names():
  assert layer_name(layer_of("basic_core.bench")) == layer_name(layer_of("basic_core.perf.cli"))
  assert layer_of("basic_core.losses") < layer_of("basic_core.plan") < layer_of("experiments.runner")
  assert layer_of("basic_core.data.pipeline") < layer_of("basic_core.worlds.scenes")
  assert layer_of("basic_core.worlds.scenes") < layer_of("basic_core.step")
  assert layer_of("analysis.stats") == 0 and layer_of("numpy") is None and layer_of("basic_corex") is None


def test_the_checker_finds_a_climbing_import_inside_a_function(tmp_path):
  (tmp_path / "analysis").mkdir()
  (tmp_path / "analysis" / "__init__.py").write_text("")
  (tmp_path / "analysis" / "stats.py").write_text("import numpy\n\n\ndef f():\n  from theory import bound\n")
  (tmp_path / "theory").mkdir()
  (tmp_path / "theory" / "bound.py").write_text("from analysis.stats import f\n")
  (tmp_path / "basic_core" / "data").mkdir(parents=True)
  (tmp_path / "basic_core" / "data" / "__init__.py").write_text("")
  (tmp_path / "basic_core" / "step.py").write_text("from basic_core.data import pipeline\n")
  assert wrong_imports(tmp_path) == [
    "analysis/stats.py:5: analysis.stats (layer 1: analysis) imports theory.bound (layer 2: theory), "
    "a higher layer",
    "basic_core/step.py:1: basic_core.step imports basic_core.data, which basic_core.step never imports"]


def test_no_import_climbs_a_layer():
  assert wrong_imports() == []


def test_every_folder_and_basic_core_subpackage_has_a_layer():
  """A new top-level folder or basic_core subpackage is placed in the order on purpose, not by default."""
  named = {p for prefixes, _ in LAYERS for p in prefixes}
  folders = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")
             and p.name not in NOT_CODE and not p.name.endswith(".egg-info")}
  subpackages = {f"basic_core.{p.parent.name}" for p in (ROOT / "basic_core").glob("*/__init__.py")}
  assert (folders | subpackages) - named == set()


def test_architecture_shows_the_layers():
  """ARCHITECTURE.md's layer block is rendered from LAYERS (`python tests/test_structure.py --write`)."""
  assert architecture_block((ROOT / "ARCHITECTURE.md").read_text()) == render()


def test_the_cycle_finder_finds_a_cycle():
  assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
  assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
  assert cycles(import_graph()) == []


LIGHT = [(m, ("jax", "basic_core", "orbax")) for m in sorted(modules())
         if m.startswith(("analysis", "paper_figures"))]
LIGHT += [("theory.check", ("jax", "basic_core", "matplotlib", "paper_figures")),
          ("theory.tables", ("jax", "basic_core", "matplotlib", "paper_figures"))]


@pytest.mark.parametrize("module,forbidden", LIGHT)
def test_results_and_theory_load_without_the_trainer(module, forbidden):
  """Redrawing a figure or checking the theory loads no JAX and no trainer (nor, for theory, plotting)."""
  code = f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(forbidden)}))"
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"


COMMANDS = ["basic_core.train", "basic_core.evaluate", "basic_core.data", "basic_core.bench",
            "basic_core.plan", "basic_core.perf.throughput", "basic_core.perf.plan_xla",
            "basic_core.perf.sharded_loss", "basic_core.predict", "basic_core.embed", "basic_core.export",
            "experiments.batch_size_sweep", "experiments.negatives", "experiments.tiny_bound",
            "experiments.gradient_bias", "experiments.embedding_geometry", "experiments.mechanism",
            "experiments.attribute_swap", "theory.check",
            "theory.tables", "theory.bias", "theory.towers_grid",
            "paper_figures.sweep_figures", "paper_figures.theory_figures", "paper_figures.memory_figure",
            "paper_figures.negatives_figures", "paper_figures.mechanism_figure",
            "paper_figures.towers_figure"]


HELP = """
import contextlib, io, runpy, sys
failed = []
for module in sys.argv[1:]:
  sys.argv, out = [module, "--help"], io.StringIO()
  try:
    with contextlib.redirect_stdout(out):
      runpy.run_module(module, run_name="__main__", alter_sys=True)
  except SystemExit as e:
    if e.code == 0 and "usage:" in out.getvalue():
      continue
  failed.append(module)
print(failed)
"""


def test_every_command_answers_help():
  """The command names users, scripts and the README rely on still exist and parse their flags (one
  process for all of them: `python -m X --help` each, through runpy)."""
  out = subprocess.run([sys.executable, "-c", HELP, *COMMANDS], cwd=ROOT, capture_output=True, text=True)
  assert out.stdout.strip().splitlines()[-1:] == ["[]"], out.stdout[-2000:] + out.stderr[-2000:]


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to check (default: this one)")
  parser.add_argument("--write", action="store_true", help="rewrite the layer block of ARCHITECTURE.md")
  args = parser.parse_args()
  if args.write:
    path = ROOT / "ARCHITECTURE.md"
    path.write_text(path.read_text().replace(architecture_block(path.read_text()), render()))
  wrong = wrong_imports(args.root.resolve())
  print("\n".join(wrong) or "no import climbs a layer")
  raise SystemExit(1 if wrong else 0)
