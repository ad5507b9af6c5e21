"""Pretrained-checkpoint folders: an Orbax checkpoint of the model state plus ``config.json``.

Layout of a folder written by ``save_pretrained`` (and by ``convert_official_weights``)::

    OUT_DIR/
      config.json   # {"format_version", "arch", "model_kwargs", "num_classes",
                    #  "pretrained_cfg", "source": {...}}
      state/        # Orbax PyTree checkpoint (uncompressed): every Param and BatchStat leaf

Loading is strict: a tree with missing, unexpected or mis-shaped leaves is refused as a whole
(``CheckpointMismatchError`` lists every problem) and nothing is assigned. Writing is atomic: the
folder is built under a temporary name beside ``OUT_DIR`` and renamed at the end.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Callable, Iterable

import jax
import numpy as np
from flax import nnx

from hrnet_jax.keys import path_str

CONFIG_FILE = 'config.json'
STATE_DIR = 'state'
FORMAT_VERSION = 1


class CheckpointMismatchError(ValueError):
  """A state that does not fit the model; ``problems`` lists every missing / unexpected /
  mis-shaped key."""

  def __init__(self, what: str, missing: Iterable[str] = (), unexpected: Iterable[str] = (),
               mismatched: Iterable[str] = ()):
    self.missing = sorted(missing)
    self.unexpected = sorted(unexpected)
    self.mismatched = sorted(mismatched)
    lines = [f'{what}: state does not match the model '
             f'({len(self.missing)} missing, {len(self.unexpected)} unexpected, '
             f'{len(self.mismatched)} mis-shaped); nothing was loaded.']
    for title, keys in (('missing', self.missing), ('unexpected', self.unexpected),
                        ('mis-shaped', self.mismatched)):
      if keys:
        lines.append(f'  {title}:')
        lines.extend(f'    {k}' for k in keys)
    super().__init__('\n'.join(lines))


def model_variables(model: nnx.Module) -> dict[str, nnx.Variable]:
  """Every Param / BatchStat of ``model`` by dotted path (``'stage2.0.branches.0.0.conv1.kernel'``)."""
  return {path_str(path): var for path, var in nnx.to_flat_state(nnx.state(model))}


def abstract_arrays(build: Callable[[nnx.Rngs], nnx.Module]) -> dict[str, jax.ShapeDtypeStruct]:
  """Shape and dtype of every Param / BatchStat of the model ``build(rngs)`` returns, by dotted
  path, without allocating or drawing its weights (about 2 s for hrnet_w64, no memory).

  The rng key is traced, so every initializer only traces its draw; everything that does not
  depend on it (the rng counter, BatchNorm ones and zeros) is computed eagerly, because a traced
  counter makes ``nnx.eval_shape`` quadratic: ``Variable.set_value`` reads the new count's
  ``sharding``, whose error message on a tracer scans every equation traced so far (13 s for
  hrnet_w18 instead of 1.7 s).
  """

  def leaves(key):
    with jax.ensure_compile_time_eval():
      model = build(nnx.Rngs(key))
    return {k: v.get_value() for k, v in model_variables(model).items()}

  return jax.eval_shape(leaves, jax.random.key(0))


def model_arrays(model: nnx.Module) -> dict[str, np.ndarray]:
  """The model state as host arrays, by dotted path."""
  return {k: np.asarray(v.get_value()) for k, v in model_variables(model).items()}


def assign_arrays(model: nnx.Module, arrays: dict[str, Any], *, what: str,
                  allow_missing: Iterable[str] = ()) -> list[str]:
  """Loads ``arrays`` (dotted path -> array in Flax layout) into ``model``, all or nothing.

  Model leaves starting with an ``allow_missing`` prefix may be absent from ``arrays`` and keep
  their init (e.g. a new classifier). Values are cast to each leaf's dtype. Returns the model
  paths left at init. Raises ``CheckpointMismatchError`` naming ``what``.
  """
  variables = model_variables(model)
  allow_missing = tuple(allow_missing)
  missing = [k for k in variables if k not in arrays and not k.startswith(allow_missing)]
  unexpected = [k for k in arrays if k not in variables]
  mismatched = [
      f'{k}: checkpoint {tuple(np.shape(arrays[k]))} vs model {tuple(v.get_value().shape)}'
      for k, v in variables.items()
      if k in arrays and tuple(np.shape(arrays[k])) != tuple(v.get_value().shape)
  ]
  if missing or unexpected or mismatched:
    raise CheckpointMismatchError(what, missing, unexpected, mismatched)
  for k, v in variables.items():
    if k in arrays:
      v.set_value(np.asarray(arrays[k]).astype(v.get_value().dtype))
  return [k for k in variables if k not in arrays]


def _nested(flat: dict[str, np.ndarray]) -> dict:
  tree: dict = {}
  for key, value in flat.items():
    node = tree
    *parents, leaf = key.split('.')
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def _flatten(tree: dict, prefix: str = '') -> dict[str, np.ndarray]:
  flat = {}
  for k, v in tree.items():
    key = f'{prefix}{k}'
    if isinstance(v, dict):
      flat.update(_flatten(v, key + '.'))
    else:
      flat[key] = np.asarray(v)
  return flat


def _save_state(path: pathlib.Path, tree: dict):
  """Writes ``tree`` (nested dicts of NumPy arrays) as an Orbax checkpoint, straight from the
  arrays.

  Orbax's defaults copy every NumPy leaf first (against a caller mutating it during an async
  save; this save blocks) and zstd-compress it, which makes TensorStore hold every compressed
  chunk until the commit: together about 1.5x the weights in memory on top of them, to save ~8%
  of disk. Uncompressed, TensorStore writes from the arrays themselves. Readers need no option:
  the codec is in each array's metadata.
  """
  import orbax.checkpoint as ocp

  handlers = ocp.type_handlers
  registry = handlers.create_type_handler_registry(
      (np.ndarray, handlers.NumpyHandler(deepcopy_host_arrays=False)),
      # Unused (leaves are NumPy), but Orbax warns when the registry has no jax.Array handler.
      (jax.Array, handlers.get_type_handler(jax.Array)))
  handler = ocp.PyTreeCheckpointHandler(type_handler_registry=registry, use_compression=False)
  with ocp.Checkpointer(handler) as ckptr:
    ckptr.save(path, args=ocp.args.PyTreeSave(tree))


def write_pretrained(arrays: dict[str, np.ndarray], config: dict, out_dir: str | os.PathLike,
                     *, overwrite: bool = False) -> pathlib.Path:
  """Writes ``arrays`` (dotted Flax paths) and ``config`` as a checkpoint folder, atomically.

  The arrays are written as they are, without a copy. Raises ``FileExistsError`` if ``out_dir``
  exists and is not empty, unless ``overwrite``. On any failure the temporary folder is removed
  and ``out_dir`` is left as it was.
  """
  out = pathlib.Path(out_dir).absolute()
  if out.exists() and any(out.iterdir()) and not overwrite:
    raise FileExistsError(f'{out} exists and is not empty (pass overwrite=True / --overwrite)')
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{out.name}.tmp-', dir=out.parent))
  try:
    _save_state(tmp / STATE_DIR, _nested(arrays))
    config = {'format_version': FORMAT_VERSION, **config}
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + '\n')
    if out.exists():
      old = out.with_name(f'.{out.name}.old-{os.getpid()}')
      out.rename(old)
      tmp.rename(out)
      shutil.rmtree(old)
    else:
      tmp.rename(out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out


def read_config(ckpt_dir: str | os.PathLike) -> dict:
  """``config.json`` of a checkpoint folder; ``FileNotFoundError`` / ``ValueError`` name it."""
  path = pathlib.Path(ckpt_dir) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f'{ckpt_dir}: not a hrnet-jax checkpoint folder (no {CONFIG_FILE})')
  try:
    config = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: invalid JSON ({e})') from None
  if 'arch' not in config:
    raise ValueError(f'{path}: no "arch" entry')
  return config


def read_pretrained(ckpt_dir: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
  """Returns (config, arrays by dotted Flax path) of a checkpoint folder."""
  import orbax.checkpoint as ocp

  config = read_config(ckpt_dir)
  state_path = pathlib.Path(ckpt_dir).absolute() / STATE_DIR
  if not state_path.is_dir():
    raise FileNotFoundError(f'{ckpt_dir}: no {STATE_DIR}/ folder')
  try:
    with ocp.StandardCheckpointer() as ckptr:
      tree = ckptr.restore(state_path)
  except Exception as e:  # Orbax raises many types for a damaged folder.
    raise ValueError(f'{state_path}: cannot read the Orbax checkpoint ({type(e).__name__}: {e})'
                     ) from None
  return config, _flatten(tree)
