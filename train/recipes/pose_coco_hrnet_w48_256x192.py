"""COCO top-down pose, ``hrnet_w48_pose`` at 256x192: mmpose
``td-hm_hrnet-w48_8xb32-210e_coco-256x192`` (published COCO val2017 AP 0.756 with the flip test
and detector boxes; UDP 0.768, DARK 0.764).

    hrnet-train --config pose_coco_hrnet_w48_256x192 --config.dataset.folder=COCO \
      --config.pretrained=converted/hrnet_w48 --workdir RUN

The W32 recipe (``pose_coco_hrnet_w32_256x192``) with the W48 model on mmpose's 8 x 32 = 256
crops per step at its unscaled lr 5e-4 (mmpose's ``auto_scale_lr`` is off by default).
"""

from hrnet_jax.train.recipes import pose_coco_hrnet_w32_256x192


def get_config():
  config = pose_coco_hrnet_w32_256x192.get_config()
  config.model = 'hrnet_w48_pose'
  config.batch_size = 256
  config.eval_batch_size = 256
  config.optimizer.base_batch_size = 256
  return config
