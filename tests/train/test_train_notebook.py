"""Executes colab/train_tpu.ipynb top to bottom on CPU with its smoke-test parameters (no network:
a random timm checkpoint converted locally with convert_official_weights, the embedded digits,
12 steps), so the notebook cannot rot; and, from what it leaves behind, checks that converted
timm weights fine-tune with a new head (finetune.py) and the loss goes down, and that hrnet-eval
reads the converter's output folder."""

import csv
import json
import os
import shutil
import subprocess
import sys

import child_checks
import nbclient
import nbformat
import numpy as np
import pytest

from hrnet_jax.pretrained import checkpoint as hrnet_checkpoint  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOK = os.path.join(ROOT, 'colab', 'train_tpu.ipynb')


@pytest.fixture(scope='module')
def executed(tmp_path_factory):
  """(notebook after execution, its folder, the kernel's environment)."""
  tmp = tmp_path_factory.mktemp('notebook')
  nb = nbformat.read(NOTEBOOK, as_version=4)
  params = [c for c in nb.cells if 'parameters' in c.metadata.get('tags', [])]
  assert len(params) == 1
  params[0].source = '\n'.join(
    [
      'SMOKE_TEST = True',
      "REPO = ''",
      "ARCH = 'hrnet_w18_small'",
      "HUB_ID = ''",
      "DATASET = 'digits'",
      "TRAIN_SPLIT, EVAL_SPLIT = 'train', 'validation'",
      'IMAGE_SIZE = 32',
      'BATCH_SIZE = 32',
      'EPOCHS = 10',
      'MAX_STEPS = 12',
      f'WORKDIR = {str(tmp / "run")!r}',
      f'CONVERTED = {str(tmp / "converted")!r}',
    ]
  )
  overrides = dict(
    PYTHONPATH=ROOT,
    JAX_PLATFORMS='cpu',
    XLA_FLAGS='',
    **child_checks.compile_cache_env(),
  )
  mp = pytest.MonkeyPatch()  # the kernel inherits this process's environment
  for k, v in overrides.items():
    mp.setenv(k, v)
  mp.delenv('MPLBACKEND', raising=False)  # the kernel's inline backend shows the plots
  env = dict(os.environ)
  try:
    nbclient.NotebookClient(
      nb, timeout=900, kernel_name='python3', resources={'metadata': {'path': str(tmp)}}
    ).execute()
  finally:
    mp.undo()
  yield nb, tmp, env
  shutil.rmtree(tmp)


def test_notebook_runs_and_plots(executed):
  nb, tmp, _ = executed
  outputs = ''.join(
    o.get('text', '') for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])
  )
  assert 'top-1' in outputs and '(360 images)' in outputs
  images = [o for c in nb.cells for o in c.get('outputs', []) if 'image/png' in o.get('data', {})]
  assert images  # the curves were plotted


def test_converted_timm_weights_finetune_with_new_head(executed):
  _, tmp, _ = executed
  losses = [
    r['train/loss']
    for r in map(json.loads, open(tmp / 'run' / 'metrics.jsonl'))
    if 'train/loss' in r
  ]
  assert len(losses) >= 10
  assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.2, losses
  source = hrnet_checkpoint.read_pretrained(tmp / 'converted')[1]
  tuned = hrnet_checkpoint.read_pretrained(tmp / 'run' / 'model')[1]
  assert source['classifier.kernel'].shape == (2048, 1000)
  assert tuned['classifier.kernel'].shape == (2048, 10)
  assert not np.array_equal(source['conv1.kernel'], tuned['conv1.kernel'])  # trained from it
  config = json.load(open(tmp / 'run' / 'model' / 'config.json'))
  assert config['num_classes'] == 10 and config['pretrained_cfg']['input_size'] == [3, 32, 32]


def test_hrnet_eval_reads_converter_output(executed):
  _, tmp, env = executed
  ev = subprocess.run(
    [
      sys.executable,
      '-m',
      'hrnet_jax.train.eval_main',
      f'--checkpoint={tmp}/converted',
      '--dataset=digits',
      '--image_size=32',
      '--batch_size=120',
      '--json',
    ],
    env=env,
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert ev.returncode == 0, ev.stderr[-3000:]
  result = json.loads(ev.stdout.strip().splitlines()[-1])
  assert result['count'] == 360 and 0 <= result['top1'] <= 1


def test_default_batch_fits_a_v5e_chip_by_the_aot_table():
  """The notebook's defaults (model, image size, global batch on a v5e-1) are covered by a
  benchmarks.tpu_aot row that fits a v5e chip at that batch per chip or more (bf16, as the
  notebook trains on TPU)."""
  nb = nbformat.read(NOTEBOOK, as_version=4)
  cell = next(c for c in nb.cells if 'parameters' in c.metadata.get('tags', []))
  params = {}
  exec(cell.source, params)
  with open(os.path.join(ROOT, 'benchmarks', 'results', 'tpu_aot.csv'), newline='') as f:
    rows = [
      r
      for r in csv.DictReader(f)
      if r['model'] == params['ARCH']
      and r['task'] == 'train'
      and r['chip'] == 'TPU v5e'
      and r['dtype'] == 'bfloat16'
      and r['status'] == 'ok'
      and int(r['image_size']) == params['IMAGE_SIZE']
      and r['fits'] == 'True'
    ]
  assert max((int(r['batch_per_chip']) for r in rows), default=0) >= params['BATCH_SIZE'], rows
