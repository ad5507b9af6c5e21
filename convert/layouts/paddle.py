"""PaddleClas HRNet keys <-> official HRNet keys, and Paddle's Linear layout.

PaddleClas's model is ``ppcls/arch/backbone/legendary_models/hrnet.py`` (``HRNet(width,
has_se)``). Layouts: conv weights OIHW (as PyTorch), Linear weights ``[in, out]`` (PyTorch:
``[out, in]``), BatchNorm ``weight`` / ``bias`` / ``_mean`` / ``_variance``.

Key rules (PaddleClas -> official, ``hrnet_jax.convert.layouts.official``'s layout):

- ``conv_layer1_{1,2}`` -> stem ``conv{1,2}`` / ``bn{1,2}``; ``ConvBNLayer``s inside blocks
  ``convN.conv`` / ``convN.bn`` -> ``convN`` / ``bnN``; ``conv_down`` -> ``downsample.0/1``;
- ``conv_tr1_1``, ``conv_tr1_2``, ``conv_tr2``, ``conv_tr3`` -> ``transition1.0``,
  ``transition1.1.0``, ``transition2.2.0``, ``transition3.3.0``;
- ``st{s}.stage_func_list.{m}.basic_block_list.{b}.{k}`` -> ``stage{s}.{m}.branches.{b}.{k}``;
  ``fuse_func.residual_func_list.{n}`` (one flat list, stage ``s`` has ``s`` branches, ordered
  ``for i: for j: j > i -> (i, j); j < i -> (i, j, k) for k < i - j``) -> ``fuse_layers.i.j[.k]``;
- ``last_cls.func_list.{i}`` -> ``incre_modules.{i}.0``; ``cls_head_conv_list.{i}`` ->
  ``downsamp_modules.{i}``; ``conv_last`` -> ``final_layer``; ``fc`` -> ``classifier``;
  ``se.fc_squeeze`` / ``se.fc_excitation`` keep their names.

One table each way: the renames are not plain prefix pairs (a ``ConvBNLayer``'s ``.conv.`` /
``.bn.`` become ``.0.`` / ``.1.`` only in some modules, the fuse list is flattened), so the
inverse is written out rather than derived; ``tests/models/test_parity_paddle.py`` checks that
every key of PaddleClas's own files maps there and back.
"""

from __future__ import annotations

import re

import numpy as np

_BN_TO_OFFICIAL = {
  'weight': 'weight',
  'bias': 'bias',
  '_mean': 'running_mean',
  '_variance': 'running_var',
}
_BN_FROM_OFFICIAL = {v: k for k, v in _BN_TO_OFFICIAL.items()}


def _fuse_order(num_branches: int) -> list[tuple[int, ...]]:
  """Official ``(i, j[, k])`` of each entry of PaddleClas's flat ``residual_func_list``."""
  order = []
  for i in range(num_branches):
    for j in range(num_branches):
      if j > i:
        order.append((i, j))
      elif j < i:
        order.extend((i, j, k) for k in range(i - j))
  return order


def _fuse_to_official(m: re.Match) -> str:
  stage, module, n, part = m.groups()
  order = _fuse_order(int(stage))  # PaddleClas's stage s has s branches
  if int(n) >= len(order):
    return m.group(0)  # not a fuse layer: left unmatched, reported as unexpected
  path = '.'.join(str(i) for i in order[int(n)])
  return f'stage{stage}.{module}.fuse_layers.{path}.{"0" if part == "conv" else "1"}.'


def _fuse_from_official(m: re.Match) -> str:
  stage, module, path, part = m.groups()
  order = _fuse_order(int(stage))
  index = tuple(int(i) for i in path.split('.'))
  if index not in order:
    return m.group(0)
  return (
    f'st{stage}.stage_func_list.{module}.fuse_func.residual_func_list.'
    f'{order.index(index)}.{"conv" if part == "0" else "bn"}.'
  )


# (regex, template or function); every rule whose pattern matches is applied, in order.
_TO_OFFICIAL = (
  (r'^conv_layer1_([12])\.conv\.', r'conv\1.'),
  (r'^conv_layer1_([12])\.bn\.', r'bn\1.'),
  (r'^conv_tr1_1\.', 'transition1.0.'),
  (r'^conv_tr1_2\.', 'transition1.1.0.'),
  (r'^conv_tr2\.', 'transition2.2.0.'),
  (r'^conv_tr3\.', 'transition3.3.0.'),
  (r'^st(\d)\.stage_func_list\.(\d+)\.basic_block_list\.', r'stage\1.\2.branches.'),
  (
    r'^st(\d)\.stage_func_list\.(\d+)\.fuse_func\.residual_func_list\.(\d+)\.(conv|bn)\.',
    _fuse_to_official,
  ),
  (r'^last_cls\.func_list\.(\d+)\.', r'incre_modules.\1.0.'),
  (r'^cls_head_conv_list\.', 'downsamp_modules.'),
  (r'^conv_last\.', 'final_layer.'),
  (r'^fc\.', 'classifier.'),
  # Inside blocks and around single ConvBNLayers.
  (r'\.conv([123])\.conv\.', r'.conv\1.'),
  (r'\.conv([123])\.bn\.', r'.bn\1.'),
  (r'\.conv_down\.conv\.', '.downsample.0.'),
  (r'\.conv_down\.bn\.', '.downsample.1.'),
  (r'^((?:transition\d|downsamp_modules|final_layer)(?:\.\d+)*)\.conv\.', r'\1.0.'),
  (r'^((?:transition\d|downsamp_modules|final_layer)(?:\.\d+)*)\.bn\.', r'\1.1.'),
  (r'\.(_mean|_variance)$', lambda m: '.' + _BN_TO_OFFICIAL[m.group(1)]),
)
_FROM_OFFICIAL = (
  (r'\.(running_mean|running_var)$', lambda m: '.' + _BN_FROM_OFFICIAL[m.group(1)]),
  (r'^conv([12])\.', r'conv_layer1_\1.conv.'),
  (r'^bn([12])\.', r'conv_layer1_\1.bn.'),
  (r'^transition1\.0\.([01])\.', lambda m: f'conv_tr1_1.{_part(m.group(1))}.'),
  (r'^transition1\.1\.0\.([01])\.', lambda m: f'conv_tr1_2.{_part(m.group(1))}.'),
  (r'^transition2\.2\.0\.([01])\.', lambda m: f'conv_tr2.{_part(m.group(1))}.'),
  (r'^transition3\.3\.0\.([01])\.', lambda m: f'conv_tr3.{_part(m.group(1))}.'),
  (r'^stage(\d)\.(\d+)\.fuse_layers\.(\d+(?:\.\d+)+)\.([01])\.', _fuse_from_official),
  (r'^stage(\d)\.(\d+)\.branches\.', r'st\1.stage_func_list.\2.basic_block_list.'),
  (r'^incre_modules\.(\d+)\.0\.', r'last_cls.func_list.\1.'),
  (
    r'^downsamp_modules\.(\d+)\.([01])\.',
    lambda m: f'cls_head_conv_list.{m.group(1)}.{_part(m.group(2))}.',
  ),
  (r'^final_layer\.([01])\.', lambda m: f'conv_last.{_part(m.group(1))}.'),
  (r'^classifier\.', 'fc.'),
  (r'\.conv([123])\.', r'.conv\1.conv.'),
  (r'\.bn([123])\.', r'.conv\1.bn.'),
  (r'\.downsample\.0\.', '.conv_down.conv.'),
  (r'\.downsample\.1\.', '.conv_down.bn.'),
)
_TO_OFFICIAL = tuple((re.compile(p), t) for p, t in _TO_OFFICIAL)
_FROM_OFFICIAL = tuple((re.compile(p), t) for p, t in _FROM_OFFICIAL)


def _part(index: str) -> str:
  return 'conv' if index == '0' else 'bn'


def _apply(key: str, table) -> str:
  for pattern, template in table:
    key = pattern.sub(template, key)
  return key


def to_official_key(key: str) -> str:
  """Official name of a PaddleClas key, e.g. ``st2.stage_func_list.0.fuse_func.
  residual_func_list.0.bn._mean`` -> ``stage2.0.fuse_layers.0.1.1.running_mean``."""
  return _apply(key, _TO_OFFICIAL)


def from_official_key(key: str) -> str:
  """Inverse of ``to_official_key``."""
  return _apply(key, _FROM_OFFICIAL)


def is_linear_weight(official_key: str) -> bool:
  """Linear weights are stored ``[in, out]`` by Paddle, ``[out, in]`` in the official layout."""
  return official_key == 'classifier.weight' or (
    '.se.fc_' in official_key and official_key.endswith('.weight')
  )


def to_official_value(official_key: str, value: np.ndarray) -> np.ndarray:
  """PaddleClas layout -> official (PyTorch) layout: Linear weights transposed (a view)."""
  return value.T if is_linear_weight(official_key) and value.ndim == 2 else value


def looks_like_paddle(keys) -> bool:
  """PaddleClas HRNet keys: the stem is ``conv_layer1_1`` and BN statistics are ``_mean``."""
  return any(k.startswith('conv_layer1_1.') or k.endswith(('._mean', '._variance')) for k in keys)
