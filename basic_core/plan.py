"""`python -m basic_core.plan --config C --mesh data=D,model=M ...`: memory per device of a config on a
mesh, on paper (`basic_core.perf.scale_plan`), and with `--measure` as XLA compiles it for that mesh
(`basic_core.perf.plan_xla`); this command's front-end: `perf.cli`."""

import sys

from analysis import cli
from basic_core.perf.cli import plan_main as main

if __name__ == "__main__":
  sys.exit(cli.run(main))
