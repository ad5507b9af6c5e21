"""The embedded default dataset: scikit-learn's handwritten digits (UCI optdigits test set).

1797 grayscale 8x8 images of the digits 0-9 with 17 gray levels, shipped inside scikit-learn
(no download). They are scaled to 0-255, resized to ``image_size`` (PIL bilinear) and repeated
to RGB once, at load time. The train/validation split is fixed: stratified, 20% validation
(``sklearn.model_selection.train_test_split(random_state=0)``): 1437 train, 360 validation.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from hrnet_jax.train.data import DatasetInfo

VALIDATION_FRACTION = 0.2
SPLIT_SEED = 0


def _resize(images: np.ndarray, size: int) -> np.ndarray:
  """``[N, 8, 8]`` float 0..16 -> uint8 ``[N, size, size, 3]``."""
  pixels = np.round(images * (255.0 / 16.0)).astype(np.uint8)
  out = np.stack([np.asarray(Image.fromarray(p).resize((size, size), Image.Resampling.BILINEAR))
                  for p in pixels])
  return np.repeat(out[..., None], 3, axis=-1)


def load(image_size: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray],
                                   DatasetInfo]:
  """Returns ``(train_images, train_labels), (val_images, val_labels), info``; images uint8
  ``[N, image_size, image_size, 3]``, labels int32 ``[N]``."""
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split

  if image_size < 8:
    raise ValueError(f'config.input.image_size={image_size} must be >= 8 for the digits')
  digits = load_digits()
  images = _resize(digits.images, image_size)
  labels = digits.target.astype(np.int32)
  x_tr, x_ev, y_tr, y_ev = train_test_split(images, labels, test_size=VALIDATION_FRACTION,
                                            random_state=SPLIT_SEED, stratify=labels)
  info = DatasetInfo(num_classes=10, num_train=len(y_tr), num_eval=len(y_ev),
                     class_names=tuple(str(d) for d in range(10)))
  return (x_tr, y_tr), (x_ev, y_ev), info
