"""Top-down pose estimation on a COCO-format keypoint set: the small-data default.

    hrnet-train --config pose --config.dataset.folder=ROOT --workdir RUN
    hrnet-eval --checkpoint RUN --dataset coco_keypoints:ROOT --split val

``ROOT/annotations/person_keypoints_<split>.json`` (COCO keypoint annotations) with the images in
``ROOT/<split>/`` (``hrnet_jax.train.data.pose``). The model is ``hrnet_w32_pose`` (mmpose
``td-hm_hrnet-w32_8xb64-210e_coco-256x192``; ``--config.pretrained`` an ImageNet ``hrnet_w32``
release folder initialises its backbone, a converted mmpose checkpoint all of it); the codec,
augmentations, flip test, scoring and optimizer are that config's (Adam 5e-4, linear warm-up
over 500 iterations from 0.001x, x0.1 at 170 and 200 of 210 epochs), here on batches of 32 at
the same lr 5e-4 (as mmpose run on fewer GPUs, its ``auto_scale_lr`` off).
"""

import ml_collections

from hrnet_jax.train.recipes import base


def get_config():
  config = base.get_config()
  config.task = 'pose'
  config.model = 'hrnet_w32_pose'

  # COCO layout (above). Eval instances: the ground-truth boxes (score 1), or the person
  # detections of bbox_file (a COCO detection results JSON, mmpose's bbox_file). Keypoint
  # metadata: each keypoint's left/right mirror, OKS sigmas and the half-body groups; empty is
  # COCO-17's (hrnet_jax.metrics.keypoints.COCO_FLIP_INDICES / COCO_SIGMAS).
  config.dataset.name = 'coco_keypoints'
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'val'
  config.dataset.bbox_file = ''
  config.dataset.flip_indices = ()
  config.dataset.sigmas = ()
  config.dataset.upper_body_ids = ()
  config.dataset.lower_body_ids = ()

  # Crop and targets (mmpose's (w, h) order): TopdownAffine(input_size, use_udp=codec == 'udp')
  # and the codec: 'msra' (MSRAHeatmap; unbiased=True is DARK) or 'udp' (UDPHeatmap).
  config.input.input_size = (192, 256)
  config.input.heatmap_size = (48, 64)
  config.input.codec = 'msra'
  config.input.sigma = 2.0
  config.input.unbiased = False
  config.input.blur_kernel_size = 11  # DARK / UDP decoding: 11 for sigma 2, 17 for sigma 3
  # GetBBoxCenterScale(padding) -> RandomFlip(flip_prob) -> RandomHalfBody(half_body_prob) ->
  # RandomBBoxTransform(shift 0.16 w.p. shift_prob, scale_factor, rotate_factor w.p.
  # rotate_prob): mmpose's defaults.
  config.input.bbox_padding = 1.25
  config.input.flip_prob = 0.5
  config.input.half_body_prob = 0.3
  config.input.shift_prob = 0.3
  config.input.scale_factor = (0.5, 1.5)
  config.input.rotate_factor = 80.0
  config.input.rotate_prob = 0.6
  config.input.workers = 0  # crop threads; 0: min(16, CPUs)

  # Test: flip test with heatmap flip and shift; CocoMetric's rescoring and OKS-NMS.
  config.eval = ml_collections.ConfigDict()
  config.eval.flip_test = True
  config.eval.shift_heatmap = True
  config.eval.keypoint_score_thr = 0.2
  config.eval.nms_mode = 'oks_nms'  # or 'soft_oks_nms', 'none'
  config.eval.nms_thr = 0.9

  config.batch_size = 32
  config.eval_batch_size = 64
  config.num_epochs = 210
  config.eval_every_epochs = 10
  config.optimizer.name = 'adam'
  config.optimizer.base_lr = 5e-4
  config.optimizer.base_batch_size = 32
  config.optimizer.weight_decay = 0.0
  config.optimizer.schedule = 'step'
  config.optimizer.decay_epochs = (170, 200)
  config.optimizer.decay_factor = 0.1
  config.optimizer.warmup_steps = 500
  config.optimizer.warmup_factor = 0.001
  config.checkpoint.every_steps = 1000
  config.log_every_steps = 50
  return config
