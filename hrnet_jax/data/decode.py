"""Decoding dense outputs into results, as mmpose's ``codecs/`` and mmseg's post-processing keep
it apart from the model: heatmaps -> keypoints, and the pictures of masks and keypoints (class
maps come from ``hrnet_jax.inference.segment``).

- ``keypoints_from_heatmaps``: a keypoint codec's decode (``hrnet_jax.codecs``; mmpose's
  ``MSRAHeatmap``: the argmax moved a quarter pixel toward the higher neighbour, scaled to the
  image); its score is the heatmap maximum.
- ``fit_size``: the input size of an image for a segmentation model (mmcv ``rescale_size``).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from hrnet_jax.codecs.registry import get_codec

# mmseg CityscapesDataset METAINFO['palette'].
CITYSCAPES_PALETTE = (
  (128, 64, 128),
  (244, 35, 232),
  (70, 70, 70),
  (102, 102, 156),
  (190, 153, 153),
  (153, 153, 153),
  (250, 170, 30),
  (220, 220, 0),
  (107, 142, 35),
  (152, 251, 152),
  (70, 130, 180),
  (220, 20, 60),
  (255, 0, 0),
  (0, 0, 142),
  (0, 0, 70),
  (0, 60, 100),
  (0, 80, 100),
  (0, 0, 230),
  (119, 11, 32),
)
# COCO keypoint names and skeleton (1-based pairs, pycocotools / mmpose coco.py).
COCO_KEYPOINTS = (
  'nose',
  'left_eye',
  'right_eye',
  'left_ear',
  'right_ear',
  'left_shoulder',
  'right_shoulder',
  'left_elbow',
  'right_elbow',
  'left_wrist',
  'right_wrist',
  'left_hip',
  'right_hip',
  'left_knee',
  'right_knee',
  'left_ankle',
  'right_ankle',
)
COCO_SKELETON = (
  (16, 14),
  (14, 12),
  (17, 15),
  (15, 13),
  (12, 13),
  (6, 12),
  (7, 13),
  (6, 7),
  (6, 8),
  (7, 9),
  (8, 10),
  (9, 11),
  (2, 3),
  (1, 2),
  (1, 3),
  (2, 4),
  (3, 5),
  (4, 6),
  (5, 7),
)


def palette(num_classes: int) -> np.ndarray:
  """``[num_classes, 3]`` uint8 colours: Cityscapes' for 19 classes, else a fixed random one."""
  if num_classes == len(CITYSCAPES_PALETTE):
    return np.asarray(CITYSCAPES_PALETTE, np.uint8)
  return np.random.RandomState(0).randint(0, 256, (num_classes, 3)).astype(np.uint8)


def fit_size(w: int, h: int, bound_hw: tuple[int, int]) -> tuple[int, int]:
  """mmcv ``rescale_size(keep_ratio)``: the largest (w, h) with short <= min, long <= max."""
  short_max, long_max = sorted(bound_hw)
  scale = min(long_max / max(w, h), short_max / min(w, h))
  return max(32, int(w * scale + 0.5)), max(32, int(h * scale + 0.5))


def keypoints_from_heatmaps(
  heatmaps: np.ndarray, size_wh: tuple[int, int], codec: str = 'msra', **codec_args
) -> np.ndarray:
  """Keypoints ``[K, 3]`` (x, y in pixels of an image of ``size_wh``, score) of heatmaps
  ``[h, w, K]`` covering that whole image, decoded by ``hrnet_jax.codecs`` ``codec`` (mmpose's
  ``MSRAHeatmap`` by default; ``codec_args`` e.g. ``unbiased=True`` for DARK)."""
  hm_h, hm_w, _ = np.shape(heatmaps)
  decoder = get_codec(
    codec, input_size=tuple(size_wh), heatmap_size=(hm_w, hm_h), **{'sigma': 2.0, **codec_args}
  )
  keypoints, scores = decoder.decode_batch(np.asarray(heatmaps, np.float32)[None])
  return np.concatenate([keypoints[0], scores[0][:, None]], axis=1)


def overlay(img: Image.Image, keypoints: np.ndarray) -> Image.Image:
  """``img`` with ``keypoints`` drawn (and the COCO skeleton for 17 of them)."""
  out = img.copy()
  draw = ImageDraw.Draw(out)
  r = max(2, round(max(img.size) / 150))
  if len(keypoints) == len(COCO_KEYPOINTS):
    for a, b in COCO_SKELETON:
      draw.line(
        [tuple(keypoints[a - 1, :2]), tuple(keypoints[b - 1, :2])],
        fill=(0, 255, 0),
        width=max(1, r // 2),
      )
  for x, y, _ in keypoints:
    draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 0, 0))
  return out
