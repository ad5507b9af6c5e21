"""Training checkpoints: an Orbax ``CheckpointManager`` in ``WORKDIR/checkpoints``.

Each checkpoint is the whole ``TrainState`` (step, params, BN statistics, optimizer state); the
input position is the step itself (the input pipeline is a function of the step). Saves are
asynchronous (the device-to-host copy happens before ``save`` returns, so the next step may
donate the state) and atomic (Orbax writes a temporary folder and renames it on commit, so a
killed save leaves no half checkpoint behind). The latest ``keep`` checkpoints plus the one with
the best eval top-1 are kept. All processes must call every method (Orbax coordinates them); in
a multi-host run ``WORKDIR`` must be on a filesystem all hosts share.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

log = logging.getLogger(__name__)

SUBDIR = 'checkpoints'


class _QuietUnscoredSaves(logging.Filter):
  """Orbax warns on every save without metrics once best_fn is set; most saves have none."""

  def filter(self, record: logging.LogRecord) -> bool:
    return 'did not provide metrics' not in record.getMessage()


logging.getLogger('absl').addFilter(_QuietUnscoredSaves())


def abstract_like(tree: Any, shardings: Any) -> Any:
  """``ShapeDtypeStruct``s of ``tree`` with ``shardings``: what a restore should produce."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree,
                      shardings)


def _top1(metrics: dict) -> float:
  return metrics['top1']


def _check_like(tree: Any, abstract: Any) -> None:
  """``ValueError`` listing leaves whose shape or dtype differ from ``abstract``'s (Orbax
  restores a mis-shaped leaf as stored instead of failing)."""
  bad = [f'{jax.tree_util.keystr(path)}: {x.shape} {x.dtype} (expected {a.shape} {a.dtype})'
         for (path, x), a in zip(jax.tree_util.tree_leaves_with_path(tree),
                                 jax.tree.leaves(abstract))
         if x.shape != a.shape or x.dtype != a.dtype]
  if bad:
    raise ValueError('checkpoint does not match the model: ' + '; '.join(bad[:5]))


class Checkpoints:
  """Save / restore of ``TrainState``s under ``workdir/checkpoints``.

  Args:
    workdir: the run's folder (created if missing).
    keep: latest checkpoints to keep (>= 1); the best by ``metrics['top1']`` is kept as well.
    async_save: write in a background thread.
    read_only: open an existing run for evaluation (no deletions, no writes).
  """

  def __init__(self, workdir: str | os.PathLike, *, keep: int = 3, async_save: bool = True,
               read_only: bool = False):
    if keep < 1:
      raise ValueError(f'config.checkpoint.keep={keep} must be >= 1')
    self.directory = os.path.join(os.path.abspath(os.fspath(workdir)), SUBDIR)
    preservation = policies.AnyPreservationPolicy([
        policies.LatestN(n=keep),
        policies.BestN(get_metric_fn=_top1, n=1,
                       keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        # best_fn makes Orbax write the metrics to disk, so the best survives a restart.
        best_fn=_top1, best_mode='max', keep_checkpoints_without_metrics=True,
        preservation_policy=preservation, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=not read_only, read_only=read_only, create=not read_only)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def steps(self) -> list[int]:
    """Steps of the committed checkpoints, ascending."""
    return sorted(self._manager.all_steps())

  def best(self) -> tuple[int, float] | None:
    """``(step, top1)`` of the checkpoint with the best eval top-1 (None if none has metrics)."""
    scored = [(m['top1'], s) for s in self.steps()
              if (m := self._manager.metrics(s)) and 'top1' in m]
    return max(scored)[::-1] if scored else None

  def save(self, step: int, state: Any, metrics: dict[str, float] | None = None) -> None:
    """Starts saving ``state`` as checkpoint ``step``; ``metrics`` with ``'top1'`` make it a
    candidate for the kept best."""
    self._manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, int] | None:
    """Restores checkpoint ``step`` (default: the latest readable one) into ``abstract_state``'s
    shapes, dtypes and shardings; returns ``(state, step)``, or None if there is no checkpoint.

    Without ``step``, a checkpoint that cannot be read (corrupt, truncated, written by another
    config) is skipped with a warning and the previous one is tried; ``ValueError`` if none can
    be read. With ``step``, errors raise ``ValueError`` naming it.
    """
    candidates = [step] if step is not None else self.steps()[::-1]
    for s in candidates:
      try:
        state = self._manager.restore(s, args=ocp.args.StandardRestore(abstract_state))
        _check_like(state, abstract_state)
        return state, s
      except Exception as e:  # Orbax/tensorstore raise many types for damaged data.
        msg = (f'checkpoint {os.path.join(self.directory, str(s))} cannot be read '
               f'({type(e).__name__}: {e})')
        if step is not None:
          raise ValueError(msg) from e
        log.warning('%s; falling back to the previous checkpoint', msg)
    if candidates:
      raise ValueError(f'none of the {len(candidates)} checkpoints in {self.directory} can be '
                       'read (see the warnings above); move them away to start from scratch')
    return None

  def reached_preemption(self, step: int) -> bool:
    """True on every process once the cluster has signalled a preemption (multi-host runs with
    ``jax.distributed``); all processes agree on the step."""
    return self._manager.reached_preemption(step)

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
