"""Dense-prediction losses: mmseg's pixel cross-entropy (with OHEM) and mmpose's heatmap MSE.

- ``pixel_cross_entropy``: the decode-head loss of mmseg's FCN-HRNet
  (``BaseDecodeHead.loss_by_feat`` in ``mmseg/models/decode_heads/decode_head.py`` with
  ``CrossEntropyLoss`` of ``mmseg/models/losses/cross_entropy_loss.py``);
- ``ohem_pixel_weights``: mmseg ``OHEMPixelSampler`` (``mmseg/structures/sampler``);
- ``keypoint_mse``: mmpose ``KeypointMSELoss`` (``mmpose/models/losses/heatmap_loss.py``).

All are jax functions of static shapes, for the jitted train step; float32 in, float32 scalar out.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp

from hrnet_jax.models.resize import resize_bilinear

# mmseg weight_reduce_loss divides by avg_factor + torch.finfo(torch.float32).eps.
_EPS = float(jnp.finfo(jnp.float32).eps)
OHEM_KEYS = ('thresh', 'min_kept')


def _pixel_nll(logits: jax.Array, labels: jax.Array, valid: jax.Array, class_weight):
  """Per-pixel ``-w[y] log softmax(logits)[y]`` (0 at ignored pixels) and ``w[y]`` (0 there):
  ``F.cross_entropy(weight=class_weight, reduction='none', ignore_index)``. A label outside
  ``[0, C)`` that is not ignored reads no class and gives NaN (PyTorch raises)."""
  safe = jnp.where(valid, labels, 0).astype(jnp.int32)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(log_probs, safe[..., None], -1, mode='fill', fill_value=jnp.nan)[
    ..., 0
  ]
  if class_weight is None:
    weight = valid.astype(logits.dtype)
  else:
    weight = jnp.where(valid, jnp.asarray(class_weight, logits.dtype)[safe], 0)
  return jnp.where(valid, nll * weight, 0), weight


def ohem_pixel_weights(
  logits: jax.Array,
  labels: jax.Array,
  *,
  thresh: float | None = None,
  min_kept: int = 100000,
  ignore_index: int = 255,
  class_weight: Sequence[float] | None = None,
) -> jax.Array:
  """Online hard example mining: float32 ``[B, H, W]`` weights, 1 at the kept pixels, else 0.

  Mirrors mmseg ``OHEMPixelSampler.sample`` on ``logits [B, H, W, C]`` already at the size of
  ``labels [B, H, W]``, with ``batch_kept = min_kept * B``:

  - ``thresh`` given: among the valid pixels (label != ``ignore_index``), those whose softmax
    probability of their label is below ``max(thresh, p_k)``, ``p_k`` the ``min(batch_kept,
    n_valid - 1)``-th smallest such probability (so the ``batch_kept`` least confident ones at
    least, ties at that floor aside);
  - ``thresh=None``: the ``batch_kept`` valid pixels of the largest cross-entropy (weighted by
    ``class_weight``, as the decode head's loss), all valid ones if fewer.

  No gradient flows through the weights (mmseg samples under ``torch.no_grad``). Raises
  ``ValueError`` for ``min_kept <= 1`` (mmseg asserts it).
  """
  if int(min_kept) <= 1:
    raise ValueError(f'OHEM min_kept must be > 1, got {min_kept}')
  logits = jax.lax.stop_gradient(logits)
  valid = labels != ignore_index
  batch_kept = int(min_kept) * labels.shape[0]
  if thresh is not None:
    safe = jnp.where(valid, labels, 0).astype(jnp.int32)
    probs = jnp.take_along_axis(jax.nn.softmax(logits, axis=-1), safe[..., None], -1)[..., 0]
    ascending = jnp.sort(jnp.where(valid, probs, jnp.inf).ravel())  # the valid ones first
    num_valid = valid.sum()
    k = jnp.clip(jnp.minimum(batch_kept, num_valid - 1), 0, ascending.size - 1)
    floor = jnp.where(num_valid > 0, ascending[k], 0.0)
    kept = valid & (probs < jnp.maximum(floor, thresh))
  else:
    losses, _ = _pixel_nll(logits, labels, valid, class_weight)
    order = jnp.argsort(jnp.where(valid, losses, -jnp.inf).ravel(), descending=True)
    top = jnp.zeros(losses.size, bool).at[order[: min(batch_kept, losses.size)]].set(True)
    kept = valid & top.reshape(labels.shape)
  return kept.astype(jnp.float32)


def pixel_cross_entropy(
  logits: jax.Array,
  labels: jax.Array,
  *,
  ignore_index: int = 255,
  avg_non_ignore: bool = False,
  class_weight: Sequence[float] | None = None,
  ohem: Mapping[str, float | int | None] | None = None,
) -> jax.Array:
  """mmseg's segmentation loss: float32 scalar of ``logits [B, h, w, C]`` (stride-4, float32)
  against class ids ``labels [B, H, W]`` (int; ``ignore_index`` = no label).

  As mmseg ``BaseDecodeHead.loss_by_feat`` with ``CrossEntropyLoss(loss_weight=1.0)``: the
  logits are resized bilinearly (``align_corners=False``) to ``(H, W)``; the per-pixel
  cross-entropy ``-w[y] log softmax[y]`` (0 at ignored pixels, ``w = class_weight`` or 1), times
  the OHEM weight when ``ohem`` is given, is summed and divided by ``avg_factor + eps``
  (``eps`` = float32 epsilon) where ``avg_factor`` is

  - without ``class_weight``: every pixel of the batch, ignored ones included (mmseg's default
    ``avg_non_ignore=False``), or the non-ignored ones (``avg_non_ignore=True``, PyTorch's mean);
  - with ``class_weight``: the sum of ``w[y]`` over the non-ignored pixels, for both settings.
    mmseg indexes ``class_weight`` with every label and so raises ``IndexError`` on a batch with
    ignored pixels; where it runs (no ignored pixel) this is its value.

  The OHEM weights do not change ``avg_factor`` (as mmseg). The sum and the count are over the
  global batch (the mean of a sharded batch under ``jit`` is the global one).

  Args:
    ohem: ``{'thresh': float | None, 'min_kept': int}``: mmseg's
      ``sampler=dict(type='OHEMPixelSampler', ...)`` (see ``ohem_pixel_weights``).

  Raises ``ValueError`` for an unknown ``ohem`` key or a logits / labels rank other than 4 / 3.
  A label outside ``[0, C)`` that is not ``ignore_index`` makes the loss NaN.
  """
  if logits.ndim != 4 or labels.ndim != 3 or logits.shape[0] != labels.shape[0]:
    raise ValueError(f'logits {logits.shape} must be [B, h, w, C], labels {labels.shape} [B, H, W]')
  logits = resize_bilinear(logits.astype(jnp.float32), labels.shape[1:3])
  valid = labels != ignore_index
  losses, weight = _pixel_nll(logits, labels, valid, class_weight)
  if ohem is not None:
    unknown = sorted(set(ohem) - set(OHEM_KEYS))
    if unknown:
      raise ValueError(f'ohem keys {unknown} unknown; valid: {list(OHEM_KEYS)}')
    losses = losses * ohem_pixel_weights(
      logits, labels, ignore_index=ignore_index, class_weight=class_weight, **ohem
    )
  if class_weight is not None:
    avg_factor = weight.sum()
  elif avg_non_ignore:
    avg_factor = valid.sum(dtype=jnp.float32)
  else:
    avg_factor = jnp.float32(labels.size)
  return losses.sum() / (avg_factor + _EPS)


def keypoint_mse(
  heatmaps: jax.Array, targets: jax.Array, target_weights: jax.Array | None = None
) -> jax.Array:
  """Heatmap MSE, float32 scalar: mmpose ``KeypointMSELoss(use_target_weight=True)``.

  ``mean((heatmaps - targets) ** 2 * w)`` over ``[B, H, W, K]``, ``w = target_weights [B, K]``
  broadcast over the pixels (the squared error times ``w``, as mmpose 1.x);
  ``target_weights=None`` is the plain MSE (``use_target_weight=False``). Raises ``ValueError``
  for mismatched shapes.
  """
  if heatmaps.shape != targets.shape or heatmaps.ndim != 4:
    raise ValueError(f'heatmaps {heatmaps.shape} and targets {targets.shape} must be [B, H, W, K]')
  err = jnp.square(heatmaps.astype(jnp.float32) - targets.astype(jnp.float32))
  if target_weights is None:
    return err.mean()
  b, _, _, k = heatmaps.shape
  if target_weights.shape != (b, k):
    raise ValueError(f'target_weights {target_weights.shape} must be [B, K] = {(b, k)}')
  return (err * target_weights.astype(jnp.float32)[:, None, None, :]).mean()
