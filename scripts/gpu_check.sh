#!/usr/bin/env bash
# The GPU benchmark (issue #19) on a lent GPU machine, in at most 7 minutes (TOTAL_S), results in $OUT:
#   gpu_bench.jsonl  one JSON line per measurement (python -m basic_core.bench gpu: perf/gpu_bench.py)
#   gpu_bench.md     the markdown table, rewritten after every row (a run cut short keeps what it measured)
#   preflight.jsonl  a tiny plain + accumulated step run first on the GPU
#   gpu_check.log    everything printed: nvidia-smi, package versions, jax devices, errors
#
# Here, once (the machine's image has no network and lacks ml_collections):
#   make gpu-wheels                       # .whl/ (ignored): the wheels, at pyproject.toml's pins
# Then with the device tool, from the repo root: command `bash scripts/gpu_check.sh`, carry [".whl"],
# timeout_s 480. To check this script without a GPU (a reduced CPU run, see gpu_bench.py):
#   OUT=/tmp/gpuout PYTHON=.venv/bin/python bash scripts/gpu_check.sh
set -u -o pipefail
OUT=${OUT:?OUT must name the folder whose files come back}
PY=${PYTHON:-python3}
TOTAL_S=${TOTAL_S:-420}  # every part below is cut off so that the whole script ends by then (seconds)
PREFLIGHT_S=${PREFLIGHT_S:-100}
mkdir -p "$OUT"
rm -f "$OUT/gpu_bench.jsonl" "$OUT/gpu_bench.md" "$OUT/preflight.jsonl"
cd "$(dirname "$0")/.."

left() { echo $((TOTAL_S - SECONDS)); }

main() {
  echo "== $(date -u +%FT%TZ) $(uname -m) repo $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  timeout 20 nvidia-smi || echo "(no nvidia-smi)"

  if ls .whl/*.whl > /dev/null 2>&1; then
    echo "== installing $(ls .whl/*.whl | xargs -n1 basename | tr '\n' ' ')to /tmp/site"
    timeout 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || echo "(wheel install failed)"
  else
    echo "== no .whl/ (make gpu-wheels): using the installed packages"
  fi
  export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  export PYTHONUNBUFFERED=1
  # XLA's allocator may take 92% of the GPU (default 75%); bytes_limit, the max-batch search's limit,
  # follows it.
  export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}

  versions() {
    timeout 60 "$PY" -c "
import sys, jax, flax, optax, numpy, ml_collections, orbax.checkpoint as ocp
print('python', sys.version.split()[0], '| jax', jax.__version__, '| flax', flax.__version__, '| optax',
      optax.__version__, '| numpy', numpy.__version__, '| orbax', getattr(ocp, '__version__', '?'))
print('flax from', flax.__file__)
print('devices', jax.devices(), '| backend', jax.default_backend())"
  }
  # a first tiny step on the device: plain and accumulated, no search (about half a minute)
  preflight() {
    rm -f "$OUT/preflight.jsonl"
    timeout -k 5 "$PREFLIGHT_S" "$PY" -m basic_core.bench gpu --configs tiny --steps 2 --warmup 1 --no-search --json \
      --out "$OUT/preflight.jsonl" > /dev/null && [ "$(wc -l < "$OUT/preflight.jsonl")" -eq 2 ]
  }
  echo "== versions"
  versions
  echo "== preflight (tiny) with the image's flax, optax and orbax"
  if ! preflight; then
    if ls .whl/pinned/*.whl > /dev/null 2>&1; then
      echo "== preflight failed: again with pyproject.toml's flax, optax and orbax (.whl/pinned)"
      timeout 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/pinned/*.whl
      versions
      preflight || { echo "== preflight failed again: stopping"; return 1; }
    else
      echo "== preflight failed: stopping"
      return 1
    fi
  fi
  cat "$OUT/preflight.jsonl"

  # the benchmark: no new measurement after BUDGET_S, and cut off so that the script ends by TOTAL_S
  local limit=$(($(left) - 15)) budget=${BUDGET_S:-270}
  [ "$limit" -lt 90 ] && { echo "== no time left for the benchmark"; return 1; }
  [ "$budget" -gt $((limit - 60)) ] && budget=$((limit - 60))
  echo "== benchmark: budget ${budget} s, cut off after ${limit} s"
  timeout -k 10 "$limit" "$PY" -m basic_core.bench gpu --json --budget-s "$budget" \
    --out "$OUT/gpu_bench.jsonl" --table "$OUT/gpu_bench.md" ${BENCH_ARGS:-}
  echo "== benchmark exit $? after ${SECONDS} s in all"
  cat "$OUT/gpu_bench.md" 2> /dev/null || echo "(no table)"
}

main 2>&1 | tee "$OUT/gpu_check.log"
