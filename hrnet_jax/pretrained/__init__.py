"""Release weights: pretrained tags and their preprocessing (``cfgs``), the release folder on
disk (``checkpoint``: ``config.json`` + Orbax ``state/``, checksum, atomic writes), the model
state by dotted path (``state``: read, strict key check, assign), where a model name's weights
come from (``hub``: timm's names, Hub / URL downloads, offline rules, the cache) and the model
card of a published folder (``card``).

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
