"""The fine-tuning recipe: converted weights on any dataset, with a new classifier.

    convert_official_weights timm/hrnet_w18_small.ms_in1k converted/hrnet_w18_small
    hrnet-train --config finetune --workdir DIR \
      --config.pretrained=converted/hrnet_w18_small --config.dataset.name=tf_flowers

`pretrained` (a release folder) is required; `model` must be its arch. The head gets one output per
class of the dataset. Defaults: TFDS tf_flowers (train split only: 90/10 split), 10 epochs of
SGD Nesterov with warmup + cosine at lr 0.01 per 128 images.
"""

from ml_collections import config_dict

from hrnet_jax.train.recipes import base


def get_config():
  config = base.get_config()
  config.model = 'hrnet_w18_small'
  config.pretrained = config_dict.placeholder(str)
  config.dataset.name = 'tf_flowers'
  config.dataset.train_split = 'train[:90%]'
  config.dataset.eval_split = 'train[90%:]'
  config.batch_size = 64
  config.eval_batch_size = 128
  config.num_epochs = 10
  config.optimizer.base_lr = 0.01
  config.optimizer.schedule = 'cosine'
  config.optimizer.warmup_epochs = 1.0
  config.optimizer.weight_decay_on = 'kernels'
  config.checkpoint.every_steps = 500
  config.log_every_steps = 10
  return config
