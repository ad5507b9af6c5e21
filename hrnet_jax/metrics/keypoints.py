"""Top-down keypoint scoring: OKS, OKS-NMS, soft OKS-NMS and the rescoring of mmpose's
``CocoMetric`` (mirrors mmpose ``evaluation/functional/nms.py`` and
``evaluation/metrics/coco_metric.py``), the heatmap flip of the flip test (mmpose
``models/utils/tta.py`` ``flip_heatmaps``) and the COCO-17 keypoint metadata they need.

An instance's keypoints are ``[K, 3]``: x, y in image pixels and a score (or visibility).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# COCO-17 (mmpose configs/_base_/datasets/coco.py, from the COCO keypoint annotations): each
# keypoint's left/right mirror (its ``swap``), and the per-keypoint OKS sigmas, which are also
# pycocotools' COCOeval kpt_oks_sigmas.
COCO_FLIP_INDICES = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
COCO_SIGMAS = (
  0.026,
  0.025,
  0.025,
  0.035,
  0.035,
  0.079,
  0.079,
  0.072,
  0.072,
  0.062,
  0.062,
  0.107,
  0.107,
  0.087,
  0.087,
  0.089,
  0.089,
)


def oks_iou(
  g: np.ndarray,
  d: np.ndarray,
  area_g: float,
  areas_d: np.ndarray,
  sigmas: Sequence[float] = COCO_SIGMAS,
  vis_thr: float | None = None,
) -> np.ndarray:
  """Object keypoint similarity ``[N]`` float32 of one instance's keypoints ``g`` ``[K, 3]``
  (area ``area_g``, pixels^2) with each of ``d`` ``[N, K, 3]`` (areas ``areas_d`` ``[N]``):
  the mean over keypoints of ``exp(-dist^2 / (2 * mean_area * (2 sigma)^2))`` (mmpose
  ``oks_iou``). With ``vis_thr``, only keypoints whose third value exceeds it in both count, and
  an instance with none scores 0. ``sigmas`` ``[K]`` are taken as float32, as mmpose's dataset
  metadata holds them."""
  g = np.asarray(g).reshape(-1, 3)
  d = np.asarray(d).reshape(len(d), len(g), 3)
  variances = (np.asarray(sigmas, np.float32) * 2) ** 2
  dist2 = (d[..., 0] - g[:, 0]) ** 2 + (d[..., 1] - g[:, 1]) ** 2
  mean_area = (area_g + np.asarray(areas_d)[:, None]) / 2 + np.spacing(1)
  similarity = np.exp(-(dist2 / variances / mean_area / 2))
  if vis_thr is None:
    return (np.sum(similarity, axis=-1) / similarity.shape[-1]).astype(np.float32)
  counted = (g[:, 2] > vis_thr) & (d[..., 2] > vis_thr)
  n = counted.sum(axis=-1)
  total = np.sum(np.where(counted, similarity, 0), axis=-1)
  with np.errstate(divide='ignore', invalid='ignore'):
    return np.where(n > 0, total / n, 0).astype(np.float32)


def oks_nms(
  keypoints: np.ndarray,
  scores: np.ndarray,
  areas: np.ndarray,
  thr: float,
  sigmas: Sequence[float] = COCO_SIGMAS,
  vis_thr: float | None = None,
) -> np.ndarray:
  """Greedy OKS-NMS of one image's instances (mmpose ``oks_nms``): keypoints ``[N, K, 3]``,
  scores ``[N]``, areas ``[N]``. From the highest score down, an instance is kept and those
  whose OKS with it exceeds ``thr`` are dropped. Returns the kept indices ``[M]`` int, highest
  score first."""
  keypoints = np.asarray(keypoints)
  areas = np.asarray(areas)
  order = np.asarray(scores).argsort()[::-1]
  keep = []
  while len(order):
    i, rest = order[0], order[1:]
    keep.append(i)
    overlap = oks_iou(keypoints[i], keypoints[rest], areas[i], areas[rest], sigmas, vis_thr)
    order = rest[overlap <= thr]
  return np.asarray(keep, int)


def soft_oks_nms(
  keypoints: np.ndarray,
  scores: np.ndarray,
  areas: np.ndarray,
  thr: float,
  max_dets: int = 20,
  sigmas: Sequence[float] = COCO_SIGMAS,
  vis_thr: float | None = None,
) -> np.ndarray:
  """Soft OKS-NMS of one image's instances (mmpose ``soft_oks_nms``, Gaussian decay): from the
  highest score down, an instance is kept and every remaining score is multiplied by
  ``exp(-oks^2 / thr)`` with it, at most ``max_dets`` kept. Arguments as ``oks_nms``; returns the
  kept indices ``[M]`` int in the order kept."""
  keypoints = np.asarray(keypoints)
  areas = np.asarray(areas)
  scores = np.asarray(scores)
  order = scores.argsort()[::-1]
  scores = scores[order]
  keep = []
  while len(order) and len(keep) < max_dets:
    i, order = order[0], order[1:]
    keep.append(i)
    overlap = oks_iou(keypoints[i], keypoints[order], areas[i], areas[order], sigmas, vis_thr)
    scores = scores[1:] * np.exp(-(overlap**2) / thr)
    resort = scores.argsort()[::-1]
    order, scores = order[resort], scores[resort]
  return np.asarray(keep, int)


def rescore(
  bbox_scores: np.ndarray, keypoint_scores: np.ndarray, keypoint_score_thr: float = 0.2
) -> np.ndarray:
  """Instance scores ``[N]`` of top-down predictions (mmpose ``CocoMetric``,
  ``score_mode='bbox_keypoint'``): the box score ``[N]`` times the mean of the keypoint scores
  ``[N, K]`` above ``keypoint_score_thr`` (0 where none is)."""
  keypoint_scores = np.asarray(keypoint_scores)
  counted = keypoint_scores > keypoint_score_thr
  # A running sum, so that the rounding is that of mmpose's loop over the keypoints.
  total = np.cumsum(np.where(counted, keypoint_scores, 0), axis=-1, dtype=keypoint_scores.dtype)
  n = counted.sum(axis=-1)
  with np.errstate(divide='ignore', invalid='ignore'):
    mean = np.where(n > 0, total[..., -1] / n.astype(keypoint_scores.dtype), 0)
  return np.asarray(bbox_scores) * mean


def select_topdown(
  image_ids: np.ndarray,
  keypoints: np.ndarray,
  keypoint_scores: np.ndarray,
  bbox_scores: np.ndarray,
  areas: np.ndarray,
  sigmas: Sequence[float] = COCO_SIGMAS,
  keypoint_score_thr: float = 0.2,
  nms_mode: str = 'oks_nms',
  nms_thr: float = 0.9,
) -> tuple[np.ndarray, np.ndarray]:
  """The predictions mmpose's ``CocoMetric`` (defaults ``score_mode='bbox_keypoint'``) writes,
  of N top-down instances: ``rescore``, then per image ``nms_mode`` (``'oks_nms'``,
  ``'soft_oks_nms'`` or ``'none'``) at ``nms_thr``.

  Args: ``image_ids [N]``, ``keypoints [N, K, 2]`` (image pixels), ``keypoint_scores [N, K]``,
  ``bbox_scores [N]``, ``areas [N]`` (the boxes' scale w x h, pixels^2). Within an image the
  instances are taken in the order given: pass them in their instance-id order, as
  ``CocoMetric`` sorts them, for the same tie-breaking.

  Returns the kept indices ``[M]`` (images in order of first appearance, each in NMS order) and
  the scores ``[N]``. Raises ``ValueError`` for an unknown ``nms_mode``.
  """
  if nms_mode not in ('oks_nms', 'soft_oks_nms', 'none'):
    raise ValueError(f'nms_mode: {nms_mode!r} is not one of oks_nms, soft_oks_nms, none')
  image_ids = np.asarray(image_ids)
  keypoint_scores = np.asarray(keypoint_scores)
  with_scores = np.concatenate([np.asarray(keypoints), keypoint_scores[..., None]], axis=-1)
  areas = np.asarray(areas)
  scores = rescore(bbox_scores, keypoint_scores, keypoint_score_thr)
  _, first = np.unique(image_ids, return_index=True)
  keep = []
  for image in image_ids[np.sort(first)]:
    members = np.flatnonzero(image_ids == image)
    if nms_mode == 'none':
      keep.append(members)
      continue
    nms = oks_nms if nms_mode == 'oks_nms' else soft_oks_nms
    kept = nms(with_scores[members], scores[members], areas[members], nms_thr, sigmas=sigmas)
    keep.append(members[kept])
  return np.concatenate(keep).astype(int) if keep else np.zeros(0, int), scores


def flip_heatmaps(heatmaps, flip_indices: Sequence[int], shift_heatmap: bool = True):
  """The heatmaps of a horizontally flipped input mapped back onto the original (mmpose
  ``flip_heatmaps``, ``flip_mode='heatmap'``): flipped along W, keypoint channels swapped by
  ``flip_indices`` ``[K]`` (``COCO_FLIP_INDICES``), and with ``shift_heatmap`` moved one pixel
  right (the first column repeated), which aligns them with the unflipped heatmaps.

  ``heatmaps`` ``[B, H, W, K]`` (NHWC), a numpy or JAX array (traceable under ``jit``); returns
  the same type and shape. Raises ``ValueError`` when ``flip_indices`` is not of length K.
  """
  w, k = heatmaps.shape[2], heatmaps.shape[3]
  if len(flip_indices) != k:
    raise ValueError(f'flip_indices: {len(flip_indices)} indices for {k} keypoint channels')
  # One gather: output column j reads flipped column j - 1 (column 0 itself when shifted).
  columns = np.arange(w - 1, -1, -1)
  if shift_heatmap:
    columns = np.concatenate([columns[:1], columns[:-1]])
  return heatmaps[:, :, columns][..., np.asarray(flip_indices)]
