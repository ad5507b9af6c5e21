"""The base recipe: every field of a training config, with the defaults the other recipes start
from (the official ImageNet recipe's values; ``imagenet_official`` restates its data fields).

Units: batch sizes are global (all hosts together) in images; epochs are passes over the
training split; steps are optimizer updates.
"""

import ml_collections

from hrnet_jax.pretrained import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  # What is learned (hrnet_jax.train.tasks): 'classify' (image labels) or 'segment' (per-pixel
  # labels, train/recipes/segment.py). The task brings its data, loss and metrics.
  config.task = 'classify'

  # Model: a name from hrnet_jax.list_models(), or '' for the arch of `pretrained`; `pretrained`
  # is a release folder written by convert_official_weights / hrnet_jax.save_pretrained /
  # hrnet-train (WORKDIR/best) ('' trains from scratch). The number of classes comes from the
  # dataset; a checkpoint with another number gets a fresh classifier.
  config.model = 'hrnet_w18'
  config.pretrained = ''
  config.dtype = 'float32'  # computation dtype; 'bfloat16' keeps float32 params/BN/loss/optimizer
  # Rematerialization (hrnet_jax.runtime.remat): 'none', 'block' (recompute each residual block
  # in the backward pass) or 'module' (each HR module): less activation memory for up to one
  # more forward pass of FLOPs.
  config.remat = 'none'
  # hrnet_jax.runtime.configure(scan=...): identical blocks / modules as one jax.lax.scan. Off:
  # slower XLA:CPU steps and more TPU memory for a faster compile (docs/benchmarks.md, "Scan");
  # the persistent compilation cache covers restarts.
  config.scan = False

  # Data. `name`: 'digits' (embedded scikit-learn digits), 'folder' (`folder`/<split>/<class>/*)
  # or any TFDS name (e.g. 'imagenet2012', read from `data_dir`; `manual_dir` holds the
  # ImageNet tars for its first preparation). On the command line --config.dataset=folder:PATH
  # sets name and folder at once (--config.dataset=NAME: a TFDS name). Splits use TFDS's syntax;
  # a folder's may be sliced in percent too ('train[:90%]': the first 90% of each class).
  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = 'imagenet2012'
  config.dataset.data_dir = ''
  config.dataset.manual_dir = ''
  config.dataset.folder = ''
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'validation'
  config.dataset.image_key = 'image'
  config.dataset.label_key = 'label'
  # Folder datasets: images that do not decode (or have an unsupported extension) stop the run
  # before the first step, naming them; True skips and counts them instead.
  config.dataset.skip_bad_images = False

  # Preprocessing, in the input pipeline. Train: 'random_resized_crop' (scale 0.08-1, ratio
  # 3/4-4/3, bilinear) + horizontal flip, or 'resize' (plain resize to image_size). Eval:
  # resize the shorter side to image_size / crop_pct, then center-crop image_size.
  config.input = ml_collections.ConfigDict()
  config.input.image_size = 224
  config.input.train_augment = 'random_resized_crop'
  config.input.crop_pct = 0.875
  config.input.interpolation = 'bilinear'  # or 'bicubic': resizing of the eval (and train) images
  config.input.mean = IMAGENET_DEFAULT_MEAN  # of [0, 1] RGB pixels; applied on device
  config.input.std = IMAGENET_DEFAULT_STD
  config.input.shuffle_buffer = 16_384  # TFDS / folder only; the digits are fully shuffled
  config.input.prefetch = 2  # global batches placed on the devices ahead of the step

  config.batch_size = 128
  config.eval_batch_size = 256
  config.num_epochs = 100
  config.num_steps = 0  # > 0: train for this many steps (iterations, as mmseg) instead of epochs
  config.max_steps = -1  # > 0: stop after this many steps (smoke tests); the schedule is unchanged

  # SGD (PyTorch semantics): lr = base_lr * batch_size / base_batch_size. Weight decay is
  # coupled L2 (added to the gradient before momentum, like torch.optim.SGD) on 'all' params or
  # only on 'kernels' (ndim > 1: no BN scale/bias, no biases).
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.base_lr = 0.05
  config.optimizer.base_batch_size = 128
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = True
  config.optimizer.weight_decay = 1e-4
  config.optimizer.weight_decay_on = 'all'
  # 'step': x decay_factor at each of decay_epochs; 'cosine': linear warmup over warmup_epochs
  # from 0, then cosine to 0 at the end of training; 'poly': (peak - end_lr) * (1 - step /
  # steps) ** power + end_lr by iteration (mmengine's PolyLR, mmseg's schedules).
  config.optimizer.schedule = 'step'
  config.optimizer.decay_epochs = (30, 60, 90)
  config.optimizer.decay_factor = 0.1
  config.optimizer.warmup_epochs = 0.0
  config.optimizer.power = 0.9
  config.optimizer.end_lr = 0.0
  config.label_smoothing = 0.0

  config.seed = 0  # model init, shuffling and augmentation

  # Mesh: all devices of all hosts as ('data', 'fsdp'); the batch is split over both axes.
  # fsdp > 1 also shards each parameter and its optimizer state over 'fsdp' devices (on its
  # largest dimension divisible by fsdp), instead of replicating it.
  config.mesh = ml_collections.ConfigDict()
  config.mesh.fsdp = 1

  # Training checkpoints in WORKDIR/checkpoints: every `every_steps`, at each evaluation, at the
  # end and on SIGTERM; the latest `keep` plus the best by eval top-1 are kept.
  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 1000
  config.checkpoint.keep = 3
  config.checkpoint.async_save = True

  config.eval_every_epochs = 1  # 0: evaluate only at the end
  config.eval_every_steps = 0  # > 0: evaluate every this many steps instead
  config.log_every_steps = 50
  return config
