"""Human-readable ImageNet-1k class names, in the standard class-index order.

``data/imagenet_classes.txt`` was generated once from timm's ``timm/data/_info`` files
(``imagenet_synsets.txt`` order, first lemma of each synset from
``imagenet_synset_to_lemma.txt``). Three names are disambiguated so all 1000 are unique:
134 ``crane (bird)``, 517 ``crane (machine)``, 639 ``tank suit`` (638 stays ``maillot``).
"""

from __future__ import annotations

import functools
from importlib import resources

__all__ = ['imagenet_class_names']


@functools.lru_cache(maxsize=None)
def _names() -> tuple[str, ...]:
  text = resources.files('hrnet_jax').joinpath('data/imagenet_classes.txt').read_text('utf-8')
  names = tuple(line.strip() for line in text.splitlines() if line.strip())
  if len(names) != 1000:  # a corrupted install would otherwise mislabel silently
    raise RuntimeError(f'imagenet_classes.txt has {len(names)} names, expected 1000')
  return names


def imagenet_class_names() -> list[str]:
  """The 1000 ImageNet-1k class names; index ``i`` is the name of logit ``i``.

  Returns:
    a fresh ``list[str]`` (the file is read once and cached), e.g. ``[0] == 'tench'``.

  Raises:
    RuntimeError: the packaged file does not hold exactly 1000 names.
  """
  return list(_names())
