"""Issue 23, a newcomer's fine-tune as users run it (subprocesses): a three-class photo folder
fine-tuned from a release folder with one dataset flag (``--config finetune
--config.pretrained=DIR --config.dataset=folder:PATH``: the recipe's TFDS-style split names work
on the folder, the arch comes from the pretrained folder), the folder's class names in both
release folders and in the workdir (not the pretrained head's), the summary naming
``WORKDIR/best``; then ``hrnet-eval`` with dashed flags on a percent slice of the folder, saying
which step it scored and that a top-5 of 3 classes is 100% by construction. No library log lines
(TensorFlow's oneDNN notice, Orbax's read-only notice, absl's ``I...`` lines) in either.

The in-process pieces (flags, slices, names, arch, errors): test_newcomer_units.
"""

import json
import os
import re
import subprocess
import sys

import child_checks
import ml_collections  # noqa: F401  (the train extra; a missing install must fail, not skip)
import numpy as np
import pytest
from flax import nnx
from PIL import Image

import hrnet_jax
from hrnet_jax.pretrained import checkpoint as hrnet_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLASSES = ['cat', 'coffee', 'rocket']
NOISE = ('oneDNN', 'absl::InitializeLog', 'Given directory is read only')
ABSL_LINE = re.compile(r'^[IWE]\d{4} ', re.M)  # absl's own format: date, thread, file:line


@pytest.fixture(scope='module')
def env():
  return child_checks.run_env()


def _photos(root):
  """``root/train/<class>/`` with 8 noisy 40x40 PNGs per class (the folder has no val split)."""
  rng = np.random.default_rng(0)
  for k, name in enumerate(CLASSES):
    os.makedirs(os.path.join(root, 'train', name))
    for i in range(8):
      pixels = np.clip(rng.normal(60 + 70 * k, 30, (40, 40, 3)), 0, 255).astype(np.uint8)
      Image.fromarray(pixels).save(os.path.join(root, 'train', name, f'{i}.png'))
  return root


def _run(cmd, env):
  return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)


def _assert_quiet(stderr):
  assert not [n for n in NOISE if n in stderr], stderr[-3000:]
  assert not ABSL_LINE.search(stderr), stderr[-3000:]


def test_folder_finetune_in_one_flag_keeps_the_class_names(tmp_path, env):
  photos = _photos(str(tmp_path / 'photos'))
  pretrained = str(tmp_path / 'pretrained')
  # Another head (5 classes, names a..e): the fine-tuned folders must not inherit its names.
  model = hrnet_jax.create_model('hrnet_w18_small', num_classes=5, rngs=nnx.Rngs(0))
  hrnet_jax.save_pretrained(model, pretrained, pretrained_cfg={'class_names': list('abcde')})
  workdir = str(tmp_path / 'run')
  train = _run(
    [
      sys.executable,
      '-m',
      'hrnet_jax.train.main',
      '--config',
      'finetune',
      f'--config.pretrained={pretrained}',
      f'--config.dataset=folder:{photos}',
      f'--workdir={workdir}',
      # Small and short (the recipe's batch of 64 exceeds the 21 training images).
      '--config.batch_size=8',
      '--config.input.image_size=32',
      '--config.max_steps=2',
      '--config.eval_every_epochs=0',
    ],
    env,
  )
  assert train.returncode == 0, train.stderr[-4000:]
  summary = [line for line in train.stdout.splitlines() if line.startswith('hrnet-train:')][-1]
  assert 'eval top-1' in summary and '(3 images)' in summary, summary  # train[90%:]: 1 a class
  assert summary.endswith(f'at step 2: weights in {workdir}/best (last step: {workdir}/model)'), (
    summary
  )
  for folder in ('model', 'best'):
    released = hrnet_checkpoint.read_config(os.path.join(workdir, folder))
    assert released['arch'] == 'hrnet_w18_small' and released['num_classes'] == 3
    assert released['pretrained_cfg']['class_names'] == CLASSES
  saved = json.load(open(os.path.join(workdir, 'train_config.json')))
  assert saved['class_names'] == CLASSES and saved['config']['model'] == 'hrnet_w18_small'
  assert saved['pretrained_cfg']['class_names'] == CLASSES
  assert (saved['config']['dataset']['name'], saved['config']['dataset']['folder']) == (
    'folder',
    photos,
  )
  _assert_quiet(train.stderr)

  ev = _run(
    [
      sys.executable,
      '-m',
      'hrnet_jax.train.eval_main',
      '--checkpoint',
      workdir,
      '--dataset',
      f'folder:{photos}',
      '--split',
      'train[90%:]',
      '--batch-size',
      '8',
    ],
    env,
  )
  assert ev.returncode == 0, ev.stderr[-4000:]
  line = ev.stdout.strip().splitlines()[-1]
  assert '(every class is in the top 5 of 3)' in line, line
  assert line.endswith(f'on 3 images of folder:{photos}:train[90%:] ({workdir}, step 2)'), line
  _assert_quiet(ev.stderr)
