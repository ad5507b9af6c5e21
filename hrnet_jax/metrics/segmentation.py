"""Semantic-segmentation metrics: per-class areas and mIoU / aAcc / mAcc / mDice.

Mirrors mmseg ``IoUMetric`` (``mmseg/evaluation/metrics/iou_metric.py``): per image, the
histograms of intersection, prediction and label over the valid pixels (label != ignore index)
(``intersect_and_union``), summed over the dataset by the caller, then per-class ratios and their
nan-means (``total_area_to_metrics`` + ``compute_metrics``).

Typical use, the areas counted on device and summed on the host in int64::

  areas = jax.jit(intersect_and_union, static_argnums=2)(pred, label, num_classes)
  totals = {k: totals[k] + np.asarray(v, np.int64) for k, v in areas.items()}
  ...
  scores = segmentation_metrics(totals, class_names)
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

AREA_KEYS = ('area_intersect', 'area_union', 'area_pred_label', 'area_label')
METRICS = ('mIoU', 'mDice')


def intersect_and_union(
  pred, label, num_classes: int, ignore_index: int = 255, valid=None
) -> dict[str, np.ndarray | jax.Array]:
  """Per-class pixel areas of one image or one batch, as mmseg ``IoUMetric.intersect_and_union``.

  Args:
    pred: predicted class ids, integer ``[H, W]`` or ``[B, H, W]``.
    label: ground-truth class ids, same shape; ``ignore_index`` marks pixels left out.
    num_classes: ``C``.
    ignore_index: the label value of ignored pixels.
    valid: optional bool ``[B]`` (batched input only): ``False`` rows (padding of the last
      batch) count nothing.

  Returns ``{'area_intersect', 'area_union', 'area_pred_label', 'area_label'}``, each ``[C]``,
  summed over the batch. As mmseg's ``torch.histc(min=0, max=C - 1)``, ids outside ``[0, C)``
  (in ``pred``, or in ``label`` other than ``ignore_index``) fall in no class.

  With numpy inputs the counts are numpy int64, computed on the host. With jax arrays (or
  inside ``jax.jit``) they are jax's default integer: int32 unless ``jax_enable_x64``, exact up
  to 2**31 - 1 pixels per call; sum calls on the host in int64.

  Raises ``ValueError`` for mismatched shapes, a rank other than 2 or 3, or ``valid`` that is not
  ``[B]``.
  """
  host = all(isinstance(a, np.ndarray) for a in (pred, label) + (() if valid is None else (valid,)))
  xp, int_dtype = (np, np.int64) if host else (jnp, jnp.int32)
  pred, label = xp.asarray(pred), xp.asarray(label)
  if pred.shape != label.shape or pred.ndim not in (2, 3):
    raise ValueError(
      f'pred {pred.shape} and label {label.shape} must have one shape, [H, W] or [B, H, W]'
    )
  mask = label != ignore_index
  if valid is not None:
    valid = xp.asarray(valid)
    if pred.ndim != 3 or valid.shape != pred.shape[:1]:
      raise ValueError(f'valid {valid.shape} must be [B] for pred and label {pred.shape}')
    mask = mask & valid.astype(bool)[:, None, None]
  c = int(num_classes)

  def class_or_none(x):  # ids outside [0, C) go to the extra bin C, which no area reads
    x = x.astype(int_dtype)
    return xp.where((x >= 0) & (x < c), x, c)

  # One (C + 1) x (C + 1) confusion matrix (rows: label, columns: prediction) in one bincount;
  # masked pixels go to cell (C, C), outside every area.
  cell = xp.where(mask, class_or_none(label) * (c + 1) + class_or_none(pred), (c + 1) ** 2 - 1)
  if host:
    counts = np.bincount(cell.ravel(), minlength=(c + 1) ** 2).astype(np.int64)
  else:
    counts = jnp.bincount(cell.ravel(), length=(c + 1) ** 2)
  confusion = counts.reshape(c + 1, c + 1)
  intersect = xp.diagonal(confusion)[:c]
  area_label = confusion[:c].sum(axis=1)
  area_pred = confusion[:, :c].sum(axis=0)
  return {
    'area_intersect': intersect,
    'area_union': area_pred + area_label - intersect,
    'area_pred_label': area_pred,
    'area_label': area_label,
  }


def segmentation_metrics(
  totals: dict, class_names: Sequence[str] | None = None, metrics: Sequence[str] = METRICS
) -> dict:
  """mIoU, aAcc, mAcc, mDice and their per-class values from dataset-summed areas.

  Mirrors mmseg ``IoUMetric.total_area_to_metrics`` + ``compute_metrics`` (``nan_to_num=None``):
  per class ``IoU = I / U``, ``Acc = I / label``, ``Dice = 2 I / (pred + label)``;
  ``aAcc = sum(I) / sum(label)``; each ``m*`` is the nan-mean over classes, so a class with a
  zero denominator (absent from the labels for ``Acc``; from labels and predictions for
  ``IoU`` / ``Dice``) is nan and left out of the mean, while a class predicted but absent from
  the labels has IoU and Dice 0 and counts.

  Args:
    totals: ``AREA_KEYS`` -> ``[C]`` counts (``intersect_and_union`` summed over the dataset).
    class_names: ``C`` names for the per-class dicts (default ``'0'`` ... ``'C-1'``).
    metrics: a subset of ``('mIoU', 'mDice')``; ``'mIoU'`` gives ``mIoU``, ``IoU``, ``mAcc``,
      ``Acc``, ``'mDice'`` gives ``mDice``, ``Dice``, ``mAcc``, ``Acc``; ``()`` gives ``aAcc`` only.

  Returns ``{'aAcc', 'mIoU', 'mAcc', 'mDice': float, 'IoU', 'Acc', 'Dice': {name: float}}`` in
  percent, as Python floats computed in float64 from the integer counts (mmseg computes in
  float32 and rounds to 2 decimals: ``round(x, 2)`` gives its figures). Undefined values are
  ``float('nan')``, which ``json.dumps`` writes as the non-standard ``NaN``: a JSON report should
  write them as ``null`` (mmseg's table prints ``nan``).

  Raises ``ValueError`` for an unknown metric, a missing area key, areas of different lengths or
  a wrong number of class names.
  """
  unknown = [m for m in metrics if m not in METRICS]
  if unknown:
    raise ValueError(f'metrics {unknown} not supported; choose from {list(METRICS)}')
  missing = [k for k in AREA_KEYS if k not in totals]
  if missing:
    raise ValueError(f'totals lack {missing} (expected the keys {list(AREA_KEYS)})')
  inter, union, pred, label = (np.asarray(totals[k], np.float64) for k in AREA_KEYS)
  if not inter.ndim == 1 or not inter.shape == union.shape == pred.shape == label.shape:
    raise ValueError(
      f'areas must be [C] each, got {[np.shape(totals[k]) for k in AREA_KEYS]} for {AREA_KEYS}'
    )
  names = [str(i) for i in range(inter.size)] if class_names is None else list(class_names)
  if len(names) != inter.size:
    raise ValueError(f'{len(names)} class names for {inter.size} classes')

  with np.errstate(divide='ignore', invalid='ignore'):
    per_class = {}
    if 'mIoU' in metrics:
      per_class['IoU'] = inter / union
    if metrics:
      per_class['Acc'] = inter / label
    if 'mDice' in metrics:
      per_class['Dice'] = 2 * inter / (pred + label)
    out = {'aAcc': float(inter.sum() / label.sum() * 100)}
  for key, values in per_class.items():
    defined = values[~np.isnan(values)]  # np.nanmean, without its all-nan warning
    out[f'm{key}'] = float(defined.mean() * 100) if defined.size else float('nan')
  for key, values in per_class.items():
    out[key] = {name: float(v * 100) for name, v in zip(names, values)}
  return out
