"""The official HRNet-C ImageNet recipe (HRNet-Image-Classification,
experiments/cls_hrnet_*.yaml).

SGD Nesterov, momentum 0.9, lr 0.05 per 128 images (scaled linearly with the global batch),
weight decay 1e-4 on all parameters (BN and biases included), 100 epochs, x0.1 at epochs
30/60/90, no warmup, no label smoothing, float32. Train: RandomResizedCrop(224) + flip; eval:
resize 256 + center crop 224.

    hrnet-train --config imagenet_official --workdir DIR \
      --config.dataset.data_dir=~/tensorflow_datasets --config.dataset.manual_dir=~/imagenet_tars

The official script steps its PyTorch scheduler at the start of each epoch, which lands the
decays at 0-based epochs 29/59/89; pass --config.optimizer.decay_epochs='(29,59,89)' to copy
that too.
"""

from hrnet_jax.train.recipes import base


def get_config():
  # base.py's optimizer, schedule and loss defaults are this recipe; only the data is set here.
  config = base.get_config()
  config.model = 'hrnet_w18'
  config.dataset.name = 'imagenet2012'
  config.input.image_size = 224
  config.input.train_augment = 'random_resized_crop'
  config.input.crop_pct = 0.875  # 224 / 0.875 = 256
  config.batch_size = 128
  config.dtype = 'float32'
  return config
