"""mmseg's ``fcn_hr18_4xb4-80k_ade20k-512x512``: HRNetV2-W18 + FCN head on ADE20K (150 classes).

    hrnet-train --config seg_ade20k_hrnetv2_w18 --config.dataset.folder=ADEChallengeData2016 \
      --config.pretrained=converted/hrnet_w18 --workdir RUN

Labels are reduced (``reduce_zero_label``: 0 = "other" is ignored, ids 1-150 -> 0-149). Global
batch 16, 80k iterations, SGD 0.01, momentum 0.9, weight decay 5e-4, poly (power 0.9, to 1e-4);
RandomResize((2048, 512), ratio 0.5-2.0) -> RandomCrop(512x512, cat_max_ratio 0.75) -> flip ->
PhotoMetricDistortion; test Resize((2048, 512)), whole image.

Published ADE20K val mIoU (mmseg ``configs/hrnet/README.md``): 36.27 at 80k, 36.79 at 160k
iterations (``--config.num_steps=160000``).
"""

from hrnet_jax.train.recipes import segment


def get_config():
  config = segment.get_config()
  config.model = 'hrnetv2_w18_seg'
  config.pretrained = None  # required: the backbone's ImageNet weights
  config.dataset.name = 'ade20k'
  config.dataset.train_split = 'training'
  config.dataset.eval_split = 'validation'
  config.dataset.reduce_zero_label = True
  config.input.scale = (2048, 512)
  config.input.crop_size = (512, 512)
  config.input.test_scale = (2048, 512)
  config.eval.crop_size = (512, 512)
  config.eval.stride = (341, 341)
  config.batch_size = 16
  config.optimizer.base_batch_size = 16
  config.num_steps = 80_000
  config.eval_every_steps = 8_000
  config.checkpoint.every_steps = 8_000
  config.log_every_steps = 50
  return config
