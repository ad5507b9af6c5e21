"""Key layouts of HRNet checkpoints and their renaming to the official layout.

- ``official``: HRNet/HRNet-Image-Classification ``lib/models/cls_hrnet.py`` state_dict keys.
- ``timm``: ``timm/models/hrnet.py`` keeps exactly the official keys (ssld weights lack the 4 head
  conv biases), so it shares the official mapping.
- ``mmpretrain``: ``ImageClassifier`` keys: ``backbone.`` + official names,
  ``neck.0.increase_layers`` / ``downsample_layers.{i}.conv|bn`` / ``final_layer.conv|bn``
  (``HRFuseScales``, head convs without bias) and ``head.fc``.
- ``paddle``: PaddleClas ``.pdparams`` (``ppcls/arch/backbone/legendary_models/hrnet.py``); its
  key rules and Linear layout live in ``hrnet_jax.convert.pdparams``.
"""

from __future__ import annotations

import re

import numpy as np

from hrnet_jax.convert import pdparams as paddle

FORMATS = ('official', 'timm', 'mmpretrain', 'paddle')

# (mmpretrain regex, official template); the inverse table renames back for error reports.
_MM_TO_OFFICIAL = (
    (r'^backbone\.', ''),
    (r'^neck\.0\.increase_layers\.', 'incre_modules.'),
    (r'^neck\.0\.downsample_layers\.(\d+)\.conv\.', r'downsamp_modules.\1.0.'),
    (r'^neck\.0\.downsample_layers\.(\d+)\.bn\.', r'downsamp_modules.\1.1.'),
    (r'^neck\.0\.final_layer\.conv\.', 'final_layer.0.'),
    (r'^neck\.0\.final_layer\.bn\.', 'final_layer.1.'),
    (r'^head\.fc\.', 'classifier.'),
)
_OFFICIAL_TO_MM = (
    (r'^incre_modules\.', 'neck.0.increase_layers.'),
    (r'^downsamp_modules\.(\d+)\.0\.', r'neck.0.downsample_layers.\1.conv.'),
    (r'^downsamp_modules\.(\d+)\.1\.', r'neck.0.downsample_layers.\1.bn.'),
    (r'^final_layer\.0\.', 'neck.0.final_layer.conv.'),
    (r'^final_layer\.1\.', 'neck.0.final_layer.bn.'),
    (r'^classifier\.', 'head.fc.'),
    (r'^(?!neck\.|head\.)', 'backbone.'),
)


def _rename(key: str, table) -> str:
  for pattern, template in table:
    new, n = re.subn(pattern, template, key)
    if n:
      return new
  return key


def detect_format(keys) -> str:
  """``'paddle'`` for PaddleClas keys (``conv_layer1_1.``, ``_mean``), ``'mmpretrain'`` when keys
  carry its ``backbone.`` / ``neck.0.`` / ``head.fc.`` prefixes, else ``'official'`` (which timm
  shares)."""
  if paddle.looks_like_paddle(keys):
    return 'paddle'
  if any(k.startswith(('backbone.', 'neck.0.', 'head.fc.')) for k in keys):
    return 'mmpretrain'
  return 'official'


def to_official_key(key: str, fmt: str) -> str:
  """The official name of a source key of format ``fmt``."""
  if fmt == 'paddle':
    return paddle.to_official_key(key)
  return _rename(key, _MM_TO_OFFICIAL) if fmt == 'mmpretrain' else key


def from_official_key(key: str, fmt: str) -> str:
  """The name an official key has in format ``fmt`` (for messages about missing keys)."""
  if fmt == 'paddle':
    return paddle.from_official_key(key)
  return _rename(key, _OFFICIAL_TO_MM) if fmt == 'mmpretrain' else key


def to_official_value(official_key: str, value: np.ndarray, fmt: str) -> np.ndarray:
  """A source tensor in the official (PyTorch) layout: only Paddle's Linear weights differ."""
  return paddle.to_official_value(official_key, value) if fmt == 'paddle' else value


def is_bn_counter(key: str) -> bool:
  """``num_batches_tracked``: a training counter with no Flax counterpart, ignored."""
  return key.endswith('num_batches_tracked')
