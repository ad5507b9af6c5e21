"""Training checkpoints: an Orbax ``CheckpointManager`` in ``WORKDIR/checkpoints``.

Each checkpoint is the whole ``TrainState`` (step, params, BN statistics, optimizer state); the
input position is the step itself (the input pipeline is a function of the step). Saves are
asynchronous (the device-to-host copy happens before ``save`` returns, so the next step may
donate the state) and atomic (Orbax writes a temporary folder and renames it on commit, so a
killed save leaves no half checkpoint behind). The latest ``keep`` checkpoints plus the one with
the best eval top-1 are kept. All processes must call every method (Orbax coordinates them); in
a multi-host run ``WORKDIR`` must be on a filesystem all hosts share.

A checkpoint that cannot be read is never left where a restart, the best-checkpoint tracking or
``hrnet-eval`` would pick it: it is moved aside to ``checkpoints/corrupt-<step>-<time>`` (Orbax
ignores names that are not steps), and the previous one is restored.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as policies

from hrnet_jax import atomic, errors
from hrnet_jax.errors import BadInputError

log = logging.getLogger(__name__)

SUBDIR = 'checkpoints'
_ORBAX_TMP = '.orbax-checkpoint-tmp'  # Orbax's suffix of a save not yet committed


def validate_options(*, keep: int) -> None:
  """``ValueError`` for checkpoint options ``Checkpoints`` refuses (checked before a run
  writes anything)."""
  if keep < 1:
    raise ValueError(f'config.checkpoint.keep={keep} must be >= 1')


class _QuietUnscoredSaves(logging.Filter):
  """Orbax warns on every save without metrics once best_fn is set; most saves have none."""

  def filter(self, record: logging.LogRecord) -> bool:
    return 'did not provide metrics' not in record.getMessage()


logging.getLogger('absl').addFilter(_QuietUnscoredSaves())


def abstract_like(tree: Any, shardings: Any) -> Any:
  """``ShapeDtypeStruct``s of ``tree`` with ``shardings``: what a restore should produce."""
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
  )


def _top1(metrics: dict) -> float:
  return metrics['top1']


class ConfigMismatch(BadInputError):
  """A readable checkpoint written for another model or optimizer (not damage)."""


def _check_like(tree: Any, abstract: Any) -> None:
  """``ConfigMismatch`` listing leaves whose shape or dtype differ from ``abstract``'s (Orbax
  restores a mis-shaped leaf as stored instead of failing)."""
  bad = [
    f'{jax.tree_util.keystr(path)}: {x.shape} {x.dtype} (expected {a.shape} {a.dtype})'
    for (path, x), a in zip(jax.tree_util.tree_leaves_with_path(tree), jax.tree.leaves(abstract))
    if x.shape != a.shape or x.dtype != a.dtype
  ]
  if bad:
    raise ConfigMismatch(
      'checkpoint does not match the model (written by another config? use '
      'another workdir): ' + '; '.join(bad[:5])
    )


class Checkpoints:
  """Save / restore of ``TrainState``s under ``workdir/checkpoints``.

  Args:
    workdir: the run's folder (created if missing).
    keep: latest checkpoints to keep (>= 1); the best by ``metrics['top1']`` is kept as well.
    async_save: write in a background thread.
    read_only: open an existing run for evaluation (no deletions, no writes).
  """

  def __init__(
    self,
    workdir: str | os.PathLike,
    *,
    keep: int = 3,
    async_save: bool = True,
    read_only: bool = False,
  ):
    validate_options(keep=keep)
    self.directory = os.path.join(os.path.abspath(os.fspath(workdir)), SUBDIR)
    self.read_only = read_only
    self.discarded: list[tuple[int, str]] = []  # (step, where it was moved)
    if not read_only:
      self._report_incomplete_saves()
    preservation = policies.AnyPreservationPolicy(
      [
        policies.LatestN(n=keep),
        policies.BestN(get_metric_fn=_top1, n=1, keep_checkpoints_without_metrics=False),
      ]
    )
    options = ocp.CheckpointManagerOptions(
      # best_fn makes Orbax write the metrics to disk, so the best survives a restart.
      best_fn=_top1,
      best_mode='max',
      keep_checkpoints_without_metrics=True,
      preservation_policy=preservation,
      enable_async_checkpointing=async_save,
      cleanup_tmp_directories=not read_only,
      read_only=read_only,
      create=not read_only,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def _report_incomplete_saves(self) -> None:
    """Names the saves a killed run left uncommitted (Orbax removes them when it opens)."""
    if not os.path.isdir(self.directory):
      return
    for name in sorted(os.listdir(self.directory)):
      if _ORBAX_TMP in name:
        step = name.split('.', 1)[0]
        log.warning(
          'discarded an incomplete save of step %s in %s (the run was stopped while writing it)',
          step,
          self.directory,
        )
        self.discarded.append((int(step) if step.isdigit() else -1, 'incomplete'))

  def _discard(self, step: int) -> str:
    """Moves checkpoint ``step`` aside (process 0) and re-reads the step list everywhere."""
    aside = os.path.join(self.directory, f'corrupt-{step}-{time.strftime("%Y%m%dT%H%M%S")}')
    if jax.process_index() == 0:
      os.rename(os.path.join(self.directory, str(step)), aside)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'hrnet-discard-{step}')
    self._manager.reload()
    self.discarded.append((step, aside))
    return aside

  def steps(self) -> list[int]:
    """Steps of the committed checkpoints, ascending."""
    return sorted(self._manager.all_steps())

  def best(self) -> tuple[int, float] | None:
    """``(step, top1)`` of the checkpoint with the best eval top-1 (None if none has metrics)."""
    scored = [
      (m['top1'], s) for s in self.steps() if (m := self._manager.metrics(s)) and 'top1' in m
    ]
    return max(scored)[::-1] if scored else None

  def save(self, step: int, state: Any, metrics: dict[str, float] | None = None) -> None:
    """Starts saving ``state`` as checkpoint ``step``; ``metrics`` with ``'top1'`` make it a
    candidate for the kept best.

    Raises ``OSError`` (ENOSPC) before writing anything when the disk lacks room for it, and
    for a failed earlier asynchronous save; the committed checkpoints stay as they were.
    """
    if jax.process_index() == 0:
      atomic.ensure_free_space(
        self.directory, sum(x.nbytes for x in jax.tree.leaves(state)), f'checkpoint {step}'
      )
    try:
      self._manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)
    except ValueError as e:
      raise atomic.storage_error(e, self.directory) or e from None

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, int] | None:
    """Restores checkpoint ``step`` (default: the latest readable one) into ``abstract_state``'s
    shapes, dtypes and shardings; returns ``(state, step)``, or None if there is none.

    Without ``step``, checkpoints that cannot be read (corrupt, truncated) are skipped with a
    warning, and once an older one has been restored they are moved aside (unless
    ``read_only``). ``BadInputError`` when none can be read (then nothing is moved: a storage
    fault must not discard a run), or when ``step`` cannot be read; ``ConfigMismatch`` for a
    checkpoint written for another model.
    """
    candidates = [step] if step is not None else self.steps()[::-1]
    unreadable = []
    for s in candidates:
      try:
        state = self._manager.restore(s, args=ocp.args.StandardRestore(abstract_state))
      except Exception as e:  # Orbax/tensorstore raise many types for damaged data.
        first = str(e).splitlines()[0] if str(e) else ''
        msg = (
          f'checkpoint {os.path.join(self.directory, str(s))} cannot be read '
          f'({type(e).__name__}: {first})'
        )
        if step is not None:
          raise BadInputError(msg) from e
        log.warning('%s', msg)
        unreadable.append(s)
        continue
      _check_like(state, abstract_state)
      if not self.read_only:
        for bad in unreadable:
          log.warning('discarded checkpoint %d: moved to %s', bad, self._discard(bad))
      return state, s
    if unreadable:
      raise BadInputError(
        f'none of the {len(unreadable)} checkpoints in {self.directory} can be '
        'read (see the warnings above); nothing was moved. Move them away to '
        'start from scratch'
      )
    return None

  def reached_preemption(self, step: int) -> bool:
    """True on every process once the cluster has signalled a preemption (multi-host runs with
    ``jax.distributed``); all processes agree on the step."""
    return self._manager.reached_preemption(step)

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are committed; ``OSError`` if one failed."""
    try:
      self._manager.wait_until_finished()
    except ValueError as e:
      raise atomic.storage_error(e, self.directory) or e from None

  def close(self) -> None:
    """Waits for pending saves, then removes what a failed save left uncommitted (only this run
    can have written it: Orbax removed older ones when the run started)."""
    try:
      self.wait()
    finally:
      self._manager.close()
      if not self.read_only and jax.process_index() == 0 and os.path.isdir(self.directory):
        for name in os.listdir(self.directory):
          if _ORBAX_TMP in name:
            shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
