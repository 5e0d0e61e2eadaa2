# basic-jax: one command to set up, one to run the main job, one to test.
#   make sweep   set up, then run the smoke negatives sweep and draw its figures (runs/sweep-negatives-smoke)
#   make test    set up, then run the test suite (what CI runs)
PYTHON ?= python3
# glibc's huge-page malloc for every command below (and the notebooks' kernel): XLA:CPU's step buffers
# then fault in 2 MiB pages instead of 4 KiB ones (basic_core/hostmem.py; README "Environment").
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup lint test test-all tiny sweep figures notebooks strip-notebooks theory bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --env GLIBC_TUNABLES $(GLIBC_TUNABLES) > /dev/null
	touch $(STAMP)

# The linter (rules in pyproject.toml): code and notebooks.
lint: setup
	$(PY) -m ruff check .

# Default suite (CPU, simulated devices), one worker per core (at most 4). pytest's exit code 5
# ("no tests collected") counts as success.
TEST_WORKERS ?= auto --maxprocesses=4
test: setup
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) || [ $$? -eq 5 ]

test-all: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS)

sweep: setup
	$(PY) -m experiments.batch_size_sweep --preset negatives-smoke --out runs/sweep-negatives-smoke

tiny: setup
	$(PY) -m basic_core.train --config tiny --workdir runs/tiny

# Every committed figure, redrawn from the committed result files in paper_figures/data/.
figures: setup
	$(PY) -m paper_figures.sweep_figures --results paper_figures/data/sweep_default.csv --out paper_figures/figures
	$(PY) -m paper_figures.theory_figures --results paper_figures/data/sweep_default.csv --out paper_figures/figures
	$(PY) -m paper_figures.memory_figure --rows paper_figures/data/memory_tiny.jsonl --out paper_figures/figures/memory_vs_batch.png
	$(PY) -m paper_figures.theory_figures --data theory/figures --out theory/figures
	$(PY) -m paper_figures.negatives_figures --results paper_figures/data/negatives_pilot.csv \
	    --probes paper_figures/data/negatives_pilot_probes.csv \
	    --bounds paper_figures/data/negatives_pilot_bounds/*.json --out paper_figures/figures

# Every notebook, headless, on its default inputs (executed copies in runs/notebooks/).
notebooks: setup
	$(VENV)/bin/jupyter nbconvert --to notebook --execute --output-dir runs/notebooks notebooks/*.ipynb

# Notebooks are committed without outputs (a test checks it); run this before committing one.
strip-notebooks: setup
	$(VENV)/bin/jupyter nbconvert --clear-output --inplace \
	    --ClearOutputPreprocessor.remove_metadata_fields='{"collapsed", "scrolled", "execution"}' notebooks/*.ipynb

# Our train step's throughput in the three modes of the OpenCLIP comparison (README, "Performance").
bench: setup
	$(PY) -m basic_core.bench throughput --config peer-vit

theory: setup
	$(PY) -m theory.check

clean:
	rm -rf $(VENV) runs .pytest_cache
