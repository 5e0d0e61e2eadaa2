"""`preprocess`: uint8 images -> normalised float32, with augmentation that keeps captions true.

Pure JAX, so it runs inside the jitted train step (it lives outside `data/`: the step imports no readers
or tokenizers). All randomness comes from the key passed in, so the two passes of the accumulated step
(embed, then recompute for the gradient) see identical pixels.
There is no horizontal flip (captions say "left" and "right") and no hue change (they name colours):
only a mild random-resized crop (a shift of a few pixels at most) and brightness/contrast jitter.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MIN_CROP_AREA = 0.85  # crops keep at least this fraction of the image
BRIGHTNESS = 0.08  # added to [0, 1] pixels, uniform in +-this
CONTRAST = 0.15  # contrast scaled by 1 +- this
MEAN, STD = 0.5, 0.5  # pixels end in [-1, 1]


def _bilinear_BxNxN(start_B: jax.Array, side_B: jax.Array, n: int) -> jax.Array:
  """Resampling weights: output pixel i reads input coordinate start + (i + 0.5) * side / n - 0.5."""
  pos_BxN = start_B[:, None] + (jnp.arange(n) + 0.5)[None, :] * (side_B[:, None] / n) - 0.5
  pos_BxN = jnp.clip(pos_BxN, 0, n - 1)
  return jnp.maximum(0.0, 1.0 - jnp.abs(pos_BxN[:, :, None] - jnp.arange(n)[None, None, :]))


def augment(key: jax.Array, x_BxHxWx3: jax.Array) -> jax.Array:
  """Random-resized crop and brightness/contrast jitter of [0, 1] images, per sample."""
  b, h, w, _ = x_BxHxWx3.shape
  u_Bx5 = jax.random.uniform(key, (b, 5))
  side_B = jnp.sqrt(MIN_CROP_AREA + (1.0 - MIN_CROP_AREA) * u_Bx5[:, 0])
  rows = _bilinear_BxNxN(u_Bx5[:, 1] * (1.0 - side_B) * h, side_B * h, h)
  cols = _bilinear_BxNxN(u_Bx5[:, 2] * (1.0 - side_B) * w, side_B * w, w)
  out = jnp.einsum("bih,bhwc,bjw->bijc", rows, x_BxHxWx3, cols)
  mean = out.mean(axis=(1, 2, 3), keepdims=True)
  contrast = (1.0 + CONTRAST * (2.0 * u_Bx5[:, 3] - 1.0))[:, None, None, None]
  brightness = (BRIGHTNESS * (2.0 * u_Bx5[:, 4] - 1.0))[:, None, None, None]
  return jnp.clip((out - mean) * contrast + mean + brightness, 0.0, 1.0)


def preprocess(images_uint8, key: jax.Array | None = None) -> jax.Array:
  """float32 [B, H, W, 3]: augmented with `key`; `key=None` gives the deterministic eval transform."""
  x = jnp.asarray(images_uint8).astype(jnp.float32) / 255.0
  if key is not None:
    x = augment(key, x)
  return (x - MEAN) / STD
