"""Parity of ``hrnet_jax.metrics.segmentation`` with mmseg ``IoUMetric`` on the same predictions.

Images of three sizes with ignored pixels; class 3 is predicted but in no label, class 4 is in
labels but never predicted, class 5 is in neither (so IoU, Acc and Dice are nan or 0 in every
combination mmseg distinguishes). mmseg's metric is fed through ``process`` with its
``data_samples`` format; our areas equal its per-image ``intersect_and_union``, our values its
unrounded ``total_area_to_metrics`` to 1e-6 and its rounded ``compute_metrics`` to its 2
decimals; the jitted, batched device count (padding rows and padded pixels) equals the host one.
"""

import jax
import jax.numpy as jnp
import mm_shim
import numpy as np
import pytest
import torch

from hrnet_jax.metrics.segmentation import AREA_KEYS, intersect_and_union, segmentation_metrics

mm_shim.install()

NUM_CLASSES = 6
CLASSES = ('road', 'car', 'sky', 'predicted_only', 'labelled_only', 'absent')
SIZES = ((17, 23), (32, 20), (9, 41))


def _images():
  rs = np.random.RandomState(0)
  preds, labels = [], []
  for h, w in SIZES:
    label = rs.choice([0, 1, 2, 4], size=(h, w))
    pred = np.where(rs.rand(h, w) < 0.6, label, rs.choice([0, 1, 2, 3], size=(h, w)))
    pred[pred == 4] = 0  # class 4 is never predicted
    label[rs.rand(h, w) < 0.15] = 255
    preds.append(pred.astype(np.int64))
    labels.append(label.astype(np.int64))
  assert not any((p == 4).any() or (p == 5).any() for p in preds)
  assert not any(((l == 3) | (l == 5)).any() for l in labels)
  return preds, labels


def _mmseg_metric(metrics):
  from mmseg.evaluation import IoUMetric

  metric = IoUMetric(iou_metrics=list(metrics))
  metric.dataset_meta = {'classes': CLASSES}
  return metric


def _sample(pred, label):
  return {
    'pred_sem_seg': {'data': torch.from_numpy(pred[None])},
    'gt_sem_seg': {'data': torch.from_numpy(label[None])},
  }


@pytest.mark.parametrize('metrics', [('mIoU', 'mDice'), ('mIoU',), ('mDice',)])
def test_equals_mmseg_iou_metric(metrics):
  preds, labels = _images()
  metric = _mmseg_metric(metrics)
  metric.process({}, [_sample(p, l) for p, l in zip(preds, labels)])

  totals = {k: np.zeros(NUM_CLASSES, np.int64) for k in AREA_KEYS}
  for (pred, label), ref in zip(zip(preds, labels), metric.results):
    areas = intersect_and_union(pred, label, NUM_CLASSES)
    for key, ref_area in zip(AREA_KEYS, ref):
      assert areas[key].dtype == np.int64
      np.testing.assert_array_equal(areas[key], ref_area.numpy(), err_msg=key)
      totals[key] += areas[key]
  ours = segmentation_metrics(totals, CLASSES, metrics)

  ref = metric.total_area_to_metrics(
    *(sum(r[i] for r in metric.results) for i in range(4)), metrics
  )
  expected_keys = {'aAcc', *(f'm{k}' for k in ref if k != 'aAcc'), *(k for k in ref if k != 'aAcc')}
  assert set(ours) == expected_keys
  np.testing.assert_allclose(ours['aAcc'] / 100, ref['aAcc'], rtol=0, atol=1e-6)
  for key, values in ref.items():
    if key == 'aAcc':
      continue
    per_class = np.array([ours[key][name] for name in CLASSES]) / 100
    assert list(ours[key]) == list(CLASSES)
    np.testing.assert_array_equal(np.isnan(per_class), np.isnan(values), err_msg=key)
    np.testing.assert_allclose(per_class, values, rtol=0, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(ours[f'm{key}'] / 100, np.nanmean(values), rtol=0, atol=1e-6)
  # The cases this data set is made of: nan where mmseg has nan, 0 where it has 0.
  if 'IoU' in ours:
    assert ours['IoU']['predicted_only'] == 0 and ours['IoU']['labelled_only'] == 0
    assert np.isnan(ours['IoU']['absent'])
  assert np.isnan(ours['Acc']['predicted_only']) and ours['Acc']['labelled_only'] == 0

  rounded = metric.compute_metrics(metric.results)
  assert set(rounded) == {k for k in ours if k in ('aAcc', 'mIoU', 'mAcc', 'mDice')}
  for key, value in rounded.items():
    assert abs(ours[key] - float(value)) <= 0.005 + 1e-6, (key, ours[key], value)


def test_device_count_equals_host():
  preds, labels = _images()
  host = {
    k: sum(intersect_and_union(p, l, NUM_CLASSES)[k] for p, l in zip(preds, labels))
    for k in AREA_KEYS
  }
  # One padded batch: every image in a 32x41 frame whose padding is ignored (label 255, any
  # prediction), plus a padding row of garbage that valid=False excludes.
  b, h, w = len(SIZES) + 1, 32, 41
  pred_batch = np.random.RandomState(1).randint(0, NUM_CLASSES, (b, h, w))
  label_batch = np.random.RandomState(2).randint(0, NUM_CLASSES, (b, h, w))
  label_batch[: len(SIZES)] = 255
  for i, (p, l) in enumerate(zip(preds, labels)):
    pred_batch[i, : p.shape[0], : p.shape[1]] = p
    label_batch[i, : l.shape[0], : l.shape[1]] = l
  valid = np.arange(b) < len(SIZES)
  count = jax.jit(intersect_and_union, static_argnums=(2, 3))
  device = count(
    jnp.asarray(pred_batch),
    jnp.asarray(label_batch, jnp.uint8),
    NUM_CLASSES,
    255,
    jnp.asarray(valid),
  )
  for key in AREA_KEYS:
    assert device[key].dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(device[key]), host[key], err_msg=key)
  # [H, W] on device, and a batch on the host with the same padding rule.
  single = count(jnp.asarray(preds[0]), jnp.asarray(labels[0]), NUM_CLASSES, 255)
  host_batch = intersect_and_union(pred_batch, label_batch, NUM_CLASSES, valid=valid)
  for key in AREA_KEYS:
    np.testing.assert_array_equal(
      np.asarray(single[key]), intersect_and_union(preds[0], labels[0], NUM_CLASSES)[key]
    )
    np.testing.assert_array_equal(host_batch[key], host[key], err_msg=key)


def test_ids_outside_the_classes_count_in_no_class_as_mmseg():
  """mmseg's ``torch.histc(min=0, max=C-1)`` drops out-of-range ids: a label 7 that is not
  the ignore index, and a prediction 9."""
  from mmseg.evaluation import IoUMetric

  rs = np.random.RandomState(3)
  pred = rs.randint(0, 4, (12, 10))
  label = rs.randint(0, 4, (12, 10))
  label[0, :5] = 7
  pred[1, :3] = 9
  ref = IoUMetric.intersect_and_union(torch.from_numpy(pred), torch.from_numpy(label), 4, 255)
  ours = intersect_and_union(pred, label, 4)
  on_device = intersect_and_union(jnp.asarray(pred), jnp.asarray(label), 4)
  for key, ref_area in zip(AREA_KEYS, ref):
    np.testing.assert_array_equal(ours[key], ref_area.numpy(), err_msg=key)
    np.testing.assert_array_equal(np.asarray(on_device[key]), ref_area.numpy(), err_msg=key)


def test_bad_inputs_are_refused():
  pred = np.zeros((4, 5), np.int64)
  with pytest.raises(ValueError, match='one shape'):
    intersect_and_union(pred, np.zeros((5, 4), np.int64), 3)
  with pytest.raises(ValueError, match='valid'):
    intersect_and_union(pred[None], pred[None], 3, valid=np.ones(2, bool))
  totals = intersect_and_union(pred, pred, 3)
  with pytest.raises(ValueError, match='mFscore'):
    segmentation_metrics(totals, metrics=('mFscore',))
  with pytest.raises(ValueError, match='area_union'):
    segmentation_metrics({k: v for k, v in totals.items() if k != 'area_union'})
  with pytest.raises(ValueError, match='2 class names for 3'):
    segmentation_metrics(totals, ['a', 'b'])
  assert list(segmentation_metrics(totals)['IoU']) == ['0', '1', '2']
