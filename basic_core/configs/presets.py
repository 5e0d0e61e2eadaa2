"""Presets. Each function edits the base config in place; its docstring has a command that runs it.

Where the sizes come from (tags as in the project's paper notes: [V] read in the paper or its abstract,
[S] a secondary source, [R] recalled and not re-verified, [I] our choice):
- BASIC-L: image tower CoAtNet-7, about 2.4B parameters [S: Cherti et al. 2212.07143 and CoAtNet v2
  tables], whole model about 3B weights [V: abstract]; text tower 12 layers x 2048 [R], which with a 32k
  vocabulary gives about 0.67B, consistent with the 3B total [I].
- BASIC-M, BASIC-S: the paper's Table 5 was not available to us. We use CoAtNet-3 + 12 x 1024 text (M)
  and CoAtNet-0 + 6 x 1024... as recalled [R, low confidence]; treat them as "BASIC-like at that scale".
- The projection dimension, vocabulary (32k SentencePiece [R]) and context length (64, ALIGN's [R]) of the
  paper are not verified; our values are stated below.
- CoAtNet stage layouts are from the CoAtNet paper's family table [S, via keras_cv_attention_models].
"""

from __future__ import annotations

import ml_collections


def tiny(c: ml_collections.ConfigDict) -> None:
  """Seconds on a laptop CPU: 32x32 scenes, patch 4, 2-layer towers of width 64.

  python -m basic_core.train --config tiny --workdir runs/tiny
  """
  c.model.embed_dim = 64
  c.model.image.image_size = 32
  c.model.image.vit.update(dict(patch=4, width=64, layers=2, heads=2, mlp_ratio=4))
  c.model.text.update(dict(context=24, width=64, layers=2, heads=2, mlp_ratio=4))
  c.train.update(dict(batch_size=64, steps=300, log_every=10, checkpoint_every=100))
  c.optim.update(dict(lr=2e-3, warmup_steps=20, weight_decay=0.05))


def small(c: ml_collections.ConfigDict) -> None:
  """Minutes on CPU: 4-layer towers of width 128, patch 4.

  python -m basic_core.train --config small --workdir runs/small
  """
  c.model.embed_dim = 128
  c.model.image.image_size = 32
  c.model.image.vit.update(dict(patch=4, width=128, layers=4, heads=4, mlp_ratio=4))
  c.model.text.update(dict(context=24, width=128, layers=4, heads=4, mlp_ratio=4))
  c.train.update(dict(batch_size=256, steps=2000, log_every=20, checkpoint_every=500))
  c.optim.update(dict(lr=1e-3, warmup_steps=100, weight_decay=0.1))


def peer_vit(c: ml_collections.ConfigDict) -> None:
  """Exactly the OpenCLIP peer harness's model (../shared/bench/openclip_peer): 22.3M parameters.

  ViT 64x64 patch 8, width 256, 6 layers, 4 heads, MLP 4; text context 32, vocabulary 49,408,
  width 256, 4 heads, 6 layers; embedding 256; float32; AdamW as OpenCLIP's ViT defaults.

  python -m basic_core.bench throughput --config peer-vit
  """
  c.model.embed_dim = 256
  c.model.image.image_size = 64
  c.model.image.vit.update(dict(patch=8, width=256, layers=6, heads=4, mlp_ratio=4))
  c.model.text.update(dict(vocab_size=49408, context=32, width=256, layers=6, heads=4, mlp_ratio=4))
  c.train.update(dict(batch_size=256, steps=100))
  c.optim.update(dict(name="adamw", lr=5e-4, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.2))


def _basic(c: ml_collections.ConfigDict, *, coatnet: dict, text_layers: int, text_width: int,
           text_heads: int, embed_dim: int) -> None:
  c.model.embed_dim = embed_dim
  c.model.image.kind = "coatnet"
  c.model.image.image_size = 224
  c.model.image.coatnet.update(coatnet)
  c.model.text.update(dict(vocab_size=32768, context=64, width=text_width, layers=text_layers,
                           heads=text_heads, mlp_ratio=4))
  c.model.remat = "full"
  c.model.dtype = "bfloat16"
  c.train.update(dict(batch_size=65536, microbatch_size=1024, steps=500_000))
  c.loss.tile = 4096
  c.optim.update(dict(name="adafactorw", lr=1e-3, warmup_steps=10_000, weight_decay=0.01))


def basic_s(c: ml_collections.ConfigDict) -> None:
  """BASIC-S-like: CoAtNet-0 image tower + 6 x 1024 text tower [R, see module docstring].

  python -m basic_core.plan --config basic-s --mesh data=8,model=1 --batch 65536 --microbatch 512
  """
  _basic(c, coatnet=dict(stem=64, blocks=(2, 3, 5, 2), widths=(96, 192, 384, 768), types="CCTT",
                         strides=(2, 2, 2, 2), head_dim=32),
         text_layers=6, text_width=1024, text_heads=16, embed_dim=768)


def basic_m(c: ml_collections.ConfigDict) -> None:
  """BASIC-M-like: CoAtNet-3 image tower + 12 x 1024 text tower [R, see module docstring].

  python -m basic_core.plan --config basic-m --mesh data=16,model=4 --batch 65536 --microbatch 256
  """
  _basic(c, coatnet=dict(stem=192, blocks=(2, 6, 14, 2), widths=(192, 384, 768, 1536), types="CCTT",
                         strides=(2, 2, 2, 2), head_dim=32),
         text_layers=12, text_width=1024, text_heads=16, embed_dim=1024)


def basic_l(c: ml_collections.ConfigDict) -> None:
  """BASIC-L: CoAtNet-7 (about 2.4B) + 12 x 2048 text tower; about 3B weights in all.

  python -m basic_core.plan --config basic-l --mesh data=64,model=8 --batch 65536 --microbatch 128
  """
  _basic(c, coatnet=dict(stem=192, blocks=(2, 4, 8, 42, 2), widths=(256, 512, 1024, 2048, 3072),
                         types="CCCTT", strides=(2, 2, 2, 1, 2), head_dim=128),
         text_layers=12, text_width=2048, text_heads=16, embed_dim=1024)
