"""The direction of imports (ARCHITECTURE.md): no cycles, the method never imports its tools or its
readers, and the results layer (statistics, figures) loads without JAX or the trainer."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("basic_core", "experiments", "theory", "paper_figures")
PERF_DOORS = {"basic_core.bench", "basic_core.plan"}  # the command-line entry points of basic_core.perf


def module_name(path: Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
  return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
  """First-party modules `name` imports anywhere in its file (function-level imports count too)."""
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  found = set()
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
      if target and not (name == target or name.startswith(target + ".")):  # not itself or its package
        found.add(target)
  return found


def import_graph() -> dict[str, set[str]]:
  mods = modules()
  return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


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


def test_the_cycle_finder_finds_a_cycle():
  assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
  assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
  assert cycles(import_graph()) == []


def test_import_directions():
  """The method never imports experiments, theory, figures or its performance tools; theory and
  figures never import the trainer; theory never imports figures; the train step never imports data."""
  graph = import_graph()
  rules = [
      ("basic_core", ("experiments", "theory", "paper_figures", "basic_core.perf")),
      ("theory", ("basic_core", "paper_figures")),
      ("paper_figures", ("basic_core",)),
      ("experiments.stats", ("basic_core", "experiments.runner", "paper_figures")),
      ("basic_core.step", ("basic_core.data",)),
  ]
  wrong = []
  for source, forbidden in rules:
    for module, targets in graph.items():
      inside = module == source or module.startswith(source + ".")
      if inside and not module.startswith("basic_core.perf") and module not in PERF_DOORS:
        wrong += [f"{module} -> {t}" for t in targets
                  if any(t == f or t.startswith(f + ".") for f in forbidden)]
  assert wrong == []


def test_perf_tools_are_imported_only_by_their_entry_points():
  graph = import_graph()
  users = {m for m, targets in graph.items() if any(t.startswith("basic_core.perf") for t in targets)}
  assert {m for m in users if not m.startswith("basic_core.perf")} <= PERF_DOORS


LIGHT = [(m, ("jax", "basic_core", "orbax")) for m in sorted(modules()) if m.startswith("paper_figures")]
LIGHT += [("experiments.stats", ("jax", "basic_core", "orbax")),
          ("theory.check", ("jax", "basic_core", "matplotlib", "paper_figures")),
          ("theory.tables", ("jax", "basic_core", "matplotlib", "paper_figures"))]


@pytest.mark.parametrize("module,forbidden", LIGHT)
def test_results_and_theory_load_without_the_trainer(module, forbidden):
  """Redrawing a figure or checking the theory loads no JAX and no trainer (nor, for theory, plotting)."""
  code = f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(forbidden)}))"
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"


COMMANDS = ["basic_core.train", "basic_core.evaluate", "basic_core.data", "basic_core.bench",
            "basic_core.plan", "basic_core.perf.throughput", "basic_core.perf.plan_xla",
            "basic_core.perf.sharded_loss",
            "experiments.batch_size_sweep", "experiments.negatives", "theory.check", "theory.tables",
            "paper_figures.sweep_figures", "paper_figures.theory_figures", "paper_figures.memory_figure",
            "paper_figures.negatives_figures"]


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
