"""What the heatmap codecs share: Gaussian targets, the heatmap maximum, the sub-pixel
refinements and the batched decode (mirrors mmpose ``codecs/utils/gaussian_heatmap.py``,
``post_processing.py`` and ``refinement.py``).

Layout: a codec works per instance on heatmaps ``[K, H, W]`` as mmpose does; ``decode_batch``
takes what the JAX model outputs, ``[B, H, W, K]``. Sizes are ``(w, h)`` pairs (mmpose's
``input_size`` / ``heatmap_size``); keypoints are ``(x, y)`` in pixels.

The arithmetic follows mmpose's dtypes (float32 where it computes in float32), so that targets
and decoded keypoints equal mmpose's bit for bit; ``gaussian_blur`` reproduces OpenCV's float32
``GaussianBlur`` (see there for where it cannot).
"""

from __future__ import annotations

import abc

import numpy as np

CENTRES = ('msra', 'udp', 'unbiased')


def gaussian_heatmaps(
  heatmap_size: tuple[int, int],
  keypoints: np.ndarray,
  keypoints_visible: np.ndarray,
  sigma: float,
  centre: str,
) -> tuple[np.ndarray, np.ndarray]:
  """Unnormalised Gaussian targets (peak 1) of ``keypoints`` ``[N, K, 2]`` (heatmap pixels) and
  their weights.

  ``centre`` says where each Gaussian sits and where it is drawn:

  - ``'msra'``: on the keypoint rounded to a pixel, inside the ``2 * 3 sigma + 1`` window around
    it (mmpose ``generate_gaussian_heatmaps``);
  - ``'udp'``: on the keypoint itself, inside that same window
    (``generate_udp_gaussian_heatmaps``);
  - ``'unbiased'``: on the keypoint itself, over the whole heatmap (DARK,
    ``generate_unbiased_gaussian_heatmaps``).

  Keypoints with ``keypoints_visible < 0.5`` get no Gaussian; a labelled keypoint whose window
  lies wholly outside the heatmap gets none and weight 0. The heatmap of keypoint k is the
  maximum over the N instances.

  Returns heatmaps ``[K, H, W]`` float32 and weights ``[N, K]`` (``keypoints_visible``'s dtype).
  Raises ``ValueError`` for an unknown ``centre``.
  """
  if centre not in CENTRES:
    raise ValueError(f'centre: {centre!r} is not one of {", ".join(CENTRES)}')
  keypoints = np.asarray(keypoints)
  keypoints_visible = np.asarray(keypoints_visible)
  w, h = heatmap_size
  radius = sigma * 3
  x = np.arange(w, dtype=np.float32)
  y = np.arange(h, dtype=np.float32)
  if centre == 'unbiased':
    low, high = keypoints - radius, keypoints + radius + 1
    dx = x - keypoints[..., 0, None]  # [N, K, W]
    dy = y - keypoints[..., 1, None]
    window = np.ones(keypoints.shape[:2] + (h, w), bool)
  else:
    # mmpose's integer arithmetic: the pixel is int(kp + 0.5), the window's corners truncate
    centre_px = (keypoints + 0.5).astype(np.int64)
    low = (centre_px - radius).astype(np.int64)
    high = (centre_px + radius + 1).astype(np.int64)
    peak = (2 * radius + 1) // 2  # the peak's index inside the window
    if centre == 'udp':
      peak = peak + (keypoints - centre_px)  # sub-pixel peak (float64, as in mmpose)
      dx = (x - low[..., 0, None]).astype(np.float32) - peak[..., 0, None]
      dy = (y - low[..., 1, None]).astype(np.float32) - peak[..., 1, None]
    else:
      dx = (x - low[..., 0, None]).astype(np.float32) - peak
      dy = (y - low[..., 1, None]).astype(np.float32) - peak
    in_x = (x >= low[..., 0, None]) & (x < high[..., 0, None])
    in_y = (y >= low[..., 1, None]) & (y < high[..., 1, None])
    window = in_y[..., :, None] & in_x[..., None, :]
  gaussian = np.exp(-(dx[..., None, :] ** 2 + dy[..., :, None] ** 2) / (2 * sigma**2))
  labelled = keypoints_visible >= 0.5
  on_heatmap = (low[..., 0] < w) & (low[..., 1] < h) & (high[..., 0] >= 0) & (high[..., 1] >= 0)
  drawn = window & (labelled & on_heatmap)[..., None, None]
  heatmaps = np.where(drawn, gaussian, 0).max(axis=0, initial=0).astype(np.float32)
  weights = keypoints_visible.copy()
  weights[labelled & ~on_heatmap] = 0
  return heatmaps, weights


def heatmap_maximum(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Location ``[..., K, 2]`` float32 (x, y; first maximum in row-major order) and value
  ``[..., K]`` of each heatmap's maximum, of heatmaps ``[..., K, H, W]``; the location is
  ``(-1, -1)`` where the maximum is <= 0 (mmpose ``get_heatmap_maximum``)."""
  h, w = heatmaps.shape[-2:]
  flat = heatmaps.reshape(heatmaps.shape[:-2] + (h * w,))
  y, x = np.divmod(np.argmax(flat, axis=-1), w)
  locations = np.stack([x, y], axis=-1).astype(np.float32)
  values = np.max(flat, axis=-1)
  locations[values <= 0] = -1
  return locations, values


def gaussian_kernel(size: int) -> np.ndarray:
  """OpenCV's ``getGaussianKernel(size, 0)`` as float32 ``[size]``: OpenCV 5's fixed table for
  odd sizes up to 9 (OpenCV 4's stops at 7), else the normalised Gaussian of sigma
  ``0.3 * ((size - 1) / 2 - 1) + 0.8``. Raises ``ValueError`` for an even or non-positive
  ``size``."""
  if size < 1 or size % 2 == 0:
    raise ValueError(f'blur_kernel_size: {size} is not a positive odd number')
  small = {
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
    9: (4, 13, 30, 51, 60, 51, 30, 13, 4),  # in 256ths
  }
  if size in small:
    table = np.asarray(small[size], np.float32)
    return table / 256 if size == 9 else table
  sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
  t = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma**2))
  return (t / t.sum()).astype(np.float32)


def _fma(a: np.ndarray, b: np.float32, c: np.ndarray) -> np.ndarray:
  """``a * b + c`` rounded once to float32 (a fused multiply-add): float64 holds the float32
  product exactly, so only the sum is rounded (twice, which differs from one rounding with
  probability ~2**-29)."""
  return (a.astype(np.float64) * np.float64(b) + c).astype(np.float32)


def gaussian_blur(heatmaps: np.ndarray, kernel_size: int) -> np.ndarray:
  """DARK's heatmap modulation (mmpose ``gaussian_blur``) of float32 heatmaps ``[..., H, W]``:
  each is zero-padded by ``(kernel_size - 1) / 2``, blurred as OpenCV's
  ``GaussianBlur(ksize, 0)`` does, cropped back and rescaled to its original maximum. Returns a
  new float32 array of the same shape (NaN where a heatmap is zero after the blur, as mmpose's).
  Raises ``ValueError`` for a bad ``kernel_size``.

  The blur reproduces OpenCV's float32 separable filter on x86-64 (its AVX2 code, which DARK's
  Taylor step is sensitive to): a row pass accumulating the taps left to right by fused
  multiply-adds, then a column pass from the centre tap adding the symmetric pairs of rows, by
  fused multiply-adds in 8-column vectors and by plain ones in the last ``padded width % 8``
  columns. Kernel sizes 3 and 5 (OpenCV's small-kernel filters) and other CPUs' vector code round
  differently, by about 1 float32 ulp of the blurred values.
  """
  kernel = gaussian_kernel(kernel_size)
  border = (kernel_size - 1) // 2
  h, w = heatmaps.shape[-2:]
  pad = [(0, 0)] * (heatmaps.ndim - 2) + [(border, border), (border, border)]
  padded = np.pad(np.asarray(heatmaps, np.float32), pad)
  rows = padded[..., :, :w] * kernel[0]
  for i in range(1, kernel_size):
    rows = _fma(padded[..., :, i : i + w], kernel[i], rows)
  width = w + 2 * border
  scalar = np.arange(border, border + w) >= width - width % 8
  blurred = rows[..., border : border + h, :] * kernel[border]
  for i in range(1, border + 1):
    pair = rows[..., border + i : border + i + h, :] + rows[..., border - i : border - i + h, :]
    tap = kernel[border + i]
    blurred = np.where(scalar, blurred + pair * tap, _fma(pair, tap, blurred))
  origin_max = np.max(heatmaps, axis=(-2, -1), keepdims=True).astype(np.float32)
  with np.errstate(divide='ignore', invalid='ignore'):
    return blurred * (origin_max / np.max(blurred, axis=(-2, -1), keepdims=True))


def _at(heatmaps: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """``heatmaps[..., k, y, x]`` for per-keypoint pixel indices ``x``, ``y`` ``[..., K]``
  (clipped into the heatmap; callers mask what lies outside)."""
  h, w = heatmaps.shape[-2:]
  flat = heatmaps.reshape(heatmaps.shape[:-2] + (h * w,))
  index = np.clip(y, 0, h - 1) * w + np.clip(x, 0, w - 1)
  return np.take_along_axis(flat, index[..., None], axis=-1)[..., 0]


def refine_quarter_offset(keypoints: np.ndarray, heatmaps: np.ndarray) -> np.ndarray:
  """Moves each keypoint ``[..., K, 2]`` (an argmax, heatmap pixels) a quarter pixel toward the
  higher of its two neighbours along x and along y, of heatmaps ``[..., K, H, W]``, where they
  exist (mmpose ``refine_keypoints``, whose bounds keep x > 1 for the x step). Returns a new
  float32 array."""
  h, w = heatmaps.shape[-2:]
  x, y = keypoints[..., 0].astype(int), keypoints[..., 1].astype(int)
  dx = _at(heatmaps, x + 1, y) - _at(heatmaps, x - 1, y)
  dy = _at(heatmaps, x, y + 1) - _at(heatmaps, x, y - 1)
  dx = np.where((1 < x) & (x < w - 1) & (0 < y) & (y < h), dx, 0)
  dy = np.where((1 < y) & (y < h - 1) & (0 < x) & (x < w), dy, 0)
  return keypoints + np.sign(np.stack([dx, dy], axis=-1)).astype(np.float32) * 0.25


def refine_dark(keypoints: np.ndarray, heatmaps: np.ndarray, blur_kernel_size: int) -> np.ndarray:
  """DARK's Taylor refinement (mmpose ``refine_keypoints_dark``): on the log of the blurred
  heatmaps ``[..., K, H, W]``, each keypoint ``[..., K, 2]`` at least two pixels inside moves by
  ``-hessian^-1 @ gradient`` (central differences, float32) where the hessian is invertible.
  Returns a new float32 array."""
  h, w = heatmaps.shape[-2:]
  logs = np.log(np.maximum(gaussian_blur(heatmaps, blur_kernel_size), 1e-10))
  x, y = keypoints[..., 0].astype(int), keypoints[..., 1].astype(int)
  at = lambda ox, oy: _at(logs, x + ox, y + oy)
  dx = 0.5 * (at(1, 0) - at(-1, 0))
  dy = 0.5 * (at(0, 1) - at(0, -1))
  dxx = 0.25 * (at(2, 0) - 2 * at(0, 0) + at(-2, 0))
  dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
  dyy = 0.25 * (at(0, 2) - 2 * at(0, 0) + at(0, -2))
  inside = (1 < x) & (x < w - 2) & (1 < y) & (y < h - 2)
  solvable = inside & (dxx * dyy - dxy**2 != 0)
  hessian = np.stack([np.stack([dxx, dxy], -1), np.stack([dxy, dyy], -1)], -2)[solvable]
  gradient = np.stack([dx, dy], -1)[solvable][..., None]
  out = keypoints.copy()
  out[solvable] += (-np.linalg.inv(hessian) @ gradient)[..., 0]
  return out


def refine_dark_udp(
  keypoints: np.ndarray, heatmaps: np.ndarray, blur_kernel_size: int
) -> np.ndarray:
  """UDP's Taylor refinement (mmpose ``refine_keypoints_dark_udp``): on the log of the blurred
  heatmaps ``[..., K, H, W]`` clipped to [1e-3, 50] and edge-padded by one pixel, each keypoint
  ``[..., K, 2]`` moves by ``-(hessian + eps I)^-1 @ gradient`` (one-pixel differences). Returns a
  new float32 array.

  The neighbours are read from each instance's K padded heatmaps flattened into one array, as
  mmpose does; for a keypoint at (-1, -1) (a heatmap with no positive value) some of them wrap
  into the previous keypoint's heatmap (into the last one for k = 0), as numpy's negative indices
  do there.
  """
  h, w = heatmaps.shape[-2:]
  k = heatmaps.shape[-3]
  logs = np.log(np.clip(gaussian_blur(heatmaps, blur_kernel_size), 1e-3, 50.0))
  pad = [(0, 0)] * (logs.ndim - 2) + [(1, 1), (1, 1)]
  flat = np.pad(logs, pad, mode='edge').reshape(logs.shape[:-3] + (-1,))
  row = w + 2
  index = keypoints[..., 0] + 1 + (keypoints[..., 1] + 1) * row
  index = (index + row * (h + 2) * np.arange(k)).astype(int)
  at = lambda offset: np.take_along_axis(flat, (index + offset) % flat.shape[-1], axis=-1)
  centre, x1, x1_, y1, y1_ = at(0), at(1), at(-1), at(row), at(-row)
  dx = 0.5 * (x1 - x1_)
  dy = 0.5 * (y1 - y1_)
  dxx = x1 - 2 * centre + x1_
  dyy = y1 - 2 * centre + y1_
  dxy = 0.5 * (at(row + 1) - x1 - y1 + centre + centre - x1_ - y1_ + at(-row - 1))
  hessian = np.stack([np.stack([dxx, dxy], -1), np.stack([dxy, dyy], -1)], -2)
  hessian = np.linalg.inv(hessian + np.finfo(np.float32).eps * np.eye(2))
  offset = np.einsum('...mn,...n->...m', hessian, np.stack([dx, dy], -1))
  return (keypoints - offset).astype(np.float32)


class HeatmapCodec(abc.ABC):
  """The decode interface of the heatmap codecs. A subclass sets ``input_size`` and
  ``heatmap_size`` (``(w, h)``) and implements ``encode`` and ``_decode``."""

  input_size: tuple[int, int]
  heatmap_size: tuple[int, int]

  @abc.abstractmethod
  def _decode(self, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Instances' heatmaps ``[N, K, H, W]`` float32 -> keypoints ``[N, K, 2]`` (input pixels),
    scores ``[N, K]``."""

  def _check(self, heatmaps: np.ndarray, layout: str) -> None:
    w, h = self.heatmap_size
    axes = dict(zip(layout, heatmaps.shape))
    if heatmaps.ndim != len(layout) or (axes['H'], axes['W']) != (h, w):
      raise ValueError(
        f'heatmaps: shape {tuple(heatmaps.shape)} is not [{", ".join(layout)}] with H, W = '
        f'{h}, {w} (the heatmap_size)'
      )

  def decode(self, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints ``[1, K, 2]`` (x, y in input-image pixels) and scores ``[1, K]`` (the heatmap
    maxima) of one instance's heatmaps ``[K, H, W]`` (cast to float32), as mmpose's ``decode``.
    Raises ``ValueError`` for a shape that is not ``[K, H, W]`` of the ``heatmap_size``."""
    heatmaps = np.asarray(heatmaps, np.float32)
    self._check(heatmaps, 'KHW')
    return self._decode(heatmaps[None])

  def decode_batch(self, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``decode`` of each of the model's heatmaps ``[B, H, W, K]`` (NHWC, a numpy or JAX
    array, cast to float32): keypoints ``[B, K, 2]`` in input-image pixels, scores ``[B, K]``.
    Raises ``ValueError`` for a shape that is not ``[B, H, W, K]`` of the ``heatmap_size``."""
    heatmaps = np.asarray(heatmaps, np.float32)
    self._check(heatmaps, 'BHWK')
    return self._decode(np.ascontiguousarray(heatmaps.transpose(0, 3, 1, 2)))
