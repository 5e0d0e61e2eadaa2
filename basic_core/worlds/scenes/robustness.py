"""Five distribution shifts of the shape task, mirroring the paper's robustness benchmarks.

Same label space (the 8 shapes), single-object scenes, one shift each:
  v2        ImageNet-V2: a fresh resample, mildly shifted (more small objects, more jitter and shading).
  sketch    ImageNet-Sketch: thin dark outlines on white paper, no colour or fill.
  r         ImageNet-R: other renditions: pastel palette, grayscale, inverted, pixel art, blurred.
  a         ImageNet-A: hard cases: small objects among clutter, half of them partly occluded.
  objectnet ObjectNet: unusual backgrounds (colour stripes, checks, gradients) and rotated objects.
"""

from __future__ import annotations

import numpy as np

from basic_core.worlds import render
from basic_core.worlds.scenes import scenes as S
from basic_core.worlds.scenes.benchmark import ScenesBenchmark

SHIFTS = ("v2", "sketch", "r", "a", "objectnet")
_V2 = S.Distribution(size_p=(0.5, 0.3, 0.2), jitter=0.06, shade=0.3)


def shape_task_images(bench: ScenesBenchmark, shift: str, n: int) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 [n, H, W, 3], int32 shape labels [n]) for one shift."""
  labels = (np.arange(n) % len(S.SHAPES)).astype(np.int32)
  rng = bench.rng(f"robustness/{shift}/style")
  fixed = dict(count=1, shape=labels) | (dict(size=0) if shift == "a" else {})
  scenes = bench.sample(f"robustness/{shift}", n, _V2 if shift == "v2" else S.Distribution(), **fixed)
  d = S.to_drawing(scenes, bench.image_size)
  if shift == "v2":
    images = render.render(d)
  elif shift == "sketch":
    images = _sketch(d)
  elif shift == "r":
    images = _rendition(rng, d)
  elif shift == "a":
    images = _hard(rng, d)
  elif shift == "objectnet":
    images = _objectnet(rng, d)
  else:
    raise ValueError(f"unknown shift {shift!r}; shifts: {SHIFTS}")
  return images, labels


def _sketch(d: render.Drawing) -> np.ndarray:
  d.background_NxHxWx3[:] = 250
  d.fill_NxK[:] = render.OUTLINED
  d.line_NxK[:] = 1.0
  d.rgb_NxKx3[:] = 30
  return render.render(d)


def _rendition(rng: np.random.Generator, d: render.Drawing) -> np.ndarray:
  """Style i % 5: pastel palette, grayscale, inverted, pixel art, blurred."""
  style = np.arange(len(d.shape_NxK)) % 5
  pastel = style == 0
  d.rgb_NxKx3[pastel] = d.rgb_NxKx3[pastel] // 2 + 128
  images = render.render(d)
  gray = style == 1
  images[gray] = (images[gray] @ np.array([0.299, 0.587, 0.114]))[..., None].astype(np.uint8)
  images[style == 2] = 255 - images[style == 2]
  pixel = style == 3
  size = images.shape[1]
  images[pixel] = images[pixel][:, ::2, ::2].repeat(2, axis=1).repeat(2, axis=2)[:, :size, :size]
  images[style == 4] = _box_blur(images[style == 4])
  return images


def _box_blur(images_NxHxWx3: np.ndarray) -> np.ndarray:
  h, w = images_NxHxWx3.shape[1:3]
  padded = np.pad(images_NxHxWx3.astype(np.float32), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  total = sum(padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3))
  return np.round(total / 9).astype(np.uint8)


def _extra_objects(d: render.Drawing, shape_NxK, centre_NxKx2, radius_NxK, angle_NxK,
                   rgb_NxKx3) -> render.Drawing:
  """Solid clutter or occluder objects over d's background."""
  return render.Drawing(
      background_NxHxWx3=d.background_NxHxWx3, shape_NxK=shape_NxK,
      centre_NxKx2=centre_NxKx2.astype(np.float32), radius_NxK=radius_NxK.astype(np.float32),
      angle_NxK=angle_NxK.astype(np.float32),
      fill_NxK=np.full(shape_NxK.shape, render.SOLID), line_NxK=np.ones(shape_NxK.shape, np.float32),
      rgb_NxKx3=rgb_NxKx3.astype(np.uint8), active_NxK=np.ones(shape_NxK.shape, bool))


def _hard(rng: np.random.Generator, d: render.Drawing, clutter: int = 4) -> np.ndarray:
  """Small object drawn over `clutter` random bars; every other image gets an occluding block."""
  n = len(d.shape_NxK)
  bars = _extra_objects(
      d, np.full((n, clutter), render.BAR), rng.uniform(0.05, 0.95, (n, clutter, 2)),
      rng.uniform(0.08, 0.14, (n, clutter)), rng.uniform(0, np.pi, (n, clutter)),
      S.PALETTE_Cx3[rng.integers(len(S.COLOURS), size=(n, clutter))])
  corner = rng.choice([-1.0, 1.0], size=(n, 1, 2)) * 0.75 * d.radius_NxK[:, :1, None]
  block = _extra_objects(d, np.full((n, 1), render.BLOCK), d.centre_NxKx2[:, :1] + corner,
                         0.6 * d.radius_NxK[:, :1], np.zeros((n, 1)), np.full((n, 1, 3), 128))
  block.active_NxK[1::2] = False
  return render.render(bars.concat_slots(d).concat_slots(block))


def _objectnet(rng: np.random.Generator, d: render.Drawing) -> np.ndarray:
  """Colourful stripes, checks or gradients behind objects tilted 15-35 degrees or upside down."""
  n, size = len(d.shape_NxK), d.background_NxHxWx3.shape[1]
  pix = np.arange(size)
  period = max(2, size // 6)
  patterns_3xHxW = np.stack([((pix[None, :] + pix[:, None]) // period) % 2,
                             (pix[None, :] // period + pix[:, None] // period) % 2,
                             np.broadcast_to(pix[None, :] / (size - 1), (size, size))])
  t_NxHxW = patterns_3xHxW[np.arange(n) % 3]
  c1, c2 = (rng.integers(0, 256, (n, 1, 1, 3)).astype(np.float32) for _ in range(2))
  d.background_NxHxWx3[:] = np.round(c1 + (c2 - c1) * t_NxHxW[..., None]).astype(np.uint8)
  tilt = rng.uniform(np.radians(15), np.radians(35), n) * rng.choice([-1.0, 1.0], n)
  upside_down = np.pi + rng.uniform(-np.radians(15), np.radians(15), n)
  d.angle_NxK[:] = np.where(rng.random(n) < 0.5, tilt, upside_down)[:, None]
  return render.render(d)
