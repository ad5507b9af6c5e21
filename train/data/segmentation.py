"""Semantic segmentation input: images with label PNGs of class ids, mmseg's augmentations.

Sources (``config.dataset.name``, root ``config.dataset.folder``):

- ``seg_folder``: mmseg's custom layout ``ROOT/images/<split>/<name>.<ext>`` with
  ``ROOT/annotations/<split>/<name>.png`` (subfolders allowed); class names from
  ``config.dataset.classes`` or ``ROOT/classes.json`` (a JSON list of names).
- ``cityscapes``: ``ROOT/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
  ``ROOT/gtFine/<split>/<city>/*_gtFine_labelTrainIds.png`` (mmseg ``CityscapesDataset``), the
  19 train-id classes.
- ``ade20k``: ``ROOT`` = ``ADEChallengeData2016``: ``ROOT/images/{training,validation}/*.jpg``
  with ``ROOT/annotations/...png`` (mmseg ``ADE20KDataset``; splits ``train`` / ``val`` name
  ``training`` / ``validation``), 150 classes, ``reduce_zero_label`` always on.
- ``tfds:NAME``: a TFDS dataset with a mask feature (e.g. ``tfds:oxford_iiit_pet``, read from
  ``config.dataset.data_dir``, prepared there on first use by a single process):
  ``config.dataset.image_key`` (an image) and ``label_key`` (an image of class ids, ``[H, W,
  1]``, e.g. ``segmentation_mask``); class names from ``config.dataset.classes`` (masks carry
  none), split names and slices as TFDS's (``train[:90%]``). The encoded image and mask bytes of
  the splits read are held in host memory (read once, when the masks are checked); an example's
  name is its ``file_name`` feature without the extension if it has one, else its index in the
  split (6 digits).

Labels are decoded to their stored indices (PIL, as mmseg's ``imfrombytes(flag='unchanged',
backend='pillow')``: a palette PNG gives its indices, not colours). ``reduce_zero_label`` (mmseg
``LoadAnnotations``): 0 -> ignore, every other id - 1, ignore stays ignore.

Train pipeline, mmseg's transforms with their parameters, each example's randomness stateless
from ``(epoch seed, position in the epoch)``:
``RandomResize(scale, ratio_range, keep_ratio=True)`` (mmcv: a ratio uniform in
``ratio_range`` scales ``scale``, then ``rescale_size``: the largest size within (long, short)
edges; image bilinear, label nearest, as cv2's ``INTER_LINEAR`` / ``INTER_NEAREST``) ->
``RandomCrop(crop_size, cat_max_ratio)`` (up to 10 re-draws until no class but ignore covers
``cat_max_ratio`` or more of the crop) -> ``RandomFlip(flip_prob)`` (horizontal) ->
``PhotoMetricDistortion`` (brightness +-32, contrast 0.5-1.5, saturation 0.5-1.5, hue +-18 of
OpenCV's 180 steps, each with probability 1/2, contrast first or last at random; HSV in float
instead of OpenCV's 8-bit HSV) -> padding to ``crop_size`` at the bottom / right (image 0, label
``ignore_index``), as ``SegDataPreProcessor(size=crop_size)``.

Eval: ``Resize(test_scale, keep_ratio=True)`` of the image only; the label stays at its original
size (the logits are resized to it); ``test_scale=()`` keeps the image size.

Order and shards: epoch ``e`` is one permutation (``default_rng(epoch_seed(seed, e))``) of the
whole train split and process ``p`` reads rows ``[p*b, (p+1)*b)`` of each global batch, so the
stream does not depend on the number of processes and ``train_batches(T)`` skips to step ``T``
without decoding. Eval: a contiguous shard per process (``base.eval_shard``), padded with
repeats of one of its images marked ``valid=False``.

Bad input is refused at construction, before anything is written (``BadInputError``, one line
naming the file, or the TFDS dataset, split and example): a missing root or split folder, a TFDS
dataset that is unknown, cannot be prepared or lacks the features, an empty split, an image without a label or a
label without an image, a label whose size differs from its image's, a label that is not a
single-channel PNG, a label id ``>= num_classes`` that is not ``ignore_index``, a
``classes.json`` that is not a JSON list of strings. Every label is decoded once for this
(``verify.find_unreadable``: parallel, successes cached by file size and mtime); image sizes are
read from their headers.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
from typing import Iterator

import numpy as np
from PIL import Image

import hrnet_jax.train.data.tfdata as tfdata
import hrnet_jax.train.data.verify as verify
from hrnet_jax.errors import BadInputError
from hrnet_jax.train.data.base import DatasetInfo, epoch_seed, eval_shard, local_batch_size

# mmseg CityscapesDataset.METAINFO: the 19 train ids of gtFine *_labelTrainIds.png.
CITYSCAPES_CLASSES = (
  'road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light', 'traffic sign',
  'vegetation', 'terrain', 'sky', 'person', 'rider', 'car', 'truck', 'bus', 'train',
  'motorcycle', 'bicycle',
)  # fmt: skip
# mmseg ADE20KDataset.METAINFO (ids after reduce_zero_label), names as mmseg spells them.
ADE20K_CLASSES = (
  'wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road', 'bed ', 'windowpane', 'grass',
  'cabinet', 'sidewalk', 'person', 'earth', 'door', 'table', 'mountain', 'plant', 'curtain',
  'chair', 'car', 'water', 'painting', 'sofa', 'shelf', 'house', 'sea', 'mirror', 'rug', 'field',
  'armchair', 'seat', 'fence', 'desk', 'rock', 'wardrobe', 'lamp', 'bathtub', 'railing',
  'cushion', 'base', 'box', 'column', 'signboard', 'chest of drawers', 'counter', 'sand', 'sink',
  'skyscraper', 'fireplace', 'refrigerator', 'grandstand', 'path', 'stairs', 'runway', 'case',
  'pool table', 'pillow', 'screen door', 'stairway', 'river', 'bridge', 'bookcase', 'blind',
  'coffee table', 'toilet', 'flower', 'book', 'hill', 'bench', 'countertop', 'stove', 'palm',
  'kitchen island', 'computer', 'swivel chair', 'boat', 'bar', 'arcade machine', 'hovel', 'bus',
  'towel', 'light', 'truck', 'tower', 'chandelier', 'awning', 'streetlight', 'booth',
  'television receiver', 'airplane', 'dirt track', 'apparel', 'pole', 'land', 'bannister',
  'escalator', 'ottoman', 'bottle', 'buffet', 'poster', 'stage', 'van', 'ship', 'fountain',
  'conveyer belt', 'canopy', 'washer', 'plaything', 'swimming pool', 'stool', 'barrel',
  'basket', 'waterfall', 'tent', 'bag', 'minibike', 'cradle', 'oven', 'ball', 'food', 'step',
  'tank', 'trade name', 'microwave', 'pot', 'animal', 'bicycle', 'lake', 'dishwasher', 'screen',
  'blanket', 'sculpture', 'hood', 'sconce', 'vase', 'traffic light', 'tray', 'ashcan', 'fan',
  'pier', 'crt screen', 'plate', 'monitor', 'bulletin board', 'shower', 'radiator', 'glass',
  'clock', 'flag',
)  # fmt: skip
ADE20K_SPLITS = {'train': 'training', 'val': 'validation'}
SOURCES = ('seg_folder', 'cityscapes', 'ade20k')
TFDS_PREFIX = 'tfds:'  # + a TFDS dataset name
CITYSCAPES_HINT = (
  "make them with mmseg's tools/dataset_converters/cityscapes.py ROOT (from the gtFine "
  '*_polygons.json)'
)
LABEL_MODES = ('L', 'P', 'I;16', 'I')  # single-channel PNGs of class ids
MAX_NAMED = 3  # bad files named in one error line; the rest are counted
CROP_TRIES = 10  # mmseg RandomCrop: re-draws while one class covers >= cat_max_ratio
BRIGHTNESS_DELTA, CONTRAST_RANGE, SATURATION_RANGE, HUE_DELTA = 32.0, (0.5, 1.5), (0.5, 1.5), 18


# ------------------------------------------------------------------------------------ files


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where one split of a source lives: images ``image_dir/REL<image suffix>`` and their labels
  ``label_dir/REL<label_suffix>``; ``hint`` is added to the error for a missing label."""

  image_dir: str
  label_dir: str
  image_suffixes: tuple[str, ...]
  label_suffix: str
  hint: str = ''


def layout(name: str, root: str, split: str) -> Layout:
  """The ``Layout`` of ``split`` of source ``name`` (``SOURCES``) under ``root``."""
  if name == 'cityscapes':
    return Layout(
      os.path.join(root, 'leftImg8bit', split),
      os.path.join(root, 'gtFine', split),
      ('_leftImg8bit.png',),
      '_gtFine_labelTrainIds.png',
      CITYSCAPES_HINT,
    )
  if name == 'ade20k':
    split = ADE20K_SPLITS.get(split, split)
    return Layout(
      os.path.join(root, 'images', split),
      os.path.join(root, 'annotations', split),
      ('.jpg',),
      '.png',
    )
  return Layout(
    os.path.join(root, 'images', split),
    os.path.join(root, 'annotations', split),
    tfdata.IMAGE_EXTENSIONS,
    '.png',
  )


def _walk(folder: str) -> list[str]:
  """Paths relative to ``folder`` of its files, sorted, hidden files and folders left out."""
  out = []
  for dirpath, dirnames, files in os.walk(folder):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    rel = os.path.relpath(dirpath, folder)
    out += [os.path.normpath(os.path.join(rel, f)) for f in files if not f.startswith('.')]
  return sorted(out)


def _strip(rel: str, suffixes: tuple[str, ...]) -> str | None:
  for suffix in suffixes:
    if rel.lower().endswith(suffix.lower()):
      return rel[: len(rel) - len(suffix)]
  return None


def list_split(lay: Layout) -> tuple[list[str], list[str], list[str]]:
  """-> (image paths, label paths, names) of a split, sorted. An image ``REL<image suffix>`` is
  paired with the label ``REL<label suffix>``; its name is its path relative to ``image_dir``
  without the extension. ``BadInputError`` naming the folder or file: a missing folder, no
  images, an image without a label, a label without an image, two images with one stem."""
  for folder in (lay.image_dir, lay.label_dir):
    if not os.path.isdir(folder):
      raise BadInputError(f'{folder}: no such folder')
  images: dict[str, str] = {}  # stem (what pairs an image with its label) -> path
  names: dict[str, str] = {}
  for rel in _walk(lay.image_dir):
    stem = _strip(rel, lay.image_suffixes)
    if stem is None:
      continue
    path = os.path.join(lay.image_dir, rel)
    if stem in images:
      raise BadInputError(f'{images[stem]} and {path}: two images with one label name')
    images[stem], names[stem] = path, os.path.splitext(rel)[0]
  if not images:
    raise BadInputError(f'{lay.image_dir}: no images (*{", *".join(lay.image_suffixes)})')
  labels = {}
  for rel in _walk(lay.label_dir):
    stem = _strip(rel, (lay.label_suffix,))
    if stem is not None:
      labels[stem] = os.path.join(lay.label_dir, rel)
  for stem, path in images.items():
    if stem not in labels:
      expected = os.path.join(lay.label_dir, stem + lay.label_suffix)
      hint = f'; {lay.hint}' if lay.hint else ''
      raise BadInputError(f'{path}: no label {expected}{hint}')
  for stem, path in labels.items():
    if stem not in images:
      suffix = lay.image_suffixes[0] if len(lay.image_suffixes) == 1 else '.*'
      raise BadInputError(
        f'{path}: a label without an image {os.path.join(lay.image_dir, stem)}{suffix}'
      )
  stems = sorted(images)
  return [images[n] for n in stems], [labels[n] for n in stems], [names[n] for n in stems]


def read_classes(path: str) -> tuple[str, ...]:
  """The class names in ``path`` (a JSON list of strings); ``BadInputError`` naming it."""
  try:
    with open(path) as f:
      names = json.load(f)
  except FileNotFoundError:
    raise BadInputError(
      f'{path}: no such file (the class names, a JSON list; or set config.dataset.classes)'
    ) from None
  except ValueError as e:
    raise BadInputError(f'{path}: not JSON ({e})') from None
  if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
    raise BadInputError(f'{path}: must be a non-empty JSON list of strings (the class names)')
  return tuple(names)


def _open(source: str | bytes) -> Image.Image:
  return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)


def decode_label(source: str | bytes) -> np.ndarray:
  """The stored class ids of a label PNG (a path, or its encoded bytes), ``[h, w]`` (uint8, or
  uint16 / int32 for 16- / 32-bit PNGs); ``ValueError`` for a PNG that is not single-channel."""
  with _open(source) as im:
    if im.mode not in LABEL_MODES:
      raise ValueError(
        f'mode {im.mode}: a label PNG holds one class id per pixel (mode {", ".join(LABEL_MODES)})'
      )
    return np.asarray(im)


def reduce_zero_label(label: np.ndarray, ignore_index: int) -> np.ndarray:
  """mmseg ``LoadAnnotations(reduce_zero_label=True)``: 0 -> ``ignore_index``, other ids - 1,
  ``ignore_index`` stays. Same shape and dtype."""
  return np.where((label == 0) | (label == ignore_index), ignore_index, label - 1).astype(
    label.dtype
  )


def read_label(source: str | bytes, *, reduce_zero: bool, ignore_index: int) -> np.ndarray:
  """uint8 ``[h, w]`` class ids of a checked label PNG (path or bytes), after
  ``reduce_zero_label``."""
  label = decode_label(source)
  if reduce_zero:
    label = reduce_zero_label(label, ignore_index)
  return label.astype(np.uint8)


def _image_size(source: str | bytes) -> tuple[int, int]:
  """(width, height) from the header of an image (path or encoded bytes); ``ValueError`` if it
  does not open as an image."""
  try:
    with _open(source) as im:
      return im.size
  except OSError as e:
    raise ValueError(f'not an image ({e})') from None


def check_split(
  images: list[str], labels: list[str], *, num_classes: int, ignore_index: int, reduce_zero: bool
) -> None:
  """Decodes every label once and compares sizes (image headers only); ``BadInputError``, one
  line naming the first bad files and the count. Parallel and cached (``verify``): the label
  check by each label file, the size check also by each image file, so a change of either is
  checked again."""
  image_of = dict(zip(labels, images))
  label_of = dict(zip(images, labels))

  def check_label(path: str) -> None:
    _check_pair(
      image_of[path],
      path,
      num_classes=num_classes,
      ignore_index=ignore_index,
      reduce_zero=reduce_zero,
      image_name=image_of[path],
    )

  def check_image_size(path: str) -> None:
    label = label_of[path]
    with Image.open(label) as im:
      size = im.size
    _check_size(path, size, path)

  kind = f'seg-label:classes={num_classes}:ignore={ignore_index}:reduce_zero={reduce_zero}'
  bad = verify.find_unreadable(labels, check_label, kind=kind, desc='check labels')
  for path, reason in verify.find_unreadable(
    images, check_image_size, kind='seg-image-size', desc='check image sizes'
  ).items():
    bad.setdefault(label_of[path], reason)
  _refuse(bad)


def _check_size(image: str | bytes, label_size, image_name: str) -> None:
  image_size = _image_size(image)
  if image_size != label_size:
    raise ValueError(
      f'is {label_size[0]}x{label_size[1]} (width x height) but its image {image_name} is '
      f'{image_size[0]}x{image_size[1]}'
    )


def _check_pair(
  image, label, *, num_classes: int, ignore_index: int, reduce_zero: bool, image_name: str
) -> None:
  """``ValueError`` saying what is wrong with one label (path or PNG bytes) of ``image``: not a
  single-channel PNG, another size, an id ``>= num_classes`` that is not ``ignore_index``."""
  ids = decode_label(label)
  _check_size(image, ids.shape[::-1], image_name)
  if reduce_zero:
    ids = reduce_zero_label(ids, ignore_index)
  present = np.unique(ids)
  bad = present[(present >= num_classes) & (present != ignore_index)]
  if bad.size:
    reduced = ' after reduce_zero_label' if reduce_zero else ''
    raise ValueError(
      f'label id {int(bad[0])}{reduced} >= num_classes={num_classes} and not '
      f'ignore_index={ignore_index} (ids present: {", ".join(map(str, bad[:8]))})'
    )


def _refuse(bad: dict[str, str]) -> None:
  """``BadInputError`` naming the first ``MAX_NAMED`` of ``{label name: reason}`` and the count."""
  if bad:
    named = [f'{p}: {bad[p]}' for p in sorted(bad)[:MAX_NAMED]]
    more = f'; and {len(bad) - MAX_NAMED} more' if len(bad) > MAX_NAMED else ''
    count = f'{len(bad)} bad labels: ' if len(bad) > 1 else ''
    raise BadInputError(f'{count}{"; ".join(named)}{more}')


def _first_line(error: Exception) -> str:
  # TFDS errors span lines (suggestions, links); the error line keeps the first.
  return (str(error).strip().splitlines() or [type(error).__name__])[0]


def read_tfds_split(
  name: str,
  split: str,
  *,
  data_dir: str,
  image_key: str,
  label_key: str,
  num_classes: int,
  ignore_index: int,
  reduce_zero: bool,
  process_count: int,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """-> (encoded images, encoded masks: object arrays of bytes, names) of split ``split`` of the
  TFDS dataset ``name`` (prepared in ``data_dir`` first if it is not, by a single process), every
  mask checked as a label PNG (``_check_pair``). ``BadInputError`` naming the dataset, split,
  feature or example at fault."""
  import tensorflow_datasets as tfds  # imports TensorFlow: on first use, as tfdata._tf()

  tfdata._tf()
  where = f'config.dataset.name={TFDS_PREFIX}{name}'
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except Exception as e:  # DatasetNotFoundError and friends
    raise BadInputError(f'{where}: {_first_line(e)}') from None
  if not builder.is_prepared():
    if process_count > 1:
      raise BadInputError(
        f'{where}: not prepared in {builder.data_dir}; prepare it once with a single process'
      )
    try:
      builder.download_and_prepare()
    except Exception as e:
      raise BadInputError(
        f'{where}: cannot prepare it in {builder.data_dir} ({_first_line(e)})'
      ) from None
  features = builder.info.features
  for key, field in ((image_key, 'image_key'), (label_key, 'label_key')):
    if key not in features:
      raise BadInputError(
        f'{where} has no feature {key!r} (features: {", ".join(features)}); set '
        f'config.dataset.{field}'
      )
  try:
    ds = builder.as_dataset(
      split=split,
      shuffle_files=False,
      decoders={image_key: tfds.decode.SkipDecoding(), label_key: tfds.decode.SkipDecoding()},
    )
  except Exception as e:  # an unknown split or a bad slice
    raise BadInputError(
      f'{where}: bad split {split!r} ({_first_line(e)}); splits: {", ".join(builder.info.splits)}'
    ) from None
  named = 'file_name' in features
  images, labels, names = [], [], []
  for i, ex in enumerate(ds.as_numpy_iterator()):
    images.append(ex[image_key])
    labels.append(ex[label_key])
    names.append(os.path.splitext(ex['file_name'].decode())[0] if named else f'{i:06d}')
  if not images:
    raise BadInputError(f'{where}: split {split!r} is empty')
  bad = {}
  for image, label, stem in zip(images, labels, names):
    try:
      _check_pair(
        image,
        label,
        num_classes=num_classes,
        ignore_index=ignore_index,
        reduce_zero=reduce_zero,
        image_name=f'{image_key} of {stem}',
      )
    except ValueError as e:
      bad[f'{TFDS_PREFIX}{name} {split} {stem} {label_key}'] = str(e)
  _refuse(bad)
  return np.asarray(images, object), np.asarray(labels, object), names


# ------------------------------------------------------------------------------- transforms


def keep_ratio_size(height, width, scale):
  """mmcv ``rescale_size`` of an image ``height`` x ``width`` for a tuple ``scale``: the factor
  ``min(max(scale) / long edge, min(scale) / short edge)``, each edge ``int(edge * factor +
  0.5)``. Graph-friendly (float64 like Python); -> int32 (new height, new width)."""
  tf = tfdata._tf()
  h, w = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
  long_edge = tf.reduce_max(tf.cast(scale, tf.float64))
  short_edge = tf.reduce_min(tf.cast(scale, tf.float64))
  factor = tf.minimum(long_edge / tf.maximum(h, w), short_edge / tf.minimum(h, w))
  new_h, new_w = tf.floor(h * factor + 0.5), tf.floor(w * factor + 0.5)
  return tf.cast(new_h, tf.int32), tf.cast(new_w, tf.int32)


def resize_image(image, height, width):
  """uint8 ``[H, W, 3]`` -> ``[height, width, 3]``, bilinear on half-pixel centres without
  antialiasing, rounded half up: as cv2 ``INTER_LINEAR`` (mmcv's default backend), up to its
  fixed-point rounding."""
  tf = tfdata._tf()
  out = tf.image.resize(image, tf.stack([height, width]), method='bilinear', antialias=False)
  return tf.cast(tf.clip_by_value(tf.floor(out + 0.5), 0, 255), tf.uint8)


def _nearest_rows(source, target):
  # cv2 resizeNN: index floor(x * (1 / (target / source))) in float64, clamped.
  tf = tfdata._tf()
  inverse = 1.0 / (tf.cast(target, tf.float64) / tf.cast(source, tf.float64))
  x = tf.cast(tf.range(target), tf.float64)
  return tf.minimum(tf.cast(tf.floor(x * inverse), tf.int32), source - 1)


def resize_label(label, height, width):
  """``[H, W]`` -> ``[height, width]`` by cv2 ``INTER_NEAREST``'s rule (mmcv ``imrescale(...,
  interpolation='nearest')``)."""
  tf = tfdata._tf()
  shape = tf.shape(label)
  label = tf.gather(label, _nearest_rows(shape[0], height), axis=0)
  return tf.gather(label, _nearest_rows(shape[1], width), axis=1)


def random_resize(image, label, seed, scale, ratio_range):
  """mmcv ``RandomResize(scale, ratio_range, keep_ratio=True)``: ``ratio ~ U(ratio_range)``,
  target ``(int(scale[0] * ratio), int(scale[1] * ratio))``, then ``keep_ratio_size``."""
  tf = tfdata._tf()
  lo, hi = ratio_range
  ratio = tf.random.stateless_uniform([], seed, dtype=tf.float64) * (hi - lo) + lo
  target = tf.floor(tf.constant(scale, tf.float64) * ratio)
  shape = tf.shape(image)
  h, w = keep_ratio_size(shape[0], shape[1], target)
  return resize_image(image, h, w), resize_label(label, h, w)


def random_crop(image, label, seed, crop_size, cat_max_ratio: float, ignore_index: int):
  """mmseg ``RandomCrop(crop_size, cat_max_ratio, ignore_index)``: a window of at most
  ``crop_size`` (H, W) at offsets uniform in ``[0, max(edge - crop, 0)]``; while ``cat_max_ratio
  < 1``, redrawn up to ``CROP_TRIES`` times until at least two classes other than
  ``ignore_index`` are in it and none covers ``cat_max_ratio`` of their pixels (the last draw is
  kept unchecked)."""
  tf = tfdata._tf()
  ch, cw = crop_size
  shape = tf.shape(image)
  margins = tf.cast(tf.maximum(shape[:2] - tf.constant([ch, cw]), 0), tf.float64)
  u = tf.random.stateless_uniform([CROP_TRIES + 1, 2], seed, dtype=tf.float64)
  offsets = tf.cast(tf.minimum(tf.floor(u * (margins + 1)), margins), tf.int32)

  def window(x, i):
    return x[offsets[i, 0] : offsets[i, 0] + ch, offsets[i, 1] : offsets[i, 1] + cw]

  def rejected(i):
    crop = tf.cast(tf.reshape(window(label, i), [-1]), tf.int32)
    counts = tf.math.bincount(crop, minlength=256, maxlength=256, dtype=tf.int64)
    counts = tf.tensor_scatter_nd_update(counts, [[ignore_index]], tf.zeros([1], tf.int64))
    total = tf.cast(tf.reduce_sum(counts), tf.float64)
    largest = tf.cast(tf.reduce_max(counts), tf.float64)
    accepted = (tf.math.count_nonzero(counts) > 1) & (largest < cat_max_ratio * total)
    return tf.logical_not(accepted)

  i = tf.constant(0)
  if cat_max_ratio < 1.0:
    i = tf.while_loop(
      lambda i: tf.cond(i < CROP_TRIES, lambda: rejected(i), lambda: tf.constant(False)),
      lambda i: (i + 1,),
      (i,),
    )[0]
  return window(image, i), window(label, i)


def random_flip(image, label, seed, prob: float):
  """mmcv ``RandomFlip(prob, direction='horizontal')`` of the image and label together."""
  tf = tfdata._tf()
  flip = tf.random.stateless_uniform([], seed) < prob
  return tf.cond(flip, lambda: (image[:, ::-1], label[:, ::-1]), lambda: (image, label))


def photometric_distortion(image, seed):
  """mmseg ``PhotoMetricDistortion`` with its defaults on uint8 ``[H, W, 3]`` RGB: brightness
  (+ U(-32, 32)), contrast (x U(0.5, 1.5)), saturation (x U(0.5, 1.5)) and hue (+ randint(-18,
  18) of 180 steps), each with probability 1/2, contrast before or after the HSV steps with
  probability 1/2; clipped and truncated to uint8 after each step."""
  tf = tfdata._tf()
  seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 9))

  def coin(k):
    return tf.random.stateless_uniform([], seeds[k]) < 0.5

  def uniform(k, lo, hi):
    return tf.random.stateless_uniform([], seeds[k], lo, hi)

  def convert(x, alpha=1.0, beta=0.0):
    return tf.cast(tf.clip_by_value(tf.cast(x, tf.float32) * alpha + beta, 0.0, 255.0), tf.uint8)

  def maybe(k, fn, x):
    return tf.cond(coin(k), lambda: fn(x), lambda: x)

  def contrast(x):
    return maybe(3, lambda x: convert(x, alpha=uniform(4, *CONTRAST_RANGE)), x)

  x = maybe(0, lambda x: convert(x, beta=uniform(1, -BRIGHTNESS_DELTA, BRIGHTNESS_DELTA)), image)
  contrast_first = coin(2)
  x = tf.cond(contrast_first, lambda: contrast(x), lambda: x)
  x = maybe(5, lambda x: tf.image.adjust_saturation(x, uniform(6, *SATURATION_RANGE)), x)
  hue = tf.random.stateless_uniform([], seeds[8], -HUE_DELTA, HUE_DELTA, dtype=tf.int32)
  x = maybe(7, lambda x: tf.image.adjust_hue(x, tf.cast(hue, tf.float32) / 180.0), x)
  return tf.cond(contrast_first, lambda: x, lambda: contrast(x))


def pad_to(image, label, size, ignore_index: int):
  """Pads at the bottom / right to ``size`` (H, W): image with 0, label with ``ignore_index``
  (mmseg ``SegDataPreProcessor(size=...)``, ``pad_val=0``, ``seg_pad_val``)."""
  tf = tfdata._tf()
  shape = tf.shape(label)
  pad = [[0, size[0] - shape[0]], [0, size[1] - shape[1]]]
  image = tf.pad(image, pad + [[0, 0]])
  label = tf.pad(label, pad, constant_values=tf.cast(ignore_index, label.dtype))
  image.set_shape([size[0], size[1], 3])
  label.set_shape(list(size))
  return image, label


# ------------------------------------------------------------------------------------ input


def _ints(config_input, key: str, allow_empty: bool = False) -> tuple[int, ...]:
  value = tuple(config_input.get(key, ()))
  if (allow_empty and not value) or (
    len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)
  ):
    return value
  empty = ' or ()' if allow_empty else ''
  raise BadInputError(f'config.input.{key}={value!r}: must be two positive integers{empty}')


class SegmentationInput:
  """The input of ``config.task='segment'`` for one process (see the module docstring).

  ``info``: num_classes, num_train / num_eval (all processes; num_train 0 with
  ``train=False``), class_names. ``ignore_index``: ``config.dataset.ignore_index``.
  ``steps_per_epoch``: full global batches per epoch (0 with ``train=False``).
  ``num_eval_examples``: the examples every process yields from ``eval_examples``.

  Reads ``config.dataset.{name, folder, train_split, eval_split, classes, reduce_zero_label,
  ignore_index}`` (TFDS: also ``data_dir``, ``image_key``, ``label_key``), ``config.input.{scale, ratio_range, crop_size, cat_max_ratio, flip_prob,
  photometric_distortion, test_scale}``, ``config.batch_size`` and ``config.seed``.
  ``BadInputError`` (one line naming the file, folder or key) for the bad input listed in the
  module docstring and for bad settings; ``ValueError`` for a batch size that the number of
  processes does not divide.
  """

  def __init__(self, config, *, process_index: int, process_count: int, train: bool = True):
    ds, inp = config.dataset, config.input
    self._tfds_name = ds.name[len(TFDS_PREFIX) :] if ds.name.startswith(TFDS_PREFIX) else ''
    if not (ds.name in SOURCES or self._tfds_name):
      raise BadInputError(
        f'config.dataset.name={ds.name!r}; valid: {", ".join(SOURCES)}, {TFDS_PREFIX}NAME'
      )
    root = os.path.expanduser(ds.folder)
    if not self._tfds_name and not (ds.folder and os.path.isdir(root)):
      raise BadInputError(f'config.dataset.folder={ds.folder!r}: not a folder ({ds.name} root)')
    self._crop = _ints(inp, 'crop_size')
    self._scale = _ints(inp, 'scale')
    self._test_scale = _ints(inp, 'test_scale', allow_empty=True)
    ratio = tuple(inp.ratio_range)
    if not (len(ratio) == 2 and 0 < ratio[0] <= ratio[1]):
      raise BadInputError(
        f'config.input.ratio_range={ratio!r}: must be (low, high), 0 < low <= high'
      )
    self._ratio = tuple(float(r) for r in ratio)
    self._cat_max_ratio = float(inp.cat_max_ratio)
    if not 0 < self._cat_max_ratio <= 1:
      raise BadInputError(f'config.input.cat_max_ratio={inp.cat_max_ratio}: must be in (0, 1]')
    self._flip_prob = float(inp.flip_prob)
    if not 0 <= self._flip_prob <= 1:
      raise BadInputError(f'config.input.flip_prob={inp.flip_prob}: must be in [0, 1]')
    self._photometric = bool(inp.photometric_distortion)

    if tuple(ds.get('classes', ())):
      names = tuple(ds.classes)
    elif ds.name == 'cityscapes':
      names = CITYSCAPES_CLASSES
    elif ds.name == 'ade20k':
      names = ADE20K_CLASSES
    elif self._tfds_name:
      raise BadInputError(
        f'config.dataset.classes is empty: a TFDS mask ({ds.name}) has no class names; set them'
      )
    else:
      names = read_classes(os.path.join(root, 'classes.json'))
    self.ignore_index = int(ds.ignore_index)
    if not len(names) <= self.ignore_index <= 255:
      raise BadInputError(
        f'config.dataset.ignore_index={ds.ignore_index}: must be in [num_classes={len(names)}, '
        '255] (labels are uint8 class ids)'
      )
    self._reduce_zero = ds.name == 'ade20k' or bool(ds.get('reduce_zero_label', False))
    self._seed, self._pi, self._pc = config.seed, process_index, process_count
    self._global = config.batch_size
    self._local = local_batch_size(config.batch_size, process_count) if train else 0

    def load(split: str):
      if self._tfds_name:
        return read_tfds_split(
          self._tfds_name,
          split,
          data_dir=ds.get('data_dir', ''),
          image_key=ds.image_key,
          label_key=ds.label_key,
          num_classes=len(names),
          ignore_index=self.ignore_index,
          reduce_zero=self._reduce_zero,
          process_count=process_count,
        )
      images, labels, names_ = list_split(layout(ds.name, root, split))
      check_split(
        images,
        labels,
        num_classes=len(names),
        ignore_index=self.ignore_index,
        reduce_zero=self._reduce_zero,
      )
      return np.asarray(images), np.asarray(labels), names_

    self._train = load(ds.train_split) if train else None
    self._eval = load(ds.eval_split)
    num_train = len(self._train[2]) if train else 0
    self.info = DatasetInfo(
      num_classes=len(names),
      num_train=num_train,
      num_eval=len(self._eval[2]),
      class_names=names,
    )
    self.steps_per_epoch = num_train // self._global
    if train and self.steps_per_epoch == 0:
      where = (
        f'{ds.name} split {ds.train_split!r}'
        if self._tfds_name
        else layout(ds.name, root, ds.train_split).image_dir
      )
      raise BadInputError(
        f'config.batch_size={self._global} exceeds the {num_train} training images of {where}'
      )
    self.num_eval_examples = math.ceil(self.info.num_eval / process_count)

  def _sources(self, split, row):
    """(image, label) string tensors of example ``row`` of ``split`` (``self._train`` /
    ``self._eval``): file paths, or for TFDS the encoded bytes, fetched from host memory (not
    graph constants, which are limited to 2 GB)."""
    tf = tfdata._tf()
    images, labels = split[0], split[1]
    if not self._tfds_name:
      return tf.gather(tf.constant(images), row), tf.gather(tf.constant(labels), row)
    image, label = tf.numpy_function(
      lambda r: (images[r], labels[r]), [row], (tf.string, tf.string), stateful=False
    )
    image.set_shape([])
    label.set_shape([])
    return image, label

  # The label PNG is decoded by PIL on the host (tf.io.decode_png would expand a palette to
  # RGB); everything after it runs in the tf.data graph.
  def _load(self, image_source, label_source):
    tf = tfdata._tf()
    data = image_source if self._tfds_name else tf.io.read_file(image_source)
    image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
    label = tf.numpy_function(
      lambda p: read_label(
        p if self._tfds_name else p.decode(),
        reduce_zero=self._reduce_zero,
        ignore_index=self.ignore_index,
      ),
      [label_source],
      tf.uint8,
      stateful=False,
    )
    label.set_shape([None, None])
    return image, label

  def _train_example(self, image_source, label_source, seed):
    tf = tfdata._tf()
    resize_seed, crop_seed, flip_seed, photo_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 4)
    )
    image, label = self._load(image_source, label_source)
    image, label = random_resize(image, label, resize_seed, self._scale, self._ratio)
    image, label = random_crop(
      image, label, crop_seed, self._crop, self._cat_max_ratio, self.ignore_index
    )
    image, label = random_flip(image, label, flip_seed, self._flip_prob)
    if self._photometric:
      image = photometric_distortion(image, photo_seed)
    return pad_to(image, label, self._crop, self.ignore_index)

  def _epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """This process's examples of epoch ``epoch``, in order: int64 ``[steps * b]`` rows of the
    train split and ``[steps * b, 2]`` example seeds (epoch seed, position in the epoch)."""
    steps, b = self.steps_per_epoch, self._local
    seed = epoch_seed(self._seed, int(epoch))
    cols = slice(self._pi * b, (self._pi + 1) * b)
    order = np.random.default_rng(seed).permutation(self.info.num_train)[: steps * self._global]
    rows = order.reshape(steps, self._global)[:, cols].reshape(-1)
    positions = np.arange(steps * self._global).reshape(steps, self._global)[:, cols].reshape(-1)
    seeds = np.stack([np.full_like(positions, seed), positions], -1)
    return rows.astype(np.int64), seeds.astype(np.int64)

  def train_batches(self, start_step: int = 0) -> Iterator[dict]:
    """Endless host-local batches from global step ``start_step`` on: ``'image'`` uint8 ``[b,
    Hc, Wc, 3]`` RGB, ``'label'`` uint8 ``[b, Hc, Wc]`` (``b = batch_size // process_count``,
    ``(Hc, Wc) = crop_size``); a pure function of (seed, epoch, step). Skipping to
    ``start_step`` reads no file."""
    if not self.steps_per_epoch:
      raise ValueError('an eval-only SegmentationInput (train=False) has no training batches')
    tf = tfdata._tf()
    epoch, skip = divmod(start_step, self.steps_per_epoch)

    def epoch_examples(e):
      rows, seeds = tf.numpy_function(self._epoch_order, [e], (tf.int64, tf.int64), stateful=False)
      rows.set_shape([None])
      seeds.set_shape([None, 2])
      return tf.data.Dataset.from_tensor_slices((rows, seeds))

    # One stream for all epochs (the graph is traced once); skipping happens before decoding.
    ds = tf.data.Dataset.range(epoch, 2**62).flat_map(epoch_examples).skip(skip * self._local)
    ds = ds.map(
      lambda row, seed: self._train_example(*self._sources(self._train, row), seed),
      num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True,
    )
    ds = ds.batch(self._local, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    for image, label in ds.as_numpy_iterator():
      yield {'image': image, 'label': label}

  def _eval_example(self, image_source, label_source):
    tf = tfdata._tf()
    image, label = self._load(image_source, label_source)
    if self._test_scale:
      shape = tf.shape(image)
      h, w = keep_ratio_size(shape[0], shape[1], self._test_scale)
      image = resize_image(image, h, w)
    return image, label

  def eval_examples(self) -> Iterator[dict]:
    """``num_eval_examples`` examples of this process's shard of the eval split, one at a time:
    ``'image'`` uint8 ``[H', W', 3]`` (after the test resize, not padded), ``'label'`` uint8
    ``[h, w]`` at the label's own size, ``'name'`` (str: the image's path relative to the split
    folder, without its suffix), ``'valid'`` (bool: False on the padding repeats)."""
    tf = tfdata._tf()
    shard = eval_shard(self.info.num_eval, self._pi, self._pc)
    index = list(shard) + [shard.start if len(shard) else 0] * (self.num_eval_examples - len(shard))
    names = self._eval[2]
    ds = tf.data.Dataset.from_tensor_slices(np.asarray(index, np.int64)).map(
      lambda row: self._eval_example(*self._sources(self._eval, row)),
      num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True,
    )
    for k, (image, label) in enumerate(ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()):
      yield {'image': image, 'label': label, 'name': names[index[k]], 'valid': k < len(shard)}
