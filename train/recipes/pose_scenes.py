"""The embedded pose run: ``hrnet_w18_small_pose`` from scratch on the pose scenes
(``hrnet_jax.train.data.pose_scenes``: stick figures with COCO's 17 keypoints on scikit-image
photos, joints true by construction), on CPU in minutes.

    python scripts/make_scenes.py pose /tmp/pose_scenes --num-train 200 --num-val 50
    hrnet-train --config pose_scenes --config.dataset.folder=/tmp/pose_scenes --workdir RUN
    hrnet-eval --checkpoint RUN --dataset coco_keypoints:/tmp/pose_scenes --split val

The ``pose`` recipe (mmpose's codec, augmentations, flip test, CocoMetric scoring, Adam with
warm-up and steps) at the scenes' scale: 64x96 crops (w x h), 16x24 heatmaps, batch 32, Adam
1e-3 with a 100-step warm-up, 120 epochs (x0.1 at 96 and 114: mmpose's 170 / 200 of 210 in
proportion). Measured run in docs/pose.md.
"""

from hrnet_jax.train.recipes import pose


def get_config():
  config = pose.get_config()
  config.model = 'hrnet_w18_small_pose'
  config.input.input_size = (64, 96)
  config.input.heatmap_size = (16, 24)
  config.batch_size = 32
  config.eval_batch_size = 32
  config.optimizer.base_batch_size = 32
  config.optimizer.base_lr = 1e-3
  config.num_epochs = 120
  config.optimizer.decay_epochs = (96, 114)
  config.optimizer.warmup_steps = 100
  config.eval_every_epochs = 40
  config.checkpoint.every_steps = 500
  config.log_every_steps = 50
  return config
