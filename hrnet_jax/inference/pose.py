"""Top-down pose inference over a model's apply function: the flip test of mmpose's
``TopdownPoseEstimator`` (``test_cfg=dict(flip_test=True, flip_mode='heatmap',
shift_heatmap=True)``) and the back-projection of crop keypoints to image pixels
(``TopdownPoseEstimator.add_pred_to_datasample``)."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np


def flip_test_heatmaps(
  apply: Callable[[jax.Array], jax.Array],
  images: jax.Array,
  unflip: Callable[[jax.Array], jax.Array] | None,
) -> jax.Array:
  """Heatmaps ``[B, h, w, K]`` of normalized crops ``images [B, H, W, 3]`` (``apply``: the model,
  NHWC in, NHWC heatmaps out): ``apply(images)``, or with ``unflip`` the mean of it and
  ``unflip(apply(images flipped along W))`` (mmpose ``HeatmapHead.predict`` with
  ``flip_test=True``). ``unflip`` maps the heatmaps of the mirrored crops back, e.g.
  ``functools.partial(hrnet_jax.metrics.keypoints.flip_heatmaps, flip_indices=...,
  shift_heatmap=True)`` (``flip_mode='heatmap'``). Traceable under ``jit``."""
  heatmaps = apply(images)
  if unflip is None:
    return heatmaps
  return (heatmaps + unflip(apply(images[:, :, ::-1]))) * 0.5


def crop_to_image(
  keypoints: np.ndarray, center: np.ndarray, scale: np.ndarray, input_size: tuple[int, int]
) -> np.ndarray:
  """Keypoints ``[B, K, 2]`` (x, y in crop pixels of a crop ``input_size`` (w, h)) in image
  pixels, of crops of the boxes ``center`` / ``scale`` ``[B, 2]`` (the aspect-fixed box of the
  affine crop, pixels): ``kp / input_size * scale + center - 0.5 * scale`` (mmpose
  ``TopdownPoseEstimator.add_pred_to_datasample``: float64 arithmetic), float32."""
  keypoints = np.asarray(keypoints, np.float32)
  center = np.asarray(center, np.float32)[:, None]
  scale = np.asarray(scale, np.float32)[:, None]
  size = np.asarray(input_size, np.int64)
  return (keypoints / size * scale + center - 0.5 * scale).astype(np.float32)
