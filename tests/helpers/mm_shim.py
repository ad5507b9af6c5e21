"""Import shim for the OpenMMLab oracles (mmseg, mmpose, mmdet) on mmcv-lite.

mmcv-lite ships no compiled ``mmcv._ext``, so ``import mmcv.ops`` fails, and importing
``mmseg.models`` / ``mmdet.models`` / ``mmpose.models`` imports ``mmcv.ops`` (detection and
point-rendering ops the HRNet models never run). mmpose also imports ``xtcocotools``, whose wheel
is built against NumPy 1 (its COCO evaluation is never used here).

``install()`` puts a finder first on ``sys.meta_path`` that serves ``mmcv.ops``, ``mmcv.ops.*``
and ``xtcocotools*`` with placeholder modules: any attribute is a class that raises
``RuntimeError`` when instantiated or called, so an op that is actually used fails loudly.
``mmcv.ops.point_sample`` is mmcv's own pure-PyTorch file, loaded as it is. No installed file is
edited.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import pathlib
import sys
import types

_PREFIXES = ('mmcv.ops', 'xtcocotools')


class _Unavailable:
  """Stands for an op of compiled mmcv (or xtcocotools); using it raises."""

  def __init__(self, *args, **kwargs):
    raise RuntimeError(
      f'{type(self).__module__}.{type(self).__name__} needs the compiled '
      'mmcv / xtcocotools, which the tests do not install'
    )


class _PlaceholderModule(types.ModuleType):
  def __getattr__(self, name: str):
    if name.startswith('__'):
      raise AttributeError(name)
    placeholder = type(name, (_Unavailable,), {'__module__': self.__name__})
    setattr(self, name, placeholder)
    return placeholder


class _Loader(importlib.abc.Loader):
  def create_module(self, spec):
    return _PlaceholderModule(spec.name)

  def exec_module(self, module):
    module.__path__ = []  # a package: submodules resolve through the finder too
    if module.__name__ == 'mmcv.ops':
      module.point_sample = _real_point_sample().point_sample


def _real_point_sample():
  name = 'mmcv.ops.point_sample'
  if name not in sys.modules:
    import mmcv

    path = pathlib.Path(mmcv.__file__).parent / 'ops' / 'point_sample.py'
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
  return sys.modules[name]


class _Finder(importlib.abc.MetaPathFinder):
  def find_spec(self, fullname, path=None, target=None):
    if fullname == 'mmcv.ops.point_sample':
      return None  # loaded from mmcv's file by _real_point_sample
    if any(fullname == p or fullname.startswith(p + '.') for p in _PREFIXES):
      return importlib.machinery.ModuleSpec(fullname, _Loader(), is_package=True)
    return None


def install() -> None:
  """Installs the finder (idempotent); call before importing mmseg / mmpose / mmdet models."""
  if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
  if 'mmcv.ops' in sys.modules:
    _real_point_sample()
