"""Segmentation end to end through the one trainer and ``hrnet-eval`` (in process): a tiny
``hrnetv2_w18_small_seg`` run on generated digit scenes, its evaluation from the workdir and from
``WORKDIR/model``, sliding-window evaluation, saved predictions that score what was reported, and
bad input refused before the workdir exists.

Kept small for time: 40 x 40 scenes, 2 steps, and the persistent compilation cache on (as the
CLIs have it), so the whole-image evaluations after training's own reuse its compiled program."""

import json

import numpy as np
import pytest
from PIL import Image

from hrnet_jax.errors import BadInputError
from hrnet_jax.metrics import segmentation as seg_metrics
from hrnet_jax.runtime import compile_cache
from hrnet_jax.train import eval_main, losses, tasks, trainer
from hrnet_jax.train.data.digit_scenes import CLASSES, write_digit_scenes
from hrnet_jax.train.recipes import seg_digit_scenes

SIZE = (40, 40)  # slide windows of 32 (the models' smallest input) overlap
STEPS = 2


def _config(root):
  config = seg_digit_scenes.get_config()
  config.dataset.folder = str(root)
  config.input.scale = config.input.crop_size = config.input.test_scale = SIZE
  config.batch_size = config.optimizer.base_batch_size = 2
  config.num_steps = config.eval_every_steps = config.checkpoint.every_steps = STEPS
  config.log_every_steps = 1
  return config


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  compile_cache.enable()  # HRNET_JAX_COMPILATION_CACHE: the session's temp folder (conftest)
  root = tmp_path_factory.mktemp('scenes')
  write_digit_scenes(root, num_train=4, num_val=3, size=SIZE, seed=1)
  workdir = tmp_path_factory.mktemp('run') / 'w'
  summary = trainer.train_and_evaluate(_config(root), str(workdir))
  return root, workdir, summary


def test_train_then_eval_agree(run, tmp_path):
  root, workdir, summary = run
  assert summary['steps'] == STEPS and summary['best_step'] == STEPS
  assert 0 <= summary['mIoU'] <= 100 and summary['best_mIoU'] == summary['mIoU']
  released = json.loads((workdir / 'model' / 'config.json').read_text())
  assert released['arch'] == 'hrnetv2_w18_small_seg' and released['num_classes'] == len(CLASSES)
  assert released['pretrained_cfg']['label_names'] == list(CLASSES)
  lines = [json.loads(x) for x in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert any('eval/mIoU' in x for x in lines) and any('train/loss' in x for x in lines)

  dataset = f'seg_folder:{root}'
  from_workdir = eval_main.evaluate_checkpoint(str(workdir), dataset=dataset, split='val')
  assert from_workdir['mIoU'] == pytest.approx(summary['mIoU'], abs=1e-9)
  assert from_workdir['count'] == 3 and set(from_workdir['IoU']) == set(CLASSES)
  preds = tmp_path / 'preds'
  from_folder = eval_main.evaluate_checkpoint(
    str(workdir / 'model'), dataset=dataset, split='val', save_predictions=str(preds)
  )
  assert from_folder['mIoU'] == pytest.approx(summary['mIoU'], abs=1e-9)

  # The saved label maps are the predictions that were scored.
  totals = {k: 0 for k in seg_metrics.AREA_KEYS}
  for label_file in sorted((root / 'annotations' / 'val').glob('*.png')):
    pred = np.asarray(Image.open(preds / label_file.name))
    label = np.asarray(Image.open(label_file))
    assert pred.shape == label.shape and pred.max() < len(CLASSES)
    areas = seg_metrics.intersect_and_union(pred, label, len(CLASSES), 255)
    totals = {k: totals[k] + np.asarray(areas[k], np.int64) for k in totals}
  again = seg_metrics.segmentation_metrics(totals, CLASSES)
  assert again['mIoU'] == pytest.approx(from_folder['mIoU'], abs=1e-9)
  with pytest.raises(BadInputError, match='not an empty folder'):
    eval_main.evaluate_checkpoint(
      str(workdir / 'model'), dataset=dataset, split='val', save_predictions=str(preds)
    )

  slide = eval_main.evaluate_checkpoint(
    str(workdir),
    dataset=dataset,
    split='val',
    mode='slide',
    crop_size=['32', '32'],
    stride=['8', '8'],
  )
  assert slide['count'] == 3 and 0 <= slide['mIoU'] <= 100
  with pytest.raises(BadInputError, match='--image_size'):
    eval_main.evaluate_checkpoint(str(workdir), dataset=dataset, split='val', image_size=40)
  with pytest.raises(BadInputError, match='segmentation model'):
    eval_main.evaluate_checkpoint(str(workdir), dataset='digits')


def test_bad_label_is_refused_before_the_workdir_exists(tmp_path):
  root = tmp_path / 'scenes'
  write_digit_scenes(root, num_train=2, num_val=1, size=SIZE, seed=2)
  label_file = sorted((root / 'annotations' / 'train').glob('*.png'))[0]
  label = np.asarray(Image.open(label_file)).copy()
  label[0, 0] = 20  # no such class (11 classes, 255 = ignore)
  Image.fromarray(label).save(label_file)
  workdir = tmp_path / 'w'
  with pytest.raises(BadInputError, match=label_file.name):
    trainer.train_and_evaluate(_config(root), str(workdir))
  assert not workdir.exists()


def test_config_loss_reaches_the_pixel_loss():
  """``config.loss`` (avg_non_ignore, OHEM) is what the task's loss computes with."""
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
  labels = rng.integers(0, 3, (2, 16, 16)).astype(np.uint8)
  labels[:, :4] = 255
  config = seg_digit_scenes.get_config()
  config.loss.update(avg_non_ignore=True, ohem_min_kept=50, ohem_thresh=0.7)
  ours = tasks.get_task(config).loss_fn(config)(logits, {'label': labels})[0]
  expected = losses.pixel_cross_entropy(
    logits, labels.astype(np.int32), avg_non_ignore=True, ohem={'thresh': 0.7, 'min_kept': 50}
  )
  plain = losses.pixel_cross_entropy(logits, labels.astype(np.int32))
  assert float(ours) == float(expected) and float(ours) != float(plain)
