"""``hrnet-train``: train or fine-tune an HRNet (classification or segmentation) from a recipe.

    hrnet-train --config digits --workdir /tmp/hrnet_digits
    hrnet-train --config finetune --config.pretrained=converted/hrnet_w18_small \\
      --config.dataset=folder:photos --workdir runs/photos
    hrnet-train --config my_recipe.py:ARG --workdir DIR

``--config`` is a recipe name (the modules of ``hrnet_jax.train.recipes``: ``train/recipes/``)
or a recipe file, ``FILE[:ARG]``. Any config field can be overridden with
``--config.FIELD=value``; ``--config.dataset=folder:PATH`` (or a TFDS name) sets the dataset in
one flag. Running again with the same ``--workdir`` resumes from its latest training checkpoint;
one run at a time owns a workdir (a lock file). At the end the run writes two release folders
(``config.json`` + ``state/``, with the dataset's ``class_names``): ``WORKDIR/model`` (the last
step) and ``WORKDIR/best`` (the step with the best evaluation); the summary line names both.
Multi-host: run the same command on every host (see ``train/distributed.py``; explicit
``--coordinator-address``, ``--num-processes`` and ``--process-id`` work anywhere).

Exit status (``hrnet_jax.errors``): 0 done (and ``--help``); 1 runtime failure (NaN loss, disk
full); 2 bad input (unknown flag or config field, no such recipe or recipe file, bad config
value, a workdir that is a file, unwritable or in use by another run); 143 preempted by SIGTERM
after saving a training checkpoint. Errors are one ``hrnet-train: error:`` line (``--verbose``
adds the traceback and the libraries' log lines).
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from hrnet_jax import errors
from hrnet_jax.cli import policy
from hrnet_jax.runtime import compile_cache
from hrnet_jax.train import cli, distributed, recipes, trainer

PROG = 'hrnet-train'

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  'config',
  None,
  f'Training recipe: a name ({", ".join(recipes.names())}) or a recipe file, FILE[:ARG].',
  lock_config=True,
)
flags.DEFINE_string(
  'workdir',
  None,
  'Folder for training checkpoints, TensorBoard logs and the '
  'release folders best/ and model/; reused to resume.',
)
flags.DEFINE_bool(
  'distributed',
  False,
  'Call jax.distributed.initialize() with auto-detection '
  '(Cloud TPU VM pods); SLURM, Open MPI and GKE TPU are detected anyway.',
)
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (multi-process runs).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (with --coordinator-address).')
flags.DEFINE_integer('process_id', None, 'This process (with --coordinator-address).')
flags.mark_flags_as_required(['config', 'workdir'])

# What --help lists with the recipe's values (every field: train/recipes/base.py).
MAIN_FIELDS = (
  ('task', "'classify' or 'segment'"),
  ('model', "architecture (hrnet_jax.list_models()); '' = the arch of config.pretrained"),
  (
    'pretrained',
    "release folder or weights name (tag, hf-hub:, local-dir:) to fine-tune from ('' = random init)",
  ),
  ('dataset.name', "'digits', 'folder' or a TFDS name (--config.dataset=folder:PATH sets both)"),
  ('dataset.folder', 'root of a folder dataset: FOLDER/<split>/<class>/<image>'),
  ('dataset.train_split', "split to train on; TFDS syntax, also for folders ('train[:90%]')"),
  ('dataset.eval_split', 'split evaluated during training'),
  ('input.image_size', 'train / eval crop size in pixels'),
  ('batch_size', 'global batch in images'),
  ('num_epochs', 'training length (num_steps > 0: in steps instead)'),
  ('optimizer.base_lr', 'SGD lr per optimizer.base_batch_size images (scaled linearly)'),
  ('optimizer.schedule', "'step', 'cosine' or 'poly'"),
  ('dtype', "'float32' or 'bfloat16' computation"),
  ('max_steps', 'stop after this many steps (> 0; smoke tests)'),
)


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.configure_logging(PROG, FLAGS.verbose)
  compile_cache.enable()  # a resumed or repeated run skips XLA (HRNET_JAX_COMPILATION_CACHE)

  def train() -> int:
    # Inside run_cli's interrupts_raise: jax.distributed installs its preemption notifier's
    # SIGTERM handler over it, so that in a multi-process run every process saves one step.
    distributed.maybe_initialize(
      force=FLAGS.distributed,
      coordinator_address=FLAGS.coordinator_address,
      num_processes=FLAGS.num_processes,
      process_id=FLAGS.process_id,
    )
    trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    return errors.EXIT_OK

  return policy.run_cli(PROG, train, verbose=FLAGS.verbose)


def main():
  """Console entry point."""
  cli.run(
    _main,
    __doc__,
    ['config', 'workdir', 'distributed', 'coordinator_address', 'num_processes', 'process_id'],
    PROG,
    config_fields=MAIN_FIELDS,
  )


if __name__ == '__main__':
  main()
