"""``--checkpoint WORKDIR [--step N]`` of hrnet-predict and hrnet-export (issue 23, items 1 and
4): a training workdir means its ``best/`` release folder, ``--step N`` its Orbax training
checkpoint N (written once as ``WORKDIR/steps/N``), with the class names the run recorded;
anything else is refused with a hint naming both kinds of folder.

The workdir is laid out as hrnet-train lays it out, without training: the digits recipe's model
(hrnet_w18_small, 10 classes, 32x32), ``train_config.json`` (with the ``pretrained_cfg`` and
class names the release folders record), two training checkpoints written by
train's own ``Checkpoints`` (steps 2 and 4, different BatchNorm statistics), ``best/`` (step 2)
and ``model/`` (step 4) written by ``save_pretrained``.
"""

import json
import os

import jax
import numpy as np
import pytest
import skimage.data
from PIL import Image

import hrnet_jax
from hrnet_jax.cli import checkpoints
from hrnet_jax.cli.export import main as export_main
from hrnet_jax.cli.predict import class_names
from hrnet_jax.cli.predict import main as predict_main
from hrnet_jax.errors import BadInputError
from hrnet_jax.pretrained import checkpoint
from hrnet_jax.train import checkpointing, trainer
from hrnet_jax.train import train_state as ts
from hrnet_jax.train.recipes import digits

NAMES = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine']


def _arrays(folder):
  return checkpoint.read_pretrained(folder)[1]


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  config = digits.get_config()
  wd = tmp_path_factory.mktemp('run')
  model_def, params, stats = ts.split_model(ts.recipe_model(config, 10))
  cfg = dict(
    input_size=[3, 32, 32], crop_pct=1.0, interpolation='bilinear', mean=[0.5] * 3, std=[0.5] * 3
  )
  cfg['class_names'] = NAMES
  doc = {
    'config': json.loads(config.to_json_best_effort()),
    'num_classes': 10,
    'class_names': NAMES,
    'pretrained_cfg': cfg,
  }
  (wd / trainer.CONFIG_FILE).write_text(json.dumps(doc))
  tx = ts.create_optimizer(config, steps_per_epoch=1)
  ckpts = checkpointing.Checkpoints(wd, async_save=False)
  for step, scale in ((2, 1.5), (4, 0.5)):
    step_stats = jax.tree.map(lambda v, s=scale: v * s if v.ndim else v, stats)
    ckpts.save(step, ts.init_state(params, step_stats, tx))
    folder = wd / ('best' if step == 2 else 'model')
    hrnet_jax.save_pretrained(
      model_def.merge(params, step_stats, train=False), folder, pretrained_cfg=cfg
    )
  ckpts.close()
  return wd


def test_a_workdir_means_its_best_folder(workdir, tmp_path, capsys):
  assert checkpoints.resolve(str(workdir), None, 'prog') == str(workdir / 'best')
  # A run written before best/ existed: model/, with a note.
  old = tmp_path / 'old'
  os.makedirs(old)
  os.symlink(workdir / 'model', old / 'model')
  assert checkpoints.resolve(str(old), None, 'prog') == str(old / 'model')
  assert 'has no best/ folder' in capsys.readouterr().err


def test_step_n_is_that_training_checkpoint_with_the_runs_class_names(workdir, tmp_path, capsys):
  # Before issue 23: "--checkpoint RUN: no config.json", and labels "2", "0", "1".
  photo = tmp_path / 'cat.png'
  Image.fromarray(skimage.data.chelsea()).save(photo)
  argv = ['--checkpoint', str(workdir), '--step', '4', str(photo), '--json', '--top-k', '10']
  assert predict_main(argv) == 0, capsys.readouterr().err
  doc = json.loads(capsys.readouterr().out)
  step4 = workdir / 'steps' / '4'
  assert doc['checkpoint'] == str(step4)
  top = doc['results'][0]['top_k']
  assert sorted(t['label'] for t in top) == sorted(NAMES)
  assert all(t['label'] == NAMES[t['index']] for t in top)
  # The weights of step 4 (= model/), the preprocessing and names the run recorded.
  arrays, model_arrays = _arrays(step4), _arrays(workdir / 'model')
  assert arrays.keys() == model_arrays.keys()
  assert all(np.array_equal(arrays[k], model_arrays[k]) for k in arrays)
  assert not all(np.array_equal(arrays[k], v) for k, v in _arrays(workdir / 'best').items())
  cfg = checkpoint.read_config(step4)['pretrained_cfg']
  assert cfg == checkpoint.read_config(workdir / 'best')['pretrained_cfg']
  # Written once: a second resolution reuses the folder.
  mtime = os.stat(step4 / 'config.json').st_mtime_ns
  assert checkpoints.resolve(str(workdir), 4, 'prog') == str(step4)
  assert os.stat(step4 / 'config.json').st_mtime_ns == mtime


def test_refusals_name_the_fault(workdir, tmp_path, capsys):
  with pytest.raises(BadInputError, match='has no checkpoint 3; it has steps 2, 4'):
    checkpoints.resolve(str(workdir), 3, 'prog')
  with pytest.raises(BadInputError, match='is a checkpoint folder, not a training workdir'):
    checkpoints.resolve(str(workdir / 'best'), 2, 'prog')
  with pytest.raises(BadInputError, match=r'pretrained_cfg.class_names has 10 names .* 3 classes'):
    class_names({'class_names': NAMES}, 3, str(workdir / 'best'))
  empty = tmp_path / 'empty'
  empty.mkdir()
  out = str(tmp_path / 'x.stablehlo')
  for run in (
    lambda: predict_main(['--checkpoint', str(empty), 'x.png']),
    lambda: export_main(['--checkpoint', str(empty), '--format', 'stablehlo', out]),
  ):
    assert run() == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert 'neither a checkpoint folder' in err and 'nor a training workdir' in err, err
    assert 'best/ or model/' in err
