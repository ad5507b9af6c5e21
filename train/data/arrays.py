"""In-memory inputs: ``ArrayInput`` over NumPy arrays, and the embedded digits it serves.

The digits are scikit-learn's handwritten digits (UCI optdigits test set): 1797 grayscale 8x8
images of the digits 0-9 with 17 gray levels, shipped inside scikit-learn (no download). They are
scaled to 0-255, resized to ``image_size`` (PIL bilinear) and repeated to RGB once, at load time.
The train/validation split is fixed: stratified, 20% validation
(``sklearn.model_selection.train_test_split(random_state=0)``): 1437 train, 360 validation.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from PIL import Image
from sklearn import datasets as sk_datasets
from sklearn import model_selection

from hrnet_jax.train.data.base import (
  Batch,
  DatasetInfo,
  epoch_seed,
  eval_shard,
  local_batch_size,
  num_eval_batches,
  pad_batch,
)

VALIDATION_FRACTION = 0.2
SPLIT_SEED = 0


class ArrayInput:
  """``hrnet_jax.train.data.base.Input`` over in-memory arrays: ``images`` uint8
  ``[N, H, W, 3]``, ``labels`` int ``[N]``, for the train and the eval split.

  Epoch ``e`` is the permutation ``default_rng(epoch_seed(seed, e))`` of the whole train split, so
  the stream is the same for any number of processes. ``ValueError`` for a batch size that the
  number of processes does not divide or that exceeds the training examples.
  """

  def __init__(
    self,
    train: tuple[np.ndarray, np.ndarray],
    evaluation: tuple[np.ndarray, np.ndarray],
    *,
    info: DatasetInfo,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    process_index: int,
    process_count: int,
  ):
    self.info = info
    self._train, self._eval = train, evaluation
    self._seed = seed
    self._pi, self._pc = process_index, process_count
    self._batch = batch_size
    self._local = local_batch_size(batch_size, process_count)
    self._local_eval = local_batch_size(eval_batch_size, process_count, 'eval_batch_size')
    self.steps_per_epoch = info.num_train // batch_size
    if self.steps_per_epoch == 0:
      raise ValueError(
        f'config.batch_size={batch_size} exceeds the {info.num_train} training examples'
      )
    self.num_eval_batches = num_eval_batches(info.num_eval, process_count, self._local_eval)

  def train_batches(self, start_step: int = 0) -> Iterator[Batch]:
    images, labels = self._train
    step, epoch, order = start_step, None, None
    while True:
      e, i = divmod(step, self.steps_per_epoch)
      if e != epoch:
        epoch = e
        order = np.random.default_rng(epoch_seed(self._seed, e)).permutation(len(labels))
      start = i * self._batch + self._pi * self._local
      idx = order[start : start + self._local]
      yield {'image': images[idx], 'label': labels[idx].astype(np.int32)}
      step += 1

  def eval_batches(self) -> Iterator[Batch]:
    images, labels = self._eval
    shard = eval_shard(len(labels), self._pi, self._pc)
    for b in range(self.num_eval_batches):
      idx = np.asarray(shard[b * self._local_eval : (b + 1) * self._local_eval], dtype=np.int64)
      yield pad_batch(
        {'image': images[idx], 'label': labels[idx].astype(np.int32)}, self._local_eval
      )


def _resize(images: np.ndarray, size: int) -> np.ndarray:
  """``[N, 8, 8]`` float 0..16 -> uint8 ``[N, size, size, 3]``."""
  pixels = np.round(images * (255.0 / 16.0)).astype(np.uint8)
  out = np.stack(
    [np.asarray(Image.fromarray(p).resize((size, size), Image.Resampling.BILINEAR)) for p in pixels]
  )
  return np.repeat(out[..., None], 3, axis=-1)


def load_digits(
  image_size: int,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], DatasetInfo]:
  """Returns ``(train_images, train_labels), (val_images, val_labels), info``; images uint8
  ``[N, image_size, image_size, 3]``, labels int32 ``[N]``. ``ValueError`` for
  ``image_size < 8``."""
  if image_size < 8:
    raise ValueError(f'config.input.image_size={image_size} must be >= 8 for the digits')
  digits = sk_datasets.load_digits()
  images = _resize(digits.images, image_size)
  labels = digits.target.astype(np.int32)
  x_tr, x_ev, y_tr, y_ev = model_selection.train_test_split(
    images, labels, test_size=VALIDATION_FRACTION, random_state=SPLIT_SEED, stratify=labels
  )
  info = DatasetInfo(
    num_classes=10,
    num_train=len(y_tr),
    num_eval=len(y_ev),
    class_names=tuple(str(d) for d in range(10)),
  )
  return (x_tr, y_tr), (x_ev, y_ev), info
