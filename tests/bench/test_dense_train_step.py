"""``benchmarks.dense_train_step`` on tiny inputs, not its numbers: in mmpose's benchmarked
``TopdownPoseEstimator.train_step`` on the pose batch, the loss equals our pose task's loss on
the heatmaps that step computed (the batch means the same on both sides) and the weights move;
mmseg's worker times a step into a CSV row of ``COLUMNS``; the driver merges rows per task with
``ratio`` = ours / the oracle's, and refuses bad flags and a foreign ``--out`` (exit 2, nothing
written). Our jitted steps are not compiled here (the W32 pose step alone compiles for minutes on
2 cores); the benchmark's smoke run does that."""

import argparse
import csv

import jax.numpy as jnp
import numpy as np
import pytest
from oracles import assert_close

from benchmarks import dense_train_step as dts
from hrnet_jax.train import tasks
from hrnet_jax.train.recipes import pose_coco_hrnet_w32_256x192


def _spec(size):
  return argparse.Namespace(batch=2, input=size, steps=1, warmup=0, repeats=1, budget_s=0.0, seed=0)


def test_pose_batch_is_what_mmpose_reads():
  size = (64, 32)  # H != W: a transposed heatmap would not fit
  arrays = dts.pose_arrays(2, size, seed=1)
  model, optim_wrapper, data = dts.mmpose_oracle(_spec(size), arrays)
  model.train()
  seen = []  # the head's heatmaps [B, K, h, w] inside the benchmarked step, before the update
  model.head.final_layer.register_forward_hook(lambda m, i, out: seen.append(out.detach()))
  before = [p.detach().clone() for p in model.head.parameters()]
  ref = np.float32(model.train_step(data, optim_wrapper)['loss_kpt'].item())
  assert any((p != q).any() for p, q in zip(model.head.parameters(), before))  # updated

  config = pose_coco_hrnet_w32_256x192.get_config()
  loss_fn = tasks.get_task(config).loss_fn(config)
  heatmaps = jnp.asarray(seen[0].numpy().transpose(0, 2, 3, 1))
  batch = {k: jnp.asarray(v) for k, v in arrays.items()}
  loss, _ = loss_fn(heatmaps, batch)
  assert_close(loss, ref, 'KeypointMSELoss (mmpose train_step) on the benchmark batch')
  unweighted, _ = loss_fn(heatmaps, {**batch, 'target_weight': jnp.ones((2, 17))})
  assert abs(float(unweighted) - float(ref)) > 1e-4  # the zero weights were read


@pytest.fixture(scope='module')
def mmseg_row():
  return dts.worker('segment', 'mmseg', _spec((64, 64)))


def test_mmseg_worker_row(mmseg_row):
  assert set(mmseg_row) == set(dts.COLUMNS) - {'ratio'}
  assert (mmseg_row['task'], mmseg_row['framework'], mmseg_row['model']) == (
    'segment',
    'mmseg',
    'hrnetv2_w18_small_seg',
  )
  assert (mmseg_row['batch'], mmseg_row['input_h'], mmseg_row['input_w']) == (2, 64, 64)
  assert mmseg_row['images_per_sec'] > 0 and 'mmsegmentation=1.2.2' in mmseg_row['versions']


def test_driver_merges_rows_per_task(tmp_path, mmseg_row):
  out = tmp_path / 'dense.csv'
  pose = {'task': 'pose', 'framework': 'mmpose', 'images_per_sec': 1.0}
  dts.write_csv(out, [{**pose, 'framework': 'jax'}, pose, {**mmseg_row, 'ratio': 9.0}])
  rows = {'jax': {**mmseg_row, 'framework': 'jax', 'images_per_sec': 3.0}, 'mmseg': mmseg_row}
  dts.write_csv(out, dts.table(dts.kept_rows(out, 'segment'), rows, 'mmseg'))
  with open(out, newline='') as f:
    reader = csv.DictReader(f)
    assert reader.fieldnames == dts.COLUMNS
    written = list(reader)
  assert [(r['task'], r['framework']) for r in written] == [
    ('pose', 'jax'),
    ('pose', 'mmpose'),
    ('segment', 'jax'),
    ('segment', 'mmseg'),
  ]
  ratio = round(3.0 / mmseg_row['images_per_sec'], 3)
  assert [float(r['ratio']) for r in written[2:]] == [ratio, ratio]
  assert dts.markdown_row(rows).startswith('| segment | hrnetv2_w18_small_seg (mmseg fcn_hr18s) |')


def test_bad_flags_and_foreign_csv(tmp_path, capsys):
  out = tmp_path / 'dense.csv'
  assert dts.main(['--task', 'pose', '--input', '64', '48', '--out', str(out)]) == 2
  assert '--input 64 48' in capsys.readouterr().err and not out.exists()
  out.write_text('model,framework\nx,y\n')
  assert dts.main(['--task', 'segment', '--crop', '64', '64', '--out', str(out)]) == 2
  assert f'--out={out}' in capsys.readouterr().err
  assert out.read_text() == 'model,framework\nx,y\n'
