"""Semantic segmentation on a folder of images and label PNGs: the small-data default.

    hrnet-train --config segment --config.dataset.folder=ROOT --workdir RUN
    hrnet-eval --checkpoint RUN --dataset seg_folder:ROOT --split val

``ROOT/images/<split>/<name>.<ext>`` with ``ROOT/annotations/<split>/<name>.png`` (mmseg's
custom layout: label PNGs of class ids, 255 = ignore) and ``ROOT/classes.json`` (the class
names, a JSON list). The model is ``hrnetv2_w18_small_seg`` (mmseg ``fcn_hr18s``); the schedule
and augmentations are mmseg's (``configs/hrnet/fcn_hr18*``), scaled to small images:
SGD 0.01, momentum 0.9, weight decay 5e-4, poly decay (power 0.9, to 1e-4) by iteration.
"""

import ml_collections

from hrnet_jax.train.recipes import base


def get_config():
  config = base.get_config()
  config.task = 'segment'
  config.model = 'hrnetv2_w18_small_seg'

  # 'seg_folder' (the layout above), 'cityscapes' (ROOT/leftImg8bit + ROOT/gtFine, the
  # *_labelTrainIds.png labels), 'ade20k' (ROOT = ADEChallengeData2016) or 'tfds:NAME' (a TFDS
  # dataset in data_dir with an image feature image_key and a mask feature label_key, e.g.
  # tfds:oxford_iiit_pet; classes required).
  config.dataset.name = 'seg_folder'
  config.dataset.label_key = 'segmentation_mask'  # tfds:NAME only
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'val'
  config.dataset.classes = ()  # class names; () reads ROOT/classes.json (seg_folder)
  config.dataset.reduce_zero_label = False  # ADE20K: label 0 ("other") -> ignore, ids - 1
  config.dataset.ignore_index = 255

  # mmseg's train pipeline: RandomResize(scale, ratio_range, keep_ratio=True) -> RandomCrop(
  # crop_size, cat_max_ratio) -> RandomFlip(flip_prob) -> PhotoMetricDistortion, padded to
  # crop_size (image 0, label ignore_index). Sizes: scale is mmseg's (long edge, short edge)
  # bound, crop_size (H, W). Eval: Resize(test_scale, keep_ratio=True); () keeps the image size.
  config.input.scale = (512, 256)
  config.input.ratio_range = (0.5, 2.0)
  config.input.crop_size = (128, 128)
  config.input.cat_max_ratio = 0.75
  config.input.flip_prob = 0.5
  config.input.photometric_distortion = True
  config.input.test_scale = (512, 256)

  # Inference for evaluation (hrnet_jax.inference.segment): 'whole' image or 'slide' windows
  # of crop_size (H, W) every stride; flip and scales (ratios of test_scale) average the
  # softmax of each view, as mmseg's test-time augmentation.
  config.eval = ml_collections.ConfigDict()
  config.eval.mode = 'whole'
  config.eval.crop_size = (128, 128)
  config.eval.stride = (85, 85)
  config.eval.flip = False
  config.eval.scales = ()

  # mmseg's decode-head loss (hrnet_jax.train.losses.pixel_cross_entropy): the mean over all
  # pixels (avg_non_ignore=False) or the non-ignored ones; ohem_min_kept > 0 adds mmseg's
  # OHEMPixelSampler(thresh=ohem_thresh, min_kept=ohem_min_kept per image; thresh None: the
  # min_kept pixels of the largest loss).
  config.loss = ml_collections.ConfigDict()
  config.loss.avg_non_ignore = False
  config.loss.ohem_min_kept = 0
  config.loss.ohem_thresh = ml_collections.config_dict.placeholder(float)

  config.batch_size = 8
  config.num_steps = 2000
  config.eval_every_steps = 500
  config.optimizer.base_lr = 0.01
  config.optimizer.base_batch_size = 8
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = False
  config.optimizer.weight_decay = 5e-4
  config.optimizer.weight_decay_on = 'all'
  config.optimizer.schedule = 'poly'
  config.optimizer.power = 0.9
  config.optimizer.end_lr = 1e-4
  config.checkpoint.every_steps = 500
  config.log_every_steps = 20
  return config
