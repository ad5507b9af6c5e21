"""COCO top-down pose, ``hrnet_w32_pose`` at 384x288: mmpose
``td-hm_hrnet-w32_8xb64-210e_coco-384x288`` (published COCO val2017 AP 0.761 with the flip test
and detector boxes).

    hrnet-train --config pose_coco_hrnet_w32_384x288 --config.dataset.folder=COCO \
      --config.pretrained=converted/hrnet_w32 --workdir RUN

The 256x192 recipe with 288x384 crops and MSRA heatmaps 72x96 of sigma 3 (DARK's blur kernel
17).
"""

from hrnet_jax.train.recipes import pose_coco_hrnet_w32_256x192


def get_config():
  config = pose_coco_hrnet_w32_256x192.get_config()
  config.input.input_size = (288, 384)
  config.input.heatmap_size = (72, 96)
  config.input.sigma = 3.0
  config.input.blur_kernel_size = 17
  return config
