"""tf.data input for TFDS datasets and image folders, with the official HRNet augmentations.

Each process reads only its shard of a split (``tfds.even_splits``; contiguous file ranges for a
folder). Images stay encoded until after shuffling and skipping, so resuming mid-epoch skips
examples without decoding them. Randomness is stateless: the shuffle is seeded by
``epoch_seed(seed, epoch)`` and each example's crop and flip by ``(epoch seed, position in the
epoch)``, so the stream of a process is a pure function of (seed, epoch, step).

Train: RandomResizedCrop (torchvision's window sampling: area 0.08-1, log-uniform aspect ratio
3/4-4/3, 10 attempts, then a center crop with the ratio clamped; JPEGs are decoded only in the
window) + horizontal flip, or a plain resize. Eval: shorter side to ``int(size /
crop_pct)``, center crop ``size``. Resizing is antialiased like PIL's. Outputs uint8.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Iterator

import numpy as np

from hrnet_jax.train.data.base import (
  Batch,
  DatasetInfo,
  epoch_seed,
  local_batch_size,
  num_eval_batches,
)

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')


@functools.cache
def _tf():
  # Imported on first use: TensorFlow is heavy, and only TFDS / folder inputs need it.
  import tensorflow as tf

  tf.config.set_visible_devices([], 'GPU')  # TF is only the input pipeline: keep it off GPUs
  return tf


class TFDSSource:
  """A TFDS dataset by name: ``(encoded image, label)`` of a process's shard of a split.

  ``ValueError`` names the dataset when it is unknown or not prepared and cannot be prepared (no
  ``manual_dir`` for ImageNet, no network), or has no ``image_key`` / ``label_key`` feature.
  """

  def __init__(self, dataset_config, *, process_count: int):
    import tensorflow_datasets as tfds  # imports TensorFlow: on first use, as _tf()

    _tf()
    self._tfds = tfds
    cfg = dataset_config
    self._image_key, self._label_key = cfg.image_key, cfg.label_key
    try:
      self._builder = tfds.builder(cfg.name, data_dir=cfg.data_dir or None)
    except Exception as e:  # DatasetNotFoundError and friends
      raise ValueError(f'config.dataset.name={cfg.name!r}: {e}') from None
    if not self._builder.is_prepared():
      if process_count > 1:
        raise ValueError(
          f'TFDS dataset {cfg.name!r} is not prepared in '
          f'{self._builder.data_dir}; prepare it once with a single process'
        )
      try:
        self._builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(
            manual_dir=os.path.expanduser(cfg.manual_dir) if cfg.manual_dir else None
          )
        )
      except Exception as e:
        raise ValueError(
          f'cannot prepare TFDS dataset {cfg.name!r} in {self._builder.data_dir}'
          f' (manual_dir={cfg.manual_dir!r}): {e}'
        ) from e
    features = self._builder.info.features
    for key in (self._image_key, self._label_key):
      if key not in features:
        raise ValueError(
          f'TFDS dataset {cfg.name!r} has no feature {key!r} (features: '
          f'{", ".join(features)}); set config.dataset.image_key / label_key'
        )
    label = features[self._label_key]
    self.class_names = tuple(label.names) if hasattr(label, 'names') else None
    self.num_classes = label.num_classes

  def num_examples(
    self, split: str, index: int = 0, count: int = 1, drop_remainder: bool = False
  ) -> int:
    """Examples in shard ``index`` of ``count`` of ``split``; ``ValueError`` for a bad split."""
    sub = self._tfds.even_splits(split, n=count, drop_remainder=drop_remainder)[index]
    try:
      return self._builder.info.splits[sub].num_examples
    except (KeyError, ValueError) as e:
      raise ValueError(
        f'TFDS dataset {self._builder.name!r}: bad split {split!r} ({e}); '
        f'splits: {", ".join(self._builder.info.splits)}'
      ) from None

  def dataset(
    self, split: str, index: int, count: int, *, drop_remainder: bool, shuffle_seed: int | None
  ):
    """tf.data of ``(encoded bytes, int32 label)``; files in an order fixed by ``shuffle_seed``
    (None: the stored order)."""
    tf = _tf()
    sub = self._tfds.even_splits(split, n=count, drop_remainder=drop_remainder)[index]
    read_config = self._tfds.ReadConfig(shuffle_seed=shuffle_seed)
    ds = self._builder.as_dataset(
      split=sub,
      shuffle_files=shuffle_seed is not None,
      read_config=read_config,
      decoders={self._image_key: self._tfds.decode.SkipDecoding()},
    )
    return ds.map(lambda ex: (ex[self._image_key], tf.cast(ex[self._label_key], tf.int32)))


class FolderSource:
  """Images in ``folder/<split>/<class>/<file>``; classes are the sorted subfolder names of the
  train split (of the eval split if there is no train split). ``FileNotFoundError`` names a
  missing or empty split folder."""

  def __init__(self, dataset_config):
    self._root = os.path.expanduser(dataset_config.folder)
    if not dataset_config.folder or not os.path.isdir(self._root):
      raise FileNotFoundError(
        f'config.dataset.folder={dataset_config.folder!r} is not a folder '
        '(expected FOLDER/<split>/<class>/<image>)'
      )
    split = dataset_config.train_split
    if not os.path.isdir(os.path.join(self._root, split)):
      split = dataset_config.eval_split
    self.class_names = tuple(
      sorted(d.name for d in os.scandir(self._split_dir(split)) if d.is_dir())
    )
    self.num_classes = len(self.class_names)
    self._files: dict[str, tuple[np.ndarray, np.ndarray]] = {}

  def _split_dir(self, split: str) -> str:
    path = os.path.join(self._root, split)
    if not os.path.isdir(path):
      raise FileNotFoundError(
        f'{path} does not exist (expected {self._root}/<split>/<class>/<image>)'
      )
    return path

  def _list(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    if split not in self._files:
      root = self._split_dir(split)
      index = {name: i for i, name in enumerate(self.class_names)}
      paths, labels = [], []
      for name in sorted(d.name for d in os.scandir(root) if d.is_dir()):
        if name not in index:
          raise ValueError(f'{root}/{name}: class not in the train split ({self._root})')
        for dirpath, _, files in sorted(os.walk(os.path.join(root, name))):
          for f in sorted(files):
            if f.lower().endswith(IMAGE_EXTENSIONS):
              paths.append(os.path.join(dirpath, f))
              labels.append(index[name])
      if not paths:
        raise FileNotFoundError(f'{root}: no images ({", ".join(IMAGE_EXTENSIONS)})')
      self._files[split] = (np.asarray(paths), np.asarray(labels, np.int32))
    return self._files[split]

  def _shard(self, split: str, index: int, count: int, drop_remainder: bool) -> slice:
    n = len(self._list(split)[1])
    if drop_remainder:
      per = n // count
      return slice(index * per, (index + 1) * per)
    bounds = [round(i * n / count) for i in range(count + 1)]
    return slice(bounds[index], bounds[index + 1])

  def num_examples(
    self, split: str, index: int = 0, count: int = 1, drop_remainder: bool = False
  ) -> int:
    s = self._shard(split, index, count, drop_remainder)
    return s.stop - s.start

  def dataset(
    self, split: str, index: int, count: int, *, drop_remainder: bool, shuffle_seed: int | None
  ):
    tf = _tf()
    paths, labels = self._list(split)
    s = self._shard(split, index, count, drop_remainder)
    ds = tf.data.Dataset.from_tensor_slices((paths[s], labels[s]))
    return ds.map(lambda p, y: (tf.io.read_file(p), y))


# ---------------------------------------------------------------------------- preprocessing


def _resize(image, height, width, method: str):
  """-> uint8 ``[height, width, 3]``, antialiased when shrinking (as PIL)."""
  tf = _tf()
  out = tf.image.resize(image, tf.stack([height, width]), method=method, antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)


def _decode(data):
  tf = _tf()
  return tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)


RRC_SCALE, RRC_RATIO, RRC_ATTEMPTS = (0.08, 1.0), (3 / 4, 4 / 3), 10


def crop_window(height, width, seed):
  """The RandomResizedCrop window ``(top, left, h, w)`` (int32) of a ``height`` x ``width`` image:
  torchvision's ``RandomResizedCrop.get_params`` with its defaults, stateless from ``seed``.

  All attempts are sampled at once (graph-friendly) and the first valid one is taken, which is
  the same distribution as torchvision's loop; float64 so that rounding matches Python's.
  """
  tf = _tf()
  area_seed, ratio_seed, pos_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  fh, fw = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
  lo, hi = RRC_RATIO
  target = (
    fh * fw * tf.random.stateless_uniform([RRC_ATTEMPTS], area_seed, *RRC_SCALE, dtype=tf.float64)
  )
  ratio = tf.exp(
    tf.random.stateless_uniform(
      [RRC_ATTEMPTS], ratio_seed, math.log(lo), math.log(hi), dtype=tf.float64
    )
  )
  ws, hs = tf.round(tf.sqrt(target * ratio)), tf.round(tf.sqrt(target / ratio))  # half to even
  ok = (ws > 0) & (ws <= fw) & (hs > 0) & (hs <= fh)
  first = tf.argmax(tf.cast(ok, tf.int32))
  # Fallback after RRC_ATTEMPTS misses: a center crop with the aspect ratio clamped to the range.
  in_ratio = fw / fh
  w = tf.where(tf.reduce_any(ok), ws[first], tf.where(in_ratio > hi, tf.round(fh * hi), fw))
  h = tf.where(tf.reduce_any(ok), hs[first], tf.where(in_ratio < lo, tf.round(fw / lo), fh))
  # Top-left uniform over the valid positions (randint(0, H - h) inclusive); min() guards
  # u * n rounding up to n.
  u = tf.random.stateless_uniform([2], pos_seed, dtype=tf.float64)
  top = tf.where(
    tf.reduce_any(ok), tf.minimum(tf.floor(u[0] * (fh - h + 1)), fh - h), tf.floor((fh - h) / 2)
  )
  left = tf.where(
    tf.reduce_any(ok), tf.minimum(tf.floor(u[1] * (fw - w + 1)), fw - w), tf.floor((fw - w) / 2)
  )
  return tuple(tf.cast(v, tf.int32) for v in (top, left, h, w))


def _random_resized_crop(data, seed, size: int, method: str):
  """Decodes the random RandomResizedCrop window of encoded ``data`` and resizes it."""
  tf = _tf()

  def jpeg():
    shape = tf.image.extract_jpeg_shape(data)
    y, x, h, w = crop_window(shape[0], shape[1], seed)
    return tf.image.decode_and_crop_jpeg(data, tf.stack([y, x, h, w]), channels=3)

  def other():
    image = _decode(data)
    y, x, h, w = crop_window(tf.shape(image)[0], tf.shape(image)[1], seed)
    return image[y : y + h, x : x + w]

  image = tf.cond(tf.io.is_jpeg(data), jpeg, other)
  return _resize(image, size, size, method)


def train_preprocess(data, label, seed, input_config):
  """Encoded image -> (uint8 ``[S, S, 3]``, label), ``seed``: int32 ``[2]`` stateless seed."""
  tf = _tf()
  size, method = input_config.image_size, input_config.interpolation
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  if input_config.train_augment == 'random_resized_crop':
    image = _random_resized_crop(data, crop_seed, size, method)
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  else:
    image = _resize(_decode(data), size, size, method)
  return image, label


def eval_preprocess(data, label, input_config):
  """Encoded image -> (uint8 ``[S, S, 3]``, label): shorter side to ``int(S / crop_pct)``
  (longer side scaled and truncated, as torchvision's Resize), center crop ``S``."""
  tf = _tf()
  size = input_config.image_size
  short = int(math.floor(size / input_config.crop_pct))
  image = _decode(data)
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  scale = short / tf.cast(tf.minimum(h, w), tf.float64)
  nh = tf.where(h <= w, short, tf.cast(tf.cast(h, tf.float64) * scale, tf.int32))
  nw = tf.where(h <= w, tf.cast(tf.cast(w, tf.float64) * scale, tf.int32), short)
  image = _resize(image, nh, nw, input_config.interpolation)
  top = tf.cast(tf.round(tf.cast(nh - size, tf.float32) / 2), tf.int32)
  left = tf.cast(tf.round(tf.cast(nw - size, tf.float32) / 2), tf.int32)
  return image[top : top + size, left : left + size], label


class TFInput:
  """``hrnet_jax.train.data.base.Input`` over a ``TFDSSource`` / ``FolderSource``; an empty
  ``train_split`` builds an eval-only input."""

  AUGMENTATIONS = ('random_resized_crop', 'resize')
  INTERPOLATIONS = ('bilinear', 'bicubic', 'nearest')

  def __init__(
    self,
    source,
    input_config,
    *,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    process_index: int,
    process_count: int,
    train_split: str,
    eval_split: str,
  ):
    if input_config.train_augment not in self.AUGMENTATIONS:
      raise ValueError(
        f'config.input.train_augment={input_config.train_augment!r}; valid: '
        f'{", ".join(self.AUGMENTATIONS)}'
      )
    if input_config.interpolation not in self.INTERPOLATIONS:
      raise ValueError(
        f'config.input.interpolation={input_config.interpolation!r}; valid: '
        f'{", ".join(self.INTERPOLATIONS)}'
      )
    self._source, self._input = source, input_config
    self._seed, self._pi, self._pc = seed, process_index, process_count
    self._train_split, self._eval_split = train_split, eval_split
    self._local = local_batch_size(batch_size, process_count)
    self._local_eval = local_batch_size(eval_batch_size, process_count, 'eval_batch_size')
    num_train = source.num_examples(train_split) if train_split else 0
    num_eval = source.num_examples(eval_split)
    self.info = DatasetInfo(
      num_classes=source.num_classes,
      num_train=num_train,
      num_eval=num_eval,
      class_names=source.class_names,
    )
    self._host_train = (
      source.num_examples(train_split, process_index, process_count, True) if train_split else 0
    )
    self.steps_per_epoch = self._host_train // self._local
    if train_split and self.steps_per_epoch == 0:
      raise ValueError(
        f'config.batch_size={batch_size} exceeds the {num_train} training '
        f'examples of split {train_split!r}'
      )
    self._host_eval = source.num_examples(eval_split, process_index, process_count)
    self.num_eval_batches = num_eval_batches(num_eval, process_count, self._local_eval)

  def _epoch(self, epoch: int, skip_batches: int):
    tf = _tf()
    seed = epoch_seed(self._seed, epoch)
    ds = self._source.dataset(
      self._train_split, self._pi, self._pc, drop_remainder=True, shuffle_seed=seed
    )
    ds = ds.shuffle(
      min(self._input.shuffle_buffer, self._host_train), seed=seed, reshuffle_each_iteration=False
    )
    ds = ds.enumerate().skip(skip_batches * self._local)
    ds = ds.map(
      lambda i, ex: train_preprocess(
        ex[0], ex[1], tf.stack([tf.constant(seed, tf.int64), i]), self._input
      ),
      num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True,
    )
    ds = ds.batch(self._local, drop_remainder=True).take(self.steps_per_epoch - skip_batches)
    return ds.prefetch(tf.data.AUTOTUNE)

  def train_batches(self, start_step: int = 0) -> Iterator[Batch]:
    epoch, skip = divmod(start_step, self.steps_per_epoch)
    while True:
      for image, label in self._epoch(epoch, skip).as_numpy_iterator():
        yield {'image': image, 'label': label}
      epoch, skip = epoch + 1, 0

  def eval_batches(self) -> Iterator[Batch]:
    tf = _tf()
    size = self._input.image_size
    ds = self._source.dataset(
      self._eval_split, self._pi, self._pc, drop_remainder=False, shuffle_seed=None
    )
    ds = ds.map(
      lambda x, y: eval_preprocess(x, y, self._input),
      num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True,
    )
    ds = ds.map(lambda x, y: {'image': x, 'label': y, 'mask': True})
    padding = self.num_eval_batches * self._local_eval - self._host_eval
    pad = tf.data.Dataset.from_tensors(
      {
        'image': tf.zeros([size, size, 3], tf.uint8),
        'label': tf.constant(0, tf.int32),
        'mask': False,
      }
    )
    ds = ds.concatenate(pad.repeat(padding)).batch(self._local_eval)
    yield from ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
