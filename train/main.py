"""``hrnet-train``: train or fine-tune an HRNet from a recipe.

    hrnet-train --config digits --workdir /tmp/hrnet_digits
    hrnet-train --config imagenet_cosine --workdir /shared/run1
    hrnet-train --config my_recipe.py:ARG --workdir DIR

``--config`` is a recipe name (the modules of ``hrnet_jax.train.recipes``: ``train/recipes/``)
or a recipe file, ``FILE[:ARG]``. Any config field can be overridden with
``--config.FIELD=value``. Running again with the same ``--workdir`` resumes from its latest
training checkpoint; one run at a time owns a workdir (a lock file). The final weights are a
release folder, ``WORKDIR/model``. Multi-host: run the same command on every host (see
``train/distributed.py``; explicit ``--coordinator_address``, ``--num_processes`` and
``--process_id`` work anywhere).

Exit status (``hrnet_jax.errors``): 0 done (and ``--help``); 1 runtime failure (NaN loss, disk
full); 2 bad input (unknown flag or config field, no such recipe or recipe file, bad config
value, a workdir that is a file, unwritable or in use by another run); 143 preempted by SIGTERM
after saving a training checkpoint. Errors are one ``hrnet-train: error:`` line (``--verbose``
adds the traceback).
"""

from __future__ import annotations

import logging

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
  'final release folder (model/); reused to resume.',
)
flags.DEFINE_bool(
  'distributed',
  False,
  'Call jax.distributed.initialize() with auto-detection '
  '(Cloud TPU VM pods); SLURM, Open MPI and GKE TPU are detected anyway.',
)
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (multi-process runs).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (with --coordinator_address).')
flags.DEFINE_integer('process_id', None, 'This process (with --coordinator_address).')
flags.mark_flags_as_required(['config', 'workdir'])


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.getLogger().setLevel(logging.INFO)
  logging.getLogger('absl').setLevel(logging.WARNING)  # Orbax logs every save step at INFO
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
  )


if __name__ == '__main__':
  main()
