"""Inferring the HRNet variant of an official-layout state_dict from its keys and shapes.

The stage grid is read off the keys (modules per stage, blocks per branch) and the widths off the
shapes (``layer1.0.conv1.weight``, ``stage{s}.0.branches.{b}.0.conv1.weight``); the presence of
``downsamp_modules.0.0.bias`` tells the head-bias variants (official, timm ms/gluon) from the
bias-free ones (timm/PaddleClas ssld, mmpretrain); SE layers (``*.se.fc_squeeze.weight``) tell
the SE-HRNet family.
"""

from __future__ import annotations

import re

import numpy as np

from hrnet_jax.models.configs import MODEL_CONFIGS, HRNetConfig

HEAD_BIAS_KEY = 'downsamp_modules.0.0.bias'


def _count(keys, pattern: str) -> int | None:
  found = [int(m.group(1)) for k in keys if (m := re.match(pattern, k))]
  return max(found) + 1 if found else None


def _width(tensors: dict[str, np.ndarray], key: str) -> int | None:
  value = tensors.get(key)
  return int(value.shape[0]) if value is not None and value.ndim == 4 else None


def signature(tensors: dict[str, np.ndarray]) -> dict[str, object]:
  """Stage grid and widths read from official keys; a field is None when its keys are absent."""
  keys = list(tensors)
  sig: dict[str, object] = {
    'layer1.blocks': _count(keys, r'^layer1\.(\d+)\.'),
    'layer1.planes': _width(tensors, 'layer1.0.conv1.weight'),
    'se': any('.se.fc_squeeze.' in k for k in keys),
  }
  for s in (2, 3, 4):
    sig[f'stage{s}.modules'] = _count(keys, rf'^stage{s}\.(\d+)\.')
    branches = _count(keys, rf'^stage{s}\.0\.branches\.(\d+)\.') or 0
    sig[f'stage{s}.blocks'] = (
      tuple(_count(keys, rf'^stage{s}\.0\.branches\.{b}\.(\d+)\.') for b in range(branches)) or None
    )
    sig[f'stage{s}.channels'] = (
      tuple(_width(tensors, f'stage{s}.0.branches.{b}.0.conv1.weight') for b in range(branches))
      or None
    )
  return sig


def config_signature(cfg: HRNetConfig) -> dict[str, object]:
  """The same fields computed from an architecture config."""
  sig: dict[str, object] = {
    'layer1.blocks': cfg.stage1.num_blocks[0],
    'layer1.planes': cfg.stage1.num_channels[0],
    'se': cfg.se,
  }
  for s, stage in zip((2, 3, 4), cfg.stages):
    sig[f'stage{s}.modules'] = stage.num_modules
    sig[f'stage{s}.blocks'] = stage.num_blocks
    sig[f'stage{s}.channels'] = stage.out_channels
  return sig


def looks_like_hrnet(tensors: dict[str, np.ndarray]) -> bool:
  """Official-layout keys of an HRNet: a ``transition1`` and a ``stage2`` module."""
  return any(k.startswith('transition1.') for k in tensors) and any(
    k.startswith('stage2.') for k in tensors
  )


def infer_arch(tensors: dict[str, np.ndarray]) -> tuple[str, bool, bool]:
  """Returns ``(arch, head_conv_bias, exact)`` for official-layout ``tensors``; ``arch`` is a
  base (non-ssld) name.

  ``exact`` is False when no variant matches every field; ``arch`` is then the closest one, and
  the strict conversion reports what differs.
  """
  head_bias = HEAD_BIAS_KEY in tensors
  sig = signature(tensors)
  base_archs = [a for a in MODEL_CONFIGS if not a.endswith('_ssld')]
  scores = {
    a: sum(sig[k] == v for k, v in config_signature(MODEL_CONFIGS[a]).items()) for a in base_archs
  }
  arch = max(base_archs, key=lambda a: scores[a])
  return arch, head_bias, scores[arch] == len(sig)
