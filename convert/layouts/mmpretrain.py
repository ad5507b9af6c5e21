"""mmpretrain ``ImageClassifier`` keys <-> official HRNet keys, from one table.

mmpretrain (``mmpretrain/models/backbones/hrnet.py``, ``necks/hr_fuse.py``) keeps the official
backbone names under ``backbone.``; its ``HRFuseScales`` neck renames the classification head
(``neck.0.increase_layers``, ``neck.0.downsample_layers.{i}.conv|bn``,
``neck.0.final_layer.conv|bn``, convs without bias) and ``head.fc`` is the classifier. Every rule
is a prefix rename, so both directions are compiled from the same pairs.
"""

from __future__ import annotations

import re

# (mmpretrain prefix, official prefix); ``{i}`` is a module index. The empty official prefix
# (the backbone) comes last: read backwards, it matches every key the others did not.
_PREFIXES = (
  ('neck.0.increase_layers.', 'incre_modules.'),
  ('neck.0.downsample_layers.{i}.conv.', 'downsamp_modules.{i}.0.'),
  ('neck.0.downsample_layers.{i}.bn.', 'downsamp_modules.{i}.1.'),
  ('neck.0.final_layer.conv.', 'final_layer.0.'),
  ('neck.0.final_layer.bn.', 'final_layer.1.'),
  ('head.fc.', 'classifier.'),
  ('backbone.', ''),
)


def _rule(source: str, target: str) -> tuple[re.Pattern, str]:
  pattern = '^' + r'(\d+)'.join(re.escape(part) for part in source.split('{i}'))
  return re.compile(pattern), target.replace('{i}', r'\1')


_TO_OFFICIAL = tuple(_rule(mm, official) for mm, official in _PREFIXES)
_FROM_OFFICIAL = tuple(_rule(official, mm) for mm, official in _PREFIXES)


def _rename(key: str, rules) -> str:
  for pattern, template in rules:
    new, n = pattern.subn(template, key, count=1)
    if n:
      return new
  return key


def to_official_key(key: str) -> str:
  """Official name of an mmpretrain key (unchanged when no rule covers it)."""
  return _rename(key, _TO_OFFICIAL)


def from_official_key(key: str) -> str:
  """Inverse of ``to_official_key``."""
  return _rename(key, _FROM_OFFICIAL)
