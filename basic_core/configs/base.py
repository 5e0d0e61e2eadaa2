"""Every key the trainer reads, with its default. Presets (presets.py) only change values."""

from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "base"
  c.seed = 0

  # --- model: two towers, projections to a shared space, learnable temperature -------------------
  c.model = ml_collections.ConfigDict()
  c.model.embed_dim = 64
  c.model.dropout = 0.0  # residual-branch dropout in both towers
  c.model.remat = "none"  # none | full | dots_saveable | dots_with_no_batch_dims_saveable
  c.model.scan_layers = True  # lax.scan over stacked blocks (XLA:CPU's remat saves memory only inside)
  c.model.dtype = "float32"  # compute dtype; params stay float32, logits are always float32
  c.model.temperature_init = 0.07  # logit_scale = exp(log_scale), initialised to 1 / temperature_init
  c.model.max_logit_scale = 100.0  # logit_scale is clipped here (CLIP's value)
  c.model.learn_temperature = True
  c.model.logit_bias_init = -10.0  # only used by the sigmoid loss (SigLIP's initial bias)

  c.model.image = ml_collections.ConfigDict()
  c.model.image.kind = "vit"  # vit | coatnet
  c.model.image.image_size = 32
  c.model.image.vit = ml_collections.ConfigDict(
      dict(patch=8, width=64, layers=2, heads=2, mlp_ratio=4))
  c.model.image.coatnet = ml_collections.ConfigDict(
      dict(
          stem=32,
          blocks=(1, 1, 1, 1),
          widths=(32, 64, 96, 128),
          types="CCTT",  # C = MBConv stage, T = relative-attention Transformer stage
          strides=(2, 2, 2, 1),  # downsampling of each stage (the stem adds a stride-2 conv)
          head_dim=32,
          expansion=4,
          se_ratio=0.25,
          norm="layer",  # layer | group: batch-independent, so microbatching is exact
      ))

  c.model.text = ml_collections.ConfigDict(
      dict(vocab_size=1024, context=24, width=64, layers=2, heads=2, mlp_ratio=4))

  # --- loss ---------------------------------------------------------------------------------------
  c.loss = ml_collections.ConfigDict()
  c.loss.kind = "softmax"  # softmax (CLIP/ALIGN/BASIC) | sigmoid (SigLIP)
  c.loss.tile = 0  # 0 = dense N x N logits; else rows per tile of the streamed loss
  c.loss.group_size = 0  # 0 = negatives from the whole batch; G = from consecutive groups of G pairs
  # How the softmax loss estimates the global objective (losses.py): plain (each group's own softmax) |
  # sogclr (per-pair moving averages of the normalisers; needs a pool) | queue (MoCo-style past negatives)
  c.loss.estimator = "plain"
  c.loss.sogclr_gamma = 0.9  # SogCLR's moving-average rate (its README's default); 1 = the plain gradient
  c.loss.queue_size = 0  # Q: the last Q embeddings of each side, extra negatives of every group (queue)

  # --- training -----------------------------------------------------------------------------------
  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 64  # the CONTRASTIVE batch: negatives seen by every positive
  c.train.microbatch_size = 0  # 0 = no accumulation; else the BASIC accumulation step
  c.train.steps = 300
  c.train.log_every = 10
  c.train.checkpoint_every = 100
  c.train.keep_checkpoints = 2
  c.train.eval_every = 0  # 0 = evaluate only at the end
  c.train.freeze_image = "none"  # none | all (LiT-style) | first_k
  c.train.freeze_image_steps = 0  # used by first_k
  c.train.progress = True

  # --- phase 1: supervised pretraining of the image tower (BASIC pretrains CoAtNet on JFT) --------
  c.pretrain = ml_collections.ConfigDict()
  c.pretrain.steps = 0  # 0 = skip phase 1
  c.pretrain.batch_size = 64
  c.pretrain.lr = 1e-3
  c.pretrain.weight_decay = 1e-4

  # --- optimizer ------------------------------------------------------------------------------------
  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adamw"  # adamw | adafactorw
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 20
  c.optim.schedule = "cosine"  # cosine | linear | constant (after warmup)
  c.optim.end_lr_frac = 0.0
  c.optim.weight_decay = 0.1
  c.optim.clip_norm = 1.0  # 0 = no clipping
  c.optim.b1 = 0.9
  c.optim.b2 = 0.98
  c.optim.eps = 1e-6

  # --- data (see basic_core/data) -----------------------------------------------------------------
  c.data = ml_collections.ConfigDict()
  c.data.world = "scenes"  # the built-in world (basic_core/worlds): scenes | digits | objects
  c.data.name = ""  # the older name of data.world, still accepted (configs.world_name)
  c.data.train = "builtin"  # builtin | CSV/TSV path | WebDataset shards (list or brace pattern)
  c.data.num_train = 20000  # training pairs of the built-in sets (the pool m; unused when fresh); with
  # loss.estimator=sogclr also the rows of its per-pair table, which must hold any pool (real data too)
  c.data.fresh = False  # built-in scenes only: every training pair drawn once, never repeated
  c.data.num_test = 2000  # held-out pairs (same distribution)
  c.data.noise = 0.0  # fraction of captions replaced by another random caption
  c.data.augment = True
  c.data.tokenizer = "builtin"  # builtin | path to a tokenizers JSON | clip-bpe:PATH
  c.data.seed = 0  # the data universe; train.seed-independent so seeds share data
  c.data.test = ""  # real data's held-out pairs (CSV / shards); "" = a seeded tenth of data.train
  c.data.csv_image_key = "filepath"  # CSV/TSV columns (OpenCLIP's defaults)
  c.data.csv_caption_key = "title"
  c.data.csv_label_key = ""  # optional integer class column, for supervised pretraining
  c.data.eval_folder = ""  # image folder + classnames.json + templates.json: an extra zero-shot task

  # --- evaluation ---------------------------------------------------------------------------------
  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 256  # FIXED contrastive batch for held-out / train losses (gap compares like)
  c.eval.num_pairs = 1024  # pairs used for held-out loss, train loss at eval batch, retrieval
  c.eval.num_images = 512  # images per zero-shot task
  c.eval.probe_every = 0  # > 0: every k steps, losses and gaps on a few pairs (metrics.jsonl, probe_*)
  c.eval.probe_pairs = 2048  # held-out and trained pairs per probe
  c.eval.control = False  # also the split-half bias check on the run's initial weights (control_*)

  # --- XLA:CPU tuning: how the step is compiled, never what it computes (no effect on other backends) ---
  c.xla = ml_collections.ConfigDict()
  c.xla.cpu_scheduler = "concurrency"  # concurrency | memory: XLA:CPU's scheduler (step.compiler_options)
  c.xla.dense_grad = "ynn"  # ynn | autodiff: dense weight-gradient dots (models/matmul.py)
  c.xla.attention_grad = "manual"  # manual | autodiff: attention's backward pass (models/attend.py)

  # --- devices --------------------------------------------------------------------------------------
  # data x model devices (-1 = the rest); rules: tensor | fsdp | replicate | custom (see sharding.py);
  # extra_rules: (regex, spec) pairs tried before them, e.g. (('qkv/kernel', (None, 'model')),)
  c.mesh = ml_collections.ConfigDict(dict(data=-1, model=1, rules="tensor", extra_rules=()))
  return c
