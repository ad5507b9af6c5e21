"""The fine-tuning recipe: converted weights on any dataset, with a new classifier.

    convert_official_weights timm/hrnet_w18_small.ms_in1k converted/hrnet_w18_small
    hrnet-train --config finetune --config.pretrained=converted/hrnet_w18_small \
      --config.dataset=folder:photos --workdir runs/photos

`pretrained` (a release folder) is required; the model is its arch (`model=''`). The head gets one
output per class of the dataset, and the release folders written at the end record the class
names. Data: `--config.dataset=folder:PATH` (`PATH/train/<class>/<image>`) or a TFDS name
(default tf_flowers); either way the first 90% of the train split trains and the last 10%
evaluates (`train[:90%]` / `train[90%:]`, per class for a folder; a folder with its own
validation split: `--config.dataset.eval_split=validation`). 10 epochs of SGD Nesterov with
warmup + cosine at lr 0.01 per 128 images, batch 64 (a smaller dataset needs a smaller
`--config.batch_size`: the run says so before it starts).
"""

from ml_collections import config_dict

from hrnet_jax.train.recipes import base


def get_config():
  config = base.get_config()
  config.model = ''  # the arch of config.pretrained
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
