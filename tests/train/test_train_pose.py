"""Pose end to end through the one trainer: a tiny ``hrnet_w18_small_pose`` run on generated
pose scenes for a few steps, its COCO keypoint AP (flip test, OKS-NMS, rescoring), which equals
pycocotools' ``COCOeval(iouType='keypoints')`` on the results file the evaluation writes, the
exported release folder, and the Adam / warm-up / multi-step schedule against PyTorch's
``Adam`` + mmengine's ``LinearLR`` x ``MultiStepLR`` arithmetic."""

import contextlib
import io
import json

import jax
import numpy as np
import pytest

import hrnet_jax
from hrnet_jax.errors import BadInputError
from hrnet_jax.train import eval_main, trainer
from hrnet_jax.train import train_state as ts
from hrnet_jax.train.data import pose as pose_data
from hrnet_jax.train.data.pose_scenes import write_pose_scenes
from hrnet_jax.train.recipes import pose_scenes
from hrnet_jax.train.tasks import pose as pose_task


def _config(root):
  config = pose_scenes.get_config()
  config.dataset.folder = str(root)
  config.input.input_size, config.input.heatmap_size = (48, 64), (12, 16)
  config.input.workers = 2
  config.batch_size = config.optimizer.base_batch_size = config.eval_batch_size = 4
  config.num_epochs, config.num_steps = 0, 4
  config.eval_every_steps = config.checkpoint.every_steps = 4
  config.optimizer.warmup_steps = 2
  config.log_every_steps = 2
  return config


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  root = tmp_path_factory.mktemp('pose_scenes')
  write_pose_scenes(root, num_train=4, num_val=3, size=(64, 64), seed=2)
  workdir = tmp_path_factory.mktemp('run') / 'w'
  config = _config(root)
  return root, workdir, config, trainer.train_and_evaluate(config, str(workdir))


def test_train_then_score(run, tmp_path):
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval

  root, workdir, config, summary = run
  assert summary['steps'] == 4 and summary['best_step'] == 4
  assert 0 <= summary['AP'] <= 1 and summary['best_AP'] == summary['AP']
  lines = [json.loads(x) for x in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert any('eval/AP' in x for x in lines) and any('train/loss' in x for x in lines)
  released = json.loads((workdir / 'model' / 'config.json').read_text())
  assert released['arch'] == 'hrnet_w18_small_pose' and released['num_keypoints'] == 17
  assert released['pretrained_cfg']['input_size'] == [3, 64, 48]

  # The exported weights, scored again by hrnet-eval (writing the results file), score what
  # training reported; COCOeval itself on that file gives the same AP.
  results_file = tmp_path / 'results.json'
  results = eval_main.evaluate_checkpoint(
    str(workdir / 'model'),
    dataset=f'coco_keypoints:{root}',
    split='val',
    batch_size=4,
    save_predictions=str(results_file),
  )
  assert results['AP'] == pytest.approx(summary['AP'], abs=1e-9)
  num_eval = pose_data.PoseInput(
    config, process_index=0, process_count=1, train=False
  ).info.num_eval
  assert results['count'] == num_eval > 0
  with pytest.raises(BadInputError, match='exists'):  # never replaces a file
    eval_main.evaluate_checkpoint(
      str(workdir / 'model'),
      dataset=f'coco_keypoints:{root}',
      split='val',
      batch_size=4,
      save_predictions=str(results_file),
    )
  with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(str(pose_data.annotation_file(str(root), 'val')))
    coco_eval = COCOeval(gt, gt.loadRes(str(results_file)), iouType='keypoints')
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
  assert results['AP'] == pytest.approx(coco_eval.stats[0], abs=1e-12)
  assert results['AR'] == pytest.approx(coco_eval.stats[5], abs=1e-12)
  written = json.loads(results_file.read_text())
  assert {r['category_id'] for r in written} == {1} and len(written[0]['keypoints']) == 51


def test_adam_warmup_multistep_matches_torch():
  """lr and parameters after 6 steps of ``create_optimizer`` = torch ``Adam`` under mmengine's
  warm-up (``LinearLR(start_factor=0.1, end=3)``) and ``MultiStepLR(milestones=[2], gamma=0.1)``
  at 2 steps per epoch."""
  import torch
  from mmengine.optim.scheduler import LinearLR, MultiStepLR

  config = pose_scenes.get_config()
  config.batch_size = config.optimizer.base_batch_size = 8
  config.optimizer.base_lr = 0.01
  config.optimizer.warmup_steps, config.optimizer.warmup_factor = 3, 0.1
  config.optimizer.decay_epochs = (2,)
  spe = 2
  tx = ts.create_optimizer(config, spe)
  lr_fn = ts.learning_rate_schedule(config, spe)
  rng = np.random.default_rng(0)
  p0 = rng.standard_normal((3, 4)).astype(np.float32)
  grads = rng.standard_normal((6, 3, 4)).astype(np.float32)

  w = torch.nn.Parameter(torch.from_numpy(p0.copy()))
  opt = torch.optim.Adam([w], lr=0.01)
  warm = LinearLR(opt, start_factor=0.1, begin=0, end=3, by_epoch=False)
  steps = MultiStepLR(opt, milestones=[2 * spe], gamma=0.1, by_epoch=False)
  params, state = {'w': jax.numpy.asarray(p0)}, None
  state = tx.init(params)
  import optax

  for i, g in enumerate(grads):
    assert float(lr_fn(i)) == pytest.approx(opt.param_groups[0]['lr'], rel=1e-6)
    w.grad = torch.from_numpy(g.copy())
    opt.step()
    warm.step()
    steps.step()
    updates, state = tx.update({'w': jax.numpy.asarray(g)}, state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_allclose(np.asarray(params['w']), w.detach().numpy(), rtol=1e-5, atol=1e-6)
