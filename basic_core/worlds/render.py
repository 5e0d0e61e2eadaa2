"""A vectorised numpy rasteriser for flat shapes, fast enough to render training data on the fly.

Every object is an implicit shape, tested only on a small pixel window around it; one object slot
of every image in the batch is painted at once, so a batch costs a few dozen numpy calls per slot,
not per image.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Shape ids 0..7 are the benchmark's label space; BAR and BLOCK only draw clutter and occluders.
SHAPE_NAMES = ("circle", "square", "triangle", "diamond", "cross", "hexagon", "heart", "star")
BAR, BLOCK = len(SHAPE_NAMES), len(SHAPE_NAMES) + 1
FILL_NAMES = ("solid", "outlined", "striped", "checkered")
SOLID, OUTLINED, STRIPED, CHECKERED = range(len(FILL_NAMES))
REACH = 1.2  # every shape, at any rotation, lies within this many radii of its centre
PATTERN_SHADE = 0.4  # off-pattern pixels of striped / checkered objects: this fraction of the colour
_STAR_INNER = 0.45


def _star(u, v):
  """Inside a five-pointed star: fold the angle into one point, test against its edge."""
  rho = np.sqrt(u * u + v * v)
  sector = 2 * np.pi / 5
  phi = np.abs(np.mod(np.arctan2(u, -v) + sector / 2, sector) - sector / 2)
  qx, qy = rho * np.cos(phi), rho * np.sin(phi)
  ex, ey = _STAR_INNER * np.cos(sector / 2) - 1.0, _STAR_INNER * np.sin(sector / 2)
  return ex * qy - ey * (qx - 1.0) >= 0


def _heart(u, v):
  x, y = 1.15 * u, 0.1 - 1.15 * v
  q = x * x + y * y - 1.0
  return q * q * q <= x * x * y * y * y


SHAPE_FNS = (
    lambda u, v: u * u + v * v <= 1.0,  # circle
    lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.82,  # square
    lambda u, v: (v <= 0.75) & (np.abs(u) <= (v + 0.95) * 0.6),  # triangle, apex up
    lambda u, v: np.abs(u) + np.abs(v) <= 1.05,  # diamond
    lambda u, v: ((np.abs(u) <= 0.32) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.32) & (np.abs(u) <= 0.95)),
    lambda u, v: (np.abs(v) <= 0.866) & (0.866 * np.abs(u) + 0.5 * np.abs(v) <= 0.866),  # hexagon
    _heart,
    _star,
    lambda u, v: (np.abs(u) <= 1.0) & (np.abs(v) <= 0.18),  # BAR
    lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 1.0,  # BLOCK
)


@dataclasses.dataclass
class Drawing:
  """N images of up to K objects each, in image-fraction units (x right, y down, [0, 1])."""

  background_NxHxWx3: np.ndarray  # uint8
  shape_NxK: np.ndarray  # int, index into SHAPE_FNS
  centre_NxKx2: np.ndarray  # float32 (x, y)
  radius_NxK: np.ndarray  # float32, in image fractions
  angle_NxK: np.ndarray  # float32 rotation in radians
  fill_NxK: np.ndarray  # int, index into FILL_NAMES
  line_NxK: np.ndarray  # float32 outline thickness in pixels (used by OUTLINED)
  rgb_NxKx3: np.ndarray  # uint8
  active_NxK: np.ndarray  # bool; objects are painted in slot order

  def concat_slots(self, other: Drawing) -> Drawing:
    """This drawing's objects followed by `other`'s (same images; `other`'s background is unused)."""
    fields = {f.name: np.concatenate([getattr(self, f.name), getattr(other, f.name)], axis=1)
              for f in dataclasses.fields(self) if f.name != "background_NxHxWx3"}
    return Drawing(background_NxHxWx3=self.background_NxHxWx3, **fields)


def _window(centre_N: np.ndarray, radius_N: np.ndarray, size: int) -> np.ndarray:
  """Pixel indices [N, w] of a window around each object (w fits the largest), clipped into the image."""
  w = min(size, int(np.ceil(2 * REACH * radius_N.max() * size)) + 2)
  start = np.clip(np.floor(centre_N * size - w / 2).astype(np.int64), 0, size - w)
  return start[:, None] + np.arange(w)[None, :]


def _inside(shape_N: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """bool [N, w, w]: each object's own shape test on its (broadcastable) coordinates."""
  out = np.zeros(np.broadcast_shapes(u.shape, v.shape), bool)
  for s in np.unique(shape_N):
    sel = shape_N == s
    out[sel] = SHAPE_FNS[s](u[sel], v[sel])
  return out


def render(d: Drawing) -> np.ndarray:
  """Paints the drawing's objects over its background, slot by slot: uint8 [N, H, W, 3]."""
  canvas = d.background_NxHxWx3.copy()
  size = canvas.shape[1]
  period = max(2, size // 12)  # of the stripe and check patterns, in pixels
  for k in range(d.shape_NxK.shape[1]):
    idx = np.flatnonzero(d.active_NxK[:, k])
    if idx.size == 0:
      continue
    # Objects are tested on a window around them only: x varies along the last axis, y along the middle.
    r, cx, cy = d.radius_NxK[idx, k], d.centre_NxKx2[idx, k, 0], d.centre_NxKx2[idx, k, 1]
    cols_1xw, rows_wx1 = _window(cx, r, size)[:, None, :], _window(cy, r, size)[:, :, None]
    u = ((cols_1xw + 0.5) / size - cx[:, None, None]) / r[:, None, None]
    v = ((rows_wx1 + 0.5) / size - cy[:, None, None]) / r[:, None, None]
    angle = d.angle_NxK[idx, k][:, None, None]
    if angle.any():
      u, v = np.cos(angle) * u - np.sin(angle) * v, np.sin(angle) * u + np.cos(angle) * v
    shape, fill = d.shape_NxK[idx, k], d.fill_NxK[idx, k]
    mask = _inside(shape, u, v)
    hollow = np.flatnonzero(fill == OUTLINED)
    if hollow.size:
      r_px = r[hollow][:, None, None] * size
      grow = r_px / np.maximum(r_px - d.line_NxK[idx[hollow], k][:, None, None], 0.5)
      mask[hollow] &= ~_inside(shape[hollow], u[hollow] * grow, v[hollow] * grow)
    stripes = ((cols_1xw + rows_wx1) // period) % 2 == 0
    checks = (cols_1xw // period + rows_wx1 // period) % 2 == 0
    on = np.where((fill == STRIPED)[:, None, None], stripes, (fill != CHECKERED)[:, None, None] | checks)
    rgb = d.rgb_NxKx3[idx, k][:, None, None, :]
    colour = np.where(on[..., None], rgb, (rgb * PATTERN_SHADE).astype(np.uint8))
    window = (idx[:, None, None], rows_wx1, cols_1xw)
    canvas[window] = np.where(mask[..., None], colour, canvas[window])
  return canvas
