"""Key layouts of HRNet checkpoints: which one a state_dict is, and its renaming to the official
layout (``hrnet_jax.convert.layouts.official``: HRNet/HRNet-Image-Classification
``lib/models/cls_hrnet.py``).

Classification layouts:

- ``official``: the official state_dict keys;
- ``timm``: ``timm/models/hrnet.py`` keeps exactly the official keys (ssld weights lack the head
  conv biases), so it shares the official mapping;
- ``mmpretrain``: ``ImageClassifier`` keys (``layouts.mmpretrain``);
- ``paddle``: PaddleClas ``.pdparams`` keys and Linear layout (``layouts.paddle``).

Dense layouts (``layouts.dense``): ``mmseg``, ``mmpose``, ``mmdet``, ``hrnet_seg``,
``hrnet_pose``; their backbone keys are official keys under a per-format prefix.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from hrnet_jax.convert.layouts import dense, mmpretrain, paddle

FORMATS = ('official', 'timm', 'mmpretrain', 'paddle') + dense.DENSE_FORMATS


def is_bn_counter(key: str) -> bool:
  """``num_batches_tracked``: a training counter with no Flax counterpart, ignored."""
  return key.endswith('num_batches_tracked')


def _detect_dense(keys: set[str]) -> str | None:
  if any(k.startswith('decode_head.') for k in keys):
    return 'mmseg'
  if any(k.startswith('neck.reduction_conv.') for k in keys):
    return 'mmdet'
  if any(k.startswith(('head.final_layer.', 'head.conv_layers.')) for k in keys):
    return 'mmpose'
  if any(k.startswith('last_layer.') for k in keys):
    return 'hrnet_seg'
  if 'final_layer.weight' in keys and not any(k.startswith('incre_modules.') for k in keys):
    return 'hrnet_pose'
  return None


def detect(source_keys, *, path: str | os.PathLike, hub_id: str | None) -> str:
  """The layout of a state_dict's keys (an HRNet-Semantic-Segmentation ``FullModel``'s after
  ``dense.unwrap_fullmodel``): a dense one by its head's names, else ``'paddle'`` for PaddleClas
  keys (``conv_layer1_1.``, ``_mean``), ``'mmpretrain'`` for its ``backbone.`` / ``neck.0.`` /
  ``head.fc.`` prefixes, else the official keys, reported as ``'timm'`` when they come from a
  hub id or a ``.safetensors`` file (what timm publishes) and as ``'official'`` otherwise."""
  keys = set(
    dense.unwrap_fullmodel(dict.fromkeys(k for k in source_keys if not is_bn_counter(k)))[0]
  )
  fmt = _detect_dense(keys)
  if fmt is not None:
    return fmt
  if paddle.looks_like_paddle(keys):
    return 'paddle'
  if any(k.startswith(('backbone.', 'neck.0.', 'head.fc.')) for k in keys):
    return 'mmpretrain'
  return 'timm' if hub_id or pathlib.Path(path).suffix == '.safetensors' else 'official'


def to_official_key(key: str, fmt: str) -> str:
  """The official name of a source key of format ``fmt`` (a dense format's backbone keys lose
  their prefix)."""
  if fmt == 'paddle':
    return paddle.to_official_key(key)
  if fmt == 'mmpretrain':
    return mmpretrain.to_official_key(key)
  prefix = dense.BACKBONE_PREFIX.get(fmt, '')
  return key[len(prefix) :] if key.startswith(prefix) else key


def from_official_key(key: str, fmt: str) -> str:
  """The name an official key has in format ``fmt`` (for messages and exports)."""
  if fmt == 'paddle':
    return paddle.from_official_key(key)
  if fmt == 'mmpretrain':
    return mmpretrain.from_official_key(key)
  return dense.BACKBONE_PREFIX.get(fmt, '') + key


def to_official_value(official_key: str, value: np.ndarray, fmt: str) -> np.ndarray:
  """A source tensor in the official (PyTorch) layout: only Paddle's Linear weights differ."""
  return paddle.to_official_value(official_key, value) if fmt == 'paddle' else value
