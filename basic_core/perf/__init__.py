"""Performance and planning tools of the train step, kept apart from the method they measure.

One job per module; `python -m basic_core.bench` and `python -m basic_core.plan` are their commands.
  compiled     compiled memory and FLOPs of a config's train step (XLA's analyses; nothing allocated)
  budget       the remat policy and microbatch that fit a memory budget
  memory_grid  compiled memory (and step time) over a grid of batches, microbatches and remat policies
  scale_plan   bytes per device of a config on a data x model mesh, from shapes and formulas
  plan_xla     the same step compiled for that mesh (simulated CPU devices): XLA's bytes beside the plan's
  xla_flags    XLA:CPU flags as data (fast compiles for the memory check and the tests; child processes)
  timing       random batches, step timing on a quiet machine, the matmul roof
  throughput   steady-state samples/s of one mode per process (`python -m basic_core.perf.throughput`)
  compare      our step and OpenCLIP's side by side, and their table
  roofline     the model's dense matmuls timed alone
  gpu_bench    one GPU in five minutes: samples/s, TFLOP/s, MFU, the largest batch that fits (CPU: reduced)
  cli          the argparse front-ends of both commands
"""
