"""mmseg's ``fcn_hr48_4xb2-80k_cityscapes-512x1024``: ``seg_cityscapes_hrnetv2_w18`` with the
HRNetV2-W48 backbone (``--config.pretrained``: a ``hrnet_w48`` release folder).

Published Cityscapes val mIoU (mmseg ``configs/hrnet/README.md``): 78.48 / 79.93 / 80.65 at
40k / 80k / 160k iterations.
"""

from hrnet_jax.train.recipes import seg_cityscapes_hrnetv2_w18


def get_config():
  return seg_cityscapes_hrnetv2_w18.get_config('hrnetv2_w48_seg')
