"""Training checkpoints: an Orbax ``CheckpointManager`` in ``WORKDIR/checkpoints``.

Each checkpoint is the whole ``TrainState`` (step, params, BN statistics, optimizer state); the
input position is the step itself (the input pipeline is a function of the step). Saves are
asynchronous (the device-to-host copy happens before ``save`` returns, so the next step may
donate the state) and atomic (Orbax writes a temporary folder and renames it on commit, so a
killed save leaves no half checkpoint behind). The latest ``keep`` checkpoints plus the one with
the best eval metric (``best_metric``, top-1 by default) are kept. All processes must call every
method (Orbax coordinates them); in a multi-host run ``WORKDIR`` must be on a filesystem all
hosts share.

A checkpoint that cannot be read is never left where a restart, the best-checkpoint tracking or
``hrnet-eval`` would pick it: it is moved aside to ``checkpoints/corrupt-<step>-<time>`` (Orbax
ignores names that are not steps), and the previous one is restored.

A save that fails for want of space is one ``OSError`` naming the folder and the sizes, before
anything is written when the disk already lacks room (``atomic.ensure_free_space``), else when
the asynchronous write fails; Orbax's and asyncio's reports of it from their threads are not
printed (``atomic.quiet_storage_failure_logs``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
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


class _ExpectedOrbaxWarnings(logging.Filter):
  """Orbax warns on every save without metrics once best_fn is set (most saves have none), and
  whenever a manager is opened read-only (as ``hrnet-eval`` does on purpose)."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not (
      'did not provide metrics' in message or message.startswith('Given directory is read only')
    )


logging.getLogger('absl').addFilter(_ExpectedOrbaxWarnings())
atomic.quiet_storage_failure_logs()


def abstract_like(tree: Any, shardings: Any) -> Any:
  """``ShapeDtypeStruct``s of ``tree`` with ``shardings``: what a restore should produce."""
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
  )


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


@dataclasses.dataclass(frozen=True)
class _Save:
  """A save in flight, for the message when it fails: ``free`` bytes when it began (process 0),
  ``needed`` its estimated size."""

  step: int
  needed: int
  free: int | None


class Checkpoints:
  """Save / restore of ``TrainState``s under ``workdir/checkpoints``.

  Args:
    workdir: the run's folder (created if missing).
    keep: latest checkpoints to keep (>= 1); the best by ``metrics[best_metric]`` is kept as
      well.
    async_save: write in a background thread.
    read_only: open an existing run for evaluation (no deletions, no writes).
    best_metric: the eval metric (higher is better) that ranks checkpoints for ``best()`` and
      the kept best.
  """

  def __init__(
    self,
    workdir: str | os.PathLike,
    *,
    keep: int = 3,
    async_save: bool = True,
    read_only: bool = False,
    best_metric: str = 'top1',
  ):
    validate_options(keep=keep)
    self.directory = os.path.join(os.path.abspath(os.fspath(workdir)), SUBDIR)
    self.read_only = read_only
    self.best_metric = best_metric
    self.discarded: list[tuple[int, str]] = []  # (step, where it was moved)
    self._in_flight: _Save | None = None
    if not read_only:
      self._report_incomplete_saves()

    def score(metrics: dict) -> float:
      return metrics[best_metric]

    preservation = policies.AnyPreservationPolicy(
      [
        policies.LatestN(n=keep),
        policies.BestN(get_metric_fn=score, n=1, keep_checkpoints_without_metrics=False),
      ]
    )
    options = ocp.CheckpointManagerOptions(
      # best_fn makes Orbax write the metrics to disk, so the best survives a restart.
      best_fn=score,
      best_mode='max',
      keep_checkpoints_without_metrics=True,
      preservation_policy=preservation,
      enable_async_checkpointing=async_save,
      cleanup_tmp_directories=not read_only,
      read_only=read_only,
      create=not read_only,
      # What Orbax sets (with a warning) for a read-only manager.
      save_interval_steps=0 if read_only else 1,
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
    """``(step, value)`` of the checkpoint with the highest ``best_metric`` (None if none has
    it)."""
    key = self.best_metric
    scored = [(m[key], s) for s in self.steps() if (m := self._manager.metrics(s)) and key in m]
    return max(scored)[::-1] if scored else None

  def _failed(self, exc: Exception, save: _Save | None) -> Exception:
    """``exc`` of a failed save as ``atomic.storage_error``'s ``OSError`` naming this folder (and
    ``save``'s sizes), or ``exc`` itself when it is not a storage failure."""
    sizes = {} if save is None else dict(what=f'checkpoint {save.step}', needed=save.needed)
    free = None if save is None else save.free
    return atomic.storage_error(exc, self.directory, free=free, **sizes) or exc

  def save(self, step: int, state: Any, metrics: dict[str, float] | None = None) -> None:
    """Starts saving ``state`` as checkpoint ``step``; ``metrics`` holding ``best_metric`` make
    it a candidate for the kept best.

    Waits for the previous save first (so the free space it leaves is known), then raises
    ``OSError`` (ENOSPC, naming the folder, the size needed and the space free) before writing
    anything when the disk lacks room for it; also ``OSError`` for a failed earlier
    asynchronous save. The committed checkpoints stay as they were.
    """
    self.wait()
    needed = sum(x.nbytes for x in jax.tree.leaves(state))
    free = None
    if jax.process_index() == 0:
      free = atomic.ensure_free_space(self.directory, needed, f'checkpoint {step}')
    self._in_flight = _Save(step, needed, free)
    try:
      self._manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)
    except ValueError as e:
      raise self._failed(e, self._in_flight) from None

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
        msg = (
          f'checkpoint {os.path.join(self.directory, str(s))} cannot be read '
          f'({errors.library_reason(e)})'
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
    """Blocks until pending asynchronous saves are committed; ``OSError`` naming the folder
    (and, for a full disk, the sizes) if one failed, again at every later call."""
    try:
      self._manager.wait_until_finished()
    except ValueError as e:
      raise self._failed(e, self._in_flight) from None
    self._in_flight = None

  def close(self) -> None:
    """Waits for pending saves, then removes what a failed save left uncommitted (only this run
    can have written it: Orbax removed older ones when the run started). Raises what ``wait``
    raises; closing the manager after a failed save does not replace that error."""
    closing = None
    try:
      self.wait()
    finally:
      try:
        self._manager.close()
      except ValueError as e:  # after a failed save, that save again, which wait() raises
        closing = e
      if not self.read_only and jax.process_index() == 0 and os.path.isdir(self.directory):
        for name in os.listdir(self.directory):
          if _ORBAX_TMP in name:  # TensorStore may still be writing into it
            atomic.remove_settled(os.path.join(self.directory, name))
    if closing is not None:  # wait() succeeded: this is the only error
      raise self._failed(closing, None) from None
