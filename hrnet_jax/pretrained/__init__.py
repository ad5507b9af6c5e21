"""Release weights: pretrained tags and their preprocessing (``cfgs``), the release folder on
disk (``checkpoint``: ``config.json`` + Orbax ``state/``, checksum, atomic writes) and the model
state by dotted path (``state``: read, strict key check, assign).

``get_pretrained_cfg('hrnet_w18.ms_aug_in1k')`` -> ``PretrainedCfg`` (timm's ``pretrained_cfg``).
"""

from hrnet_jax.pretrained.cfgs import (
  IMAGENET_DEFAULT_MEAN,
  IMAGENET_DEFAULT_STD,
  PretrainedCfg,
  default_pretrained_cfg,
  default_tag,
  get_pretrained_cfg,
  list_pretrained,
  paddleclas_tags,
)

__all__ = [
  'IMAGENET_DEFAULT_MEAN',
  'IMAGENET_DEFAULT_STD',
  'PretrainedCfg',
  'default_pretrained_cfg',
  'default_tag',
  'get_pretrained_cfg',
  'list_pretrained',
  'paddleclas_tags',
]
