"""Parity of the pose evaluation's inference with mmpose's ``TopdownPoseEstimator.predict``
(``test_cfg=dict(flip_test=True, flip_mode='heatmap', shift_heatmap=True)``) on a converted
mmpose ``td-hm_hrnet-w32`` (random weights, BatchNorm statistics and biases): on the same
crops (pose scenes instances cropped by ``PoseInput``, 96x64), the flip-test heatmaps of
``train.tasks.pose.pose_heatmaps`` (``hrnet_jax.inference.pose.flip_test_heatmaps``, under
``jit``) equal mmpose's averaged heatmaps to 1e-5 x max(|ref|, 10), and the keypoints decoded by
the codec and moved to image pixels (``crop_to_image``) equal mmpose's ``pred_instances`` (to
1e-4 px; their scores, the heatmap maxima, to the heatmaps' bound). mmpose runs in float64, the
exact reference: the float32 rounding of both sides would add up past the heatmaps' bound.
"""

import functools

import jax
import jax.numpy as jnp
import mm_models
import numpy as np
import torch
from oracles import assert_close, float64_copy, randomize_

import hrnet_jax
from hrnet_jax import runtime
from hrnet_jax.data.transforms import normalize
from hrnet_jax.inference import pose as pose_inference
from hrnet_jax.metrics.keypoints import COCO_FLIP_INDICES
from hrnet_jax.train import train_state as ts
from hrnet_jax.train.data import pose as pose_data
from hrnet_jax.train.data.pose_scenes import write_pose_scenes
from hrnet_jax.train.recipes import pose as pose_recipe
from hrnet_jax.train.tasks import pose as pose_task

CONFIG = 'body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py'
INPUT, HEATMAP = (64, 96), (16, 24)  # (w, h): mmpose's HRNet needs multiples of 32


def _data_samples(batch):
  from mmengine.structures import InstanceData
  from mmpose.structures import PoseDataSample

  samples = []
  for center, scale in zip(batch['center'], batch['scale']):
    sample = PoseDataSample()
    sample.set_metainfo(
      dict(
        flip_indices=list(COCO_FLIP_INDICES),
        input_center=center,
        input_scale=scale,
        input_size=INPUT,
      )
    )
    sample.gt_instances = InstanceData(
      bboxes=np.zeros((1, 4), np.float32), bbox_scores=np.ones(1, np.float32)
    )
    samples.append(sample)
  return samples


def test_flip_test_equals_mmpose(tmp_path):
  jax.config.update('jax_default_matmul_precision', 'highest')
  root = tmp_path / 'scenes'
  write_pose_scenes(root, num_train=1, num_val=2, size=(96, 80), seed=5)
  config = pose_recipe.get_config()
  config.dataset.folder = str(root)
  config.input.input_size, config.input.heatmap_size = INPUT, HEATMAP
  config.batch_size = config.eval_batch_size = 4
  data = pose_data.PoseInput(config, process_index=0, process_count=1, train=False)
  batch = next(data.eval_batches())

  cfg = mm_models.config('mmpose', CONFIG).model
  cfg.test_cfg = dict(flip_test=True, flip_mode='heatmap', shift_heatmap=True, output_heatmaps=True)
  cfg.head.decoder = dict(type='MSRAHeatmap', input_size=INPUT, heatmap_size=HEATMAP, sigma=2)
  torch.manual_seed(0)
  reference = randomize_(mm_models.TensorMode(mm_models.build('mmpose', cfg)), seed=7).model
  mm_models.save_and_convert(reference, tmp_path, 'td-hm_hrnet-w32', 'mmpose')
  model = runtime.configure(
    hrnet_jax.load_pretrained(tmp_path / 'flax'), scan=True, fast_trace=True
  )

  mean, std = tuple(config.input.mean), tuple(config.input.std)
  x = np.asarray(normalize(jnp.asarray(batch['image']), mean, std))
  with torch.no_grad():  # predict takes preprocessed inputs: no data_preprocessor to cast
    results = float64_copy(reference.eval()).predict(
      torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float64)), _data_samples(batch)
    )
  ref_heatmaps = np.stack([r.pred_fields.heatmaps.numpy().transpose(1, 2, 0) for r in results])
  ref_keypoints = np.concatenate([r.pred_instances.keypoints for r in results])
  ref_scores = np.concatenate([r.pred_instances.keypoint_scores for r in results])

  model_def, params, stats = ts.split_model(model)
  heatmap_fn = jax.jit(
    functools.partial(
      pose_task.pose_heatmaps,
      model_def=model_def,
      mean=mean,
      std=std,
      flip_indices=COCO_FLIP_INDICES,
      shift_heatmap=True,
    )
  )
  heatmaps = np.asarray(heatmap_fn(params, stats, jnp.asarray(batch['image'])))
  assert_close(heatmaps, ref_heatmaps, 'flip-test heatmaps (mmpose TopdownPoseEstimator)')
  # Without the flip the heatmaps differ: the flip test was exercised.
  with torch.no_grad():
    plain = reference(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), None, mode='tensor')
  assert np.abs(plain.numpy().transpose(0, 2, 3, 1) - ref_heatmaps).max() > 1e-3

  keypoints, scores = data.codec.decode_batch(heatmaps)
  keypoints = pose_inference.crop_to_image(keypoints, batch['center'], batch['scale'], INPUT)
  np.testing.assert_allclose(keypoints, ref_keypoints, atol=1e-4, rtol=0)
  assert_close(scores, ref_scores, 'keypoint scores (the heatmap maxima)')
