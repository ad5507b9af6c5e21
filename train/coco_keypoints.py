"""COCO keypoint results files and their AP, by COCO's own evaluation (``pycocotools``
``COCOeval(iouType='keypoints')``, what mmpose's ``CocoMetric`` runs through xtcocotools).

- ``write_results``: the results JSON that ``COCOeval`` reads (``image_id``, ``category_id``,
  ``keypoints`` as flat ``[x, y, score] * K``, ``score``), written atomically.
- ``evaluate_keypoints``: AP / AR of a results file against a COCO keypoint annotation file (or
  its loaded dict), with pycocotools' prints kept off the terminal.

pycocotools is an optional dependency, imported when an evaluation runs.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import pathlib
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from hrnet_jax import atomic
from hrnet_jax.errors import BadInputError, EnvironmentFailure

# COCOeval's keypoint stats, in the order ``summarize`` fills ``stats``.
STATS = ('AP', 'AP50', 'AP75', 'APm', 'APl', 'AR', 'AR50', 'AR75', 'ARm', 'ARl')
_RESULT_KEYS = ('image_id', 'category_id', 'keypoints', 'score')
# What COCOeval reads of a ground-truth annotation (``iscrowd`` is optional).
_ANNOTATION_KEYS = ('id', 'image_id', 'category_id', 'keypoints', 'num_keypoints', 'area', 'bbox')


def write_results(path: str | os.PathLike, results: Iterable[Mapping[str, Any]]) -> pathlib.Path:
  """Writes ``results`` as a COCO keypoint results JSON list at ``path`` (atomically: a
  temporary file renamed over it). Each result has ``image_id``, ``category_id`` (ints),
  ``keypoints`` (``[K, 3]`` or flat ``[3K]``: x, y in image pixels, score) and ``score`` (the
  instance's). Returns the path. Raises ``BadInputError`` naming ``path`` and the result's index
  for a missing key, keypoints not a multiple of 3, or a non-finite number."""
  rows = []
  for i, result in enumerate(results):
    missing = [key for key in _RESULT_KEYS if key not in result]
    if missing:
      raise BadInputError(f'{path}: result {i} has no {", ".join(missing)}')
    keypoints = np.asarray(result['keypoints'], np.float64).reshape(-1)
    score = float(result['score'])
    if keypoints.size % 3:
      raise BadInputError(f'{path}: result {i} has {keypoints.size} keypoint values, not 3 x K')
    if not (np.isfinite(keypoints).all() and math.isfinite(score)):
      raise BadInputError(f'{path}: result {i} has a non-finite keypoint or score')
    rows.append(
      {
        'image_id': int(result['image_id']),
        'category_id': int(result['category_id']),
        'keypoints': keypoints.tolist(),
        'score': score,
      }
    )

  def write(tmp: str) -> None:
    with open(tmp, 'w') as f:
      json.dump(rows, f)

  return atomic.write_file(path, write)


def _read_json(path: str | os.PathLike, what: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as exc:
    raise BadInputError(f'{path}: not a JSON {what} ({exc})') from None


def _check_annotations(dataset, source: str, num_keypoints: int) -> None:
  if not isinstance(dataset, dict):
    raise BadInputError(f'{source}: not a COCO annotation file (not a JSON object)')
  for key in ('images', 'annotations', 'categories'):
    if not isinstance(dataset.get(key), list):
      raise BadInputError(f'{source}: not a COCO annotation file (no {key!r} list)')
  for ann in dataset['annotations']:
    missing = [key for key in _ANNOTATION_KEYS if key not in ann]
    if missing:
      name = f'annotation {ann["id"]}' if 'id' in ann else 'an annotation'
      raise BadInputError(f'{source}: {name} has no {", ".join(missing)}')
    if len(ann['keypoints']) != 3 * num_keypoints:
      raise BadInputError(
        f'{source}: annotation {ann["id"]} has {len(ann["keypoints"])} keypoint values, '
        f'not 3 x {num_keypoints} (the dataset has {num_keypoints} keypoints)'
      )


def _check_results(results, source: str, image_ids: set, num_keypoints: int) -> None:
  if not isinstance(results, list):
    raise BadInputError(f'{source}: not a COCO results file (not a JSON list)')
  if not results:
    raise BadInputError(f'{source}: no predictions (COCOeval needs at least one)')
  for i, result in enumerate(results):
    missing = [key for key in _RESULT_KEYS if not isinstance(result, dict) or key not in result]
    if missing:
      raise BadInputError(f'{source}: result {i} has no {", ".join(missing)}')
    if len(result['keypoints']) != 3 * num_keypoints:
      raise BadInputError(
        f'{source}: result {i} has {len(result["keypoints"])} keypoint values, not 3 x '
        f'{num_keypoints}'
      )
    if result['image_id'] not in image_ids:
      raise BadInputError(
        f'{source}: result {i} is for image {result["image_id"]}, which the annotations lack'
      )


def evaluate_keypoints(
  annotations: str | os.PathLike | Mapping[str, Any],
  results_file: str | os.PathLike,
  sigmas: Sequence[float] | None = None,
  verbose: bool = False,
) -> dict[str, float]:
  """COCO keypoint AP / AR of the predictions in ``results_file`` (``write_results``'s format)
  against ``annotations`` (a COCO keypoint annotation file, or its loaded dict), by
  ``pycocotools`` ``COCOeval(iouType='keypoints')``: ``evaluate``, ``accumulate``,
  ``summarize``.

  ``sigmas`` ``[K]`` are the dataset's OKS sigmas (None: COCOeval's own, COCO's 17). Returns
  ``{'AP', 'AP50', 'AP75', 'APm', 'APl', 'AR', 'AR50', 'AR75', 'ARm', 'ARl'}`` as floats (-1 where
  COCOeval has nothing to average, e.g. no large person). pycocotools' prints are swallowed
  unless ``verbose``.

  Raises ``BadInputError`` naming the file (and annotation id or result index) for a file that is
  not JSON, annotations that are not COCO keypoints, keypoints of the wrong count, a result for
  an image not annotated, or no results; ``FileNotFoundError`` for a missing file;
  ``EnvironmentFailure`` when pycocotools is not installed.
  """
  try:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
  except ImportError as exc:
    raise EnvironmentFailure(
      f'COCO keypoint evaluation needs pycocotools ({exc}); pip install pycocotools'
    ) from None
  if isinstance(annotations, Mapping):
    dataset, source = copy.deepcopy(dict(annotations)), 'annotations'  # COCOeval marks them
  else:
    dataset, source = _read_json(annotations, 'COCO annotation file'), os.fspath(annotations)
  num_keypoints = 17 if sigmas is None else len(sigmas)
  _check_annotations(dataset, source, num_keypoints)
  results = _read_json(results_file, 'COCO results file')
  _check_results(
    results, os.fspath(results_file), {im['id'] for im in dataset['images']}, num_keypoints
  )
  quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
  with quiet:
    ground_truth = COCO()
    ground_truth.dataset = dataset
    ground_truth.createIndex()
    coco_eval = COCOeval(ground_truth, ground_truth.loadRes(results), iouType='keypoints')
    if sigmas is not None:
      coco_eval.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
  return dict(zip(STATS, (float(s) for s in coco_eval.stats)))
