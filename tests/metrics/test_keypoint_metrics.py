"""Top-down keypoint scoring against its oracles: OKS, OKS-NMS, soft OKS-NMS and the flip of
the flip test against mmpose's functions; the rescoring + NMS + results file against mmpose's
``CocoMetric`` (``format_only``: the JSON it writes); ``evaluate_keypoints`` against a direct
pycocotools ``COCOeval(iouType='keypoints')`` run on the same files."""

import contextlib
import io
import json

import jax
import mm_shim
import numpy as np
import pytest
import torch

from hrnet_jax.errors import BadInputError
from hrnet_jax.metrics import keypoints as kp
from hrnet_jax.train import coco_keypoints

mm_shim.install()
K = 17


def _mm_metainfo():
  from mmpose.datasets.datasets.utils import parse_pose_metainfo

  with pytest.warns(UserWarning, match='matched config file'):  # found inside mmpose's .mim
    return parse_pose_metainfo(dict(from_file='configs/_base_/datasets/coco.py'))


def _detections(rng, people=4, copies=5, k=K):
  """One image's detections [N, K, 3], scores [N], areas [N]: each person detected ``copies``
  times with jitter growing per copy, so OKS-NMS at 0.9 / 0.5 keeps some copies and drops some."""
  centres = rng.uniform(50, 400, (people, 1, 2))
  poses = centres + rng.normal(0, 40, (people, k, 2))
  jitter = rng.normal(0, 1, (people, copies, k, 2)) * np.arange(copies)[None, :, None, None] * 3
  xy = (poses[:, None] + jitter).reshape(-1, k, 2)
  scores_k = rng.uniform(0, 1, (len(xy), k, 1))
  dets = np.concatenate([xy, scores_k], -1)
  return dets, rng.uniform(0.3, 1, len(xy)), rng.uniform(60**2, 200**2, len(xy))


def test_coco_metadata_is_mmposes_and_pycocotools():
  from pycocotools.cocoeval import Params

  meta = _mm_metainfo()
  assert list(kp.COCO_FLIP_INDICES) == list(meta['flip_indices'])
  np.testing.assert_array_equal(np.float32(kp.COCO_SIGMAS), meta['sigmas'])
  np.testing.assert_allclose(kp.COCO_SIGMAS, Params(iouType='keypoints').kpt_oks_sigmas, 1e-15)


@pytest.mark.parametrize('vis_thr', [None, 0.3])
def test_oks_iou_and_nms_equal_mmpose(vis_thr):
  from mmpose.evaluation.functional import oks_nms, soft_oks_nms
  from mmpose.evaluation.functional.nms import oks_iou

  rng = np.random.default_rng(0)
  sigmas = _mm_metainfo()['sigmas']
  kept_some = 0
  for trial in range(4):
    dets, scores, areas = _detections(rng)
    ours = kp.oks_iou(dets[0], dets[1:], areas[0], areas[1:], sigmas, vis_thr)
    ref = oks_iou(
      dets[0].reshape(-1), dets[1:].reshape(len(dets) - 1, -1), areas[0], areas[1:], sigmas, vis_thr
    )
    assert ours.dtype == ref.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)
    db = [dict(keypoints=d, score=s, area=a) for d, s, a in zip(dets, scores, areas)]
    for thr in (0.9, 0.5):
      keep = kp.oks_nms(dets, scores, areas, thr, sigmas, vis_thr)
      np.testing.assert_array_equal(keep, oks_nms(db, thr, sigmas, vis_thr))
      kept_some += 4 < len(keep) < len(dets)
      soft = kp.soft_oks_nms(dets, scores, areas, thr, 12, sigmas, vis_thr)
      np.testing.assert_array_equal(soft, soft_oks_nms(db, thr, 12, sigmas, vis_thr))
  assert kept_some >= 4, 'the detections should make NMS drop some copies and keep others'


def _mm_coco_metric_results(tmp_path, preds, sigmas, nms_mode):
  """The results JSON mmpose's CocoMetric writes for ``preds`` (format_only: no evaluation)."""
  from mmpose.evaluation.metrics import CocoMetric

  metric = CocoMetric(format_only=True, outfile_prefix=str(tmp_path / 'mm'), nms_mode=nms_mode)
  metric.coco = object()  # set, so that no ground truth is converted (format_only needs none)
  metric.dataset_meta = dict(num_keypoints=K, sigmas=sigmas)
  metric.compute_metrics([(p, {}) for p in preds])
  return json.loads((tmp_path / 'mm.keypoints.json').read_text())


@pytest.mark.parametrize('nms_mode', ['oks_nms', 'soft_oks_nms', 'none'])
def test_rescoring_and_nms_write_what_coco_metric_writes(tmp_path, nms_mode):
  """``select_topdown`` + ``write_results`` == CocoMetric (score_mode='bbox_keypoint',
  keypoint_score_thr=0.2, nms_thr=0.9) on the same top-down instances (one per box, as its
  ``process`` gets them), float32 as the codecs give them."""
  rng = np.random.default_rng(1)
  sigmas = _mm_metainfo()['sigmas']
  preds, rows = [], []
  instance_id = 0
  for image_id in (7, 3, 11):
    dets, bbox_scores, areas = _detections(rng, people=3, copies=4)
    dets = dets.astype(np.float32)
    dets[0, :, 2] = 0.1  # no keypoint above the threshold: score 0
    dets[1, :5, 2] = 0.2  # at the threshold: not counted
    for d, b, a in zip(dets, bbox_scores.astype(np.float32), areas.astype(np.float32)):
      instance_id += 1
      preds.append(
        dict(
          id=instance_id,
          img_id=image_id,
          category_id=1,
          keypoints=d[None, :, :2],
          keypoint_scores=d[None, :, 2],
          bbox_scores=b[None],
          areas=a[None],
        )
      )
      rows.append((image_id, d, b, a))
  ref = _mm_coco_metric_results(tmp_path, preds, sigmas, nms_mode)

  image_ids = np.array([r[0] for r in rows])
  dets = np.stack([r[1] for r in rows])
  keep, scores = kp.select_topdown(
    image_ids,
    dets[..., :2],
    dets[..., 2],
    np.stack([r[2] for r in rows]),
    np.stack([r[3] for r in rows]),
    sigmas=sigmas,
    nms_mode=nms_mode,
  )
  results = [
    dict(image_id=image_ids[i], category_id=1, keypoints=dets[i], score=scores[i]) for i in keep
  ]
  ours = json.loads(coco_keypoints.write_results(tmp_path / 'ours.json', results).read_text())
  assert ours == ref
  if nms_mode == 'oks_nms':  # soft NMS reorders (max_dets 20 > 12 instances an image)
    assert len(ours) < len(rows)
  assert np.count_nonzero(scores == 0) == 3  # one per image has no keypoint score above 0.2


def test_flip_heatmaps_equal_mmpose():
  from mmpose.models.utils.tta import flip_heatmaps

  rng = np.random.default_rng(2)
  nchw = rng.normal(size=(2, K, 8, 6)).astype(np.float32)
  nhwc = nchw.transpose(0, 2, 3, 1)
  flip = list(kp.COCO_FLIP_INDICES)
  for shift in (True, False):
    ref = flip_heatmaps(torch.from_numpy(nchw), flip, 'heatmap', shift).numpy()
    ref = ref.transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(kp.flip_heatmaps(nhwc, flip, shift), ref)
    jitted = jax.jit(lambda h, s=shift: kp.flip_heatmaps(h, flip, s))(nhwc)
    np.testing.assert_array_equal(np.asarray(jitted), ref)
  with pytest.raises(ValueError, match='flip_indices: 3 indices for 17 keypoint channels'):
    kp.flip_heatmaps(nhwc, [0, 2, 1])


def _coco_set(rng, k=K):
  """A small COCO keypoint set: 3 images, 2-4 persons each (medium and large), visibility 0 / 1 /
  2, one person with no labelled keypoint (COCOeval ignores it)."""
  images, annotations = [], []
  for image_id in (1, 2, 5):
    images.append(dict(id=image_id, file_name=f'{image_id:012d}.jpg', width=640, height=480))
    for _ in range(rng.integers(2, 5)):
      w, h = rng.uniform(40, 260, 2)
      x0, y0 = rng.uniform(0, 300, 2)
      xy = np.stack([x0 + rng.uniform(0, w, k), y0 + rng.uniform(0, h, k)], -1)
      v = rng.choice([0, 1, 2], k, p=[0.2, 0.3, 0.5])
      if not annotations:
        v[:] = 0
      xy[v == 0] = 0
      annotations.append(
        dict(
          id=len(annotations) + 1,
          image_id=image_id,
          category_id=1,
          iscrowd=0,
          bbox=[x0, y0, w, h],
          area=w * h * 0.6,
          num_keypoints=int((v > 0).sum()),
          keypoints=np.concatenate([xy, v[:, None]], -1).reshape(-1).tolist(),
        )
      )
  return dict(
    images=images,
    annotations=annotations,
    categories=[dict(id=1, name='person', keypoints=[str(i) for i in range(k)])],
  )


def _predictions(rng, dataset, noise):
  """One prediction per person, keypoints moved by ``noise`` x 5% of the person's size; the
  perfect ones (``noise`` 0) skip the unlabelled person, which no prediction can match."""
  out = []
  for ann in dataset['annotations']:
    if noise == 0 and ann['num_keypoints'] == 0:
      continue
    xyv = np.asarray(ann['keypoints'], float).reshape(-1, 3)
    xy = xyv[:, :2] + rng.normal(0, noise, xyv[:, :2].shape) * np.sqrt(ann['area']) * 0.05
    scores = rng.uniform(0.5, 1, len(xy))
    out.append(
      dict(
        image_id=ann['image_id'],
        category_id=1,
        keypoints=np.concatenate([xy, scores[:, None]], -1),
        score=1.0 if noise == 0 else float(rng.uniform(0.2, 1)),
      )
    )
  return out


def _direct_cocoeval(annotation_file, results_file, sigmas=None):
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval

  with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(str(annotation_file))
    coco_eval = COCOeval(gt, gt.loadRes(str(results_file)), 'keypoints')
    if sigmas is not None:
      coco_eval.params.kpt_oks_sigmas = np.asarray(sigmas)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
  return coco_eval.stats


@pytest.mark.parametrize('k', [K, 5])
def test_evaluate_keypoints_is_cocoeval(tmp_path, capsys, k):
  rng = np.random.default_rng(3)
  dataset = _coco_set(rng, k)
  annotation_file = tmp_path / 'person_keypoints_val.json'
  annotation_file.write_text(json.dumps(dataset))
  sigmas = None if k == K else rng.uniform(0.02, 0.1, k).tolist()
  for noise, name in ((1.0, 'perturbed'), (0.0, 'perfect')):
    results_file = coco_keypoints.write_results(
      tmp_path / f'{name}.json', _predictions(rng, dataset, noise)
    )
    ours = coco_keypoints.evaluate_keypoints(annotation_file, results_file, sigmas)
    ref = _direct_cocoeval(annotation_file, results_file, sigmas)
    assert list(ours) == list(coco_keypoints.STATS)
    assert list(ours.values()) == ref.tolist(), name
    from_dict = coco_keypoints.evaluate_keypoints(dataset, results_file, sigmas)
    assert from_dict == ours
    if noise:
      assert 0 < ours['AP'] < 1
    else:
      assert ours['AP'] == 1.0 and ours['AR'] == 1.0
  assert capsys.readouterr().out == ''  # pycocotools' prints are kept off the terminal


def test_bad_annotations_and_results_are_refused(tmp_path):
  rng = np.random.default_rng(4)
  dataset = _coco_set(rng)
  good = coco_keypoints.write_results(tmp_path / 'r.json', _predictions(rng, dataset, 1.0))
  with pytest.raises(BadInputError, match="annotations: not a COCO annotation file \\(no 'images'"):
    coco_keypoints.evaluate_keypoints({'annotations': []}, good)
  bad = json.loads(json.dumps(dataset))
  bad['annotations'][1]['keypoints'] = bad['annotations'][1]['keypoints'][:-3]
  with pytest.raises(BadInputError, match='annotation 2 has 48 keypoint values, not 3 x 17'):
    coco_keypoints.evaluate_keypoints(bad, good)
  (tmp_path / 'junk.json').write_text('{not json')
  with pytest.raises(BadInputError, match='junk.json: not a JSON COCO annotation file'):
    coco_keypoints.evaluate_keypoints(tmp_path / 'junk.json', good)
  stray = coco_keypoints.write_results(
    tmp_path / 'stray.json', [dict(image_id=99, category_id=1, keypoints=np.zeros((K, 3)), score=1)]
  )
  with pytest.raises(BadInputError, match='stray.json: result 0 is for image 99'):
    coco_keypoints.evaluate_keypoints(dataset, stray)
  with pytest.raises(BadInputError, match='empty.json: no predictions'):
    coco_keypoints.evaluate_keypoints(
      dataset, coco_keypoints.write_results(tmp_path / 'empty.json', [])
    )
  nan = dict(image_id=1, category_id=1, keypoints=np.full((K, 3), np.nan), score=1)
  with pytest.raises(BadInputError, match='nan.json: result 0 has a non-finite keypoint'):
    coco_keypoints.write_results(tmp_path / 'nan.json', [nan])
  assert not (tmp_path / 'nan.json').exists()
