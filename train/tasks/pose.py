"""Top-down pose estimation: mmpose's ``KeypointMSELoss(use_target_weight=True)`` on codec
heatmaps; COCO keypoint AP as mmpose's ``CocoMetric`` computes it (flip test, codec decoding,
back-projection, rescoring, OKS-NMS, then pycocotools' ``COCOeval``).

Evaluation, per global batch of crops (``hrnet_jax.train.data.pose.PoseInput.eval_batches``):
the heatmaps of the flip test (``hrnet_jax.inference.pose.flip_test_heatmaps``) on the mesh,
decoded on each host by the codec (``config.input.codec``), moved to image pixels
(``crop_to_image``); all processes' instances are gathered, rescored and suppressed per image
(``hrnet_jax.metrics.keypoints.select_topdown``: ``config.eval.keypoint_score_thr``,
``nms_mode``, ``nms_thr``), written as a COCO results file (``coco_keypoints.write_results``)
and scored against the eval split's annotations (``coco_keypoints.evaluate_keypoints``, with the
dataset's OKS sigmas). AP values are fractions in [0, 1], as COCOeval's.
"""

from __future__ import annotations

import functools
import os
import tempfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from hrnet_jax import runtime
from hrnet_jax.data.transforms import normalize
from hrnet_jax.errors import BadInputError
from hrnet_jax.inference import pose as pose_inference
from hrnet_jax.metrics import keypoints as kp_metrics
from hrnet_jax.train import coco_keypoints, losses
from hrnet_jax.train import mesh as mesh_lib
from hrnet_jax.train.data import pose as pose_data
from hrnet_jax.train.recipes import pose as pose_recipe

NMS_MODES = ('oks_nms', 'soft_oks_nms', 'none')


def pose_heatmaps(
  params, batch_stats, images, *, model_def, mean, std, flip_indices, shift_heatmap
) -> jax.Array:
  """float32 heatmaps ``[B, h, w, K]`` of uint8 crops ``images [B, H, W, 3]``, BatchNorm on
  its running averages; with ``flip_indices`` ``[K]`` the flip test (``flip_heatmaps`` with
  ``shift_heatmap``)."""
  model = model_def.merge(params, batch_stats, train=False)
  apply = lambda x: model(x).astype(jnp.float32)
  unflip = (
    None
    if flip_indices is None
    else functools.partial(
      kp_metrics.flip_heatmaps, flip_indices=flip_indices, shift_heatmap=shift_heatmap
    )
  )
  return pose_inference.flip_test_heatmaps(apply, normalize(images, mean, std), unflip)


def evaluate_pose(
  heatmap_fn,
  params,
  batch_stats,
  data: pose_data.PoseInput,
  *,
  mesh,
  eval_config,
  results_file: str | os.PathLike | None = None,
  progress: bool = False,
) -> dict:
  """COCO keypoint AP of ``data``'s eval instances (see the module docstring).

  ``heatmap_fn(params, batch_stats, images)``: a jitted ``pose_heatmaps`` over global batches on
  ``mesh``. ``eval_config``: ``config.eval`` (``keypoint_score_thr``, ``nms_mode``,
  ``nms_thr``). ``results_file``: where the COCO results JSON is written (default a temporary
  file, removed). Returns ``coco_keypoints.STATS`` (``AP``, ``AP50``, ...) and ``'count'`` (the
  instances scored, before NMS). Raises ``BadInputError`` for bad eval settings and an empty
  eval split.
  """
  if eval_config.nms_mode not in NMS_MODES:
    raise BadInputError(f'config.eval.nms_mode={eval_config.nms_mode!r}; valid: {NMS_MODES}')
  sharding = mesh_lib.batch_sharding(mesh)
  codec = data.codec
  parts = {'index': [], 'mask': [], 'keypoints': [], 'scores': []}
  show = progress and jax.process_index() == 0
  for batch in tqdm(
    data.eval_batches(), total=data.num_eval_batches, desc='eval', disable=not show, leave=False
  ):
    images = mesh_lib.global_batch({'image': batch['image']}, sharding)['image']
    heatmaps = heatmap_fn(params, batch_stats, images)
    local = multihost_utils.global_array_to_host_local_array(heatmaps, mesh, sharding.spec)
    keypoints, scores = codec.decode_batch(np.asarray(local))
    keypoints = pose_inference.crop_to_image(
      keypoints, batch['center'], batch['scale'], codec.input_size
    )
    parts['index'].append(batch['index'].astype(np.int32))
    parts['mask'].append(batch['mask'])
    parts['keypoints'].append(keypoints)
    parts['scores'].append(scores.astype(np.float32))
  gathered = {k: np.concatenate(v) for k, v in parts.items()}
  if jax.process_count() > 1:
    gathered = {
      k: np.asarray(v) for k, v in multihost_utils.process_allgather(gathered, tiled=True).items()
    }
  keep = gathered['mask'].astype(bool)
  order = np.argsort(gathered['index'][keep], kind='stable')  # the instances' own order
  rows = gathered['index'][keep][order]
  if rows.size == 0:
    raise BadInputError(f'{data.annotation_path}: no instance to evaluate')
  keypoints, scores = gathered['keypoints'][keep][order], gathered['scores'][keep][order]
  predictions = topdown_predictions(
    data, rows, keypoints, scores, eval_config, sigmas=data.meta.sigmas
  )
  if results_file is not None:
    stats = _score(data, predictions, results_file)
  else:
    with tempfile.TemporaryDirectory() as tmp:
      stats = _score(data, predictions, os.path.join(tmp, 'keypoints_results.json'))
  return {**stats, 'count': int(rows.size)}


def topdown_predictions(data, rows, keypoints, scores, eval_config, *, sigmas) -> list[dict]:
  """The COCO results of instances ``rows`` (into ``data.eval_instances``, ascending) with
  image-pixel ``keypoints [N, K, 2]`` and ``scores [N, K]``: ``select_topdown`` (mmpose
  ``CocoMetric``: box score x mean keypoint score above ``keypoint_score_thr``, per-image NMS
  with the crop box areas) -> ``image_id``, ``category_id``, ``keypoints [K, 3]``, ``score``."""
  ins = data.eval_instances
  w, h = data.input_size
  scales = np.stack(
    [
      pose_data.fix_aspect_ratio(pose_data.bbox_center_scale(box, data.padding)[1], w / h)
      for box in ins.boxes[rows]
    ]
  )
  kept, instance_scores = kp_metrics.select_topdown(
    ins.image_ids[rows],
    keypoints,
    scores,
    ins.scores[rows],
    np.prod(scales, axis=1),
    sigmas=sigmas,
    keypoint_score_thr=float(eval_config.keypoint_score_thr),
    nms_mode=eval_config.nms_mode,
    nms_thr=float(eval_config.nms_thr),
  )
  return [
    {
      'image_id': int(ins.image_ids[rows[i]]),
      'category_id': ins.category_id,
      'keypoints': np.concatenate([keypoints[i], scores[i][:, None]], axis=1),
      'score': float(instance_scores[i]),
    }
    for i in kept
  ]


def _score(data, predictions: list[dict], path) -> dict:
  coco_keypoints.write_results(path, predictions)
  return coco_keypoints.evaluate_keypoints(data.annotations, path, sigmas=data.meta.sigmas)


class Pose:
  name = 'pose'
  best_metric = 'AP'

  def loss_fn(self, config):
    def loss_fn(heatmaps, batch):
      return losses.keypoint_mse(heatmaps, batch['heatmap'], batch['target_weight']), {}

    return loss_fn

  def evaluator(self, config, model_def, info, mesh, params_shardings, stats_shardings):
    e = config.eval
    batch_sharding = mesh_lib.batch_sharding(mesh)
    flip = tuple(pose_data.pose_meta(config.dataset).flip_indices) if e.flip_test else None
    heatmap_fn = jax.jit(
      functools.partial(
        pose_heatmaps,
        model_def=model_def,
        mean=tuple(config.input.mean),
        std=tuple(config.input.std),
        flip_indices=flip,
        shift_heatmap=bool(e.shift_heatmap),
      ),
      in_shardings=(params_shardings, stats_shardings, batch_sharding),
      out_shardings=batch_sharding,
      compiler_options=runtime.compiler_options('infer'),
    )

    def run(params, batch_stats, data, *, progress: bool = False, results_file=None) -> dict:
      return evaluate_pose(
        heatmap_fn,
        params,
        batch_stats,
        data,
        mesh=mesh,
        eval_config=e,
        results_file=results_file,
        progress=progress,
      )

    return run

  def scalars(self, results):
    return {k: results[k] for k in ('AP', 'AP50', 'AP75', 'AR')}

  def describe(self, results):
    return (
      f'eval AP {results["AP"]:.4f} AP50 {results["AP50"]:.4f} AP75 {results["AP75"]:.4f} '
      f'AR {results["AR"]:.4f} ({results["count"]} instances)'
    )

  def describe_best(self, value):
    return f'best AP {value:.4f}'

  def pretrained_cfg(self, config, base_cfg, info):
    w, h = (int(v) for v in config.input.input_size)
    meta = pose_data.pose_meta(config.dataset)
    return {
      **(base_cfg or {}),
      'num_keypoints': info.num_classes,
      'input_size': [3, h, w],
      'heatmap_size': [int(v) for v in config.input.heatmap_size],
      'mean': list(config.input.mean),
      'std': list(config.input.std),
      'codec': config.input.codec,
      'sigma': float(config.input.sigma),
      'unbiased': bool(config.input.unbiased),
      'blur_kernel_size': int(config.input.blur_kernel_size),
      'bbox_padding': float(config.input.bbox_padding),
      'flip_indices': list(meta.flip_indices),
      'sigmas': list(meta.sigmas),
    }


TASK = Pose()


def release_config(pretrained_cfg: dict) -> ml_collections.ConfigDict:
  """The ``pose`` recipe's config with the preprocessing, codec and keypoint metadata of a
  release folder's ``pretrained_cfg`` (what ``Pose.pretrained_cfg`` records), for
  ``hrnet-eval`` on a folder. ``BadInputError`` naming the missing key."""
  config = pose_recipe.get_config()
  cfg = dict(pretrained_cfg or {})
  inp = config.input
  try:
    _, h, w = cfg['input_size']
  except (KeyError, ValueError):
    raise BadInputError('pretrained_cfg: no input_size [3, H, W] (a pose release folder)') from None
  inp.input_size = (w, h)
  inp.heatmap_size = tuple(cfg.get('heatmap_size') or (w // 4, h // 4))
  inp.mean, inp.std = tuple(cfg.get('mean', inp.mean)), tuple(cfg.get('std', inp.std))
  for key in ('codec', 'sigma', 'unbiased', 'blur_kernel_size', 'bbox_padding'):
    if key in cfg:
      inp[key] = cfg[key]
  config.dataset.flip_indices = tuple(cfg.get('flip_indices') or ())
  config.dataset.sigmas = tuple(cfg.get('sigmas') or ())
  return config


def set_eval_dataset(config, root: str, split: str, bbox_file: str = '') -> None:
  """Points ``config`` at ``split`` of the COCO-layout ``root`` (``hrnet-eval --dataset
  coco_keypoints:ROOT --split SPLIT [--bbox-file FILE]``): ground-truth boxes, or the person
  detections of ``bbox_file``."""
  config.dataset.name = 'coco_keypoints'
  config.dataset.folder = root
  config.dataset.eval_split = split
  config.dataset.bbox_file = bbox_file
