"""The UDP heatmap codec (mirrors mmpose ``codecs/udp_heatmap.py`` ``UDPHeatmap`` with
``heatmap_type='gaussian'``): Unbiased Data Processing's sub-pixel Gaussian targets on the
``(size - 1)`` pixel grid, decoded by DARK's Taylor step on the blurred log-heatmaps. Pair it
with the ``use_udp`` affine crop."""

from __future__ import annotations

import numpy as np

from hrnet_jax.codecs import heatmap


class UDPHeatmap(heatmap.HeatmapCodec):
  """Keypoints <-> heatmaps of a top-down crop (mmpose ``UDPHeatmap``, Gaussian targets).

  Args:
    input_size: the crop ``(w, h)`` in pixels.
    heatmap_size: the heatmap ``(W, H)``; keypoints scale by ``(input_size - 1) /
      (heatmap_size - 1)`` (pixel centres at both ends coincide).
    sigma: the Gaussian's standard deviation in heatmap pixels (its window has radius 3 sigma).
    blur_kernel_size: the decoding blur kernel (odd).
  """

  def __init__(
    self,
    input_size: tuple[int, int],
    heatmap_size: tuple[int, int],
    sigma: float = 2.0,
    blur_kernel_size: int = 11,
  ):
    heatmap.gaussian_kernel(blur_kernel_size)  # a bad size fails here, not at the first decode
    self.input_size = tuple(input_size)
    self.heatmap_size = tuple(heatmap_size)
    self.sigma = sigma
    self.blur_kernel_size = blur_kernel_size
    self.scale_factor = ((np.array(input_size) - 1) / (np.array(heatmap_size) - 1)).astype(
      np.float32
    )

  def encode(
    self, keypoints: np.ndarray, keypoints_visible: np.ndarray | None = None
  ) -> tuple[np.ndarray, np.ndarray]:
    """Training targets of keypoints ``[N, K, 2]`` (x, y in crop pixels) with visibilities
    ``[N, K]`` (default all 1): heatmaps ``[K, H, W]`` float32 (the maximum over the N
    instances; mmpose encodes N = 1) and weights ``[N, K]`` (the visibility, 0 where the
    Gaussian's window lies wholly outside the heatmap)."""
    keypoints = np.asarray(keypoints)
    if keypoints_visible is None:
      keypoints_visible = np.ones(keypoints.shape[:2], np.float32)
    return heatmap.gaussian_heatmaps(
      self.heatmap_size, keypoints / self.scale_factor, keypoints_visible, self.sigma, 'udp'
    )

  def _decode(self, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keypoints, scores = heatmap.heatmap_maximum(heatmaps)
    keypoints = heatmap.refine_dark_udp(keypoints, heatmaps, self.blur_kernel_size)
    w, h = self.heatmap_size
    return keypoints / [w - 1, h - 1] * self.input_size, scores
