"""Issue 23 (a newcomer's day), training side, in-process: one-flag datasets and dashed flags on
the command line, folder splits sliced in percent, the fine-tuning arch taken from the pretrained
folder, the class names recorded with trained weights, ``hrnet-eval``'s class mismatch, and a
folder meant as data never becoming a TFDS download. (The runs: test_newcomer_finetune.)"""

import json
import sys

import ml_collections  # noqa: F401  (the train extra; a missing install must fail, not skip)
import pytest

from hrnet_jax.errors import BadInputError
from hrnet_jax.train import (
  cli,
  eval_main,  # noqa: F401  (defines hrnet-eval's flags: --batch_size)
  trainer,
)
from hrnet_jax.train import main as train_main
from hrnet_jax.train.data import tfdata
from hrnet_jax.train.data.base import DatasetInfo
from hrnet_jax.train.recipes import digits, finetune


def test_dataset_spec_is_one_flag():
  assert cli.split_dataset('folder:photos') == ('folder', 'photos')
  assert cli.split_dataset('seg_folder:/d/x:y') == ('seg_folder', '/d/x:y')
  assert cli.split_dataset('tf_flowers') == ('tf_flowers', '')
  assert cli.split_dataset('mnist:3.0.1') == ('mnist:3.0.1', '')  # a TFDS version, not a folder
  argv = ['prog', '--config', 'finetune', '--config.dataset=folder:photos', '--config.dataset', 'x']
  assert cli.normalize_argv(argv) == [
    'prog',
    '--config',
    'finetune',
    '--config.dataset.name=folder',
    '--config.dataset.folder=photos',
    '--config.dataset.name=x',
    '--config.dataset.folder=',  # a TFDS name clears a recipe's folder
  ]


def test_dashed_long_flags_are_absl_names():
  assert train_main.PROG == 'hrnet-train'  # its flags are defined in this process
  argv = [
    'prog',
    '--batch-size=8',
    '--data-dir',
    '/d',
    '--no-json',
    '--process_id=1',
    '--coordinator-address=h:1',
    '--no-such-flag=1',
    '--config.input.image_size=32',
    '--',
    '--batch-size=1',
  ]
  assert cli.normalize_argv(argv) == [
    'prog',
    '--batch_size=8',
    '--data_dir',
    '/d',
    '--nojson',
    '--process_id=1',
    '--coordinator_address=h:1',
    '--no-such-flag=1',  # left for absl to name
    '--config.input.image_size=32',
    '--',
    '--batch-size=1',
  ]


@pytest.mark.parametrize('form', ['space', 'equals'])
def test_both_config_forms_are_one_error_line(tmp_path, monkeypatch, capsys, form):
  """``--config FILE`` (the form the docs use) and ``--config=FILE``: an unknown field is one
  line with the close names, a missing file one line; exit 2 both ways."""
  recipe = digits.__file__
  config = ['--config', recipe] if form == 'space' else [f'--config={recipe}']
  missing = ['--config', str(tmp_path / 'nope.py')] if form == 'space' else []
  missing = missing or [f'--config={tmp_path / "nope.py"}']
  for args, expected in (
    (
      [*config, '--config.batchsize=3'],
      'hrnet-train: error: --config.batchsize: no such field (did you mean --config.batch_size',
    ),
    (missing, f'hrnet-train: error: --config={tmp_path / "nope.py"}: no such file or recipe'),
  ):
    argv = ['hrnet-train', *args, f'--workdir={tmp_path / "w"}']
    monkeypatch.setattr(sys, 'argv', argv)  # ml_collections reads the overrides there
    with pytest.raises(SystemExit) as e:
      cli.parse_flags('hrnet-train', argv)
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_folder_splits_slice_each_class_in_percent():
  assert tfdata.folder_split('train') == ('train', 0.0, 100.0)
  assert tfdata.folder_split('train[:90%]') == ('train', 0.0, 90.0)
  assert tfdata.folder_split('train[-10%:]') == ('train', 90.0, 100.0)
  with pytest.raises(ValueError, match=r"folder split 'train\[:10\]'"):
    tfdata.folder_split('train[:10]')
  for n in range(1, 12):
    files = [f'{i:02d}.png' for i in range(n)]
    head, tail = tfdata._slice_files(files, 0, 90), tfdata._slice_files(files, 90, 100)
    assert head + tail == files  # complementary: no overlap, no gap


def test_a_folder_is_never_a_tfds_download():
  c = finetune.get_config()
  c.dataset.folder = 'photos'  # without name=folder: the silent tf_flowers download
  with pytest.raises(ValueError, match='pass --config.dataset=folder:photos'):
    tfdata.TFDSSource(c.dataset, process_count=1)


def test_finetune_takes_the_arch_of_the_pretrained_folder(tmp_path):
  pre = tmp_path / 'pre'
  pre.mkdir()
  (pre / 'config.json').write_text(json.dumps({'arch': 'hrnet_w30', 'pretrained_cfg': None}))
  c = finetune.get_config()
  with pytest.raises(ValueError, match='--config.pretrained=DIR'):  # required, checked first
    trainer.resolve_model(c)
  c.pretrained = str(pre)
  resolved = trainer.resolve_model(c)
  assert resolved.model == 'hrnet_w30' and c.model == ''  # a copy: the caller's is unchanged
  c.model = 'hrnet_w18'  # named explicitly (a dense model on a classifier's weights): kept
  assert trainer.resolve_model(c).model == 'hrnet_w18'
  c.model, c.pretrained = '', ''
  with pytest.raises(ValueError, match="config.model=''"):
    trainer.resolve_model(c)
  (tmp_path / 'run').mkdir()
  (tmp_path / 'run' / trainer.CONFIG_FILE).write_text('{}')
  c.pretrained = str(tmp_path / 'run')
  with pytest.raises(
    BadInputError, match='a training workdir, not a release folder; pass its best/'
  ):
    trainer.resolve_model(c)


def test_class_names_of_trained_weights():
  info = lambda n, names=None: DatasetInfo(n, 10, 2, names)
  assert trainer.class_names(info(3, ('cat', 'coffee', 'rocket')), {'class_names': list('ab')}) == [
    'cat',
    'coffee',
    'rocket',
  ]
  # A dataset without names (a TFDS label without names) keeps the checkpoint's when they fit.
  assert trainer.class_names(info(2), {'class_names': ['a', 'b']}) == ['a', 'b']
  assert trainer.class_names(info(3), {'class_names': ['a', 'b']}) is None
  assert trainer.class_names(info(3), None) is None


def test_eval_names_a_class_mismatch():
  assert eval_main.class_mismatch(3, ('a', 'b', 'c'), 3, ['a', 'b', 'c']) is None
  assert eval_main.class_mismatch(3, ('a', 'b', 'c'), 3, None) is None
  assert eval_main.class_mismatch(3, None, 1000, None) == (
    '3 classes, but the checkpoint predicts 1000'
  )
  text = eval_main.class_mismatch(5, tuple('abcde'), 5, list('edcba'), shown=2)
  assert text == (
    "other class names than the checkpoint (label 0 is 'a', class 0 'e', label 1 is 'b', "
    "class 1 'd' and 2 more)"
  )
