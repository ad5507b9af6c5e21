"""The training loop: ``train_and_evaluate(config, workdir)``, ``config`` a recipe's
``get_config()`` (``train/recipes/``) with any overrides.

Order of start-up (as big_vision): a training checkpoint in ``workdir`` (resume) ->
``config.pretrained``, a release folder (fine-tuning) -> random init. A resumed run continues
with exactly the batches an uninterrupted run would have read, so its parameters after step T are
the same (bit-exact on CPU).

Outputs in ``workdir``: ``checkpoints/`` (the training checkpoints, Orbax: ``checkpoints/<step>/``),
``tensorboard/``, ``metrics.jsonl`` (the same scalars, one JSON object per line),
``train_config.json`` (the resolved config, the classes and the ``pretrained_cfg`` of the
weights) and, at the end, two release folders (``config.json`` + ``state/``, for ``hrnet-eval``,
``hrnet-predict``, ``hrnet-export``, ``create_model(pretrained=...)``): ``model/``, the last
step, and ``best/``, the checkpoint with the best evaluation (``Task.best_metric``; the same
weights as ``model/`` when the last step is the best). Both record the dataset's class names as
``pretrained_cfg.class_names`` (``class_names``).

SIGTERM is polled at step boundaries: in a single process a flag it sets
(``hrnet_jax.interrupts.sigterm_polled``), with several JAX's preemption service, which agrees on
one step for all (``Checkpoints.reached_preemption``). That step is saved as a training
checkpoint, then ``Preempted`` (exit 143).
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import time
from typing import Iterator

import jax
from jax.experimental import multihost_utils

import hrnet_jax
from hrnet_jax import errors, interrupts
from hrnet_jax.pretrained import checkpoint as hrnet_checkpoint
from hrnet_jax.train import checkpointing, observe, tasks
from hrnet_jax.train import data as input_pipeline
from hrnet_jax.train import mesh as mesh_lib
from hrnet_jax.train import step as step_lib
from hrnet_jax.train import train_state as ts
from hrnet_jax.train import workdir as workdir_lib

log = logging.getLogger(__name__)

CONFIG_FILE = 'train_config.json'
METRICS_FILE = 'metrics.jsonl'
MODEL_DIR = 'model'
BEST_DIR = 'best'
PREEMPTED_EXIT_CODE = errors.EXIT_PREEMPTED  # 128 + SIGTERM, what a shell reports for it


class NonFiniteLossError(errors.EnvironmentFailure, FloatingPointError):
  """The loss or gradient norm became NaN/inf; the last good checkpoint is kept. Exit 1."""


class Preempted(SystemExit):
  """SIGTERM received; a training checkpoint of the current step was saved. Exit status 143."""

  def __init__(self):
    super().__init__(PREEMPTED_EXIT_CODE)


def total_steps(config, steps_per_epoch: int) -> int:
  """The planned steps (``train_state.planned_steps``), capped by ``max_steps`` when > 0."""
  total = ts.planned_steps(config, steps_per_epoch)
  return min(total, config.max_steps) if config.max_steps > 0 else total


def eval_steps(config, steps_per_epoch: int, total: int) -> set[int]:
  """Steps after which to evaluate: every ``eval_every_steps`` steps (when > 0) or
  ``eval_every_epochs`` epochs, and the last."""
  every = config.get('eval_every_steps', 0) or config.eval_every_epochs * steps_per_epoch
  return set(range(every, total + 1, every) if every > 0 else ()) | {total}


def _prefetch(batches: Iterator[dict], sharding, size: int) -> Iterator[dict]:
  """Host batches -> global device batches, ``size`` transfers ahead of the consumer."""
  queue = collections.deque()
  for batch in batches:
    queue.append(mesh_lib.global_batch(batch, sharding))
    if len(queue) > size:
      yield queue.popleft()


def resolve_model(config):
  """``config``, or a copy whose ``pretrained`` names a release folder (a tag, an arch,
  ``hf-hub:`` or ``local-dir:`` resolved by ``hrnet_jax.pretrained_folder``, downloaded and
  converted once) and, when ``config.model`` is ``''``, whose ``model`` is the arch of that
  folder (its ``config.json``), so that a fine-tuning recipe takes the arch of whatever it is
  given.

  Raises ``ValueError`` when the recipe requires ``config.pretrained`` (None) and it is unset, or
  ``model`` is ``''`` without ``pretrained``; ``FileNotFoundError`` / ``BadInputError`` naming a
  ``pretrained`` folder that is not a release folder (a training workdir: its ``best/``).
  """
  if config.pretrained is None:
    raise ValueError(
      'this config needs pretrained weights: pass --config.pretrained=DIR '
      '(a folder written by convert_official_weights or save_pretrained)'
    )
  if config.pretrained and not os.path.exists(config.pretrained):
    # A name (tag, arch, hf-hub:, local-dir:): downloaded and converted once into the cache.
    config = config.copy_and_resolve_references()
    config.pretrained = str(hrnet_jax.pretrained_folder(config.pretrained))
  if config.pretrained and os.path.exists(os.path.join(config.pretrained, CONFIG_FILE)):
    raise errors.BadInputError(
      f'--config.pretrained={config.pretrained}: a training workdir, not a release folder; '
      f'pass its {BEST_DIR}/ or {MODEL_DIR}/'
    )
  if config.model:
    return config
  if not config.pretrained:
    raise ValueError(
      "config.model='' takes the arch of config.pretrained, which is not set: pass "
      '--config.pretrained=DIR or --config.model=NAME (hrnet_jax.list_models())'
    )
  resolved = config.copy_and_resolve_references()
  resolved.model = hrnet_checkpoint.read_config(config.pretrained)['arch']
  return resolved


def class_names(info, base_cfg: dict | None) -> list[str] | None:
  """The class names recorded with the trained weights: the dataset's (a folder's class
  subfolders, a TFDS label feature's names, the digits), else those of the pretrained folder
  (``base_cfg['class_names']``) when it has one per class, else None."""
  if info.class_names:
    return list(info.class_names)
  names = (base_cfg or {}).get('class_names')
  return list(names) if names and len(names) == info.num_classes else None


def _write_config(config, workdir: str, num_classes: int, pretrained_cfg: dict) -> None:
  """Writes ``train_config.json`` (``{"config": ..., "num_classes": ..., "class_names": [...] |
  null, "pretrained_cfg": {...}}``, read by ``hrnet-eval``; ``pretrained_cfg`` is what the
  release folders get) atomically; warns if a resumed run's config changed (it is then not an
  exact continuation)."""
  path = os.path.join(workdir, CONFIG_FILE)
  new = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    old = workdir_lib.read_json(path, "the run's config", required=('config',))['config']
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
      log.warning('resuming %s with a different config (%s)', workdir, ', '.join(changed))
  doc = {
    'config': new,
    'num_classes': num_classes,
    'class_names': pretrained_cfg.get('class_names'),
    'pretrained_cfg': pretrained_cfg,
  }
  workdir_lib.write_text_atomic(path, json.dumps(doc, indent=2, sort_keys=True))


def _export(model_def: ts.ModelDef, state: ts.TrainState, out_dir: str, pretrained_cfg) -> None:
  """Writes the final weights as a release folder (all processes gather, process 0 writes)."""
  params, stats = multihost_utils.process_allgather((state.params, state.batch_stats), tiled=True)
  if jax.process_index() == 0:
    model = model_def.merge(params, stats, train=False)
    hrnet_jax.save_pretrained(model, out_dir, pretrained_cfg=pretrained_cfg, overwrite=True)


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains ``config`` (a recipe's config; fields in ``train/recipes/base.py``) in ``workdir``,
  resuming from its latest readable training checkpoint. Every process of a multi-host run calls
  it.

  ``config.model=''`` takes the arch of ``config.pretrained`` (``resolve_model``).

  Returns the summary: ``steps``, ``epochs``, ``seconds``, ``img_per_sec``, the task's scalar
  results of the last evaluation (classification: ``top1``, ``top5`` as fractions;
  segmentation: ``mIoU``, ``aAcc``, ``mAcc`` in percent), ``best_<metric>`` (``best_top1``,
  ``best_mIoU``), ``best_step``, ``workdir``, ``model_dir`` (the last step's release folder),
  ``best_dir`` (the best step's).

  Raises ``ValueError`` for bad config values (before anything is written),
  ``hrnet_jax.errors.BadInputError`` for a workdir that is a file, unwritable or in use by
  another run, ``NonFiniteLossError`` on a NaN/inf loss (after committing pending checkpoints),
  ``OSError`` when a save fails (disk full; the previous checkpoint stays), and ``Preempted``
  (a ``SystemExit``, status 143) after saving on SIGTERM (handled inside and outside an
  ``interrupts_raise`` block alike).
  """
  t_start = time.time()
  workdir = workdir_lib.check_workdir(workdir)
  main_process = jax.process_index() == 0
  # Everything that can reject the config runs before the workdir is created or written.
  config = resolve_model(config)
  task = tasks.get_task(config)
  data = input_pipeline.create_input(
    config, process_index=jax.process_index(), process_count=jax.process_count()
  )
  mesh = mesh_lib.create_mesh(config.mesh.fsdp)
  for what in ('batch_size', 'eval_batch_size'):
    if config[what] % mesh.size:
      raise ValueError(
        f'config.{what}={config[what]} must be a multiple of the {mesh.size} devices'
      )
  checkpointing.validate_options(keep=config.checkpoint.keep)
  spe = data.steps_per_epoch
  total = total_steps(config, spe)
  evals = eval_steps(config, spe, total)
  # Handed over in a list so that _train holds the only reference and can free the host copy.
  built = [ts.recipe_model(config, data.info.num_classes)]
  base_cfg = built[0].pretrained_cfg
  pretrained_cfg = {
    **task.pretrained_cfg(config, base_cfg, data.info),
    'class_names': class_names(data.info, base_cfg),
  }

  lock = workdir_lib.WorkdirLock(workdir).acquire() if main_process else None
  try:
    if main_process:
      _write_config(config, workdir, data.info.num_classes, pretrained_cfg)
    return _train(config, task, workdir, data, mesh, built, pretrained_cfg, total, evals, t_start)
  finally:
    if lock is not None:
      lock.release()


def _train(
  config,
  task: tasks.Task,
  workdir: str,
  data,
  mesh,
  built: list,
  pretrained_cfg: dict,
  total: int,
  evals: set[int],
  t_start: float,
) -> dict:
  """``train_and_evaluate`` once the config is valid and the workdir is owned."""
  main_process = jax.process_index() == 0
  spe = data.steps_per_epoch
  model = built.pop()
  model_def, params, batch_stats = ts.split_model(model)
  del model
  tx = ts.create_optimizer(config, spe)
  lr_fn = ts.learning_rate_schedule(config, spe)
  host_state = ts.init_state(params, batch_stats, tx)
  shardings = mesh_lib.state_shardings(mesh, host_state)
  batch_sharding, replicated = mesh_lib.batch_sharding(mesh), mesh_lib.replicated(mesh)

  ckpts = checkpointing.Checkpoints(
    workdir,
    keep=config.checkpoint.keep,
    async_save=config.checkpoint.async_save,
    best_metric=task.best_metric,
  )
  restored = ckpts.restore(checkpointing.abstract_like(host_state, shardings))
  if restored is not None:
    state, start = restored
    log.warning('resuming from checkpoint %d of %s', start, ckpts.directory)
  else:
    state, start = mesh_lib.put_replicated_or_sharded(host_state, shardings), 0
    if ckpts.discarded:
      log.warning('no readable checkpoint left in %s: starting from step 0', ckpts.directory)
  del host_state, params, batch_stats

  norm = dict(mean=tuple(config.input.mean), std=tuple(config.input.std))
  train_fn = step_lib.jit_train_step(
    shardings,
    batch_sharding,
    replicated,
    model_def=model_def,
    tx=tx,
    lr_fn=lr_fn,
    loss_fn=task.loss_fn(config),
    **norm,
  )
  evaluator = task.evaluator(
    config, model_def, data.info, mesh, shardings.params, shardings.batch_stats
  )
  observer = observe.Observer(
    os.path.join(workdir, 'tensorboard'),
    os.path.join(workdir, METRICS_FILE),
    start_step=start,
    total_steps=total,
    batch_size=config.batch_size,
    log_every=config.log_every_steps,
    active=main_process,
    t_start=t_start,
  )
  pending: list[tuple[int, dict]] = []  # (step, device metrics) not yet read on the host
  last_saved = max(ckpts.steps(), default=None)
  results = None

  def flush(keep: int) -> None:
    """Reads all but the newest ``keep`` pending metrics; stops on a non-finite value."""
    while len(pending) > keep:
      step, metrics = pending.pop(0)
      metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
      if not (math.isfinite(metrics['loss']) and math.isfinite(metrics['grad_norm'])):
        raise NonFiniteLossError(
          f'non-finite loss at step {step} (loss={metrics["loss"]}, grad_norm='
          f'{metrics["grad_norm"]}); stopped. The last good checkpoint is step {last_saved} '
          f'in {ckpts.directory}; lower config.optimizer.base_lr or check the data.'
        )
      observer.step(step, metrics)

  def save(step: int, metrics: dict | None = None) -> None:
    nonlocal last_saved
    if step == last_saved:
      return
    flush(0)  # only a state whose every loss was finite is saved
    ckpts.save(step, state, metrics)
    last_saved = step

  # SIGTERM becomes a flag polled at step boundaries, so the current step is saved; several
  # processes are left to JAX's preemption service (reached_preemption: one step for all).
  with interrupts.sigterm_polled(enabled=jax.process_count() == 1) as sigterm:
    try:
      batches = _prefetch(data.train_batches(start), batch_sharding, config.input.prefetch)
      for step in range(start + 1, total + 1):
        state, metrics = train_fn(state, next(batches))
        pending.append((step, metrics))
        flush(1)  # read the previous step's metrics while this one runs
        if step in evals:
          flush(0)
          observer.pause()
          results = evaluator(state.params, state.batch_stats, data, progress=main_process)
          observer.eval(step, task.scalars(results), task.describe(results))
          save(step, task.scalars(results))
        elif step % config.checkpoint.every_steps == 0:
          save(step)
        if sigterm.raised or ckpts.reached_preemption(step):
          save(step)
          ckpts.wait()
          observer.close()  # the line below must not be glued to the progress bar
          log.warning(
            'preempted: saved checkpoint %d in %s; run again with the same --workdir to resume',
            step,
            ckpts.directory,
          )
          raise Preempted()
      flush(0)
      observer.pause()
      if results is None:  # resumed at the end: evaluate the restored state
        results = evaluator(state.params, state.batch_stats, data)
      ckpts.wait()  # a failed save stops the run before the export
      model_dir, best_dir = os.path.join(workdir, MODEL_DIR), os.path.join(workdir, BEST_DIR)
      _export(model_def, state, model_dir, pretrained_cfg)
      best_step, best_value = ckpts.best() or (total, results[task.best_metric])
      if best_step != total:
        abstract = checkpointing.abstract_like(state, shardings)
        state = None  # exported: its memory is free for the best checkpoint's
        state, _ = ckpts.restore(abstract, step=best_step)
      _export(model_def, state, best_dir, pretrained_cfg)
    finally:
      observer.close()
      ckpts.close()

  seconds = time.time() - t_start
  summary = {
    'steps': total,
    'epochs': total / spe,
    'seconds': seconds,
    'img_per_sec': (
      observer.timed_steps * config.batch_size / observer.train_time
      if observer.train_time
      else float('nan')
    ),
    **task.scalars(results),
    f'best_{task.best_metric}': best_value,
    'best_step': best_step,
    'workdir': workdir,
    'model_dir': model_dir,
    'best_dir': best_dir,
  }
  if main_process:
    print(
      f'hrnet-train: {summary["steps"]} steps ({summary["epochs"]:.2f} epochs) in '
      f'{seconds:.0f} s, {summary["img_per_sec"]:.1f} img/s; {task.describe(results)}; '
      f'{task.describe_best(best_value)} at step {best_step}: weights in {best_dir} (last '
      f'step: {model_dir})',
      flush=True,
    )
  return summary
