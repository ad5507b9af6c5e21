"""Evaluation over a whole split, on any number of devices and processes: exact top-1 / top-5
(classification), mIoU and its companions (segmentation)."""

from __future__ import annotations

from typing import Callable, Iterable

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from hrnet_jax.metrics import segmentation as seg_metrics
from hrnet_jax.train import mesh as mesh_lib


def evaluate(
  eval_fn: Callable,
  params,
  batch_stats,
  batches: Iterable[dict],
  sharding,
  *,
  num_batches: int | None = None,
  progress: bool = False,
) -> dict[str, float]:
  """Runs ``eval_fn`` (a ``step.jit_eval_step``) on every host-local batch of ``batches``.

  Padding rows (``mask`` False) are not counted, so each example of the split counts exactly
  once. Returns ``{'top1', 'top5'}`` as fractions in [0, 1] and ``'count'`` (examples seen);
  ``ValueError`` if the split is empty.
  """
  totals = {'correct1': 0, 'correct5': 0, 'count': 0}
  pending = []
  show = progress and jax.process_index() == 0
  for batch in tqdm(batches, total=num_batches, desc='eval', disable=not show, leave=False):
    pending.append(eval_fn(params, batch_stats, mesh_lib.global_batch(batch, sharding)))
    if len(pending) > 2:  # keep a couple of steps in flight, bound the memory held
      _accumulate(totals, pending.pop(0))
  for counts in pending:
    _accumulate(totals, counts)
  if totals['count'] == 0:
    raise ValueError('the eval split is empty')
  return {
    'top1': totals['correct1'] / totals['count'],
    'top5': totals['correct5'] / totals['count'],
    'count': totals['count'],
  }


def _accumulate(totals: dict[str, int], counts: dict[str, jax.Array]) -> None:
  for k, v in jax.device_get(counts).items():
    totals[k] += int(v)


def evaluate_segmentation(
  segment_fn: Callable,
  params,
  batch_stats,
  data,
  *,
  num_classes: int,
  class_names: tuple[str, ...] | None = None,
  progress: bool = False,
  on_prediction: Callable[[str, np.ndarray], None] | None = None,
) -> dict:
  """Runs ``segment_fn`` (a ``step.jit_segment_image``) on every image of ``data.eval_examples()``
  (a ``SegmentationInput``: this process's shard, one image at a time, at its own size), on one
  local device with a full copy of the weights, then sums the areas over all processes.

  ``on_prediction(name, pred)`` receives each real image's int32 ``[h, w]`` prediction.
  Returns ``hrnet_jax.metrics.segmentation.segmentation_metrics`` (percent) plus ``'count'``
  (images); ``ValueError`` if the split is empty.
  """
  device = jax.local_devices()[0]
  host = multihost_utils.process_allgather((params, batch_stats), tiled=True)
  params, batch_stats = jax.device_put(host, device)
  totals = {k: np.zeros(num_classes, np.int64) for k in seg_metrics.AREA_KEYS}
  count = 0
  show = progress and jax.process_index() == 0
  examples = data.eval_examples()
  for ex in tqdm(
    examples, total=data.num_eval_examples, desc='eval', disable=not show, leave=False
  ):
    areas, pred = segment_fn(params, batch_stats, ex['image'], ex['label'])
    if not ex['valid']:
      continue
    count += 1
    for k, v in jax.device_get(areas).items():
      totals[k] += np.asarray(v, np.int64)
    if on_prediction is not None:
      on_prediction(ex['name'], np.asarray(pred))
  totals, count = _sum_over_processes(totals, count)
  if count == 0:
    raise ValueError('the eval split is empty')
  return {**seg_metrics.segmentation_metrics(totals, class_names), 'count': count}


def _sum_over_processes(totals: dict[str, np.ndarray], count: int):
  """int64 sums over processes; sent as two int32 halves (JAX runs without 64-bit types)."""
  if jax.process_count() == 1:
    return totals, count
  keys = sorted(totals)
  flat = np.concatenate([totals[k] for k in keys] + [np.array([count], np.int64)])
  halves = np.stack([flat >> 31, flat & (2**31 - 1)]).astype(np.int32)
  gathered = np.asarray(multihost_utils.process_allgather(halves)).astype(np.int64)
  gathered = gathered.reshape(-1, 2, flat.size).sum(0)
  flat = (gathered[0] << 31) + gathered[1]
  sizes = np.cumsum([len(totals[k]) for k in keys])[:-1]
  return dict(zip(keys, np.split(flat[:-1], sizes))), int(flat[-1])
