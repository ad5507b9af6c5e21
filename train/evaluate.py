"""Exact top-1 / top-5 over a whole eval split, on any number of devices and processes."""

from __future__ import annotations

from typing import Callable, Iterable

import jax
from tqdm import tqdm

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
