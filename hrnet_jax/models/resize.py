"""Resizing NHWC maps exactly as PyTorch's ``F.interpolate`` does, for the dense HRNet models.

``resize_bilinear`` is ``F.interpolate(x, size, mode='bilinear', align_corners=False)``
(half-pixel centres, no antialiasing, source coordinates clamped at 0 and at the last pixel:
ATen ``upsample_bilinear2d``), separably along H then W. It is exact at any pair of sizes, unlike
``jax.image.resize``, which antialiases when it shrinks.

``fuse_upsample`` is the upsampling inside an HRNet fuse layer: nearest (official classification
code, timm, mmpretrain, mmpose body, mmdet) or bilinear (mmseg, mmpose ``upsample=bilinear``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax.models.layers import upsample_nearest

FUSE_UPSAMPLE_MODES = ('nearest', 'bilinear')


def _bilinear_axis(x: jax.Array, axis: int, out_size: int) -> jax.Array:
  in_size = x.shape[axis]
  if out_size == in_size:
    return x  # scale 1: every source coordinate is an integer
  # ATen area_pixel_compute_source_index: src = max((dst + 0.5) * in / out - 0.5, 0), computed
  # in float32 as ATen does for float tensors (float64 coordinates differ by up to 1e-6 px).
  f32 = np.float32
  scale = f32(in_size) / f32(out_size)
  src = np.maximum(scale * (np.arange(out_size, dtype=f32) + f32(0.5)) - f32(0.5), f32(0))
  i0 = np.minimum(src.astype(np.int32), in_size - 1)
  i1 = np.minimum(i0 + 1, in_size - 1)
  shape = [1] * x.ndim
  shape[axis] = out_size
  lam = jnp.asarray((src - i0.astype(f32)).reshape(shape), x.dtype)
  return jnp.take(x, i0, axis=axis) * (1 - lam) + jnp.take(x, i1, axis=axis) * lam


def resize_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """``x [B, H, W, C]`` -> ``[B, H', W', C]`` for ``size = (H', W')``, as PyTorch
  ``F.interpolate(x, size=size, mode='bilinear', align_corners=False)`` (same dtype)."""
  return _bilinear_axis(_bilinear_axis(x, 1, int(size[0])), 2, int(size[1]))


def fuse_upsample(x: jax.Array, factor: int, size: tuple[int, int], mode: str) -> jax.Array:
  """Brings branch ``j`` (``x [B, h, w, C]``) to the size ``(H, W)`` of branch ``i``,
  ``factor = 2 ** (j - i)``.

  ``'nearest'``: ``hrnet_jax.models.layers.upsample_nearest`` (``nn.Upsample(scale_factor)``, else
  ``F.interpolate(size=...)``). ``'bilinear'``: mmseg ``HRModule.forward``
  (``mmseg/models/backbones/hrnet.py``): ``Upsample(scale_factor=factor)`` to
  ``(h * factor, w * factor)``, then ``resize(size=(H, W))``, both bilinear with
  ``align_corners=False``; the second step is the identity whenever ``h * factor == H``.
  """
  if mode == 'nearest':
    return upsample_nearest(x, size)
  if mode != 'bilinear':
    raise ValueError(f'fuse upsampling must be one of {FUSE_UPSAMPLE_MODES}, got {mode!r}')
  x = resize_bilinear(x, (x.shape[1] * factor, x.shape[2] * factor))
  return resize_bilinear(x, size)


def avg_pool(x: jax.Array, k: int) -> jax.Array:
  """``F.avg_pool2d(x, kernel_size=k, stride=k)`` on ``[B, H, W, C]``: no padding, floor size."""
  if k == 1:
    return x
  summed = jax.lax.reduce_window(
    x, jnp.zeros((), x.dtype), jax.lax.add, (1, k, k, 1), (1, k, k, 1), 'VALID'
  )
  return summed / (k * k)
