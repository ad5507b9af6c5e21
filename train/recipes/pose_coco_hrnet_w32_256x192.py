"""COCO top-down pose, ``hrnet_w32_pose`` at 256x192: mmpose
``td-hm_hrnet-w32_8xb64-210e_coco-256x192`` (published COCO val2017 AP 0.749 with the flip test
and the detector boxes below; UDP 0.762, DARK 0.757).

    hrnet-train --config pose_coco_hrnet_w32_256x192 --config.dataset.folder=COCO \
      --config.pretrained=converted/hrnet_w32 --workdir RUN
    hrnet-eval --checkpoint RUN --dataset coco_keypoints:COCO --split val2017 \
      --bbox-file COCO/person_detection_results/COCO_val2017_detections_AP_H_56_person.json

``COCO/annotations/person_keypoints_{train,val}2017.json`` with ``COCO/{train,val}2017/``.
Adam 5e-4, linear warm-up over 500 iterations from 0.001x, x0.1 at epochs 170 and 200, 210
epochs, batch 512 (mmpose's 8 x 64), MSRA heatmaps 48x64 sigma 2, mmpose's augmentations.
``--config.input.codec=udp`` is the UDP variant, ``--config.input.unbiased=True`` DARK.
"""

from hrnet_jax.train.recipes import pose


def get_config():
  config = pose.get_config()
  config.model = 'hrnet_w32_pose'
  config.dataset.train_split = 'train2017'
  config.dataset.eval_split = 'val2017'
  config.batch_size = 512
  config.eval_batch_size = 512
  config.optimizer.base_batch_size = 512
  config.dtype = 'bfloat16'
  config.checkpoint.every_steps = 2000
  return config
