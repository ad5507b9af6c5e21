"""``hrnet-predict --task segment|pose``: dense predictions of a converted dense HRNet checkpoint.

- ``segment``: each image is resized (aspect kept, bilinear) to fit the checkpoint's
  ``input_size`` (H = short side bound, W = long side bound, as mmseg's ``Resize(keep_ratio)``),
  the stride-4 logits are resized to the original image size (bilinear, ``align_corners=False``,
  as mmseg ``EncoderDecoder.postprocess_result``) and their argmax is written as
  ``<stem>_mask.png`` (palette PNG: the Cityscapes palette for 19 classes, else a fixed one) and
  ``<stem>_mask.npy`` (``[H, W]`` int32 class map).
- ``pose``: the whole image is the person box of a top-down model: resized to ``input_size``;
  each keypoint is its heatmap's argmax moved a quarter pixel toward the higher neighbour
  (deep-high-resolution-net ``lib/core/inference.py`` ``get_final_preds``) and mapped back to
  image pixels (pixel centres). ``<stem>_keypoints.json`` holds ``[[x, y, score], ...]``
  (score: the heatmap maximum) and ``<stem>_pose.png`` the image with the keypoints (and the
  COCO skeleton for 17 keypoints).

Every file is written under a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from hrnet_jax import atomic

# mmseg CityscapesDataset METAINFO['palette'].
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32))
# COCO keypoint names and skeleton (1-based pairs, pycocotools / mmpose coco.py).
COCO_KEYPOINTS = (
    'nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder', 'right_shoulder',
    'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist', 'left_hip', 'right_hip',
    'left_knee', 'right_knee', 'left_ankle', 'right_ankle')
COCO_SKELETON = ((16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7),
                 (6, 8), (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6),
                 (5, 7))


def palette(num_classes: int) -> np.ndarray:
  """``[num_classes, 3]`` uint8 colours: Cityscapes' for 19 classes, else a fixed random one."""
  if num_classes == len(CITYSCAPES_PALETTE):
    return np.asarray(CITYSCAPES_PALETTE, np.uint8)
  return np.random.RandomState(0).randint(0, 256, (num_classes, 3)).astype(np.uint8)



def _normalize(img: Image.Image, cfg: dict[str, Any]) -> np.ndarray:
  x = np.asarray(img, np.float32) / 255.0
  return ((x - np.asarray(cfg['mean'], np.float32)) / np.asarray(cfg['std'], np.float32))[None]


def _fit_size(w: int, h: int, bound_hw: tuple[int, int]) -> tuple[int, int]:
  """mmcv ``rescale_size(keep_ratio)``: the largest (w, h) with short <= min, long <= max."""
  short_max, long_max = sorted(bound_hw)
  scale = min(long_max / max(w, h), short_max / min(w, h))
  return max(32, int(w * scale + 0.5)), max(32, int(h * scale + 0.5))


def segment(model, img: Image.Image, cfg: dict[str, Any]) -> np.ndarray:
  """Class map ``[H, W]`` int32 of ``img`` (original size)."""
  import jax.numpy as jnp

  from hrnet_jax.resize import resize_bilinear

  w, h = img.size
  size = _fit_size(w, h, tuple(cfg['input_size'][1:]))
  logits = model(jnp.asarray(_normalize(img.resize(size, Image.BILINEAR), cfg)))
  logits = resize_bilinear(logits.astype(jnp.float32), (h, w))
  return np.asarray(jnp.argmax(logits[0], axis=-1), np.int32)


def pose(model, img: Image.Image, cfg: dict[str, Any]) -> np.ndarray:
  """Keypoints ``[K, 3]`` (x, y in image pixels, score) of ``img`` taken as the person box."""
  import jax.numpy as jnp

  in_h, in_w = cfg['input_size'][1:]
  heatmaps = np.asarray(model(jnp.asarray(_normalize(img.resize((in_w, in_h), Image.BILINEAR),
                                                     cfg)))[0], np.float32)
  hm_h, hm_w, k = heatmaps.shape
  flat = heatmaps.reshape(-1, k)
  idx = np.argmax(flat, axis=0)
  ys, xs = np.divmod(idx, hm_w)
  coords = np.stack([xs, ys], -1).astype(np.float64)
  for j in range(k):
    x, y, hm = int(xs[j]), int(ys[j]), heatmaps[..., j]
    if 0 < x < hm_w - 1:
      coords[j, 0] += 0.25 * np.sign(hm[y, x + 1] - hm[y, x - 1])
    if 0 < y < hm_h - 1:
      coords[j, 1] += 0.25 * np.sign(hm[y + 1, x] - hm[y - 1, x])
  w, h = img.size
  coords = (coords + 0.5) * np.array([w / hm_w, h / hm_h]) - 0.5
  return np.concatenate([coords, flat.max(axis=0)[:, None]], axis=1)


def _overlay(img: Image.Image, keypoints: np.ndarray) -> Image.Image:
  out = img.copy()
  draw = ImageDraw.Draw(out)
  r = max(2, round(max(img.size) / 150))
  if len(keypoints) == len(COCO_KEYPOINTS):
    for a, b in COCO_SKELETON:
      draw.line([tuple(keypoints[a - 1, :2]), tuple(keypoints[b - 1, :2])], fill=(0, 255, 0),
                width=max(1, r // 2))
  for x, y, _ in keypoints:
    draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 0, 0))
  return out


def predict_file(model, task: str, image_path: str, img: Image.Image, cfg: dict[str, Any],
                 out_dir: str | os.PathLike) -> dict[str, Any]:
  """Runs ``task`` on one image and writes its files into ``out_dir``; returns the JSON record."""
  out_dir = pathlib.Path(out_dir)
  stem = pathlib.Path(image_path).stem
  if task == 'segment':
    mask = segment(model, img, cfg)
    colours = palette(model.num_outputs)
    png, npy = out_dir / f'{stem}_mask.png', out_dir / f'{stem}_mask.npy'

    def write_png(tmp):
      im = Image.fromarray(mask.astype(np.uint8), 'P')
      im.putpalette(colours.ravel().tolist())
      im.save(tmp, format='PNG')

    atomic.write_file(png, write_png)
    atomic.write_file(npy, lambda tmp: np.save(open(tmp, 'wb'), mask))
    classes, counts = np.unique(mask, return_counts=True)
    return {'image': image_path, 'mask_png': str(png), 'mask_npy': str(npy),
            'classes': {int(c): int(n) for c, n in zip(classes, counts)}}
  keypoints = pose(model, img, cfg)
  names = COCO_KEYPOINTS if len(keypoints) == len(COCO_KEYPOINTS) else None
  record = {'image': image_path, 'keypoints': [[float(v) for v in kp] for kp in keypoints],
            'names': list(names) if names else None}
  js, png = out_dir / f'{stem}_keypoints.json', out_dir / f'{stem}_pose.png'
  atomic.write_file(js, lambda tmp: pathlib.Path(tmp).write_text(json.dumps(record, indent=2) + '\n'))
  atomic.write_file(png, lambda tmp: _overlay(img, keypoints).save(tmp, format='PNG'))
  return {**record, 'keypoints_json': str(js), 'overlay_png': str(png)}
