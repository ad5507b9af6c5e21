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

Bad data is named, never a TensorFlow traceback: a folder's images are checked before the first
step (``check_image``, through ``verify.find_unreadable``); a record that fails to decode in the
middle of an epoch (a TFDS dataset) is a ``BadInputError`` naming its split, record id and
position.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import threading
from typing import Callable, Iterator

import numpy as np

from hrnet_jax.errors import BadInputError
from hrnet_jax.train.data.base import (
  Batch,
  DatasetInfo,
  epoch_seed,
  local_batch_size,
  num_eval_batches,
)
from hrnet_jax.train.data.verify import find_unreadable

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')
SKIP_OPTION = 'config.dataset.skip_bad_images=True'
MAX_NAMED = 5  # files named in one error line; the rest are counted
_TF_LOCK = threading.Lock()  # check_image's threads may be the first to need TensorFlow


def _tf():
  with _TF_LOCK:
    return _import_tf()


@functools.cache
def _import_tf():
  # Imported on first use: TensorFlow is heavy, and only TFDS / folder inputs need it. Its C++
  # info / warning lines (aborted rendezvous after a bad image) are not ours to show; a user's
  # own TF_CPP_MIN_LOG_LEVEL wins. The oneDNN notice ignores that level (it is printed before
  # TensorFlow's logging starts, twice): oneDNN's kernels are off instead, as the notice says.
  # Decoding and resizing do not use them (the same pixels either way); matmuls / convolutions,
  # which would, run in JAX.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
  import tensorflow as tf

  tf.config.set_visible_devices([], 'GPU')  # TF is only the input pipeline: keep it off GPUs
  return tf


def tf_reason(error) -> str:
  """A TensorFlow ``OpError``'s message on one line, without what surrounds the kernel's words
  (op and node names; a graph function's "Detected at node" Python stack)."""
  lines = [
    line
    for line in error.message.splitlines()
    if not line.startswith(('Graph execution error', 'Detected at node', '  File '))
  ]
  text = re.sub(r'\{\{[^}]*\}\}|\[\[[^\]]*\]\]|\[Op:[^\]]*\](?: name: \S*)?', ' ', ' '.join(lines))
  return ' '.join(text.split())


def _named(items: list[str]) -> str:
  """The first ``MAX_NAMED`` of ``items``, and how many more."""
  more = len(items) - MAX_NAMED
  return '; '.join(items[:MAX_NAMED]) + (f'; and {more} more' if more > 0 else '')


def _class_folders(split_dir: str) -> tuple[str, ...]:
  return tuple(
    sorted(d.name for d in os.scandir(split_dir) if d.is_dir() and not d.name.startswith('.'))
  )


def _files(folder: str) -> list[str]:
  """The files under ``folder``, hidden ones and those in hidden folders left out, in the order
  of their sorted folder paths (the order, hence the shuffles, of earlier versions)."""
  found = []
  for dirpath, dirs, files in os.walk(folder):
    dirs[:] = [d for d in dirs if not d.startswith('.')]  # os.walk descends only into these
    found.append((dirpath, sorted(f for f in files if not f.startswith('.'))))
  return [os.path.join(dirpath, f) for dirpath, files in sorted(found) for f in files]


# What check_image verifies, for the cache of successes: a new decoder needs a new kind.
CHECK_KIND = 'image-tf-decode_image-rgb8'


def check_image(path: str) -> None:
  """Raises ``ValueError('cannot decode (REASON)')`` unless the file ``path`` decodes with
  ``_decode``, the decoder of training and evaluation (``OSError`` if it cannot be read).

  TensorFlow's own decoder, not PIL: the two disagree (PIL reads TIFF and recovers some damaged
  files TF rejects), and what passes here must decode in the pipeline. A full decode is at
  least as strict as the JPEG crop-decode of ``random_resized_crop`` (the same libjpeg kernel on
  a window of the image)."""
  tf = _tf()
  with open(path, 'rb') as f:
    data = f.read()
  try:
    _decode(data)  # eagerly: each call is one kernel, run in the calling thread
  except tf.errors.InvalidArgumentError as e:
    raise ValueError(f'cannot decode ({tf_reason(e)})') from None


class TFDSSource:
  """A TFDS dataset by name: ``(encoded image, label)`` of a process's shard of a split.

  ``ValueError`` names the dataset when it is unknown or not prepared and cannot be prepared (no
  ``manual_dir`` for ImageNet, no network), or has no ``image_key`` / ``label_key`` feature, and
  names ``config.dataset.folder`` when that is set (the folder was meant, not a download).
  """

  def __init__(self, dataset_config, *, process_count: int):
    cfg = dataset_config
    if cfg.get('folder'):  # a folder meant as the data, never silently a TFDS download instead
      raise ValueError(
        f'config.dataset.folder={cfg.folder!r} is set but config.dataset.name={cfg.name!r} is '
        f'a TFDS dataset: for the folder pass --config.dataset=folder:{cfg.folder}'
      )
    _tf()  # first: it quiets TensorFlow's C++ log before tensorflow_datasets imports it
    import tensorflow_datasets as tfds

    self._tfds = tfds
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

  def describe(self, split: str) -> str:
    return f'TFDS dataset {self._builder.name!r} (in {self._builder.data_dir}) split {split!r}'

  def dataset(
    self,
    split: str,
    index: int,
    count: int,
    *,
    drop_remainder: bool,
    shuffle_seed: int | None,
    with_ids: bool = False,
  ):
    """tf.data of ``(encoded bytes, int32 label)``, and with ``with_ids`` the record's
    ``tfds_id`` (``'NAME-SPLIT.tfrecord-00000-of-00016__RECORD'``); files in an order fixed by
    ``shuffle_seed`` (None: the stored order), the same with or without ids."""
    tf = _tf()
    sub = self._tfds.even_splits(split, n=count, drop_remainder=drop_remainder)[index]
    read_config = self._tfds.ReadConfig(shuffle_seed=shuffle_seed, add_tfds_id=with_ids)
    ds = self._builder.as_dataset(
      split=sub,
      shuffle_files=shuffle_seed is not None,
      read_config=read_config,
      decoders={self._image_key: self._tfds.decode.SkipDecoding()},
    )
    image, label = self._image_key, self._label_key
    if with_ids:
      return ds.map(lambda ex: (ex[image], tf.cast(ex[label], tf.int32), ex['tfds_id']))
    return ds.map(lambda ex: (ex[image], tf.cast(ex[label], tf.int32)))


_PERCENT = r'-?\d+(?:\.\d+)?%'
_SLICE = re.compile(rf'(?P<name>[^\[\]]+)(?:\[(?P<start>{_PERCENT})?:(?P<stop>{_PERCENT})?\])?')


def folder_split(split: str) -> tuple[str, float, float]:
  """A folder split as ``(subfolder, start, stop)`` in percent: ``'train'`` -> ``('train', 0,
  100)``, ``'train[:90%]'`` -> ``('train', 0, 90)``, ``'train[90%:]'`` -> ``('train', 90,
  100)``, ``'train[-10%:]'`` -> ``('train', 90, 100)`` (TFDS's slicing syntax, percent bounds
  only). ``ValueError`` naming the split for anything else."""
  m = _SLICE.fullmatch(split)
  if m is None:
    raise ValueError(
      f'folder split {split!r}: expected a subfolder name, optionally sliced in percent '
      "('train', 'train[:90%]', 'train[90%:]')"
    )

  def bound(text, default):
    value = default if text is None else float(text[:-1])
    return min(max(value + 100 if value < 0 else value, 0.0), 100.0)

  return m['name'], bound(m['start'], 0.0), bound(m['stop'], 100.0)


def _slice_files(files: list[str], start: float, stop: float) -> list[str]:
  """The ``[start%, stop%)`` part of one class's sorted files; complementary slices
  (``[:p%]``, ``[p%:]``) split them without overlap or gap."""
  cut = lambda pct: math.floor(len(files) * pct / 100 + 0.5)
  return files[cut(start) : cut(stop)]


class FolderSource:
  """Images in ``folder/<split>/<class>/<file>``; classes are the sorted subfolder names of the
  train split (of the eval split if there is no train split). Hidden files and folders (``.``
  first: ``.DS_Store``, ``.ipynb_checkpoints``) are ignored.

  A split may be sliced in percent as TFDS splits are (``folder_split``): ``train[:90%]`` /
  ``train[90%:]`` take the first 90% / the last 10% of each class's files (sorted by path), so
  one ``train/`` folder gives a stratified train / eval split (the ``finetune`` recipe's
  defaults).

  A split is listed and checked when first read (inside ``create_input``, before anything is
  written): every image must decode as training decodes it (``check_image``; in parallel, the
  successes cached by ``verify``). ``BadInputError`` (one line naming the first files and the
  count) for images that do not decode and files without an ``IMAGE_EXTENSIONS`` extension,
  unless ``dataset_config.skip_bad_images`` (then they are skipped and counted in one warning),
  and for a class folder without images. ``FileNotFoundError`` names a missing or empty split
  folder. Every process checks the whole split: all must agree on the list before sharding it.
  """

  def __init__(self, dataset_config):
    self._root = os.path.expanduser(dataset_config.folder)
    if not dataset_config.folder or not os.path.isdir(self._root):
      raise FileNotFoundError(
        f'config.dataset.folder={dataset_config.folder!r} is not a folder '
        '(expected FOLDER/<split>/<class>/<image>)'
      )
    self._skip_bad = bool(dataset_config.get('skip_bad_images', False))
    split = folder_split(dataset_config.train_split)[0]
    if not os.path.isdir(os.path.join(self._root, split)):
      split = folder_split(dataset_config.eval_split)[0]
    self.class_names = _class_folders(self._split_dir(split))
    self.num_classes = len(self.class_names)
    self._files: dict[str, tuple[np.ndarray, np.ndarray]] = {}

  def describe(self, split: str) -> str:
    return f'folder dataset {self._root} split {split!r}'

  def _split_dir(self, split: str) -> str:
    path = os.path.join(self._root, folder_split(split)[0])
    if not os.path.isdir(path):
      raise FileNotFoundError(
        f'{path} does not exist (expected {self._root}/<split>/<class>/<image>)'
      )
    return path

  def _list(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    if split not in self._files:
      root = self._split_dir(split)
      _, start, stop = folder_split(split)
      index = {name: i for i, name in enumerate(self.class_names)}
      paths, labels, bad, empty = [], [], {}, []
      present = _class_folders(root)
      for name in present:
        if name not in index:
          raise ValueError(f'{root}/{name}: class not in the train split ({self._root})')
        files = _files(os.path.join(root, name))
        if not files:
          empty.append(os.path.join(root, name))
        for path in _slice_files(files, start, stop):
          if path.lower().endswith(IMAGE_EXTENSIONS):
            paths.append(path)
            labels.append(index[name])
          else:
            ext = os.path.splitext(path)[1] or 'none'
            bad[path] = f'unsupported extension {ext} (supported: {", ".join(IMAGE_EXTENSIONS)})'
      if not present:
        raise FileNotFoundError(f'{root}: no class folders (expected {root}/<class>/<image>)')
      if empty:  # before the decoding pass: known from the listing alone
        raise BadInputError(
          f'{root}: empty class folders: {_named(empty)}; remove them or add images'
        )
      bad.update(find_unreadable(paths, check_image, kind=CHECK_KIND, desc=f'check {split}'))
      if bad:
        self._report_bad(root, bad)
        keep = [i for i, p in enumerate(paths) if p not in bad]
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
        left = {self.class_names[y] for y in labels}
        if empty := [os.path.join(root, n) for n in present if n not in left]:
          raise BadInputError(
            f'{root}: class folders without a good image once the bad files are skipped: '
            f'{_named(empty)}'
          )
      self._files[split] = (np.asarray(paths), np.asarray(labels, np.int32))
    return self._files[split]

  def _report_bad(self, root: str, bad: dict[str, str]) -> None:
    """Raises, or with the option logs, one line naming the first bad files and the count."""
    named = _named([f'{p}: {bad[p]}' for p in sorted(bad)])
    if not self._skip_bad:
      count = f'{len(bad)} bad files in {root}: ' if len(bad) > 1 else ''
      raise BadInputError(f'{count}{named}; set {SKIP_OPTION} to skip them')
    log.warning('%s: skipped %d bad files (%s is set): %s', root, len(bad), SKIP_OPTION, named)

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
    self,
    split: str,
    index: int,
    count: int,
    *,
    drop_remainder: bool,
    shuffle_seed: int | None,
    with_ids: bool = False,
  ):
    """As ``TFDSSource.dataset``; a record's id is its path."""
    tf = _tf()
    paths, labels = self._list(split)
    s = self._shard(split, index, count, drop_remainder)
    ds = tf.data.Dataset.from_tensor_slices((paths[s], labels[s]))
    if with_ids:
      return ds.map(lambda p, y: (tf.io.read_file(p), y, p))
    return ds.map(lambda p, y: (tf.io.read_file(p), y))


# ---------------------------------------------------------------------------- preprocessing


# tf.image.resize's kernels for ``antialias=True`` (its ScaleAndTranslate call).
_KERNELS = {'bilinear': 'triangle', 'bicubic': 'keyscubic'}


def _resize(image, height, width, method: str, crop=None):
  """uint8 ``[h, w, 3]`` -> uint8 ``[height, width, 3]``, antialiased when shrinking (as PIL):
  ``tf.image.resize(..., antialias=True)``, rounded. ``crop=(top, left, ch, cw)``: only that
  window of the resized image, ``[ch, cw, 3]``, computed directly (the same ScaleAndTranslate
  with the window's offset as translation, so no pixel outside it is computed: the eval path's
  resize + center crop costs about half of resizing the whole image)."""
  tf = _tf()
  if method not in _KERNELS:  # nearest: no antialiasing, nothing to save by cropping first
    out = tf.image.resize(image, tf.stack([height, width]), method=method)
    if crop is not None:
      top, left, ch, cw = crop
      out = out[top : top + ch, left : left + cw]
    return tf.cast(out, tf.uint8)
  in_hw = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = tf.cast(tf.stack([height, width]), tf.float32) / in_hw
  if crop is None:
    size, translation = tf.stack([height, width]), tf.zeros([2])
  else:
    top, left, ch, cw = crop
    size, translation = tf.stack([ch, cw]), -tf.cast(tf.stack([top, left]), tf.float32)
  out = tf.raw_ops.ScaleAndTranslate(
    images=tf.cast(image, tf.float32)[None],
    size=tf.cast(size, tf.int32),
    scale=scale,
    translation=translation,
    kernel_type=_KERNELS[method],
    antialias=True,
  )[0]
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
  top = tf.cast(tf.round(tf.cast(nh - size, tf.float32) / 2), tf.int32)
  left = tf.cast(tf.round(tf.cast(nw - size, tf.float32) / 2), tf.int32)
  return _resize(image, nh, nw, input_config.interpolation, crop=(top, left, size, size)), label


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
        f'config.batch_size={batch_size} exceeds the {num_train} training examples of '
        f'{source.describe(train_split)}: pass --config.batch_size=N with N <= '
        f'{num_train // process_count * process_count}'
      )
    self._host_eval = source.num_examples(eval_split, process_index, process_count)
    self.num_eval_batches = num_eval_batches(num_eval, process_count, self._local_eval)

  def _epoch_records(self, epoch: int, *, with_ids: bool = False):
    """``(position in the epoch, (encoded, label[, id]))`` of this process's shard."""
    seed = epoch_seed(self._seed, epoch)
    ds = self._source.dataset(
      self._train_split,
      self._pi,
      self._pc,
      drop_remainder=True,
      shuffle_seed=seed,
      with_ids=with_ids,
    )
    ds = ds.shuffle(
      min(self._input.shuffle_buffer, self._host_train), seed=seed, reshuffle_each_iteration=False
    )
    return ds.enumerate()

  def _train_preprocess(self, epoch: int) -> Callable:
    tf = _tf()
    seed = tf.constant(epoch_seed(self._seed, epoch), tf.int64)
    return lambda i, ex: train_preprocess(ex[0], ex[1], tf.stack([seed, i]), self._input)

  def _epoch(self, epoch: int, skip_batches: int):
    tf = _tf()
    ds = self._epoch_records(epoch).skip(skip_batches * self._local)
    ds = ds.map(
      self._train_preprocess(epoch), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    ds = ds.batch(self._local, drop_remainder=True).take(self.steps_per_epoch - skip_batches)
    return ds.prefetch(tf.data.AUTOTUNE)

  def _eval_preprocess(self, i, ex):
    return eval_preprocess(ex[0], ex[1], self._input)

  def _bad_record(
    self, error, split: str, records, start: int, count: int, preprocess: Callable, where: str
  ) -> BadInputError:
    """The error for ``error``, raised by tf.data in the batch of ``count`` records from position
    ``start`` of ``records`` (with ids): they are decoded again, eagerly, to name the one that
    fails."""
    tf = _tf()
    for i, ex in records.skip(start).take(count):
      try:
        preprocess(i, ex)
      except tf.errors.InvalidArgumentError as e:
        record = ex[2].numpy().decode(errors='replace')
        return BadInputError(
          f'{self._source.describe(split)}: record {record} (position {int(i)} of {where}) '
          f'cannot be decoded ({tf_reason(e)})'
        )
    return BadInputError(
      f'{self._source.describe(split)}: a record of positions {start}-{start + count - 1} of '
      f'{where} cannot be decoded ({tf_reason(error)})'
    )

  def train_batches(self, start_step: int = 0) -> Iterator[Batch]:
    tf = _tf()
    epoch, skip = divmod(start_step, self.steps_per_epoch)
    while True:
      done = 0
      try:
        for image, label in self._epoch(epoch, skip).as_numpy_iterator():
          yield {'image': image, 'label': label}
          done += 1
      except tf.errors.InvalidArgumentError as e:
        raise self._bad_record(
          e,
          self._train_split,
          self._epoch_records(epoch, with_ids=True),
          (skip + done) * self._local,
          self._local,
          self._train_preprocess(epoch),
          f'epoch {epoch}' + (f' of process {self._pi}' if self._pc > 1 else ''),
        ) from e
      epoch, skip = epoch + 1, 0

  def _eval_records(self, *, with_ids: bool = False):
    """``(position, (encoded, label[, id]))`` of this process's eval shard, in stored order."""
    return self._source.dataset(
      self._eval_split,
      self._pi,
      self._pc,
      drop_remainder=False,
      shuffle_seed=None,
      with_ids=with_ids,
    ).enumerate()

  def eval_batches(self) -> Iterator[Batch]:
    tf = _tf()
    size = self._input.image_size
    ds = self._eval_records().map(
      self._eval_preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
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
    done = 0
    try:
      for batch in ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
        yield batch
        done += 1
    except tf.errors.InvalidArgumentError as e:
      raise self._bad_record(
        e,
        self._eval_split,
        self._eval_records(with_ids=True),
        done * self._local_eval,
        self._local_eval,
        self._eval_preprocess,
        'the evaluation' + (f' shard of process {self._pi}' if self._pc > 1 else ''),
      ) from e
