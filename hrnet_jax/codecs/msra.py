"""The MSRA heatmap codec and its DARK variant (mirrors mmpose ``codecs/msra_heatmap.py``
``MSRAHeatmap``): Simple Baselines' Gaussian targets, argmax decoding with a quarter-pixel shift;
``unbiased=True`` is DARK (sub-pixel targets, Taylor refinement of the blurred heatmaps)."""

from __future__ import annotations

import numpy as np

from hrnet_jax.codecs import heatmap


class MSRAHeatmap(heatmap.HeatmapCodec):
  """Keypoints <-> heatmaps of a top-down crop (mmpose ``MSRAHeatmap``).

  Args:
    input_size: the crop ``(w, h)`` in pixels.
    heatmap_size: the heatmap ``(W, H)``; keypoints scale by ``input_size / heatmap_size``.
    sigma: the Gaussian's standard deviation in heatmap pixels (its window has radius 3 sigma).
    unbiased: DARK (``generate_unbiased_gaussian_heatmaps`` targets, ``refine_keypoints_dark``
      decoding) instead of MSRA's.
    blur_kernel_size: DARK's blur kernel (odd; 11 for sigma 2, 17 for sigma 3).
  """

  def __init__(
    self,
    input_size: tuple[int, int],
    heatmap_size: tuple[int, int],
    sigma: float,
    unbiased: bool = False,
    blur_kernel_size: int = 11,
  ):
    heatmap.gaussian_kernel(blur_kernel_size)  # a bad size fails here, not at the first decode
    self.input_size = tuple(input_size)
    self.heatmap_size = tuple(heatmap_size)
    self.sigma = sigma
    self.unbiased = unbiased
    self.blur_kernel_size = blur_kernel_size
    self.scale_factor = (np.array(input_size) / heatmap_size).astype(np.float32)

  def encode(
    self, keypoints: np.ndarray, keypoints_visible: np.ndarray | None = None
  ) -> tuple[np.ndarray, np.ndarray]:
    """Training targets of keypoints ``[N, K, 2]`` (x, y in crop pixels) with visibilities
    ``[N, K]`` (default all 1): heatmaps ``[K, H, W]`` float32 (the maximum over the N
    instances; mmpose encodes N = 1) and weights ``[N, K]`` (the visibility, 0 where the
    Gaussian lies wholly outside the heatmap)."""
    keypoints = np.asarray(keypoints)
    if keypoints_visible is None:
      keypoints_visible = np.ones(keypoints.shape[:2], np.float32)
    return heatmap.gaussian_heatmaps(
      self.heatmap_size,
      keypoints / self.scale_factor,
      keypoints_visible,
      self.sigma,
      'unbiased' if self.unbiased else 'msra',
    )

  def _decode(self, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keypoints, scores = heatmap.heatmap_maximum(heatmaps)
    if self.unbiased:
      keypoints = heatmap.refine_dark(keypoints, heatmaps, self.blur_kernel_size)
    else:
      keypoints = heatmap.refine_quarter_offset(keypoints, heatmaps)
    return keypoints * self.scale_factor, scores
