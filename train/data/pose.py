"""Top-down pose input: COCO-format keypoint sets, person instances cropped by an affine warp,
mmpose's augmentations, heatmap targets from a codec (``hrnet_jax.codecs``).

Layout (``config.dataset.name='coco_keypoints'``, root ``config.dataset.folder``):
``ROOT/annotations/person_keypoints_<split>.json`` (COCO keypoint annotations) with the images at
``ROOT/<split>/<file_name>``. Any number of keypoints K: the dataset's metadata
(``PoseMeta``: flip pairs, OKS sigmas, upper / lower body) comes from ``config.dataset``
(``flip_indices``, ``sigmas``, ``upper_body_ids``, ``lower_body_ids``), COCO-17's by default.

Instances (mmpose ``BaseCocoStyleDataset``): each annotation's box ``[x, y, w, h]`` clipped to
the image as ``[x1, y1, x2, y2]`` (``x2 = clip(x + w, 0, width - 1)``), visibility
``min(1, v)``; crowd annotations, annotations without labelled keypoints and boxes empty after
clipping are left out. Evaluation reads the same ground-truth boxes (score 1), or the person
detections of ``config.dataset.bbox_file`` (a COCO detection results JSON, mmpose's
``bbox_file``: every detection of the person category, its score kept).

Train pipeline, mmpose's transforms with their parameters (``td-hm_hrnet-*_coco`` configs):
``GetBBoxCenterScale(padding)`` -> ``RandomFlip(flip_prob, 'horizontal')`` ->
``RandomHalfBody`` -> ``RandomBBoxTransform`` -> ``TopdownAffine(input_size, use_udp)`` ->
``GenerateTarget(codec)``. The randomness of each example is its own ``numpy`` generator seeded
by ``(epoch seed, position in the epoch)`` (not mmpose's global generator: same distributions,
other draws). The warp is OpenCV's ``warpAffine`` (bilinear, zero border) with mmpose's
``get_warp_matrix`` / ``get_udp_warp_matrix`` matrices, so an un-augmented crop is mmpose's
pixel for pixel. Eval: ``GetBBoxCenterScale`` -> ``TopdownAffine``.

Order and shards (as ``segmentation``): epoch ``e`` is one permutation of all training instances
(``default_rng(epoch_seed(seed, e))``) and process ``p`` reads columns ``[p*b, (p+1)*b)`` of each
global batch, so the stream does not depend on the number of processes and ``train_batches(T)``
skips to step ``T`` without reading an image. Eval: a contiguous shard of the instances per
process (``base.eval_shard``), padded to ``num_eval_batches`` batches with ``mask=False``.

Bad input is refused at construction (``BadInputError``, one line naming the file and, where
there is one, the annotation id): an annotation file that is missing, not JSON or not COCO, an
annotation whose keypoints are not ``3 x K`` values, a box outside its image, an image file that
does not exist; a detection file that is not a list of ``image_id`` / ``bbox`` / ``score``
detections of annotated images; bad metadata or settings. An image that does not decode is
refused when it is read, naming it and the annotation.

OpenCV (``opencv-python-headless``) is imported when a crop is made.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
from typing import Iterator, Sequence

import numpy as np

from hrnet_jax.codecs.heatmap import HeatmapCodec
from hrnet_jax.codecs.registry import get_codec
from hrnet_jax.errors import BadInputError, EnvironmentFailure
from hrnet_jax.metrics.keypoints import COCO_FLIP_INDICES, COCO_SIGMAS
from hrnet_jax.train.data.base import (
  DatasetInfo,
  epoch_seed,
  eval_shard,
  local_batch_size,
  num_eval_batches,
)

SOURCES = ('coco_keypoints',)
# mmpose configs/_base_/datasets/coco.py: nose, eyes, ears, shoulders, elbows, wrists are the
# upper body; hips, knees, ankles the lower.
COCO_UPPER_BODY = tuple(range(11))
COCO_LOWER_BODY = tuple(range(11, 17))


@dataclasses.dataclass(frozen=True)
class PoseMeta:
  """A keypoint set's metadata (mmpose's dataset ``metainfo``): ``num_keypoints`` K,
  ``flip_indices`` ``[K]`` (each keypoint's left/right mirror), OKS ``sigmas`` ``[K]``,
  ``upper_body_ids`` / ``lower_body_ids`` (``RandomHalfBody``)."""

  num_keypoints: int
  flip_indices: tuple[int, ...]
  sigmas: tuple[float, ...]
  upper_body_ids: tuple[int, ...]
  lower_body_ids: tuple[int, ...]


def pose_meta(dataset_config) -> PoseMeta:
  """The ``PoseMeta`` of ``config.dataset``: its ``flip_indices``, ``sigmas``,
  ``upper_body_ids``, ``lower_body_ids`` (empty: COCO-17's). ``BadInputError`` naming the field
  for lengths that differ, a flip that is not an involution, or ids out of range."""
  flip = tuple(int(i) for i in dataset_config.get('flip_indices', ()) or COCO_FLIP_INDICES)
  sigmas = tuple(float(s) for s in dataset_config.get('sigmas', ()) or COCO_SIGMAS)
  k = len(flip)
  upper = tuple(dataset_config.get('upper_body_ids', ()) or (COCO_UPPER_BODY if k == 17 else ()))
  lower = tuple(dataset_config.get('lower_body_ids', ()) or (COCO_LOWER_BODY if k == 17 else ()))
  if len(sigmas) != k:
    raise BadInputError(
      f'config.dataset.sigmas: {len(sigmas)} sigmas for {k} keypoints (config.dataset.'
      'flip_indices); set both for a keypoint set other than COCO-17'
    )
  if sorted(flip) != list(range(k)) or any(flip[flip[i]] != i for i in range(k)):
    raise BadInputError(
      f'config.dataset.flip_indices={flip}: not a pairing of the keypoints 0..{k - 1}'
    )
  for name, ids in (('upper_body_ids', upper), ('lower_body_ids', lower)):
    if any(not 0 <= int(i) < k for i in ids):
      raise BadInputError(f'config.dataset.{name}={ids}: ids outside 0..{k - 1}')
  return PoseMeta(k, flip, sigmas, tuple(map(int, upper)), tuple(map(int, lower)))


@dataclasses.dataclass(frozen=True)
class Instances:
  """N top-down instances (one box each), as arrays: ``paths`` (image files), ``image_ids``,
  ``ids`` (annotation ids; detections: their index in the file), ``boxes`` float32 ``[N, 4]``
  (x1, y1, x2, y2 pixels), ``keypoints`` float32 ``[N, K, 2]`` (image pixels; zeros for
  detections), ``visible`` float32 ``[N, K]`` (0 / 1), ``scores`` float32 ``[N]`` (box scores;
  1 for ground truth), ``category_id`` (the person category of the dataset)."""

  paths: np.ndarray
  image_ids: np.ndarray
  ids: np.ndarray
  boxes: np.ndarray
  keypoints: np.ndarray
  visible: np.ndarray
  scores: np.ndarray
  category_id: int

  def __len__(self) -> int:
    return len(self.ids)


def annotation_file(root: str, split: str) -> str:
  return os.path.join(root, 'annotations', f'person_keypoints_{split}.json')


def read_json(path: str, what: str):
  """The JSON at ``path``; ``BadInputError`` naming it if missing or not JSON."""
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise BadInputError(f'{path}: no such file ({what})') from None
  except (json.JSONDecodeError, UnicodeDecodeError) as exc:
    raise BadInputError(f'{path}: not a JSON {what} ({exc})') from None


def read_annotations(path: str, num_keypoints: int) -> dict:
  """The COCO keypoint annotation file at ``path``, checked: a JSON object with ``images``,
  ``annotations`` and ``categories`` lists, every image with ``id``, ``file_name``, ``width``,
  ``height``, every annotation with ``id``, ``image_id``, ``bbox``, ``keypoints`` of
  ``3 * num_keypoints`` values and a box that overlaps its image. ``BadInputError`` naming
  ``path`` and the annotation id otherwise."""
  data = read_json(path, 'COCO keypoint annotation file')
  if not isinstance(data, dict) or not all(
    isinstance(data.get(k), list) for k in ('images', 'annotations', 'categories')
  ):
    raise BadInputError(
      f'{path}: not a COCO annotation file (a JSON object with images, annotations and '
      'categories lists)'
    )
  images = {}
  for im in data['images']:
    if not isinstance(im, dict) or not all(k in im for k in ('id', 'file_name', 'width', 'height')):
      raise BadInputError(f'{path}: an image entry lacks id, file_name, width or height')
    images[im['id']] = im
  for ann in data['annotations']:
    if not isinstance(ann, dict) or 'id' not in ann:
      raise BadInputError(f'{path}: an annotation has no id')
    missing = [k for k in ('image_id', 'bbox', 'keypoints') if k not in ann]
    if missing:
      raise BadInputError(f'{path}: annotation {ann["id"]} has no {", ".join(missing)}')
    if len(ann['keypoints']) != 3 * num_keypoints:
      raise BadInputError(
        f'{path}: annotation {ann["id"]} has {len(ann["keypoints"])} keypoint values, not '
        f'3 x {num_keypoints} (the dataset has {num_keypoints} keypoints)'
      )
    im = images.get(ann['image_id'])
    if im is None:
      raise BadInputError(
        f'{path}: annotation {ann["id"]} is for image {ann["image_id"]}, unlisted'
      )
    _check_box(ann['bbox'], im, f'{path}: annotation {ann["id"]}')
  return data


def _check_box(bbox, image: dict, where: str) -> None:
  if len(bbox) != 4 or bbox[2] < 0 or bbox[3] < 0:
    raise BadInputError(f'{where}: bbox {bbox} is not [x, y, w, h] with w, h >= 0')
  x, y, w, h = bbox
  if x >= image['width'] or y >= image['height'] or x + w <= 0 or y + h <= 0:
    raise BadInputError(
      f'{where}: bbox {bbox} lies outside its image ({image["width"]} x {image["height"]})'
    )


def _clip_box(bbox, image: dict) -> np.ndarray:
  """mmpose ``parse_data_info``: xywh -> xyxy clipped to ``[0, size - 1]``."""
  x, y, w, h = bbox
  width, height = image['width'], image['height']
  return np.array(
    [
      np.clip(x, 0, width - 1),
      np.clip(y, 0, height - 1),
      np.clip(x + w, 0, width - 1),
      np.clip(y + h, 0, height - 1),
    ],
    np.float32,
  )


def _image_path(image_dir: str, image: dict, where: str) -> str:
  path = os.path.join(image_dir, image['file_name'])
  if not os.path.isfile(path):
    raise BadInputError(f'{path}: no such image file ({where})')
  return path


def person_category(data: dict, path: str) -> int:
  """The category whose instances carry the keypoints: the first of ``categories`` (COCO's
  ``person``, id 1); ``BadInputError`` naming ``path`` if there is none."""
  if not data['categories'] or 'id' not in data['categories'][0]:
    raise BadInputError(f'{path}: no category with an id')
  return int(data['categories'][0]['id'])


def gt_instances(data: dict, path: str, image_dir: str, num_keypoints: int) -> Instances:
  """The valid ground-truth instances of checked annotations ``data`` (``read_annotations`` of
  ``path``), in annotation order: mmpose's ``_is_valid_instance`` drops crowds, annotations
  without labelled keypoints and boxes with no area after clipping. ``BadInputError`` naming the
  file and annotation id of a missing image."""
  images = {im['id']: im for im in data['images']}
  rows = []
  for ann in data['annotations']:
    image = images[ann['image_id']]
    kp = np.asarray(ann['keypoints'], np.float32).reshape(num_keypoints, 3)
    box = _clip_box(ann['bbox'], image)
    num = ann['num_keypoints'] if 'num_keypoints' in ann else np.count_nonzero(kp[:, :2].max(1))
    if ann.get('iscrowd', 0) or num == 0 or kp[:, :2].max() <= 0:
      continue
    if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
      continue
    where = f'annotation {ann["id"]} of {path}'
    rows.append((_image_path(image_dir, image, where), ann, box, kp))
  k = num_keypoints
  return Instances(
    paths=np.asarray([r[0] for r in rows], object),
    image_ids=np.asarray([r[1]['image_id'] for r in rows], np.int64),
    ids=np.asarray([r[1]['id'] for r in rows], np.int64),
    boxes=np.asarray([r[2] for r in rows], np.float32).reshape(-1, 4),
    keypoints=np.asarray([r[3][:, :2] for r in rows], np.float32).reshape(-1, k, 2),
    visible=np.minimum(1, np.asarray([r[3][:, 2] for r in rows], np.float32)).reshape(-1, k),
    scores=np.ones(len(rows), np.float32),
    category_id=person_category(data, path),
  )


def detection_instances(
  data: dict, path: str, image_dir: str, bbox_file: str, num_keypoints: int
) -> Instances:
  """The person detections of ``bbox_file`` (a COCO detection results JSON list of
  ``image_id``, ``category_id``, ``bbox`` [x, y, w, h], ``score``) on the images of ``data``, as
  mmpose's ``_load_detection_results``: those of another category are skipped, boxes are not
  clipped, keypoints are dummies. ``BadInputError`` naming ``bbox_file`` and the detection's
  index for a bad entry or an image the annotations lack."""
  dets = read_json(bbox_file, 'detection results file')
  if not isinstance(dets, list):
    raise BadInputError(f'{bbox_file}: not a COCO detection results file (a JSON list)')
  images = {im['id']: im for im in data['images']}
  person = person_category(data, path)
  rows = []
  for i, det in enumerate(dets):
    if not isinstance(det, dict) or not all(k in det for k in ('image_id', 'bbox', 'score')):
      raise BadInputError(f'{bbox_file}: detection {i} lacks image_id, bbox or score')
    if det.get('category_id', person) != person:
      continue
    image = images.get(det['image_id'])
    if image is None:
      raise BadInputError(
        f'{bbox_file}: detection {i} is for image {det["image_id"]}, which {path} lacks'
      )
    if len(det['bbox']) < 4:
      raise BadInputError(f'{bbox_file}: detection {i} has bbox {det["bbox"]}, not [x, y, w, h]')
    x, y, w, h = (float(v) for v in det['bbox'][:4])
    where = f'detection {i} of {bbox_file}'
    rows.append((_image_path(image_dir, image, where), det, (x, y, x + w, y + h), i))
  k = num_keypoints
  return Instances(
    paths=np.asarray([r[0] for r in rows], object),
    image_ids=np.asarray([r[1]['image_id'] for r in rows], np.int64),
    ids=np.asarray([r[3] for r in rows], np.int64),
    boxes=np.asarray([r[2] for r in rows], np.float32).reshape(-1, 4),
    keypoints=np.zeros((len(rows), k, 2), np.float32),
    visible=np.ones((len(rows), k), np.float32),
    scores=np.asarray([r[1]['score'] for r in rows], np.float32),
    category_id=person,
  )


# ---------------------------------------------------------------- transforms (mmpose's)


def bbox_center_scale(box: np.ndarray, padding: float) -> tuple[np.ndarray, np.ndarray]:
  """mmpose ``GetBBoxCenterScale``: a box ``[4]`` (x1, y1, x2, y2) -> center ``[2]`` and scale
  ``[2]`` (w, h times ``padding``), float32."""
  box = np.asarray(box, np.float32)
  return (box[2:] + box[:2]) * np.float32(0.5), (box[2:] - box[:2]) * np.float32(padding)


def fix_aspect_ratio(scale: np.ndarray, aspect_ratio: float) -> np.ndarray:
  """mmpose ``TopdownAffine._fix_aspect_ratio``: the box scale ``[2]`` (w, h) grown along one
  side to ``w / h = aspect_ratio``."""
  w, h = scale
  if w > h * aspect_ratio:
    return np.array([w, w / aspect_ratio], np.float32)
  return np.array([h * aspect_ratio, h], np.float32)


def warp_matrix(
  center: np.ndarray, scale: np.ndarray, rot: float, output_size: tuple[int, int], udp: bool
) -> np.ndarray:
  """The ``[2, 3]`` affine map from image pixels onto the ``output_size`` (w, h) crop of the box
  ``center`` / ``scale`` (pixels) rotated by ``rot`` degrees: mmpose ``get_warp_matrix`` (three
  point pairs -> ``cv2.getAffineTransform``, float64) or, with ``udp``, ``get_udp_warp_matrix``
  (pixel centres at both ends of the ``size - 1`` grid, float32), in their dtypes."""
  cv2 = _cv2()
  rad = np.deg2rad(np.float32(rot))  # mmpose's bbox_rotation is float32
  dst_w, dst_h = output_size
  if udp:
    # get_udp_warp_matrix's arithmetic: float32 box values (NumPy 2's scalar promotion).
    cx, cy = np.asarray(center, np.float32) * np.float32(2) * np.float32(0.5)
    sw, sh = np.asarray(scale, np.float32)
    sx, sy = (dst_w - 1) / sw, (dst_h - 1) / sh
    c, s = math.cos(rad), math.sin(rad)
    return np.array(
      [
        [c * sx, -s * sx, sx * (-cx * c + cy * s + 0.5 * sw)],
        [s * sy, c * sy, sy * (-cx * s - cy * c + 0.5 * sh)],
      ],
      np.float32,
    )
  center = np.asarray(center, np.float32)
  half_w = np.asarray(scale, np.float32)[0] * -0.5
  src_dir = np.array([[np.cos(rad), -np.sin(rad)], [np.sin(rad), np.cos(rad)]]) @ [half_w, 0.0]
  src = np.zeros((3, 2), np.float32)
  dst = np.zeros((3, 2), np.float32)
  src[0], src[1] = center, center + src_dir
  dst[0] = [dst_w * 0.5, dst_h * 0.5]
  dst[1] = dst[0] + [dst_w * -0.5, 0.0]
  # The third point: the second turned 90 degrees about the first (keeps the aspect ratio).
  for pts in (src, dst):
    d = pts[0] - pts[1]
    pts[2] = pts[1] + np.array([-d[1], d[0]], np.float32)
  return cv2.getAffineTransform(src, dst)


def warp(image: np.ndarray, matrix: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
  """``cv2.warpAffine`` of ``image`` ``[H, W, C]`` by ``matrix`` onto ``output_size`` (w, h),
  bilinear, zero border (mmpose ``TopdownAffine``)."""
  cv2 = _cv2()
  return cv2.warpAffine(image, matrix, tuple(int(v) for v in output_size), flags=cv2.INTER_LINEAR)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
  """Points ``[..., 2]`` (x, y) mapped by the affine ``matrix`` ``[2, 3]`` (as ``cv2.transform``,
  in float64), float32."""
  points = np.asarray(points, np.float64)
  m = np.asarray(matrix, np.float64)
  return (points @ m[:, :2].T + m[:, 2]).astype(np.float32)


def truncated_normal(rng: np.random.Generator, size) -> np.ndarray:
  """Standard normal draws truncated to [-1, 1] (``scipy.stats.truncnorm(-1, 1)``, as
  ``RandomBBoxTransform``), by rejection, float32."""
  out = rng.standard_normal(size)
  bad = np.abs(out) > 1
  while bad.any():
    out[bad] = rng.standard_normal(int(bad.sum()))
    bad = np.abs(out) > 1
  return out.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Augment:
  """mmpose's train-time parameters (``RandomFlip``, ``RandomHalfBody``,
  ``RandomBBoxTransform`` defaults, as the COCO configs use them)."""

  flip_prob: float = 0.5
  half_body_prob: float = 0.3
  half_body_min_total: int = 9
  half_body_min_upper: int = 2
  half_body_min_lower: int = 3
  half_body_padding: float = 1.5
  upper_prioritized_prob: float = 0.7
  shift_factor: float = 0.16
  shift_prob: float = 0.3
  scale_factor: tuple[float, float] = (0.5, 1.5)
  scale_prob: float = 1.0
  rotate_factor: float = 80.0
  rotate_prob: float = 0.6


def half_body(
  keypoints: np.ndarray, visible: np.ndarray, meta: PoseMeta, aug: Augment, rng
) -> tuple[np.ndarray, np.ndarray] | None:
  """mmpose ``RandomHalfBody``: with probability ``half_body_prob`` (for an instance with at
  least ``half_body_min_total`` visible keypoints) the center and scale (1.5 x the extent) of
  the visible upper or lower body keypoints; None to keep the box."""
  if visible.sum() < aug.half_body_min_total or rng.random() > aug.half_body_prob:
    return None
  upper = [i for i in meta.upper_body_ids if visible[i] > 0]
  lower = [i for i in meta.lower_body_ids if visible[i] > 0]
  prefer_upper = rng.random() < aug.upper_prioritized_prob
  few_upper, few_lower = len(upper) < aug.half_body_min_upper, len(lower) < aug.half_body_min_lower
  if few_upper and few_lower:
    return None
  ids = upper if few_lower else lower if few_upper else upper if prefer_upper else lower
  selected = keypoints[ids]
  extent = selected.max(0) - selected.min(0)
  return selected.mean(0), (extent * aug.half_body_padding).astype(selected.dtype)


def bbox_transform(
  center: np.ndarray, scale: np.ndarray, aug: Augment, rng
) -> tuple[np.ndarray, np.ndarray, np.float32 | float]:
  """mmpose ``RandomBBoxTransform``: shift by ``truncnorm * shift_factor * scale`` (probability
  ``shift_prob``), scale by ``truncnorm * 0.5 (hi - lo) + 0.5 (hi + lo)`` (``scale_prob``),
  rotate by ``truncnorm * rotate_factor`` degrees (``rotate_prob``)."""
  v = truncated_normal(rng, 4)
  offset = v[:2] * aug.shift_factor if rng.random() < aug.shift_prob else np.zeros(2, np.float32)
  lo, hi = aug.scale_factor
  factor = v[2] * (hi - lo) * 0.5 + (hi + lo) * 0.5 if rng.random() < aug.scale_prob else 1.0
  rotate = v[3] * np.float32(aug.rotate_factor) if rng.random() < aug.rotate_prob else 0.0
  return center + offset * scale, scale * np.float32(factor), rotate


# ---------------------------------------------------------------- the input


def _cv2():
  try:
    import cv2
  except ImportError as exc:
    raise EnvironmentFailure(
      f'the pose input needs OpenCV ({exc}); pip install opencv-python-headless'
    ) from None
  return cv2


def read_image(path: str, where: str) -> np.ndarray:
  """uint8 ``[H, W, 3]`` RGB of ``path`` (decoded as mmpose's ``LoadImage``: OpenCV, BGR, then
  to RGB as its ``bgr_to_rgb`` preprocessor); ``BadInputError`` naming it and ``where`` if it
  does not decode."""
  cv2 = _cv2()
  image = cv2.imread(path, cv2.IMREAD_COLOR)
  if image is None:
    raise BadInputError(f'{path}: not a readable image ({where})')
  return np.ascontiguousarray(image[..., ::-1])


def _pair(value, what: str, kind=int) -> tuple:
  values = tuple(kind(v) for v in value)
  if len(values) != 2 or min(values) <= 0:
    raise BadInputError(f'config.input.{what}={tuple(value)!r}: must be two positive numbers')
  return values


def make_codec(config) -> HeatmapCodec:
  """The codec of ``config.input`` (``codec``: 'msra' / 'udp', ``unbiased`` (DARK), ``sigma``,
  ``blur_kernel_size``, ``input_size`` / ``heatmap_size`` as (w, h)); ``BadInputError`` naming
  the field for a bad one."""
  inp = config.input
  kwargs = dict(
    input_size=_pair(inp.input_size, 'input_size'),
    heatmap_size=_pair(inp.heatmap_size, 'heatmap_size'),
    sigma=float(inp.sigma),
    blur_kernel_size=int(inp.blur_kernel_size),
  )
  if inp.codec == 'msra':
    kwargs['unbiased'] = bool(inp.unbiased)
  elif inp.unbiased:
    raise BadInputError("config.input.unbiased=True is DARK: it needs config.input.codec='msra'")
  try:
    return get_codec(inp.codec, **kwargs)
  except ValueError as exc:
    raise BadInputError(f'config.input: {exc}') from None


class PoseInput:
  """The input of ``config.task='pose'`` for one process (see the module docstring).

  ``info``: ``num_classes`` = K keypoints, num_train / num_eval instances (all processes;
  num_train 0 with ``train=False``). ``meta``: the ``PoseMeta``; ``codec``: the target codec;
  ``eval_instances``: the eval split's ``Instances`` (all processes'); ``annotations``: the eval
  split's annotation file, loaded; ``annotation_path``: its path. ``steps_per_epoch``,
  ``num_eval_batches`` as ``base.Input``.

  Reads ``config.dataset.{name, folder, train_split, eval_split, bbox_file, flip_indices,
  sigmas, upper_body_ids, lower_body_ids}``, ``config.input.{input_size, heatmap_size, codec,
  sigma, unbiased, blur_kernel_size, bbox_padding, flip_prob, half_body_prob, shift_prob,
  scale_factor, rotate_factor, rotate_prob, workers}``, ``config.batch_size``,
  ``config.eval_batch_size`` and ``config.seed``. ``BadInputError`` for the bad input of the
  module docstring; ``ValueError`` for a batch size the number of processes does not divide.
  """

  def __init__(self, config, *, process_index: int, process_count: int, train: bool = True):
    ds, inp = config.dataset, config.input
    if ds.name not in SOURCES:
      raise BadInputError(f'config.dataset.name={ds.name!r}; valid: {", ".join(SOURCES)}')
    root = os.path.expanduser(ds.folder) if ds.folder else ''
    if not root or not os.path.isdir(root):
      raise BadInputError(f'config.dataset.folder={ds.folder!r}: not a folder (COCO-layout root)')
    self.meta = pose_meta(ds)
    self.codec = make_codec(config)
    self.input_size = self.codec.input_size
    self.udp = inp.codec == 'udp'
    self.padding = float(inp.bbox_padding)
    self.augment = Augment(
      flip_prob=float(inp.flip_prob),
      half_body_prob=float(inp.half_body_prob),
      shift_prob=float(inp.shift_prob),
      scale_factor=_pair(inp.scale_factor, 'scale_factor', float),
      rotate_factor=float(inp.rotate_factor),
      rotate_prob=float(inp.rotate_prob),
    )
    self._workers = max(1, int(inp.get('workers', 0)) or min(16, os.cpu_count() or 1))
    self._seed, self._pi, self._pc = config.seed, process_index, process_count
    self._global = config.batch_size
    self._local = local_batch_size(config.batch_size, process_count) if train else 0
    self._eval_local = local_batch_size(config.eval_batch_size, process_count, 'eval_batch_size')
    k = self.meta.num_keypoints

    def split(name: str):
      path = annotation_file(root, name)
      return path, read_annotations(path, k), os.path.join(root, name)

    self._train = None
    if train:
      path, data, image_dir = split(ds.train_split)
      self._train = gt_instances(data, path, image_dir, k)
    self.annotation_path, self.annotations, image_dir = split(ds.eval_split)
    bbox_file = ds.get('bbox_file', '')
    self.eval_instances = (
      detection_instances(self.annotations, self.annotation_path, image_dir, bbox_file, k)
      if bbox_file
      else gt_instances(self.annotations, self.annotation_path, image_dir, k)
    )
    num_train = len(self._train) if train else 0
    self.info = DatasetInfo(num_classes=k, num_train=num_train, num_eval=len(self.eval_instances))
    self.steps_per_epoch = num_train // self._global if train else 0
    if train and self.steps_per_epoch == 0:
      raise BadInputError(
        f'config.batch_size={self._global} exceeds the {num_train} training instances of '
        f'{annotation_file(root, ds.train_split)}'
      )
    self.num_eval_batches = num_eval_batches(self.info.num_eval, process_count, self._eval_local)

  def _where(self, instances: Instances, i: int) -> str:
    return f'annotation {instances.ids[i]}'

  def train_example(self, i: int, rng: np.random.Generator) -> dict:
    """Training instance ``i`` through the augmentations with generator ``rng``: ``'image'``
    uint8 ``[h, w, 3]`` (``input_size``), ``'heatmap'`` float32 ``[H, W, K]``,
    ``'target_weight'`` float32 ``[K]``."""
    ins, aug, meta = self._train, self.augment, self.meta
    image = read_image(ins.paths[i], self._where(ins, i))
    keypoints, visible = ins.keypoints[i].copy(), ins.visible[i].copy()
    center, scale = bbox_center_scale(ins.boxes[i], self.padding)
    if rng.random() < aug.flip_prob:
      width = image.shape[1]
      image = np.ascontiguousarray(image[:, ::-1])
      center = np.array([width - center[0] - 1, center[1]], np.float32)
      flip = np.asarray(meta.flip_indices)
      keypoints, visible = keypoints[flip], visible[flip]
      keypoints[:, 0] = width - 1 - keypoints[:, 0]
    half = half_body(keypoints, visible, meta, aug, rng)
    if half is not None:
      center, scale = half
    center, scale, rotate = bbox_transform(center, scale, aug, rng)
    return self._crop(image, center, scale, rotate, keypoints, visible)

  def _crop(self, image, center, scale, rotate, keypoints, visible) -> dict:
    w, h = self.input_size
    scale = fix_aspect_ratio(scale, w / h)
    matrix = warp_matrix(center, scale, rotate, (w, h), self.udp)
    heatmaps, weights = self.codec.encode(transform_points(keypoints, matrix)[None], visible[None])
    return {
      'image': warp(image, matrix, (w, h)),
      'heatmap': np.ascontiguousarray(heatmaps.transpose(1, 2, 0)),
      'target_weight': weights[0].astype(np.float32),
    }

  def eval_example(self, instances: Instances, i: int) -> dict:
    """Instance ``i`` of ``instances`` as the test pipeline crops it: ``'image'`` uint8
    ``[h, w, 3]``, ``'center'`` / ``'scale'`` float32 ``[2]`` (the crop's box in image pixels:
    mmpose's ``input_center`` / ``input_scale``)."""
    image = read_image(instances.paths[i], self._where(instances, i))
    w, h = self.input_size
    center, scale = bbox_center_scale(instances.boxes[i], self.padding)
    scale = fix_aspect_ratio(scale, w / h)
    matrix = warp_matrix(center, scale, 0.0, (w, h), self.udp)
    return {'image': warp(image, matrix, (w, h)), 'center': center, 'scale': scale}

  def _epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """This process's instances of ``epoch`` in order and their positions in the epoch."""
    steps, b = self.steps_per_epoch, self._local
    seed = epoch_seed(self._seed, int(epoch))
    order = np.random.default_rng(seed).permutation(self.info.num_train)[: steps * self._global]
    cols = slice(self._pi * b, (self._pi + 1) * b)
    rows = order.reshape(steps, self._global)[:, cols].reshape(-1)
    positions = np.arange(steps * self._global).reshape(steps, self._global)[:, cols].reshape(-1)
    return rows, positions

  def train_batches(self, start_step: int = 0) -> Iterator[dict]:
    """Endless host-local batches from global step ``start_step`` on: ``'image'`` uint8 ``[b,
    h, w, 3]`` RGB crops, ``'heatmap'`` float32 ``[b, H, W, K]``, ``'target_weight'`` float32
    ``[b, K]`` (``b = batch_size // process_count``); a pure function of (seed, epoch, step)."""
    if not self.steps_per_epoch:
      raise ValueError('an eval-only PoseInput (train=False) has no training batches')
    epoch, skip = divmod(start_step, self.steps_per_epoch)

    def jobs():
      e, first = epoch, skip
      while True:
        rows, positions = self._epoch_order(e)
        seed = epoch_seed(self._seed, e)
        for step in range(first, self.steps_per_epoch):
          part = slice(step * self._local, (step + 1) * self._local)
          yield [(int(r), (seed, int(p))) for r, p in zip(rows[part], positions[part])]
        e, first = e + 1, 0

    def example(job):
      row, seed = job
      return self.train_example(row, np.random.default_rng(seed))

    yield from self._batches(jobs(), example)

  def _batches(self, jobs: Iterator[list], example) -> Iterator[dict]:
    """Batches of ``example(job)`` for each list of jobs, made by a thread pool (OpenCV and the
    codec's NumPy release the GIL), in order, two batches ahead."""
    with concurrent.futures.ThreadPoolExecutor(self._workers) as pool:
      pending = []
      for batch_jobs in jobs:
        pending.append([pool.submit(example, job) for job in batch_jobs])
        if len(pending) > 2:
          yield _stack([f.result() for f in pending.pop(0)])
      for futures in pending:
        yield _stack([f.result() for f in futures])

  def eval_rows(self) -> np.ndarray:
    """This process's eval instances (indices into ``eval_instances``), padded with repeats of
    its first to ``num_eval_batches * b``; -1 where there is none to repeat."""
    shard = eval_shard(self.info.num_eval, self._pi, self._pc)
    size = self.num_eval_batches * self._eval_local
    rows = np.full(size, shard.start if len(shard) else -1, np.int64)
    rows[: len(shard)] = np.arange(shard.start, shard.stop)
    return rows

  def eval_batches(self) -> Iterator[dict]:
    """``num_eval_batches`` host-local batches of this process's eval shard: ``'image'`` uint8
    ``[b, h, w, 3]``, ``'center'`` / ``'scale'`` float32 ``[b, 2]``, ``'index'`` int64 ``[b]``
    (into ``eval_instances``), ``'mask'`` bool ``[b]`` (False on padding; padding repeats a real
    crop, or is black where the shard is empty)."""
    rows = self.eval_rows()
    shard = eval_shard(self.info.num_eval, self._pi, self._pc)
    b = self._eval_local
    w, h = self.input_size

    def example(row):
      if row < 0:
        zero = np.zeros(2, np.float32)
        return {'image': np.zeros((h, w, 3), np.uint8), 'center': zero, 'scale': zero + 1}
      return self.eval_example(self.eval_instances, row)

    jobs = (list(rows[i * b : (i + 1) * b]) for i in range(self.num_eval_batches))
    for i, batch in enumerate(self._batches(jobs, example)):
      part = slice(i * b, (i + 1) * b)
      batch['index'] = np.maximum(rows[part], 0)
      batch['mask'] = np.arange(i * b, (i + 1) * b) < len(shard)
      yield batch


def _stack(examples: Sequence[dict]) -> dict:
  return {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}
