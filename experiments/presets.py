"""Sweep presets: what varies, what is held fixed, and the learning-rate rule, as data.

Every run of a sweep is `basic_core.train` on a base preset plus overrides; only the swept axes change.
Learning-rate rule (stated here because it is a choice the result depends on): AdamW at the same peak
learning rate for every contrastive batch size, linear warmup over 10% of the run's steps, then cosine
decay. Contrastive batches above `max_microbatch` run the BASIC accumulation step with that microbatch,
so the contrastive batch is never limited by memory.

Budgets: `samples` gives every run the same number of training pairs seen (steps = samples / N, the
fair comparison for a fixed compute budget); `steps` gives every run the same number of updates
(large batches then see more pairs), the paper's "same number of steps" comparison.

Confounds, by design. Varying the contrastive batch N varies the number of negatives together with the
number of steps (`samples` budget) or with the number of passes over the pool (`steps` budget): the
`default`, `default-steps`, `scaling` and `full` sweeps cannot separate negatives from optimisation.
The `negatives*` sweeps hold the optimizer batch B, the steps, the learning-rate schedule and the
temperature fixed and vary only G, the number of pairs each softmax sees (`loss.group_size`: G - 1
negatives per positive), on a fixed pool of m pairs or on fresh pairs never repeated (`data.fresh`).
`paper-regime` is BASIC's own setting: more negatives and more data together (batch = N, fixed steps,
fresh pairs), so it measures their joint effect, not the negatives alone.
"""

from __future__ import annotations

import dataclasses

# Model sizes for the model-scaling axis: overrides on top of the base preset.
MODEL_SIZES = {
    "xs": ("model.embed_dim=32", "model.image.vit.width=32", "model.text.width=32",
           "model.image.vit.layers=1", "model.text.layers=1"),
    "s": (),  # the base preset as it is (tiny: width 64, 2 layers)
    "m": ("model.embed_dim=128", "model.image.vit.width=128", "model.text.width=128",
          "model.image.vit.heads=4", "model.text.heads=4", "model.image.vit.layers=3",
          "model.text.layers=3"),
}


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A grid of runs: models x training-set sizes x contrastive batch sizes x seeds."""
  name: str
  batch_sizes: tuple[int, ...]
  seeds: tuple[int, ...] = (0, 1, 2)
  config: str = "tiny"
  overrides: tuple[str, ...] = ()
  budget: str = "samples"  # samples | steps
  samples: int = 0  # training pairs seen per run (budget=samples)
  steps: int = 0  # updates per run (budget=steps)
  max_microbatch: int = 256
  num_train: tuple[int, ...] = (0,)  # 0 = the base preset's data.num_train
  models: tuple[str, ...] = ("s",)
  warmup_frac: float = 0.1
  group_sizes: tuple[int, ...] = (0,)  # loss.group_size values; 0 = the whole batch
  data_modes: tuple[str, ...] = ("pool",)  # pool (m = num_train pairs, repeated) | fresh (never repeated)
  temperatures: tuple[float, ...] = (0.0,)  # 0 = learned (from model.temperature_init); t > 0 = frozen at t
  world: str = "scenes"  # data.world of every run (basic_core/worlds)
  estimator: str = "plain"  # loss.estimator of every run: plain | sogclr | queue (basic_core/losses.py)
  queue_total: int = 0  # queue: loss.queue_size = queue_total - G, so every group sees G + Q pairs
  data_seed_per_seed: bool = False  # data.seed = seed: each seed draws its own pool, held-out pairs, tasks
  parts: tuple[Sweep, ...] = ()  # more arms, run into the same folder and analysed with this one
  # Analysis choices, fixed before the runs (experiments/negatives.py reads them):
  margins: tuple[tuple[str, float], ...] = ()  # (metric, equivalence margin per doubling, metric's unit)
  iso_fit_level: float = 0.5  # primary matched-fit level: this fraction of the fit range all runs share

  @classmethod
  def from_dict(cls, saved: dict) -> Sweep:
    """The inverse of `dataclasses.asdict` (a sweep's `sweep.json`): lists back to tuples, parts to Sweeps."""
    tuples = lambda v: tuple(tuples(x) for x in v) if isinstance(v, list) else v
    values = {k: tuples(v) for k, v in saved.items()}
    return cls(**values | dict(parts=tuple(cls.from_dict(p) for p in saved.get("parts", ()))))

  def __post_init__(self):
    if self.budget not in ("samples", "steps"):
      raise ValueError(f"budget must be 'samples' or 'steps', got {self.budget!r}")
    if (self.budget == "samples" and self.samples <= 0) or (self.budget == "steps" and self.steps <= 0):
      raise ValueError(f"sweep {self.name!r}: budget {self.budget} needs a positive {self.budget}")
    unknown = [m for m in self.models if m not in MODEL_SIZES]
    if unknown:
      raise ValueError(f"unknown model size(s) {unknown}; known: {sorted(MODEL_SIZES)}")
    if set(self.data_modes) - {"pool", "fresh"}:
      raise ValueError(f"data modes are 'pool' and 'fresh', got {self.data_modes}")


_EVAL = ("eval.batch_size=256", "eval.num_pairs=1024", "eval.num_images=512", "train.progress=False")
# >= 8192 held-out and trained pairs: the loss at the largest G and the infinite-batch estimate need many.
_NEGATIVES_EVAL = ("eval.batch_size=256", "eval.num_pairs=8192", "data.num_test=8192", "eval.num_images=512",
                   "train.progress=False", "train.checkpoint_every=100", "train.log_every=20")

# The testbed grid and its smoke: `tiny` with 8x8 patches (16 image tokens: 3x cheaper than 4x4 and, in the
# pilots, better: image-to-text R@1 0.18 against 0.07 after 150 steps) and a text context for the objects
# world's captions (up to 33 tokens); 300 steps (position is learned between 150 and 300); probes every 10%
# of training; the split-half bias check on the untrained model too (eval.control).
_OBJECTS_MODEL = ("model.text.context=36", "model.image.vit.patch=8")
_GRID_G, _GRID_SEEDS, _GRID_STEPS = (4, 16, 64, 256, 1024), (0, 1, 2, 3, 4), 300
_GRID_EVAL = ("eval.batch_size=256", "eval.num_pairs=8192", "data.num_test=8192", "eval.num_images=512",
              "train.progress=False", "train.checkpoint_every=30", "train.log_every=15",
              f"eval.probe_every={_GRID_STEPS // 10}", "eval.probe_pairs=2048", "eval.control=True")
_SMOKE_EVAL = ("eval.batch_size=256", "eval.num_pairs=2048", "data.num_test=2048", "eval.num_images=128",
               "train.progress=False", "train.checkpoint_every=30", "train.log_every=10",
               "eval.probe_every=10", "eval.probe_pairs=1024", "eval.control=True")


def _mechanism(name: str, *, batch: int, plain_g, debiased_g, seeds, steps: int, pool: int, overrides,
               margins=(), more_seeds=(), more_seeds_g=0) -> Sweep:
  """Plain G on fresh pairs and on a pool of `pool` pairs, SogCLR on the pool and a queue on fresh pairs
  (G + Q = batch pairs in every softmax) at the small G, objects world, frozen T = 0.07, seeds paired.

  `more_seeds`: seeds beyond `seeds` for one comparison only, SogCLR vs plain at G = `more_seeds_g` on the
  pool (plain at `more_seeds_g` and at the largest G, SogCLR at `more_seeds_g`): the runs its recovered
  fraction needs, and no others."""
  common = dict(world="objects", batch_sizes=(batch,), budget="steps", steps=steps, num_train=(pool,),
                temperatures=(0.07,), max_microbatch=batch, data_seed_per_seed=True, overrides=overrides)
  more = (Sweep(name=f"{name}/more-seeds", group_sizes=(more_seeds_g, max(plain_g)), data_modes=("pool",),
                seeds=more_seeds, **common),
          Sweep(name=f"{name}/more-seeds-sogclr", group_sizes=(more_seeds_g,), data_modes=("pool",),
                estimator="sogclr", seeds=more_seeds, **common)) if more_seeds else ()
  return Sweep(name=name, group_sizes=plain_g, data_modes=("fresh", "pool"), margins=margins, seeds=seeds,
               **common,
               parts=tuple(Sweep(name=f"{name}/{estimator}", group_sizes=debiased_g, data_modes=(mode,),
                                 estimator=estimator, queue_total=batch if estimator == "queue" else 0,
                                 seeds=seeds, **common)
                           for estimator, mode in (("sogclr", "pool"), ("queue", "fresh"))) + more)


PRESETS = {
    # Under 3 minutes on a 2-core CPU: the tests use it.
    "smoke": Sweep(name="smoke", batch_sizes=(16, 64, 256), samples=256 * 12,
                   overrides=_EVAL + ("data.num_train=4096", "data.num_test=512", "eval.num_pairs=512",
                                      "eval.num_images=256", "train.checkpoint_every=8",
                                      "train.log_every=4")),
    # 8m36s on a quiet 2-core CPU (measured): the committed figures and experiments/README.md's table.
    "default": Sweep(name="default", batch_sizes=(16, 32, 64, 128, 256, 512), samples=512 * 40,
                     overrides=_EVAL + ("data.num_train=8192", "data.num_test=1024",
                                        "train.checkpoint_every=50", "train.log_every=10")),
    # 16..4096, 5 seeds, data and model scaling crossed with batch size: 600x the pairs of `default`,
    # about 3.6 days on a 2-core CPU at its rate (an estimate, experiments/README.md).
    "full": Sweep(name="full", batch_sizes=(16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
                  seeds=(0, 1, 2, 3, 4), samples=4096 * 200, num_train=(8192, 32768),
                  models=("xs", "s", "m"),
                  overrides=_EVAL + ("data.num_test=2048", "train.checkpoint_every=100",
                                     "train.log_every=20")),
    # The same budget counted in steps instead of samples (second mode of the sweep).
    "default-steps": Sweep(name="default-steps", batch_sizes=(16, 64, 256, 1024), budget="steps",
                           steps=200, overrides=_EVAL + ("data.num_train=8192", "data.num_test=1024",
                                                         "train.checkpoint_every=50",
                                                         "train.log_every=10")),
    # Negatives alone, in the objects world (no false negatives): fixed optimizer batch B = 256, G in 4, 16,
    # 256, 30 steps, fresh pairs, temperature frozen at 0.07. `make sweep` (its time: README).
    "negatives-smoke": Sweep(name="negatives-smoke", world="objects", batch_sizes=(256,),
                             group_sizes=(4, 16, 256), seeds=(0,), budget="steps", steps=30,
                             data_modes=("fresh",), temperatures=(0.07,), max_microbatch=256,
                             overrides=_SMOKE_EVAL + _OBJECTS_MODEL),
    # The first pilot, in the scenes world (kept with its committed results: paper_figures/data/
    # negatives_pilot*, experiments/README.md says what it could not show). B = 1024, G in 4..1024, 3 seeds
    # paired across G, fresh vs a pool of m = 8192, temperature frozen at 0.07 and 0.1, 150 steps.
    "negatives-pilot": Sweep(name="negatives-pilot", batch_sizes=(1024,), group_sizes=(4, 16, 64, 256, 1024),
                             seeds=(0, 1, 2), budget="steps", steps=150, num_train=(8192,),
                             data_modes=("fresh", "pool"), temperatures=(0.07, 0.1), max_microbatch=1024,
                             overrides=_NEGATIVES_EVAL + ("eval.probe_every=50",)),
    # The testbed grid (experiments/README.md): the objects world, B = 1024, 300 steps, G in 4..1024, 5
    # seeds paired across G, each seed its own pool, held-out pairs and tasks (data.seed = seed); fresh pairs
    # and pools of m = 8192 and 65,536 at T = 0.07 frozen; plus fresh pairs with the temperature learned, and
    # the scenes world (false negatives grow with G) fresh at T = 0.07. Probes every 10% of training; the
    # matched-fit level and the equivalence margins below were fixed before the runs.
    "negatives": Sweep(name="negatives", world="objects", batch_sizes=(1024,), group_sizes=_GRID_G,
                       seeds=_GRID_SEEDS, budget="steps", steps=_GRID_STEPS, num_train=(8192, 65536),
                       data_modes=("fresh", "pool"), temperatures=(0.07,), max_microbatch=1024,
                       data_seed_per_seed=True, overrides=_GRID_EVAL + _OBJECTS_MODEL,
                       margins=(("gap_offset_all", 0.01), ("heldout_loss_offset_all", 0.01),
                                ("zeroshot_mean_top1", 0.01), ("retrieval_i2t_r1", 0.005)),
                       iso_fit_level=0.5,
                       parts=(Sweep(name="negatives/learned-temperature", world="objects",
                                    batch_sizes=(1024,),
                                    group_sizes=_GRID_G, seeds=_GRID_SEEDS, budget="steps", steps=_GRID_STEPS,
                                    data_modes=("fresh",), temperatures=(0.0,), max_microbatch=1024,
                                    data_seed_per_seed=True, overrides=_GRID_EVAL + _OBJECTS_MODEL),
                              Sweep(name="negatives/scenes-world", world="scenes", batch_sizes=(1024,),
                                    group_sizes=_GRID_G, seeds=_GRID_SEEDS, budget="steps", steps=_GRID_STEPS,
                                    data_modes=("fresh",), temperatures=(0.07,), max_microbatch=1024,
                                    data_seed_per_seed=True, overrides=_GRID_EVAL + _OBJECTS_MODEL))),
    # Why large batches help (issue 28): the testbed's plain arms on fresh pairs and on the pool of 8,192 (the
    # same runs as the grid's: identical configs, identical run ids, so `make grid`'s records serve both),
    # and small G with an estimator of the global objective: SogCLR on the pool (per-pair normaliser
    # averages) and a queue on fresh pairs (G + Q = 1,024 pairs in every softmax). 80 runs, 30 beyond the
    # grid's; then 10 more seeds (5-14) of the three runs the G = 16 recovered fraction needs (5 seeds gave a
    # 95% half-width of 27 points against the 15): 110 runs (`make mechanism`; spans sessions).
    "mechanism": _mechanism("mechanism", batch=1024, plain_g=_GRID_G, debiased_g=(4, 16, 64),
                            seeds=_GRID_SEEDS, more_seeds=tuple(range(5, 15)), more_seeds_g=16,
                            steps=_GRID_STEPS, pool=8192,
                            overrides=_GRID_EVAL + _OBJECTS_MODEL,
                            margins=(("gap_offset_all", 0.01), ("heldout_loss_offset_all", 0.01),
                                     ("zeroshot_mean_top1", 0.01), ("retrieval_i2t_r1", 0.005))),
    # The mechanism experiment in miniature (its end-to-end test, -m slow): B = 256, 30 steps, 2 seeds, plain
    # G in 4, 256 on fresh pairs and a pool of 2,048; SogCLR on the pool and a queue (G + Q = 256) at G = 4.
    "mechanism-smoke": _mechanism("mechanism-smoke", batch=256, plain_g=(4, 256), debiased_g=(4,),
                                  seeds=(0, 1), steps=30, pool=2048, overrides=_SMOKE_EVAL + _OBJECTS_MODEL),
    # BASIC's regime: batch = N (accumulation above 256), fixed steps, fresh pairs: more negatives and
    # more data together, zero-shot and robustness vs N.
    "paper-regime": Sweep(name="paper-regime", batch_sizes=(64, 256, 1024, 4096), seeds=(0, 1, 2),
                          budget="steps", steps=200, data_modes=("fresh",),
                          overrides=_NEGATIVES_EVAL),
    # Data and model scaling, each crossed with batch size.
    "scaling": Sweep(name="scaling", batch_sizes=(32, 256), samples=1024 * 80,
                     num_train=(2048, 8192), models=("xs", "s", "m"),
                     overrides=_EVAL + ("data.num_test=1024", "train.checkpoint_every=50",
                                        "train.log_every=10")),
}
