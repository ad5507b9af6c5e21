"""The top-down pose input (``hrnet_jax.train.data.pose``) against mmpose's own transforms, on a
generated pose scenes set: the un-augmented crop (``GetBBoxCenterScale`` -> ``TopdownAffine``,
with and without UDP) and the deterministic augmentations (``RandomFlip(prob=1)`` ->
``RandomHalfBody(prob=1)`` -> ``RandomBBoxTransform`` without shift / scale / rotation) through
``GenerateTarget``, pixel for pixel; then the order (per seed, resumable, per host) and the bad
input refused."""

import dataclasses
import json
import pathlib
import runpy

import mm_shim
import numpy as np
import pytest

from hrnet_jax.errors import BadInputError
from hrnet_jax.metrics.keypoints import COCO_FLIP_INDICES
from hrnet_jax.train.data import pose
from hrnet_jax.train.data.pose_scenes import write_pose_scenes
from hrnet_jax.train.recipes import pose as pose_recipe

mm_shim.install()


@pytest.fixture(scope='module')
def root(tmp_path_factory):
  root = tmp_path_factory.mktemp('pose_scenes')
  write_pose_scenes(root, num_train=6, num_val=2, size=(96, 80), seed=3)
  return root


def _config(root, **input_overrides):
  config = pose_recipe.get_config()
  config.dataset.folder = str(root)
  config.input.input_size, config.input.heatmap_size = (48, 64), (12, 16)
  config.input.workers = 2
  config.batch_size, config.eval_batch_size = 4, 4
  for k, v in input_overrides.items():
    config.input[k] = v
  return config


def _mm(name, **kwargs):
  import mmpose.datasets.transforms as transforms

  return getattr(transforms, name)(**kwargs)


def _mm_results(data, i, image):
  ins = data._train
  return {
    'img': image.copy(),
    'img_shape': image.shape[:2],
    'bbox': ins.boxes[i][None].copy(),
    'keypoints': ins.keypoints[i][None].copy(),
    'keypoints_visible': ins.visible[i][None].copy(),
    'flip_indices': list(COCO_FLIP_INDICES),
    'upper_body_ids': list(pose.COCO_UPPER_BODY),
    'lower_body_ids': list(pose.COCO_LOWER_BODY),
  }


@pytest.mark.parametrize('codec', ['msra', 'udp'])
def test_eval_crop_equals_mmpose(root, codec):
  data = pose.PoseInput(_config(root, codec=codec), process_index=0, process_count=1)
  ins = data.eval_instances
  affine = _mm('TopdownAffine', input_size=(48, 64), use_udp=codec == 'udp')
  assert len(ins) >= 2
  for i in range(len(ins)):
    image = pose.read_image(ins.paths[i], '')
    ref = affine(_mm('GetBBoxCenterScale', padding=1.25)(_mm_results_eval(ins, i, image)))
    ours = data.eval_example(ins, i)
    np.testing.assert_array_equal(ours['image'], ref['img'])
    np.testing.assert_array_equal(ours['center'], ref['input_center'])
    np.testing.assert_array_equal(ours['scale'], ref['input_scale'])


def _mm_results_eval(ins, i, image):
  return {'img': image.copy(), 'bbox': ins.boxes[i][None].copy(), 'img_shape': image.shape[:2]}


@pytest.mark.parametrize(
  'codec,rotate', [('msra', 0.0), ('msra', 30.0), ('udp', 0.0), ('udp', -45.0)]
)
def test_augmented_targets_equal_mmpose(root, codec, rotate):
  """Flip and half body at probability 1 (upper body first), the given rotation, then the crop
  and the targets: mmpose's pipeline with the same choices gives the same crop, keypoints and
  heatmaps."""
  config = _config(root, codec=codec, flip_prob=1.0, half_body_prob=1.0, shift_prob=0.0)
  config.input.scale_factor, config.input.rotate_prob = (1.0, 1.0), 0.0
  data = pose.PoseInput(config, process_index=0, process_count=1)
  data.augment = dataclasses.replace(data.augment, upper_prioritized_prob=1.0)
  encoder = dict(
    type='UDPHeatmap' if codec == 'udp' else 'MSRAHeatmap',
    input_size=(48, 64),
    heatmap_size=(12, 16),
    sigma=2.0,
  )
  pipeline = [
    _mm('GetBBoxCenterScale', padding=1.25),
    _mm('RandomFlip', prob=1.0, direction='horizontal'),
    _mm('RandomHalfBody', prob=1.0, upper_prioritized_prob=1.0),
    _mm('TopdownAffine', input_size=(48, 64), use_udp=codec == 'udp'),
    _mm('GenerateTarget', encoder=encoder),
  ]
  half_bodies = 0
  for i in range(len(data._train)):
    image = pose.read_image(data._train.paths[i], '')
    results = _mm_results(data, i, image)
    for t in pipeline[:3]:
      results = t(results)
    results['bbox_rotation'] = np.array([rotate], np.float32)
    for t in pipeline[3:]:
      results = t(results)
    # The same steps here: train_example with the rotation given to the crop.
    ins = data._train
    flipped = image[:, ::-1]
    center, scale = pose.bbox_center_scale(ins.boxes[i], 1.25)
    center = np.array([image.shape[1] - center[0] - 1, center[1]], np.float32)
    flip = np.asarray(COCO_FLIP_INDICES)
    keypoints, visible = ins.keypoints[i][flip].copy(), ins.visible[i][flip]
    keypoints[:, 0] = image.shape[1] - 1 - keypoints[:, 0]
    half = pose.half_body(keypoints, visible, data.meta, data.augment, np.random.default_rng(0))
    if half is not None:
      half_bodies += 1
      center, scale = half
    ours = data._crop(np.ascontiguousarray(flipped), center, scale, rotate, keypoints, visible)
    np.testing.assert_array_equal(ours['image'], results['img'])
    np.testing.assert_allclose(
      ours['heatmap'], results['heatmaps'].transpose(1, 2, 0), atol=1e-6, rtol=0
    )
    np.testing.assert_array_equal(ours['target_weight'], results['keypoint_weights'][0])
    if rotate == 0.0:  # the whole train_example draws nothing else with these settings
      again = data.train_example(i, np.random.default_rng(0))
      np.testing.assert_array_equal(again['image'], ours['image'])
  assert half_bodies > 0  # the half-body branch was compared


def test_order_deterministic_resumable_sharded(root):
  config = _config(root)
  config.batch_size = 2
  one = pose.PoseInput(config, process_index=0, process_count=1)
  assert one.steps_per_epoch == len(one._train) // 2 and one.info.num_classes == 17
  stream = one.train_batches(0)
  first = [next(stream) for _ in range(one.steps_per_epoch + 1)]  # crosses an epoch
  again = one.train_batches(0)
  np.testing.assert_array_equal(next(again)['image'], first[0]['image'])
  resumed = next(one.train_batches(2))
  np.testing.assert_array_equal(resumed['image'], first[2]['image'])
  np.testing.assert_array_equal(resumed['heatmap'], first[2]['heatmap'])
  hosts = [pose.PoseInput(config, process_index=p, process_count=2) for p in (0, 1)]
  parts = [next(h.train_batches(1)) for h in hosts]
  for key in ('image', 'heatmap', 'target_weight'):
    np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), first[1][key])
  assert first[0]['heatmap'].shape == (2, 16, 12, 17) and first[0]['image'].shape == (2, 64, 48, 3)
  config.seed = 1
  other = next(pose.PoseInput(config, process_index=0, process_count=1).train_batches(0))
  assert not np.array_equal(other['image'], first[0]['image'])

  # Eval: every instance once over the hosts, padding masked.
  rows = np.concatenate([h.eval_rows()[h.eval_rows() >= 0] for h in hosts])
  masks = [np.concatenate([b['mask'] for b in h.eval_batches()]) for h in hosts]
  index = [np.concatenate([b['index'] for b in h.eval_batches()]) for h in hosts]
  seen = np.concatenate([i[m] for i, m in zip(index, masks)])
  assert sorted(seen) == list(range(one.info.num_eval)) and len(rows) >= len(seen)


def _write(root, split, data):
  (root / 'annotations' / f'person_keypoints_{split}.json').write_text(json.dumps(data))


def test_bad_input(root, tmp_path):
  import shutil

  bad = tmp_path / 'bad'
  shutil.copytree(root, bad)
  path = bad / 'annotations' / 'person_keypoints_train.json'
  good = json.loads(path.read_text())
  config = _config(bad)

  def refused(data, *match):
    _write(bad, 'train', data)
    with pytest.raises(BadInputError) as info:
      pose.PoseInput(config, process_index=0, process_count=1)
    for m in match:
      assert m in str(info.value)

  refused([1, 2], str(path), 'not a COCO annotation file')
  ann = good['annotations'][1]
  wrong = json.loads(json.dumps(good))
  wrong['annotations'][1]['keypoints'] = ann['keypoints'][:-3]
  refused(wrong, str(path), f'annotation {ann["id"]}', '48 keypoint values')
  outside = json.loads(json.dumps(good))
  outside['annotations'][1]['bbox'] = [500.0, 10.0, 20.0, 20.0]
  refused(outside, str(path), f'annotation {ann["id"]}', 'outside its image')
  missing = json.loads(json.dumps(good))
  next(im for im in missing['images'] if im['id'] == ann['image_id'])['file_name'] = 'gone.jpg'
  first = next(a for a in good['annotations'] if a['image_id'] == ann['image_id'])
  refused(missing, 'gone.jpg', f'annotation {first["id"]} of {path}')
  path.write_text('{not json')
  with pytest.raises(BadInputError, match='not a JSON'):
    pose.PoseInput(config, process_index=0, process_count=1)
  _write(bad, 'train', good)
  config.dataset.bbox_file = str(tmp_path / 'dets.json')
  (tmp_path / 'dets.json').write_text(json.dumps([{'image_id': 999, 'bbox': [0, 0, 5, 5]}]))
  with pytest.raises(BadInputError, match='detection 0 lacks'):
    pose.PoseInput(config, process_index=0, process_count=1)
  config.dataset.bbox_file = ''
  config.dataset.flip_indices = (1, 0)
  with pytest.raises(BadInputError, match='config.dataset.sigmas'):
    pose.PoseInput(config, process_index=0, process_count=1)


def test_make_scenes_script_writes_the_pose_set(tmp_path, capsys, monkeypatch):
  script = pathlib.Path(__file__).resolve().parents[2] / 'scripts' / 'make_scenes.py'
  argv = [str(script), 'pose', str(tmp_path / 'out'), '--num-train', '2', '--num-val', '1']
  monkeypatch.setattr('sys.argv', argv + ['--size', '48', '32'])
  with pytest.raises(SystemExit) as e:
    runpy.run_path(str(script), run_name='__main__')
  assert e.value.code == 0
  assert '2 train, 1 val images of 48x32' in capsys.readouterr().out
  data = json.loads((tmp_path / 'out' / 'annotations' / 'person_keypoints_val.json').read_text())
  assert len(data['images']) == 1 and data['annotations']
