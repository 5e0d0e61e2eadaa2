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

.PHONY: setup lint test test-all tiny sweep grid grid-results mechanism mechanism-results mechanism-gradients mechanism-geometry figures summaries fn-rates attribute-swap notebooks \
	strip-notebooks theory bench bench-gpu plan-check gpu-wheels clean

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

# Default suite (CPU, simulated devices), one worker per core (at most 4); tests spread one by one, except
# the modules marked xdist_group, which stay on one worker so their module fixtures are made once.
# pytest's exit code 5 ("no tests collected") counts as success. The 15 slowest tests are listed at the
# end, so every CI log says where the time goes.
TEST_WORKERS ?= auto --maxprocesses=4 --dist loadgroup
test: setup
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --durations=15 || [ $$? -eq 5 ]

test-all: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS)

sweep: setup
	$(PY) -m experiments.batch_size_sweep --preset negatives-smoke --out runs/sweep-negatives-smoke

# The testbed grid (experiments/README.md), 125 runs of about 10 minutes of a core each: it spans sessions.
# `make grid` first restores the runs finished in earlier sessions from their committed records (each run's
# eval.json and metrics.jsonl, a few KB; never checkpoints), then runs or resumes the rest, GRID_JOBS at a
# time; `make grid-results` (also while it runs) records the finished runs, restores the records of runs that
# other sweeps share (the mechanism's plain runs), and rebuilds the results, summary, figures and tables.
GRID_DIR ?= runs/sweep-negatives
GRID_RECORDS := paper_figures/data/negatives_grid_runs
GRID_JOBS ?= 1
# restore(RUN_DIR, RECORDS...): each committed run record not yet in RUN_DIR/runs is copied there.
restore = mkdir -p $(1)/runs; for d in $(foreach r,$(2),$(r)/*/); do [ -d "$$d" ] || continue; \
	  r=$(1)/runs/$$(basename $$d); [ -f $$r/eval.json ] || { mkdir -p $$r && cp $$d/eval.json $$d/metrics.jsonl $$r/; }; done
# record(RUN_DIR, RECORDS, PATTERN, OTHER_RECORDS): each finished run in RUN_DIR goes to RECORDS if its id
# matches PATTERN, else to OTHER_RECORDS.
record = for r in $(1)/runs/*/; do [ -f $$r/eval.json ] || continue; n=$$(basename $$r); \
	  case $$n in $(3)) d=$(2)/$$n;; *) d=$(4)/$$n;; esac; mkdir -p $$d && cp $$r/eval.json $$r/metrics.jsonl $$d/; done
grid: setup
	$(call restore,$(GRID_DIR),$(GRID_RECORDS))
	$(PY) -m experiments.batch_size_sweep --preset negatives --out $(GRID_DIR) --jobs $(GRID_JOBS) --quiet

grid-results: setup
	$(call record,$(GRID_DIR),$(GRID_RECORDS),*,)
	$(call restore,$(GRID_DIR),$(GRID_RECORDS))
	$(PY) -m experiments.batch_size_sweep --preset negatives --out $(GRID_DIR) --collect
	cp $(GRID_DIR)/results.csv paper_figures/data/negatives_grid.csv
	cp $(GRID_DIR)/probes.csv paper_figures/data/negatives_grid_probes.csv
	$(PY) -m experiments.negatives --results paper_figures/data/negatives_grid.csv \
	    --probes paper_figures/data/negatives_grid_probes.csv --preset negatives \
	    --summary paper_figures/data/negatives_grid_summary.json
	$(PY) -m paper_figures.negatives_figures --results paper_figures/data/negatives_grid.csv \
	    --probes paper_figures/data/negatives_grid_probes.csv --summary paper_figures/data/negatives_grid_summary.json \
	    --fn-rates paper_figures/data/false_negatives.jsonl --out paper_figures/figures
	$(PY) scripts/paste_tables.py

# The mechanism experiment (issue 28; experiments/README.md): its plain runs are the grid's (same ids), so
# both restore from both record folders; its finished plain runs of the grid's seeds (0-4) are recorded as the
# grid's, those of its extra seeds (5-14) as its own.
MECH_DIR ?= runs/sweep-mechanism
MECH_RECORDS := paper_figures/data/mechanism_runs
mechanism: setup
	$(call restore,$(MECH_DIR),$(GRID_RECORDS) $(MECH_RECORDS))
	$(PY) -m experiments.batch_size_sweep --preset mechanism --out $(MECH_DIR) --jobs $(GRID_JOBS) --quiet

mechanism-results: setup
	$(call record,$(MECH_DIR),$(MECH_RECORDS),*-sogclr-*|*-queue[0-9]*|*-s[5-9]-*|*-s1[0-4]-*,$(GRID_RECORDS))
	$(call restore,$(MECH_DIR),$(GRID_RECORDS) $(MECH_RECORDS))
	$(PY) -m experiments.batch_size_sweep --preset mechanism --out $(MECH_DIR) --collect
	cp $(MECH_DIR)/results.csv paper_figures/data/mechanism.csv
	$(PY) -m experiments.mechanism --results paper_figures/data/mechanism.csv --preset mechanism \
	    $(if $(wildcard $(MECH_GRADIENTS)),--gradients $(MECH_GRADIENTS)) --summary paper_figures/data/mechanism_summary.json
	$(PY) -m paper_figures.mechanism_figure --results paper_figures/data/mechanism.csv \
	    --summary paper_figures/data/mechanism_summary.json --out paper_figures/figures
	$(PY) scripts/paste_tables.py

# each_run(FILE, COMMAND): COMMAND, with $$r a run's folder, for every finished mechanism run that kept its
# checkpoints and is not yet in the JSON rows of FILE (plain runs that the grid ran are in its folder).
each_run = touch $(1); for r in $(MECH_DIR)/runs/*/ $(GRID_DIR)/runs/*/; do \
	  [ -f $$r/eval.json ] && [ -d $$r/checkpoints ] || continue; \
	  grep -q "^$$(basename $$r)," $(MECH_DIR)/results.csv || continue; \
	  grep -q "\"run\": \"$$(basename $$r)\"" $(1) && continue; $(2) || exit 1; done

# The gradient bias at each finished mechanism run's final weights, one JSON row per run and G
# (experiments/gradient_bias.py; about 50 s of a core per run).
MECH_GRADIENTS := paper_figures/data/mechanism_gradient_bias.jsonl
mechanism-gradients: setup
	$(call each_run,$(MECH_GRADIENTS),OPENBLAS_NUM_THREADS=1 $(PY) -m experiments.gradient_bias --workdir $$r \
	  --pairs 4096 --anchors 128 --replicates 5 --out $(MECH_GRADIENTS))

# How each finished mechanism run spreads its held-out embeddings (effective rank, alignment, uniformity;
# experiments/embedding_geometry.py, about 10 s a run): why the queue arm's loss stays near log 1,024.
MECH_GEOMETRY := paper_figures/data/mechanism_geometry.jsonl
mechanism-geometry: setup
	$(call each_run,$(MECH_GEOMETRY),$(PY) -m experiments.embedding_geometry --workdir $$r --pairs 2048 \
	  --out $(MECH_GEOMETRY))

tiny: setup
	$(PY) -m basic_core.train --config tiny --workdir runs/tiny

# Every committed figure, redrawn from the committed result files in paper_figures/data/.
figures: setup
	$(PY) -m paper_figures.sweep_figures --results paper_figures/data/sweep_default.csv --out paper_figures/figures
	$(PY) -m paper_figures.sweep_figures --results paper_figures/data/paper_regime.csv --out paper_figures/figures/paper_regime
	$(PY) -m paper_figures.theory_figures --results paper_figures/data/sweep_default.csv --out paper_figures/figures
	$(PY) -m paper_figures.memory_figure --rows paper_figures/data/memory_tiny.jsonl --out paper_figures/figures/memory_vs_batch.png
	$(PY) -m paper_figures.theory_figures --data theory/figures --out theory/figures
	$(PY) -m paper_figures.negatives_figures --results paper_figures/data/negatives_grid.csv \
	    --probes paper_figures/data/negatives_grid_probes.csv --summary paper_figures/data/negatives_grid_summary.json \
	    --fn-rates paper_figures/data/false_negatives.jsonl --out paper_figures/figures
	$(PY) -m paper_figures.negatives_figures --results paper_figures/data/negatives_pilot.csv \
	    --probes paper_figures/data/negatives_pilot_probes.csv --summary paper_figures/data/negatives_pilot_summary.json \
	    --bounds paper_figures/data/negatives_pilot_bounds/*.json --out paper_figures/figures/negatives_pilot
	$(PY) -m paper_figures.mechanism_figure --results paper_figures/data/mechanism.csv \
	    --summary paper_figures/data/mechanism_summary.json --out paper_figures/figures

# The committed summaries of the batch-size sweeps, recomputed from their committed results (trend fits with
# one intercept per seed; experiments/README.md).
SUMMARIZED := sweep_default sweep_default_steps paper_regime
summaries: setup
	for n in $(SUMMARIZED); do $(PY) -m experiments.batch_size_sweep --results paper_figures/data/$$n.csv \
	    --out runs/summaries/$$n --summary paper_figures/data/$${n}_summary.json || exit 1; done

# The false-negative rate of each built-in world at G = 4 .. 65,536 (paper_figures/data/false_negatives.jsonl;
# basic_core/data/false_negatives.py), 32,768 rows or one group each; about 5 minutes on 2 cores.
FN_GROUPS := 4 16 64 256 1024 4096 16384 65536
fn-rates: setup
	rm -f paper_figures/data/false_negatives.jsonl
	for w in scenes objects; do for g in $(FN_GROUPS); do $(PY) -m basic_core.data fn-rate --world $$w \
	    --group-size $$g --rows 32768 --json >> paper_figures/data/false_negatives.jsonl || exit 1; done; done

# What the objects-world towers tell apart, attribute by attribute (experiments/attribute_swap.py): the
# 1,000-step towers pilot (trained, with 256 prompts per class, and its initial weights) and the seed-4 runs
# of the grid still on this machine (their checkpoints are not committed; experiments/README.md says how
# the pilot was trained).
SWAP_OUT := paper_figures/data/attribute_swap.jsonl
SWAP_GRID := runs/sweep-negatives/runs/objects-s-N1024-G4-fresh-s4-aee80844 \
	runs/sweep-negatives/runs/objects-s-N1024-G1024-fresh-s4-9fe4881e \
	runs/sweep-negatives/runs/objects-s-m65536-N1024-G1024-T0.07-s4-1ad8102d
attribute-swap: setup
	rm -f $(SWAP_OUT)
	for a in "" "--prompts 256" "--control"; do $(PY) -m experiments.attribute_swap \
	    --workdir runs/pilots/objects-p8-1000 $$a --out $(SWAP_OUT) || exit 1; done
	for w in $(SWAP_GRID); do $(PY) -m experiments.attribute_swap --workdir $$w --out $(SWAP_OUT) || exit 1; done
	$(PY) scripts/paste_tables.py

# Every notebook, headless, on its default inputs (executed copies in runs/notebooks/).
notebooks: setup
	$(VENV)/bin/jupyter nbconvert --to notebook --execute --output-dir runs/notebooks notebooks/*.ipynb

# Notebooks are committed without outputs (a test checks it); run this before committing one.
strip-notebooks: setup
	$(VENV)/bin/jupyter nbconvert --clear-output --inplace \
	    --ClearOutputPreprocessor.remove_metadata_fields='{"collapsed", "scrolled", "execution"}' notebooks/*.ipynb

# Our train step's throughput in the three modes of the OpenCLIP comparison (basic_core/perf/README.md, "Performance vs OpenCLIP").
bench: setup
	$(PY) -m basic_core.bench throughput --config peer-vit

# The scale plan against XLA: BASIC-S, -M and -L at N = 65,536 compiled for meshes of 8, 64 and 512
# simulated CPU devices (basic_core/perf/plan_xla.py), one JSON row each; about 5 minutes on 2 cores.
PLAN_CHECKS := basic-s:data=8,model=1:512 basic-s:data=64,model=1:512 basic-m:data=8,model=1:256 \
	basic-m:data=16,model=4:256 basic-l:data=8,model=8:128 basic-l:data=64,model=8:128
plan-check: setup
	rm -f paper_figures/data/plan_vs_xla.jsonl
	for case in $(PLAN_CHECKS); do set -- $$(echo $$case | tr : ' '); \
	  $(PY) -m basic_core.plan --config $$1 --mesh $$2 --batch 65536 --microbatch $$3 --measure --json \
	    >> paper_figures/data/plan_vs_xla.jsonl || exit 1; done

# One GPU, about 5 minutes: samples/s, TFLOP/s, MFU and the largest batch that fits, for small and
# basic-s (basic_core/perf/gpu_bench.py); without a GPU a reduced run on tiny that says so.
bench-gpu: setup
	$(PY) -m basic_core.bench gpu --json --out runs/bench-gpu/gpu_bench.jsonl --table runs/bench-gpu/gpu_bench.md

# The packages that the lent GPU machine's image lacks, as wheels in .whl/ (ignored), at the versions
# pyproject.toml pins; scripts/gpu_check.sh installs them there. The image has its own flax, optax and
# orbax; .whl/pinned/ holds them at our pins, installed there only if the image's fail a first tiny step.
GPU_WHEELS := $(shell sed -n 's/^ *"\(ml_collections==[^"]*\)",/\1/p' pyproject.toml)
GPU_PINNED_WHEELS := $(shell sed -n 's/^ *"\(\(flax\|optax\|orbax-checkpoint\)==[^"]*\)",/\1/p' pyproject.toml)
WHEEL_PLATFORM := --only-binary=:all: --python-version 3.12 --implementation cp \
	--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
	--platform manylinux2014_x86_64 --platform manylinux1_x86_64
gpu-wheels: setup
	rm -rf .whl
	$(PY) -m pip download -q --no-deps $(WHEEL_PLATFORM) -d .whl $(GPU_WHEELS)
	$(PY) -m pip download -q --no-deps $(WHEEL_PLATFORM) -d .whl/pinned $(GPU_PINNED_WHEELS)
	ls .whl .whl/pinned

theory: setup
	$(PY) -m theory.check

clean:
	rm -rf $(VENV) runs .pytest_cache
