"""ImageNet with a modern schedule: the official recipe plus 5 warmup epochs and cosine decay,
label smoothing 0.1, bf16 computation (float32 params, BN statistics, loss and optimizer state)
and weight decay on kernels only. Sized for one TPU v5e host or 8 GPUs (global batch 1024,
lr 0.4 by the linear rule).

    hrnet-train --config imagenet_cosine --workdir DIR \
      --config.dataset.data_dir=~/tensorflow_datasets
"""

from hrnet_jax.train.recipes import imagenet_official


def get_config():
  config = imagenet_official.get_config()
  config.batch_size = 1024
  config.eval_batch_size = 1024
  config.dtype = 'bfloat16'
  config.label_smoothing = 0.1
  config.optimizer.schedule = 'cosine'
  config.optimizer.warmup_epochs = 5.0
  config.optimizer.weight_decay_on = 'kernels'
  return config
