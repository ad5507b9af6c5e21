"""``--checkpoint DIR [--step N]`` / ``--model NAME`` of ``hrnet-predict`` and ``hrnet-export``: a
release folder, a training workdir resolved to one of its release folders, or published weights
by name (timm's ``inference.py --model`` habit: ``hrnet_jax.pretrained_folder`` downloads and
converts them once into the cache).

A release folder holds ``config.json`` + ``state/`` (``convert_official_weights``,
``hrnet_jax.save_pretrained``). A workdir of ``hrnet-train`` holds two of them, ``best/`` (the step
with the best evaluation metric) and ``model/`` (the last step), next to its Orbax training
checkpoints ``checkpoints/<step>/``. ``--checkpoint WORKDIR`` means ``WORKDIR/best`` (``model``
for a run written before ``best/`` existed, with a note); ``--step N`` writes training checkpoint
``N`` once as the release folder ``WORKDIR/steps/N`` (the weights of step N, the preprocessing and
class names the run recorded in ``train_config.json``, or for a run of an older hrnet-train in its
``best/`` / ``model/``; restored by ``hrnet_jax.train.eval_main.restore_workdir``, as hrnet-eval
does) and uses it.
"""

from __future__ import annotations

import argparse
import os
import sys

import hrnet_jax
from hrnet_jax.errors import BadInputError, EnvironmentFailure
from hrnet_jax.pretrained import checkpoint

try:  # the train extra: only --step needs it, the base install runs the rest
  from hrnet_jax.train import eval_main, mesh, trainer
except ImportError:
  eval_main = mesh = trainer = None

__all__ = ['add_arguments', 'resolve', 'resolve_args']

# The release folders hrnet-train writes in its workdir (train/trainer.py), best first.
RUN_FOLDERS = ('best', 'model')
STEPS_DIR = 'steps'


def add_arguments(p: argparse.ArgumentParser) -> None:
  """Adds ``--checkpoint`` / ``--model`` (one of them) and ``--step`` to ``p``."""
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument(
    '--model',
    metavar='NAME',
    help='published weights by name: a tag (hrnet_w18.ms_aug_in1k), an arch (its default tag), '
    'hf-hub:org/repo[@rev] or local-dir:PATH; downloaded and converted once into the cache',
  )
  source.add_argument(
    '--checkpoint',
    metavar='DIR',
    help='checkpoint folder (config.json + state/: convert_official_weights, save_pretrained), '
    'or a training workdir (hrnet-train --workdir): its best/ folder, or with --step N that '
    'training checkpoint',
  )
  p.add_argument(
    '--step',
    type=int,
    metavar='N',
    help='with a training workdir: its Orbax checkpoint of step N (written once as '
    'WORKDIR/steps/N)',
  )


def _has_config(folder: str) -> bool:
  return os.path.isfile(os.path.join(folder, checkpoint.CONFIG_FILE))


def _not_a_checkpoint(path: str) -> FileNotFoundError:
  return FileNotFoundError(
    f'--checkpoint {path}: no {checkpoint.CONFIG_FILE}, so neither a checkpoint folder '
    '(convert_official_weights, save_pretrained) nor a training workdir (hrnet-train --workdir, '
    f'with {" or ".join(f"{d}/" for d in RUN_FOLDERS)}); pass one of those folders'
  )


def resolve_args(args: argparse.Namespace, prog: str) -> str:
  """The release folder of ``args.model`` (``hrnet_jax.pretrained_folder``, its errors) or of
  ``args.checkpoint`` / ``args.step`` (``resolve``). ``BadInputError`` for ``--step`` with
  ``--model``."""
  if args.model is None:
    return resolve(args.checkpoint, args.step, prog)
  if args.step is not None:
    raise BadInputError(f'--step {args.step} picks a training checkpoint: use it with --checkpoint')
  return str(hrnet_jax.pretrained_folder(args.model))


def resolve(path: str, step: int | None, prog: str) -> str:
  """The release folder that ``--checkpoint path [--step step]`` means (see the module doc).

  Raises ``FileNotFoundError`` for a missing folder or one that is neither kind (naming both
  kinds), ``BadInputError`` for ``--step`` with a release folder, a step the workdir does not
  have (its steps listed) or a run that records no preprocessing, ``EnvironmentFailure`` for ``--step`` without the train extra, ``OSError`` when
  ``WORKDIR/steps`` cannot be written.
  """
  if not os.path.isdir(path):
    raise FileNotFoundError(f'--checkpoint {path}: no such folder')
  if _has_config(path):
    if step is not None:
      raise BadInputError(
        f'--step {step}: {path} is a checkpoint folder, not a training workdir (--step picks '
        'a training checkpoint of hrnet-train --workdir)'
      )
    return path
  run_folders = [os.path.join(path, d) for d in RUN_FOLDERS if _has_config(os.path.join(path, d))]
  if step is None:
    if not run_folders:
      raise _not_a_checkpoint(path)
    if os.path.basename(run_folders[0]) != RUN_FOLDERS[0]:
      print(
        f'{prog}: note: {path} has no {RUN_FOLDERS[0]}/ folder (a run of an older hrnet-train); '
        f'using {run_folders[0]}, the last step',
        file=sys.stderr,
      )
    return run_folders[0]
  return _step_folder(path, step, run_folders)


def _step_folder(workdir: str, step: int, run_folders: list[str]) -> str:
  """``WORKDIR/steps/<step>``, written from training checkpoint ``step`` unless it exists."""
  out = os.path.join(workdir, STEPS_DIR, str(step))
  if _has_config(out):
    return out
  if eval_main is None:
    raise EnvironmentFailure(
      f'--step {step} reads a training checkpoint, which needs the train extra: '
      'pip install "hrnet-jax[train]"'
    )
  if not os.path.isfile(os.path.join(workdir, trainer.CONFIG_FILE)):
    raise _not_a_checkpoint(workdir)
  model_def, params, stats, _, meta = eval_main.restore_workdir(workdir, mesh.create_mesh(), step)
  cfg = meta['pretrained_cfg']
  if cfg is None and run_folders:  # a run of an older hrnet-train: its release folder's
    cfg = checkpoint.read_config(run_folders[0]).get('pretrained_cfg')
  if cfg is None:
    raise BadInputError(
      f'--step {step}: {workdir} records no preprocessing (its {trainer.CONFIG_FILE} has no '
      f'pretrained_cfg and it has no {" or ".join(f"{d}/" for d in RUN_FOLDERS)} folder); use '
      f'hrnet-eval --checkpoint {workdir} --step {step}'
    )
  os.makedirs(os.path.dirname(out), exist_ok=True)
  hrnet_jax.save_pretrained(model_def.merge(params, stats, train=False), out, pretrained_cfg=cfg)
  return out
