"""The embedded segmentation run: ``hrnetv2_w18_small_seg`` from scratch on the digit scenes
(``hrnet_jax.train.data.digit_scenes``: scikit-learn digits painted on scikit-image photos, 11
classes, labels true by construction), on CPU in minutes.

    python scripts/make_digit_scenes.py /tmp/digit_scenes
    hrnet-train --config seg_digit_scenes --config.dataset.folder=/tmp/digit_scenes --workdir RUN
    hrnet-eval --checkpoint RUN --dataset seg_folder:/tmp/digit_scenes --split val

The ``segment`` recipe at the scenes' own scale (128 x 128 images resized by 0.5-2.0 and
cropped to 128 x 128) without flips (a mirrored 2 is no digit).
"""

from hrnet_jax.train.recipes import segment


def get_config():
  config = segment.get_config()
  config.input.scale = (128, 128)
  config.input.crop_size = (128, 128)
  config.input.test_scale = (128, 128)
  config.input.flip_prob = 0.0
  config.num_steps = 600
  config.eval_every_steps = 200
  config.checkpoint.every_steps = 200
  return config
