"""`python -m basic_core.bench memory|throughput|roofline|compare|compare-table ...`: benchmarks of the
train step. The tools live in basic_core/perf/ (this command's front-end: `perf.cli`)."""

import sys

from analysis import cli
from basic_core.perf.cli import bench_main as main

if __name__ == "__main__":
  sys.exit(cli.run(main))
