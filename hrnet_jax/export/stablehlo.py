"""StableHLO artifacts: ``jax.export`` serialized for CPU, CUDA and TPU.

The artifact is ``jax.export.Exported.serialize()`` (a flatbuffer holding the StableHLO module
with the weights as constants, the symbolic batch and the platforms); any JAX >= the exporting
version's compatibility window runs it with ``jax.export.deserialize(data).call(x)``, or with
:func:`load` below. See https://docs.jax.dev/en/latest/export/export.html.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax
import numpy as np
from jax import export as jax_export

from hrnet_jax import runtime

PLATFORMS = ('cpu', 'cuda', 'tpu')


def export(program, path: str) -> None:
  """Writes ``program.fn`` lowered for ``PLATFORMS`` to ``path`` (symbolic batch ``b`` where
  ``program.input_shape[0]`` is None)."""
  shape = list(program.input_shape)
  if shape[0] is None:
    (shape[0],) = jax_export.symbolic_shape('b')
  spec = jax.ShapeDtypeStruct(tuple(shape), np.dtype(program.input_dtype))
  exported = jax_export.export(jax.jit(program.fn), platforms=PLATFORMS)(spec)
  with open(path, 'wb') as f:
    f.write(exported.serialize())


class ExportedModel:
  """A deserialized StableHLO artifact: ``model(x)`` returns its outputs as a tuple of arrays
  (``logits`` or the feature maps), jitted once per input shape (on CPU with
  ``hrnet_jax.runtime.compiler_options('infer')``). ``metadata``: ``OUT.json`` if present.
  ``exported``: the ``jax.export.Exported``."""

  def __init__(self, exported, metadata: dict[str, Any] | None):
    self.exported = exported
    self.metadata = metadata
    self._call: Callable = jax.jit(
      exported.call, compiler_options=runtime.compiler_options('infer')
    )

  def __call__(self, x) -> tuple[jax.Array, ...]:
    return tuple(self._call(x))


def load(path: str | os.PathLike) -> ExportedModel:
  """Loads an artifact written by ``hrnet-export --format stablehlo`` (and ``path + '.json'``
  when it exists). Raises ``FileNotFoundError``; ``ValueError`` if the file is not a serialized
  ``jax.export`` module."""
  with open(path, 'rb') as f:
    data = f.read()
  try:
    exported = jax_export.deserialize(bytearray(data))
  except Exception as e:  # flatbuffer errors have no common type
    raise ValueError(f'{os.fspath(path)}: not a serialized jax.export module ({e})') from e
  meta_path = os.fspath(path) + '.json'
  metadata = None
  if os.path.isfile(meta_path):
    with open(meta_path) as f:
      metadata = json.load(f)
  return ExportedModel(exported, metadata)


def runner(path: str) -> Callable[[np.ndarray], list[np.ndarray]]:
  """The artifact at ``path`` run by JAX, for verification."""
  model = load(path)
  return lambda x: [np.asarray(o) for o in model(x)]
