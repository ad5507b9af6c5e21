"""One rule table between Flax parameter paths and official HRNet state_dict keys.

The Flax tree mirrors the official module tree (HRNet/HRNet-Image-Classification
``lib/models/cls_hrnet.py``, as ``hrnet_jax.models.hrnet`` builds it), so a path such as
``stage2.0.fuse_layers.1.0.0.conv.kernel`` names the official key
``stage2.0.fuse_layers.1.0.0.0.weight``. The same rules and one kernel permutation serve the
converter (PyTorch -> Flax) and the export (Flax -> PyTorch). Official keys equal timm's
(``timm/models/hrnet.py`` keeps them); the other layouts rename to these
(``hrnet_jax.convert.layouts``).
"""

from __future__ import annotations

import re

import numpy as np

# Flax BatchNorm leaf -> PyTorch BatchNorm2d entry.
_BN_FIELDS = {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean', 'var': 'running_var'}

# (Flax path regex, official key template), tried in order; the first match wins.
_RULES: tuple[tuple[re.Pattern, str], ...] = tuple(
  (re.compile(p), t)
  for p, t in (
    # Sequential(conv, bn[, relu]) -> ConvBN(conv, bn): torch indices 0 and 1.
    (r'^(.+)\.conv\.kernel$', r'\1.0.weight'),
    (r'^(.+)\.conv\.bias$', r'\1.0.bias'),
    *((rf'^(.+)\.bn\.{leaf}$', rf'\1.1.{entry}') for leaf, entry in _BN_FIELDS.items()),
    # Named convs / BNs (stem conv1/bn1, block conv1..3/bn1..3).
    (r'^((?:.+\.)?conv\d)\.kernel$', r'\1.weight'),
    *((rf'^((?:.+\.)?bn\d)\.{leaf}$', rf'\1.{entry}') for leaf, entry in _BN_FIELDS.items()),
    # SE-HRNet (PaddleClas SELayer): torch-style names of its two Linear layers.
    (r'^(.+\.se\.fc_(?:squeeze|excitation))\.kernel$', r'\1.weight'),
    (r'^(.+\.se\.fc_(?:squeeze|excitation))\.bias$', r'\1.bias'),
    (r'^classifier\.kernel$', r'classifier.weight'),
    (r'^classifier\.bias$', r'classifier.bias'),
  )
)

# Axes of a Flax kernel in PyTorch order, by rank: conv HWIO -> OIHW, linear (in, out) -> (out,
# in); the other direction is its inverse. Every other leaf has the same layout in both.
_TO_TORCH_AXES = {4: (3, 2, 0, 1), 2: (1, 0)}
_TO_FLAX_AXES = {
  ndim: tuple(int(a) for a in np.argsort(axes)) for ndim, axes in _TO_TORCH_AXES.items()
}


def torch_key(flax_path: str) -> str:
  """Official state_dict key of a Flax leaf path; ``KeyError`` if no rule covers it."""
  for pattern, template in _RULES:
    if pattern.match(flax_path):
      return pattern.sub(template, flax_path)
  raise KeyError(f'no official key for Flax path {flax_path!r}')


def _permute(flax_path: str, value: np.ndarray, table: dict) -> np.ndarray:
  axes = table.get(value.ndim) if flax_path.endswith('kernel') else None
  return value if axes is None else np.transpose(value, axes)


def torch_to_flax(flax_path: str, value: np.ndarray) -> np.ndarray:
  """PyTorch layout -> Flax layout (a view): conv ``OIHW -> HWIO``, linear ``(out, in) -> (in,
  out)``."""
  return _permute(flax_path, value, _TO_FLAX_AXES)


def flax_to_torch(flax_path: str, value: np.ndarray) -> np.ndarray:
  """Inverse of ``torch_to_flax``."""
  return _permute(flax_path, value, _TO_TORCH_AXES)


def torch_shape(flax_path: str, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
  """The PyTorch shape a leaf of ``flax_shape`` must come from."""
  axes = _TO_TORCH_AXES.get(len(flax_shape)) if flax_path.endswith('kernel') else None
  return tuple(flax_shape) if axes is None else tuple(flax_shape[a] for a in axes)
