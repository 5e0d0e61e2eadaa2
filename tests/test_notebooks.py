"""The notebooks run top to bottom with small parameters, redraw the committed figures, and are
committed without outputs.

Each notebook runs headless in its own kernel (nbclient), in a temporary working directory, with its
parameters cell overridden by a cell injected right after it, as papermill does. With the small
parameters every path points into the temporary directory, so each notebook first makes its own small
inputs. The slow test runs them on the committed results instead and compares the figures byte for byte.
"""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from basic_core.perf.xla_flags import child_env

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# Sizes for 20 to 50 s of CPU per notebook (all four: about 2 minutes on a quiet 2-core machine).
_SMALL_EVAL = ("eval.batch_size=64", "eval.num_pairs=128", "eval.num_images=16", "data.num_test=128")


def small_parameters(name: str, tmp: Path) -> dict:
  """Every path in `tmp`, so the notebook makes its own inputs, at the smallest sizes that do."""
  return {
      "01_tour.ipynb": dict(WORKDIR=str(tmp / "tour"), STEPS=6, SHOW=4, POOL=64,
                            OVERRIDES=_SMALL_EVAL + ("data.num_train=512", "train.log_every=2")),
      "02_batch_size_sweep.ipynb": dict(RESULTS=str(tmp / "sweep" / "results.csv"), OUT=str(tmp / "out"),
                                        BATCH_SIZES=(16, 64), SEEDS=(0,), SAMPLES=64,
                                        OVERRIDES=_SMALL_EVAL + ("data.num_train=512",)),
      "03_theory.ipynb": dict(THEORY_DIR=str(tmp / "theory"), OUT=str(tmp / "out"), TRIALS=100,
                              BIAS_BATCHES=[2, 16, 64]),
      "04_memory_and_parallelism.ipynb": dict(MEMORY=str(tmp / "memory.jsonl"), OUT=str(tmp / "out"),
                                              BATCHES=(32, 64), MICROBATCH=16, REMAT=("none",)),
      "05_negatives.ipynb": dict(RESULTS=str(tmp / "sweep" / "results.csv"), PROBES=str(tmp / "none.csv"),
                                 BOUNDS=str(tmp / "no-bounds"),
                                 OUT=str(tmp / "out"), GROUP_SIZES=(4, 16), STEPS=4,
                                 OVERRIDES=_SMALL_EVAL + ("eval.num_pairs=256", "data.num_test=256")),
      # The committed results (an analysis and a figure, no training: the sweep's own test is
      # test_mechanism.py's smoke); the summary computed here.
      "06_mechanism.ipynb": dict(SUMMARY=str(tmp / "none.json"), OUT=str(tmp / "out")),
  }[name]


def parameters_cell(nb) -> int:
  tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
  assert len(tagged) == 1, f"want exactly one cell tagged 'parameters', found {len(tagged)}"
  return tagged[0]


def inject(nb, values: dict) -> None:
  """Papermill-style: a cell after the parameters cell assigns `values`, each of which must exist."""
  i = parameters_cell(nb)
  declared = {line.split("=")[0].strip() for line in nb.cells[i].source.splitlines() if "=" in line}
  assert set(values) <= declared, f"not parameters of the notebook: {sorted(set(values) - declared)}"
  source = "\n".join(f"{k} = {v!r}" for k, v in values.items())
  nb.cells.insert(i + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))


def kernel_env(cache: Path) -> dict:
  """One CPU device (not conftest's 8) and the suite's compile flags, the repo importable, compiled programs
  shared between kernels."""
  path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
  return {**child_env(1), "PYTHONPATH": path, "JAX_COMPILATION_CACHE_DIR": str(cache),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


@pytest.fixture(scope="session")
def compilation_cache(tmp_path_factory) -> Path:
  return tmp_path_factory.mktemp("jax_cache")


def run_notebook(name: str, values: dict, workdir: Path, cache: Path) -> None:
  """Executes notebooks/`name` with `values` injected; raises CellExecutionError naming the cell."""
  nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
  inject(nb, values)
  client = NotebookClient(nb, kernel_name="python3", timeout=600,
                          resources={"metadata": {"path": str(workdir)}})
  client.execute(env=kernel_env(cache))


def test_there_are_notebooks():
  assert len(NOTEBOOKS) >= 4, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, compilation_cache):
  run_notebook(path.name, small_parameters(path.name, tmp_path), tmp_path, compilation_cache)


# Every committed figure, by the notebook that draws it from its default inputs (the committed results).
REDRAWN = {
    "02_batch_size_sweep.ipynb": ("paper_figures/figures/gap_vs_batch.png",
                                  "paper_figures/figures/zeroshot_vs_batch.png",
                                  "paper_figures/figures/robustness_vs_batch.png",
                                  "paper_figures/figures/gap_vs_theory_rates.png"),
    "03_theory.ipynb": ("theory/figures/batch_bias.png", "theory/figures/bound_vs_gap.png",
                        "theory/figures/linear_towers_sweep_fit.png"),
    "04_memory_and_parallelism.ipynb": ("paper_figures/figures/memory_vs_batch.png",),
    "05_negatives.ipynb": tuple(f"paper_figures/figures/{name}.png" for name in (
        "negatives_outcomes", "negatives_iso_fit", "negatives_bias", "false_negatives")),
    "06_mechanism.ipynb": ("paper_figures/figures/mechanism.png", "paper_figures/figures/towers_grid.png"),
}


def test_every_committed_figure_has_a_notebook():
  committed = {str(p.relative_to(ROOT)) for folder in ("paper_figures/figures", "theory/figures")
               for p in (ROOT / folder).glob("*.png")}
  assert committed == {f for figures in REDRAWN.values() for f in figures}


@pytest.mark.slow
@pytest.mark.parametrize("name", REDRAWN)
def test_notebook_redraws_the_committed_figures(name, tmp_path, compilation_cache):
  run_notebook(name, dict(OUT=str(tmp_path)), tmp_path, compilation_cache)
  stale = [f for f in REDRAWN[name] if (tmp_path / Path(f).name).read_bytes() != (ROOT / f).read_bytes()]
  assert not stale, f"{name} draws {stale} differently from the committed files: redraw them"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_stripped(path):
  """No outputs, execution counts or execution times: diffs show only code and text."""
  nb = nbformat.read(path, as_version=4)
  parameters_cell(nb)
  dirty = [i for i, c in enumerate(nb.cells) if "execution" in c.metadata
           or c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
  assert not dirty, (f"{path.name}: cells {dirty} keep outputs or execution records; strip them as "
                     "notebooks/README.md says")
