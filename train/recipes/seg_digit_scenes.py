"""The embedded segmentation run: ``hrnetv2_w18_small_seg`` from scratch on the digit scenes
(``hrnet_jax.train.data.digit_scenes``: scikit-learn digits painted on scikit-image photos, 11
classes, labels true by construction), on CPU in minutes.

    python scripts/make_scenes.py digits /tmp/digit_scenes --size 32 32 --num-train 4000 --num-val 200
    hrnet-train --config seg_digit_scenes --config.dataset.folder=/tmp/digit_scenes --workdir RUN
    hrnet-eval --checkpoint RUN --dataset seg_folder:/tmp/digit_scenes --split val

The ``segment`` recipe at the scenes' own scale (32 x 32, the model's smallest input: images
resized by 0.75-1.5 and cropped to 32 x 32), batch 16, without flips (a mirrored 2 is no digit);
Adam (lr 1e-3, poly decay, no weight decay), which from random weights finds the digits' shapes
in far fewer steps than mmseg's SGD. Measured run in docs/training.md ("Segmentation").
"""

from hrnet_jax.train.recipes import segment


def get_config():
  config = segment.get_config()
  config.input.scale = (32, 32)
  config.input.ratio_range = (0.75, 1.5)
  config.input.crop_size = (32, 32)
  config.input.test_scale = (32, 32)
  config.input.flip_prob = 0.0
  config.batch_size = 16
  config.optimizer.name = 'adam'
  config.optimizer.base_batch_size = 16
  config.optimizer.base_lr = 1e-3
  config.optimizer.weight_decay = 0.0
  config.num_steps = 1500
  config.eval_every_steps = 300
  config.checkpoint.every_steps = 300
  return config
