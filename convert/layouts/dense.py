"""Key rules between ``DenseHRNet`` parameter paths and the dense checkpoint layouts.

The backbone (``backbone.<path>``) maps by ``hrnet_jax.convert.layouts.official`` (official
classification keys, which mmseg, mmpose, mmdet, HRNet-Semantic-Segmentation and
deep-high-resolution-net all keep) under a per-format prefix; the neck and head map by one table
per format:

- ``mmseg``: mmseg ``EncoderDecoder`` (``backbone.``, ``decode_head.convs.{i}.conv|bn``,
  ``decode_head.conv_seg``);
- ``mmpose``: mmpose ``TopdownPoseEstimator`` (``backbone.``, ``head.conv_layers.{3i}`` conv,
  ``head.conv_layers.{3i+1}`` BN, ``head.final_layer``);
- ``mmdet``: mmdet backbone + ``HRFPN`` (``neck.reduction_conv.conv``, ``neck.fpn_convs.{i}.conv``);
- ``hrnet_seg``: HRNet-Semantic-Segmentation ``seg_hrnet.py`` (``last_layer.0`` conv,
  ``last_layer.1`` BN, ``last_layer.3`` classifier; backbone keys unprefixed);
- ``hrnet_pose``: deep-high-resolution-net ``pose_hrnet.py`` (``final_layer``; unprefixed).

An HRNet-Semantic-Segmentation training checkpoint of its ``FullModel`` (``lib/utils/utils.py``)
holds the model under ``model.`` and the loss under ``loss.``; ``unwrap_fullmodel`` strips it.
"""

from __future__ import annotations

import re
from typing import Callable

from hrnet_jax.convert.layouts import official as keys

DENSE_FORMATS = ('mmseg', 'mmpose', 'mmdet', 'hrnet_seg', 'hrnet_pose')
FORMAT_TASK = {
  'mmseg': 'segment',
  'hrnet_seg': 'segment',
  'mmpose': 'pose',
  'hrnet_pose': 'pose',
  'mmdet': 'detect',
}
BACKBONE_PREFIX = {
  'mmseg': 'backbone.',
  'mmpose': 'backbone.',
  'mmdet': 'backbone.',
  'hrnet_seg': '',
  'hrnet_pose': '',
}
# Top-level names of each format's non-backbone parts (what --backbone-only drops).
HEAD_PREFIXES = {
  'mmseg': ('decode_head.', 'auxiliary_head.'),
  'mmpose': ('head.', 'neck.'),
  'mmdet': ('neck.', 'rpn_head.', 'roi_head.', 'bbox_head.'),
  'hrnet_seg': ('last_layer.',),
  'hrnet_pose': ('final_layer.',),
}

# An HRNet-Semantic-Segmentation training FullModel: weights under 'model.', loss under 'loss.'.
_FULLMODEL_PREFIX = 'model.'
_FULLMODEL_LOSS = 'loss.'

_W = {'kernel': 'weight', 'bias': 'bias'}
_BN = {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean', 'var': 'running_var'}
_CONV = r'^head\.convs\.(\d+)\.conv\.(kernel|bias)$'
_NORM = r'^head\.convs\.(\d+)\.bn\.(scale|bias|mean|var)$'
_FINAL = r'^head\.final_layer\.(kernel|bias)$'

Rule = tuple[str, Callable[[re.Match], str]]
_RULES: dict[str, tuple[Rule, ...]] = {
  'mmseg': (
    (_CONV, lambda m: f'decode_head.convs.{m[1]}.conv.{_W[m[2]]}'),
    (_NORM, lambda m: f'decode_head.convs.{m[1]}.bn.{_BN[m[2]]}'),
    (_FINAL, lambda m: f'decode_head.conv_seg.{_W[m[1]]}'),
  ),
  'mmpose': (  # Sequential(conv, BN, ReLU) per hidden layer
    (_CONV, lambda m: f'head.conv_layers.{3 * int(m[1])}.{_W[m[2]]}'),
    (_NORM, lambda m: f'head.conv_layers.{3 * int(m[1]) + 1}.{_BN[m[2]]}'),
    (_FINAL, lambda m: f'head.final_layer.{_W[m[1]]}'),
  ),
  'hrnet_seg': (  # last_layer = Sequential(conv, BN, ReLU, conv): one hidden layer
    (_CONV, lambda m: f'last_layer.{3 * int(m[1])}.{_W[m[2]]}'),
    (_NORM, lambda m: f'last_layer.{3 * int(m[1]) + 1}.{_BN[m[2]]}'),
    (_FINAL, lambda m: f'last_layer.3.{_W[m[1]]}'),
  ),
  'hrnet_pose': ((_FINAL, lambda m: f'final_layer.{_W[m[1]]}'),),
  'mmdet': (
    (r'^neck\.reduction_conv\.(kernel|bias)$', lambda m: f'neck.reduction_conv.conv.{_W[m[1]]}'),
    (
      r'^neck\.fpn_convs\.(\d+)\.(kernel|bias)$',
      lambda m: f'neck.fpn_convs.{m[1]}.conv.{_W[m[2]]}',
    ),
  ),
}


def source_key(flax_path: str, fmt: str) -> str:
  """Key of the ``DenseHRNet`` leaf ``flax_path`` in a ``fmt`` checkpoint; ``KeyError`` if the
  format has no such part (e.g. an HRFPN leaf in an mmseg file)."""
  if flax_path.startswith('backbone.'):
    return BACKBONE_PREFIX[fmt] + keys.torch_key(flax_path[len('backbone.') :])
  for pattern, template in _RULES[fmt]:
    m = re.match(pattern, flax_path)
    if m:
      return template(m)
  raise KeyError(f'the {fmt} layout has no key for {flax_path!r}')


def unwrap_fullmodel(tensors: dict) -> tuple[dict, list[str]]:
  """``tensors`` without the ``model.`` of an HRNet-Semantic-Segmentation ``FullModel`` and its
  loss entries, and the sorted loss keys; any other state_dict unchanged, with none."""
  if not any(k.startswith(_FULLMODEL_PREFIX + 'last_layer.') for k in tensors):
    return tensors, []
  loss = sorted(k for k in tensors if k.startswith(_FULLMODEL_LOSS))
  out = {
    k[len(_FULLMODEL_PREFIX) :] if k.startswith(_FULLMODEL_PREFIX) else k: v
    for k, v in tensors.items()
    if not k.startswith(_FULLMODEL_LOSS)
  }
  return out, loss
