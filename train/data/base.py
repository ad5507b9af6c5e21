"""What every input source shares: the batch format, ``DatasetInfo``, the ``Input`` protocol and
the arithmetic of per-process batches and eval shards.

Host-local input: every process yields its own slice of each global batch, as NumPy arrays.
A batch is a dict of ``'image'``: uint8 ``[b, H, W, 3]`` RGB pixels (not normalized: the step
normalizes on the device, which moves 4x fewer bytes), ``'label'``: int32 ``[b]``, and for
evaluation ``'mask'``: bool ``[b]`` (False on padding). ``b`` is the global batch size divided by
``jax.process_count()``.

Order. Training batches are a pure function of ``(seed, epoch, step)``, so a run restarted at step
T reads the same remaining batches in the same order. For in-memory arrays (the digits) the order
does not depend on the number of processes either (each epoch is one global permutation and
process ``p`` takes rows ``[p*b, (p+1)*b)`` of every global batch). TFDS and folder inputs read a
per-process shard of the split (``tfds.even_splits``), shuffled from ``(seed, epoch)``.

Evaluation covers every example of the split exactly once: each process pads its shard to the
same number of batches and marks the padding with ``mask=False``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator, Protocol

import numpy as np

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Sizes of a dataset: ``num_train`` / ``num_eval`` examples in the configured splits (all
  processes together), ``num_classes`` labels ``0..num_classes-1`` and their names if known."""

  num_classes: int
  num_train: int
  num_eval: int
  class_names: tuple[str, ...] | None = None


class Input(Protocol):
  """What the trainer and evaluator read."""

  info: DatasetInfo
  steps_per_epoch: int  # full global batches per epoch (the remainder is dropped)
  num_eval_batches: int  # the same on every process

  def train_batches(self, start_step: int = 0) -> Iterator[Batch]:
    """Endless host-local training batches, from global step ``start_step`` on."""

  def eval_batches(self) -> Iterator[Batch]:
    """``num_eval_batches`` host-local batches of the eval split, padded, with ``'mask'``."""


def epoch_seed(seed: int, epoch: int) -> int:
  """A 31-bit seed for one epoch, mixed so that nearby (seed, epoch) pairs are unrelated."""
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] >> 1)


def local_batch_size(global_batch: int, process_count: int, what: str = 'batch_size') -> int:
  """``global_batch // process_count``; ``ValueError`` naming ``what`` if it does not divide."""
  if global_batch < 1 or global_batch % process_count:
    raise ValueError(
      f'config.{what}={global_batch} must be a positive multiple of the number of '
      f'processes ({process_count})'
    )
  return global_batch // process_count


def num_eval_batches(num_examples: int, process_count: int, local_batch: int) -> int:
  """Batches each process runs so that the largest eval shard (``ceil(n / processes)``) fits."""
  return max(1, math.ceil(math.ceil(num_examples / process_count) / local_batch))


def eval_shard(num_examples: int, process_index: int, process_count: int) -> range:
  """Contiguous indices of process ``process_index``'s eval shard (sizes differ by at most one,
  as ``tfds.even_splits``)."""
  bounds = np.linspace(0, num_examples, process_count + 1).round().astype(int)
  return range(bounds[process_index], bounds[process_index + 1])


def pad_batch(batch: Batch, size: int) -> Batch:
  """Pads ``batch`` with zeros to ``size`` rows and adds ``'mask'`` (True on real rows)."""
  n = len(batch['label'])
  out = {
    k: np.concatenate([v, np.zeros((size - n, *v.shape[1:]), v.dtype)]) for k, v in batch.items()
  }
  out['mask'] = np.arange(size) < n
  return out
