"""PaddleClas HRNet checkpoints (``.pdparams``): a restricted reader and a writer.

``paddle.save(model.state_dict(), path)`` (``python/paddle/framework/io.py``) pickles a dict of
name -> NumPy array plus a ``StructuredToParameterName@@`` table (structured name -> static
parameter name). Nothing here imports paddle: the pickle is read by ``RestrictedUnpickler``,
which resolves only the NumPy globals an array needs, so a file that would import or call
anything else is refused before any of it runs. The key rules and the Linear layout are
``hrnet_jax.convert.layouts.paddle``'s.
"""

from __future__ import annotations

import os
import pathlib
import pickle

import numpy as np

from hrnet_jax import atomic

PARAM_TABLE_KEY = 'StructuredToParameterName@@'


class RestrictedUnpickler(pickle.Unpickler):
  """Resolves only what a pickled NumPy array needs; any other global is refused.

  ``pickle.UnpicklingError`` names the refused global; nothing from the file has run by then
  (a global must be resolved before it can be called).
  """

  _ALLOWED = {
    ('numpy._core.multiarray', '_reconstruct'),  # numpy >= 2
    ('numpy.core.multiarray', '_reconstruct'),  # numpy 1.x (older .pdparams)
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
  }

  def find_class(self, module: str, name: str):
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(
        f'refused to load global {module}.{name} (only NumPy arrays may be unpickled)'
      )
    if name == '_reconstruct':
      return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own _reconstruct, either numpy
    return getattr(np, name)


def load_pdparams(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a ``.pdparams`` file into name -> array (the parameter-name table dropped).

  Raises ``pickle.UnpicklingError`` for a refused global, ``ValueError`` for content that is not
  a dict of numeric arrays, and whatever ``pickle`` raises for a damaged file.
  """
  with open(path, 'rb') as f:
    obj = RestrictedUnpickler(f).load()
  if not isinstance(obj, dict):
    raise ValueError(f'holds a {type(obj).__name__}, not a state_dict')
  tensors = {}
  for key, value in obj.items():
    if key == PARAM_TABLE_KEY:
      continue
    if not isinstance(key, str):
      raise ValueError(f'state_dict key {key!r} is not a string')
    if not isinstance(value, np.ndarray) or value.dtype.kind not in 'fiub':
      raise ValueError(
        f'entry {key!r} is a {type(value).__name__}'
        f'{f" of {value.dtype}" if isinstance(value, np.ndarray) else ""}, '
        'not a numeric array'
      )
    tensors[key] = value
  return tensors


def save_pdparams(tensors: dict[str, np.ndarray], path: str | os.PathLike) -> pathlib.Path:
  """Writes ``tensors`` (PaddleClas names and layout) as ``paddle.save`` does (pickle protocol
  4 of a dict of arrays), readable by ``paddle.load`` + ``set_state_dict``. Atomic; a full disk
  is an ``OSError`` naming the folder and the size needed (``atomic.write_file``)."""

  def write(tmp: str) -> None:
    with open(tmp, 'wb') as f:
      pickle.dump(dict(tensors), f, protocol=4)

  size = sum(t.nbytes for t in tensors.values()) + 2**20  # + the pickle's framing and names
  return atomic.write_file(path, write, size=size, what='the .pdparams file')
