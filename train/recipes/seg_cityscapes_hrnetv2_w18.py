"""mmseg's ``fcn_hr18_4xb2-80k_cityscapes-512x1024``: HRNetV2-W18 + FCN head on Cityscapes.

    hrnet-train --config seg_cityscapes_hrnetv2_w18 --config.dataset.folder=CITYSCAPES \
      --config.pretrained=converted/hrnet_w18 --workdir RUN

``CITYSCAPES`` holds ``leftImg8bit/`` and ``gtFine/`` with the ``*_labelTrainIds.png`` labels
(mmseg ``tools/dataset_converters/cityscapes.py``). ``pretrained``: ImageNet weights of the
backbone (a ``hrnet_w18`` release folder; mmseg starts from ``open-mmlab://msra/hrnetv2_w18``).
Global batch 8 (mmseg: 2 per GPU x 4, SyncBN: BatchNorm statistics here are over the global
batch), 80k iterations, SGD 0.01, momentum 0.9, weight decay 5e-4, poly (power 0.9, to 1e-4);
RandomResize((2048, 1024), ratio 0.5-2.0) -> RandomCrop(512x1024, cat_max_ratio 0.75) -> flip ->
PhotoMetricDistortion; test Resize((2048, 1024)), whole image.

Published Cityscapes val mIoU (mmseg ``configs/hrnet/README.md``): 77.19 / 78.65 / 78.80 at
40k / 80k / 160k iterations (``--config.num_steps``); 78.92 / 80.35 / 80.74 with flip and
scales 0.5-1.75 (``hrnet-eval --tta flip,0.5,0.75,1.0,1.25,1.5,1.75``).
"""

from hrnet_jax.train.recipes import segment


def get_config(model: str = 'hrnetv2_w18_seg'):
  config = segment.get_config()
  config.model = model
  config.pretrained = None  # required: the backbone's ImageNet weights
  config.dataset.name = 'cityscapes'
  config.dataset.ignore_index = 255
  config.input.scale = (2048, 1024)
  config.input.crop_size = (512, 1024)
  config.input.test_scale = (2048, 1024)
  config.eval.crop_size = (512, 1024)
  config.eval.stride = (341, 682)
  config.batch_size = 8
  config.optimizer.base_batch_size = 8
  config.num_steps = 80_000
  config.eval_every_steps = 8_000
  config.checkpoint.every_steps = 8_000
  config.log_every_steps = 50
  return config
