"""The embedded segmentation run: ``hrnetv2_w18_small_seg`` from scratch on the digit scenes
(``hrnet_jax.train.data.digit_scenes``: scikit-learn digits painted on scikit-image photos, 11
classes, labels true by construction), on CPU in minutes.

    python scripts/make_digit_scenes.py /tmp/digit_scenes --size 64 64 --num-train 400
    hrnet-train --config seg_digit_scenes --config.dataset.folder=/tmp/digit_scenes --workdir RUN
    hrnet-eval --checkpoint RUN --dataset seg_folder:/tmp/digit_scenes --split val

The ``segment`` recipe at the scenes' own scale (64 x 64 images resized by 0.5-2.0 and cropped
to 64 x 64), batch 16, lr 0.02, 1200 steps, without flips (a mirrored 2 is no digit). Measured
run in docs/training.md ("Segmentation").
"""

from hrnet_jax.train.recipes import segment


def get_config():
  config = segment.get_config()
  config.input.scale = (64, 64)
  config.input.crop_size = (64, 64)
  config.input.test_scale = (64, 64)
  config.input.flip_prob = 0.0
  config.batch_size = 16
  config.optimizer.base_batch_size = 16
  config.optimizer.base_lr = 0.02
  config.num_steps = 1200
  config.eval_every_steps = 400
  config.checkpoint.every_steps = 400
  return config
