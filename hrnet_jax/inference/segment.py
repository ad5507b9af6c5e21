"""Semantic-segmentation inference: whole image, sliding window, flip and multi-scale test.

Mirrors mmseg ``EncoderDecoder`` (``mmseg/models/segmentors/encoder_decoder.py``):
``whole_inference`` / ``encode_decode`` (``whole_logits``), ``slide_inference``
(``slide_logits``), the per-view ``postprocess_result`` (flip back, resize to the original size)
and ``SegTTAModel.merge_preds`` (``tta_probs``). Every resize is bilinear with half-pixel centres
and no antialiasing, PyTorch's ``F.interpolate(mode='bilinear', align_corners=False)`` (mmseg's
``resize``; ``hrnet_jax.models.resize.resize_bilinear``).

``apply_fn`` is the model's ``__call__`` (e.g. a ``DenseHRNet`` in eval mode): normalized float
images ``[B, h, w, 3]`` -> class logits ``[B, ceil(h/4), ceil(w/4), C]``. Shapes are static, so
every function here runs under ``jax.jit``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax.models.resize import resize_bilinear

ApplyFn = Callable[[jax.Array], jax.Array]
MODES = ('whole', 'slide')


def resize_logits(logits: jax.Array, size_hw: tuple[int, int]) -> jax.Array:
  """``logits [B, h, w, C]`` -> ``[B, H, W, C]`` for ``size_hw = (H, W)``, up or down, as mmseg
  ``resize(mode='bilinear', align_corners=False)`` (PyTorch ``F.interpolate``); same dtype."""
  return resize_bilinear(logits, size_hw)


def whole_logits(apply_fn: ApplyFn, images: jax.Array) -> jax.Array:
  """Logits ``[B, H, W, C]`` of ``images [B, H, W, 3]`` (normalized float) at the input size:
  mmseg ``EncoderDecoder.whole_inference`` (``encode_decode``: the stride-4 logits resized)."""
  return resize_logits(apply_fn(images), images.shape[1:3])


def slide_windows(
  image_hw: tuple[int, int], crop_hw: tuple[int, int], stride_hw: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
  """The windows ``(y1, y2, x1, x2)`` of mmseg ``slide_inference``, row by row.

  ``ceil((H - crop) / stride) + 1`` windows per axis (one where the image is not larger than the
  crop), each ``min(crop, H)`` long; the last is moved back to end at the border, so windows
  overlap there. Raises ``ValueError`` for a size, crop or stride that is not positive.
  """
  (h, w), (ch, cw), (sh, sw) = (tuple(int(v) for v in t) for t in (image_hw, crop_hw, stride_hw))
  if min(h, w, ch, cw, sh, sw) <= 0:
    raise ValueError(f'image {image_hw}, crop {crop_hw} and stride {stride_hw} must be positive')
  windows = []
  for i in range(max(h - ch + sh - 1, 0) // sh + 1):
    for j in range(max(w - cw + sw - 1, 0) // sw + 1):
      y2, x2 = min(i * sh + ch, h), min(j * sw + cw, w)
      y1, x1 = max(y2 - ch, 0), max(x2 - cw, 0)
      windows.append((y1, y2, x1, x2))
  return windows


def slide_logits(
  apply_fn: ApplyFn,
  images: jax.Array,
  *,
  num_classes: int,
  crop_hw: tuple[int, int],
  stride_hw: tuple[int, int],
) -> jax.Array:
  """Sliding-window logits ``[B, H, W, C]`` of ``images [B, H, W, 3]``: mmseg
  ``EncoderDecoder.slide_inference``.

  Each window of ``slide_windows`` goes through ``whole_logits`` (logits resized to the window),
  is added at its place, and the sum is divided by the number of windows covering each pixel.
  All windows have one size, so the model is traced once and run on them in turn
  (``jax.lax.map``): memory of one window at a time. Raises ``ValueError`` when the model's
  output has other than ``num_classes`` channels.
  """
  b, h, w, _ = images.shape
  windows = slide_windows((h, w), crop_hw, stride_hw)
  win_h, win_w = windows[0][1] - windows[0][0], windows[0][3] - windows[0][2]
  offsets = jnp.asarray([(y1, x1) for y1, _, x1, _ in windows], jnp.int32)

  def window_logits(offset):
    crop = jax.lax.dynamic_slice(
      images, (0, offset[0], offset[1], 0), (b, win_h, win_w, images.shape[3])
    )
    return whole_logits(apply_fn, crop)

  per_window = jax.lax.map(window_logits, offsets)  # [N, B, win_h, win_w, C]
  if per_window.shape[-1] != num_classes:
    raise ValueError(f'the model gives {per_window.shape[-1]} classes, not {num_classes}')
  total = jnp.zeros((b, h, w, num_classes), per_window.dtype)
  count = np.zeros((1, h, w, 1), np.float32)
  for k, (y1, y2, x1, x2) in enumerate(windows):
    total = total.at[:, y1:y2, x1:x2].add(per_window[k])
    count[:, y1:y2, x1:x2] += 1
  return total / jnp.asarray(count, total.dtype)


def rescaled_size(size_hw: tuple[int, int], ratio: float) -> tuple[int, int]:
  """``(H, W)`` of an image resized by ``ratio`` as mmcv ``Resize(scale_factor=ratio,
  keep_ratio=True)`` (the ``img_ratios`` of mmseg's test-time augmentation): the target
  ``(int(W r + 0.5), int(H r + 0.5))`` goes through mmcv ``rescale_size`` (largest aspect-kept
  size within it), which can differ from it by a pixel. Raises ``ValueError`` for
  ``ratio <= 0``."""
  if not ratio > 0:
    raise ValueError(f'test-time scale {ratio!r} must be positive')
  h, w = (int(v) for v in size_hw)
  target_w, target_h = int(w * float(ratio) + 0.5), int(h * float(ratio) + 0.5)
  factor = min(max(target_w, target_h) / max(h, w), min(target_w, target_h) / min(h, w))
  return int(h * factor + 0.5), int(w * factor + 0.5)


def view_logits(
  apply_fn: ApplyFn,
  images: jax.Array,
  *,
  num_classes: int,
  mode: str = 'whole',
  crop_hw: tuple[int, int] | None = None,
  stride_hw: tuple[int, int] | None = None,
) -> jax.Array:
  """``whole_logits`` (``mode='whole'``) or ``slide_logits`` (``'slide'``, which needs
  ``crop_hw`` and ``stride_hw``) of ``images [B, H, W, 3]``: ``[B, H, W, C]``, mmseg
  ``EncoderDecoder.inference`` with ``test_cfg.mode``. Raises ``ValueError`` for an unknown
  mode, a slide mode without crop / stride, or a model with other than ``num_classes`` outputs.
  """
  if mode == 'whole':
    logits = whole_logits(apply_fn, images)
    if logits.shape[-1] != num_classes:
      raise ValueError(f'the model gives {logits.shape[-1]} classes, not {num_classes}')
    return logits
  if mode != 'slide':
    raise ValueError(f'inference mode must be one of {MODES}, got {mode!r}')
  if crop_hw is None or stride_hw is None:
    raise ValueError('slide inference needs crop_hw and stride_hw')
  return slide_logits(
    apply_fn, images, num_classes=num_classes, crop_hw=crop_hw, stride_hw=stride_hw
  )


def tta_probs(
  apply_fn: ApplyFn,
  images: jax.Array,
  *,
  num_classes: int,
  out_size_hw: tuple[int, int],
  mode: str = 'whole',
  crop_hw: tuple[int, int] | None = None,
  stride_hw: tuple[int, int] | None = None,
  scales: Sequence[float] = (1.0,),
  flip: bool = False,
) -> jax.Array:
  """Class probabilities ``[B, H, W, C]`` (``out_size_hw = (H, W)``, e.g. the label size)
  averaged over the test-time views, as mmseg ``SegTTAModel.merge_preds``.

  Views: every ratio of ``scales`` (the image resized to ``rescaled_size``), each also flipped
  left-right when ``flip``. A view's logits (``view_logits`` with ``mode``, ``crop_hw``,
  ``stride_hw``) are flipped back, resized to ``out_size_hw`` (mmseg ``postprocess_result``)
  and turned into a softmax; the result is the mean of the softmaxes. With one scale 1.0 and no
  flip it is the softmax of mmseg's plain test. The two flip views of a scale run one after the
  other through one trace of the model (``jax.lax.map``): compile time grows with the scales.

  mmseg resizes the uint8 image with OpenCV's bilinear filter before normalizing; here the
  normalized float ``images [B, H, W, 3]`` are resized bilinearly (``resize_bilinear``, same
  sampling, without OpenCV's uint8 rounding and fixed-point weights). ``images`` carry no
  padding: a padded batch is cropped to each image's size by the caller. Raises
  ``ValueError`` as ``view_logits``, and for no scales or a scale that is not positive.
  """
  if not scales:
    raise ValueError('tta_probs needs at least one scale')
  in_hw = tuple(images.shape[1:3])

  def logits_of(view):
    return view_logits(
      apply_fn, view, num_classes=num_classes, mode=mode, crop_hw=crop_hw, stride_hw=stride_hw
    )

  total, views = None, 0
  for ratio in scales:
    size = rescaled_size(in_hw, ratio)
    scaled = images if size == in_hw else resize_bilinear(images, size)
    if flip:  # both views of a scale through one trace of the model, one after the other
      plain, flipped = jax.lax.map(logits_of, jnp.stack([scaled, scaled[:, :, ::-1]]))
      per_view = (plain, flipped[:, :, ::-1])
    else:
      per_view = (logits_of(scaled),)
    for logits in per_view:
      probs = jax.nn.softmax(resize_logits(logits, out_size_hw), axis=-1)
      total = probs if total is None else total + probs
      views += 1
  return total / views


def predict_labels(scores: jax.Array) -> jax.Array:
  """Class ids ``int32 [B, H, W]``: the argmax over the classes of ``scores [B, H, W, C]``
  (logits or probabilities; the first class on ties, as ``torch.argmax``)."""
  return jnp.argmax(scores, axis=-1).astype(jnp.int32)
