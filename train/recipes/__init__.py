"""Training recipes: ``ml_collections`` config files, each defining ``get_config()``.

``base.py`` documents every field; the others override it. ``hrnet-train --config NAME`` takes a
recipe by its module name here (``digits``, ``imagenet_cosine``, ...: ``names()``), ``--config
FILE[:ARG]`` any recipe file; ``--config.FIELD=value`` changes one field.

The recipes ship inside the package, so a name resolves to this package's module file
(``find``), in an editable and a regular install alike.
"""

from __future__ import annotations

import importlib.util
import pkgutil


def names() -> tuple[str, ...]:
  """The recipe names: the public modules of this package, sorted."""
  return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith('_')))


def find(name: str) -> str | None:
  """The file of recipe ``name`` (module ``hrnet_jax.train.recipes.<name>``); None when there
  is no such recipe."""
  if name not in names():
    return None
  return importlib.util.find_spec(f'{__name__}.{name}').origin
