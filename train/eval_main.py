"""``hrnet-eval``: exact top-1 / top-5 of a checkpoint over a whole split, sharded over all devices.

    hrnet-eval --checkpoint /tmp/hrnet_digits --dataset digits
    hrnet-eval --checkpoint converted/hrnet_w18 --dataset imagenet2012 --data_dir ~/tfds
    hrnet-eval --checkpoint RUN/model --dataset folder:/data/flowers --split val

``--checkpoint`` is either a training workdir (``hrnet-train --workdir``; its best training
checkpoint by eval top-1, else the latest, or ``--step``) or a release folder (``config.json`` +
``state/``: ``convert_official_weights`` output, ``save_pretrained``, ``WORKDIR/model``).
Preprocessing (size, crop, interpolation, mean/std) is the run's config or the folder's
``pretrained_cfg``; ``--image_size`` / ``--crop_pct`` override it. ``--dataset`` is ``digits``,
``folder:PATH`` (``PATH/<split>/<class>/<image>``) or a TFDS name. (No ``--config``: the recipe
is the run's own, saved in its workdir.)

Exit status (``hrnet_jax.errors``): 0 done (and ``--help``); 1 runtime failure; 2 bad input (bad
flag, missing or damaged checkpoint, a checksum mismatch, a ``--step`` the workdir does not have,
an unknown dataset). Errors are one ``hrnet-eval: error:`` line (``--verbose`` adds the traceback).
"""

from __future__ import annotations

import json
import logging
import os

import jax
import ml_collections
from absl import app, flags

import hrnet_jax
from hrnet_jax import errors
from hrnet_jax.cli import policy
from hrnet_jax.data import transforms
from hrnet_jax.runtime import compile_cache
from hrnet_jax.train import checkpointing, cli, evaluate, trainer
from hrnet_jax.train import data as input_pipeline
from hrnet_jax.train import mesh as mesh_lib
from hrnet_jax.train import step as step_lib
from hrnet_jax.train import train_state as ts
from hrnet_jax.train.recipes import base

PROG = 'hrnet-eval'
FLAGS = flags.FLAGS
flags.DEFINE_string(
  'checkpoint', None, 'Training workdir or release folder (config.json + state/).'
)
flags.DEFINE_string('dataset', None, "'digits', 'folder:PATH' or a TFDS dataset name.")
flags.DEFINE_string('split', 'validation', 'Split to evaluate (TFDS syntax, or a subfolder).')
flags.DEFINE_string('data_dir', '', 'TFDS data_dir.')
flags.DEFINE_integer('batch_size', 128, 'Global eval batch size (a multiple of the devices).')
flags.DEFINE_integer('step', None, 'Checkpoint step of a training workdir (default: best).')
flags.DEFINE_integer('image_size', None, 'Override the eval crop size.')
flags.DEFINE_float('crop_pct', None, 'Override the center-crop fraction.')
flags.DEFINE_bool('json', False, 'Print the result as one JSON line.')
flags.mark_flags_as_required(['checkpoint', 'dataset'])


def _dataset_config(
  config,
  dataset: str,
  split: str,
  data_dir: str,
  batch_size: int,
  image_size: int | None,
  crop_pct: float | None,
) -> None:
  """Sets ``config.dataset`` and the eval fields (see ``evaluate_checkpoint``)."""
  if dataset.startswith('folder:'):
    config.dataset.name, config.dataset.folder = 'folder', dataset[len('folder:') :]
  else:
    config.dataset.name = dataset
  config.dataset.eval_split = split
  config.dataset.data_dir = data_dir
  config.eval_batch_size = config.batch_size = batch_size
  if dataset == 'digits':
    config.input.train_augment = 'resize'
  if image_size:
    config.input.image_size = image_size
  if crop_pct:
    config.input.crop_pct = crop_pct


def _from_workdir(workdir: str, mesh, step: int | None):
  """-> (model_def, params, batch_stats, config) of a training checkpoint of a run."""
  with open(os.path.join(workdir, trainer.CONFIG_FILE)) as f:
    saved = json.load(f)
  config = ml_collections.ConfigDict(saved['config'])
  config.pretrained = ''  # the architecture is all we need; the weights come from the checkpoint
  model_def, params, stats = ts.split_model(ts.recipe_model(config, saved['num_classes']))
  host_state = ts.init_state(params, stats, ts.create_optimizer(config, steps_per_epoch=1))
  shardings = mesh_lib.state_shardings(mesh, host_state)
  ckpts = checkpointing.Checkpoints(workdir, read_only=True)
  try:
    steps = ckpts.steps()
    if step is None:
      step = (ckpts.best() or (max(steps, default=None), None))[0]
      if step is None:
        raise errors.BadInputError(f'{ckpts.directory}: no checkpoint')
    elif step not in steps:
      raise errors.BadInputError(
        f'--step={step}: {ckpts.directory} has no checkpoint {step}; it has steps '
        f'{", ".join(map(str, steps)) or "none"}'
      )
    state, step = ckpts.restore(checkpointing.abstract_like(host_state, shardings), step=step)
  finally:
    ckpts.close()
  logging.info('evaluating checkpoint %d of %s', step, workdir)
  return model_def, state.params, state.batch_stats, config


def _from_folder(folder: str):
  """-> (model_def, params, batch_stats, config) of a release folder."""
  model = hrnet_jax.load_pretrained(folder)
  config = base.get_config()
  config.model = model.arch
  p = transforms.resolve_eval_params(model.pretrained_cfg or {})
  config.input.image_size = p['size'][0]
  config.input.crop_pct = p['crop_pct']
  config.input.interpolation = p['interpolation']
  config.input.mean, config.input.std = p['mean'], p['std']
  model_def, params, stats = ts.split_model(model)
  return model_def, params, stats, config


def evaluate_checkpoint(
  checkpoint: str,
  *,
  dataset: str,
  split: str = 'validation',
  data_dir: str = '',
  batch_size: int = 128,
  step: int | None = None,
  image_size: int | None = None,
  crop_pct: float | None = None,
) -> dict:
  """Top-1 / top-5 of ``checkpoint`` (a training workdir or a release folder) on
  ``split`` of ``dataset`` (``'digits'``, ``'folder:PATH'`` or a TFDS name); the arguments are
  the CLI flags'. Returns ``{'top1', 'top5'}`` (fractions) and ``'count'`` (images).

  Raises ``FileNotFoundError`` / ``ValueError`` naming a bad checkpoint, dataset or batch size.
  """
  mesh = mesh_lib.create_mesh()
  if not os.path.isdir(checkpoint):
    raise FileNotFoundError(f'--checkpoint={checkpoint}: no such folder')
  if os.path.exists(os.path.join(checkpoint, 'config.json')):
    model_def, params, stats, config = _from_folder(checkpoint)
    shardings = mesh_lib.state_shardings(mesh, (params, stats))
    params, stats = mesh_lib.put_replicated_or_sharded((params, stats), shardings)
  else:
    if not os.path.exists(os.path.join(checkpoint, trainer.CONFIG_FILE)):
      raise FileNotFoundError(
        f'--checkpoint={checkpoint}: neither a training workdir '
        f'({trainer.CONFIG_FILE}) nor a checkpoint folder (config.json)'
      )
    model_def, params, stats, config = _from_workdir(checkpoint, mesh, step)
  _dataset_config(config, dataset, split, data_dir, batch_size, image_size, crop_pct)
  if config.eval_batch_size % mesh.size:
    raise ValueError(
      f'--batch_size={config.eval_batch_size} must be a multiple of the {mesh.size} devices'
    )
  data = input_pipeline.create_input(
    config, process_index=jax.process_index(), process_count=jax.process_count(), train=False
  )
  eval_fn = step_lib.jit_eval_step(
    jax.tree.map(lambda x: x.sharding, params),
    jax.tree.map(lambda x: x.sharding, stats),
    mesh_lib.batch_sharding(mesh),
    mesh_lib.replicated(mesh),
    model_def=model_def,
    mean=tuple(config.input.mean),
    std=tuple(config.input.std),
  )
  return evaluate.evaluate(
    eval_fn,
    params,
    stats,
    data.eval_batches(),
    mesh_lib.batch_sharding(mesh),
    num_batches=data.num_eval_batches,
    progress=True,
  )


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.getLogger().setLevel(logging.INFO)
  logging.getLogger('absl').setLevel(logging.WARNING)
  compile_cache.enable()  # HRNET_JAX_COMPILATION_CACHE
  return policy.run_cli(PROG, _evaluate_and_print, verbose=FLAGS.verbose)


def _evaluate_and_print() -> int:
  results = evaluate_checkpoint(
    FLAGS.checkpoint,
    dataset=FLAGS.dataset,
    split=FLAGS.split,
    data_dir=FLAGS.data_dir,
    batch_size=FLAGS.batch_size,
    step=FLAGS.step,
    image_size=FLAGS.image_size,
    crop_pct=FLAGS.crop_pct,
  )
  if FLAGS.json:
    print(
      json.dumps(
        {**results, 'checkpoint': FLAGS.checkpoint, 'dataset': FLAGS.dataset, 'split': FLAGS.split}
      )
    )
  else:
    print(
      f'hrnet-eval: top-1 {results["top1"]:.2%}  top-5 {results["top5"]:.2%}  on '
      f'{results["count"]} images of {FLAGS.dataset}:{FLAGS.split} ({FLAGS.checkpoint})'
    )
  return 0


def main():
  """Console entry point."""
  cli.run(
    _main,
    __doc__,
    [
      'checkpoint',
      'dataset',
      'split',
      'data_dir',
      'batch_size',
      'step',
      'image_size',
      'crop_pct',
      'json',
    ],
    PROG,
  )


if __name__ == '__main__':
  main()
