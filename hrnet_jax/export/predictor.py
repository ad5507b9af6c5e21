"""The exported ONNX graph as a predictor: CPU inference without JAX compiling the model.

    from hrnet_jax.export import OnnxRuntimeModel
    model = OnnxRuntimeModel.for_checkpoint('converted/hrnet_w18', input_size=(224, 224))
    (logits,) = model(x)   # x [B, 224, 224, 3] float32, normalized as eval_transform returns

``for_checkpoint`` exports the checkpoint once (``hrnet-export --format onnx --input-dtype
float32``, verified against the JAX model within ``RELATIVE_BOUND['float32']`` before it is
written) into a cache folder and reuses it while the checkpoint's files are unchanged; the model
then takes what the JAX model takes (``hrnet_jax.load_pretrained(checkpoint)(x)``) and returns
its outputs within that bound. ``OnnxRuntimeModel(path)`` runs any artifact ``hrnet-export
--format onnx`` wrote. onnxruntime runs it on the CPU provider, one intra-op thread per core
this process may use (as the ``export onnx`` rows of docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np

from hrnet_jax.errors import BadInputError
from hrnet_jax.export import core, onnx
from hrnet_jax.export.program import ExportOptions
from hrnet_jax.runtime import compile_cache

CACHE_ENV = 'HRNET_JAX_ONNX_CACHE'  # a folder, or off / 0 / none to export into a temp folder


class OnnxRuntimeModel:
  """An ONNX artifact in onnxruntime: ``model(x)`` returns its outputs (``metadata['outputs']``
  order, float32 numpy arrays) for ``x`` in the artifact's input contract
  (``metadata['input']``: ``[B, H, W, 3]`` NHWC by default, uint8 or float32).

  ``path``: the ``.onnx`` file; ``path + '.json'`` (written by ``hrnet-export``) is read into
  ``metadata`` when present (else None). Raises ``FileNotFoundError`` for a missing file,
  ``EnvironmentFailure`` when onnxruntime is not installed or cannot load it, and, on a call,
  ``BadInputError`` naming the expected shape and dtype when ``x`` does not fit them.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    if not os.path.isfile(self.path):
      raise FileNotFoundError(f'{self.path}: no such ONNX file')
    meta_path = self.path + '.json'
    self.metadata: dict[str, Any] | None = None
    if os.path.isfile(meta_path):
      with open(meta_path) as f:
        self.metadata = json.load(f)
    self.session = onnx.session(self.path, threads=len(os.sched_getaffinity(0)))
    (self._input,) = self.session.get_inputs()
    self.output_names = [o.name for o in self.session.get_outputs()]

  def __call__(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
    x = np.asarray(x)
    want = self._input.shape  # [B, H, W, 3] with B a name for a symbolic batch
    dtype = {'tensor(float)': np.float32, 'tensor(uint8)': np.uint8}.get(self._input.type)
    fits = x.ndim == len(want) and all(
      not isinstance(w, int) or w == d for w, d in zip(want, x.shape)
    )
    if not fits or (dtype is not None and x.dtype != dtype):
      raise BadInputError(
        f'{self.path}: input must be {np.dtype(dtype).name if dtype else self._input.type} '
        f'of shape {want}, got {x.dtype.name} {list(x.shape)}'
      )
    return tuple(self.session.run(self.output_names, {self._input.name: x}))

  @classmethod
  def for_checkpoint(
    cls,
    checkpoint: str | os.PathLike,
    *,
    input_size: tuple[int, int],
    cache_dir: str | os.PathLike | None = None,
  ) -> OnnxRuntimeModel:
    """The checkpoint folder exported (float32 input, NHWC, symbolic batch, ``input_size``
    ``(H, W)``) and loaded. The artifact is cached in ``cache_dir`` (default: ``$CACHE_ENV``,
    else ``~/.cache/hrnet_jax/onnx``) under a name that hashes the checkpoint's path, its files'
    names, sizes and modification times, the input size and the library versions, so that a
    changed checkpoint is exported again. Raises what ``hrnet_jax.export.export`` raises
    (``BadInputError`` for a missing or bad checkpoint, ``ExportMismatchError`` when the graph
    does not match the JAX model, ``EnvironmentFailure`` without jax2onnx / onnxruntime)."""
    checkpoint = os.path.abspath(os.fspath(checkpoint))
    options = ExportOptions(checkpoint, input_size=tuple(input_size), input_dtype='float32')
    folder = os.fspath(cache_dir) if cache_dir else compile_cache.user_cache_dir(CACHE_ENV, 'onnx')
    if folder is None:
      raise BadInputError(f'{CACHE_ENV} is off: pass cache_dir to keep the exported graph')
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f'{os.path.basename(checkpoint)}-{_fingerprint(options)}.onnx')
    if not (os.path.isfile(path) and os.path.isfile(path + '.json')):
      core.export(options, 'onnx', path, overwrite=True)
    return cls(path)


def _fingerprint(options: ExportOptions) -> str:
  """16 hex digits of what the exported graph depends on (see ``for_checkpoint``)."""
  if not os.path.isdir(options.checkpoint):
    raise BadInputError(f'checkpoint directory not found: {options.checkpoint}')
  h = hashlib.sha256(repr(options).encode())
  for root, dirs, files in os.walk(options.checkpoint):
    dirs.sort()
    for name in sorted(files):
      st = os.stat(os.path.join(root, name))
      h.update(f'{os.path.relpath(os.path.join(root, name), options.checkpoint)}'.encode())
      h.update(f':{st.st_size}:{st.st_mtime_ns};'.encode())
  for package in ('hrnet-jax', 'jax', 'jax2onnx', 'onnx'):
    try:
      h.update(f'{package}={importlib_metadata.version(package)};'.encode())
    except importlib_metadata.PackageNotFoundError:
      h.update(f'{package}=?;'.encode())
  return h.hexdigest()[:16]
