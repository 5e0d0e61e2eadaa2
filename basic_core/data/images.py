"""Image bytes of any common format and mode -> RGB uint8 at the model's size.

Real data comes grayscale, palette, RGBA, CMYK or 16-bit; all of it is converted (alpha over white),
and anything PIL cannot decode completely raises CorruptImage so a reader can skip the sample.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class CorruptImage(ValueError):
  """Bytes that are not a complete image PIL can read."""


def to_rgb(im: Image.Image) -> Image.Image:
  if im.mode == "RGB":
    return im
  if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")
  if im.mode.startswith("I;16"):  # 16-bit grayscale: keep the top 8 bits
    return Image.fromarray((np.asarray(im, np.uint16) >> 8).astype(np.uint8)).convert("RGB")
  return im.convert("RGB")


def fit(im: Image.Image, size: int) -> np.ndarray:
  """uint8 [size, size, 3]: RGB (`to_rgb`), centre crop to a square, then resize (bicubic)."""
  rgb = to_rgb(im)
  if rgb.size != (size, size):
    rgb = ImageOps.fit(rgb, (size, size), Image.Resampling.BICUBIC)
  return np.asarray(rgb, np.uint8)


def decode(data: bytes, size: int) -> np.ndarray:
  """uint8 [size, size, 3] of encoded bytes (`fit`)."""
  try:
    with Image.open(io.BytesIO(data)) as im:
      im.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when it is large
      return fit(im, size)
  except _DECODE_ERRORS as e:
    raise CorruptImage(f"{type(e).__name__}: {e}") from e


def encode_png(image_HxWx3: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image_HxWx3).save(buf, format="PNG", compress_level=1)
  return buf.getvalue()
