"""The embedded default recipe: ``hrnet_w18_small`` on scikit-learn's digits at 32x32, on CPU in
minutes.

    hrnet-train --config digits --workdir /tmp/hrnet_digits
    hrnet-eval --checkpoint /tmp/hrnet_digits --dataset digits

1437 training / 360 validation images (fixed split, see ``train/data/arrays.py``); no
augmentation.
"""

from hrnet_jax.train.recipes import base


def get_config():
  config = base.get_config()
  config.model = 'hrnet_w18_small'
  config.dataset.name = 'digits'
  config.input.image_size = 32
  config.input.train_augment = 'resize'
  config.input.mean = (0.5, 0.5, 0.5)
  config.input.std = (0.5, 0.5, 0.5)
  config.batch_size = 32
  config.eval_batch_size = 128
  config.num_epochs = 3
  config.optimizer.base_lr = 0.1
  config.optimizer.schedule = 'cosine'
  config.optimizer.warmup_epochs = 0.3
  config.optimizer.weight_decay = 5e-4
  config.optimizer.weight_decay_on = 'kernels'
  config.checkpoint.every_steps = 100
  config.log_every_steps = 10
  return config
