"""Release folders: a model's weights as an Orbax checkpoint of its state plus ``config.json``
(``config.json``'s entries come from ``hrnet_jax.factory.release_config``). Not to be confused
with the training checkpoints of a run's workdir (``hrnet_jax.train.checkpointing``).

Layout of a folder written by ``save_pretrained`` (and by ``convert_official_weights``)::

    OUT_DIR/
      config.json   # {"format_version", "arch", "model_kwargs", "num_classes",
                    #  "pretrained_cfg", "source": {...}}
      state/        # Orbax PyTree checkpoint (uncompressed): every Param and BatchStat leaf

Loading is strict: a tree with missing, unexpected or mis-shaped leaves is refused as a whole
(``state.CheckpointMismatchError`` lists every problem) and nothing is assigned. ``config.json`` records
a SHA-256 of the arrays (``"checksum"``), verified on every read: a folder whose data changed
after writing (bit rot, a partial copy) or that holds NaN/inf is refused
(``CheckpointIntegrityError``). Folders written before checksums existed still load, with a note.

Writing is atomic and never deletes what it did not write: the folder is built under a temporary
name beside ``OUT_DIR`` (``.NAME.tmp-PID-*``) and renamed in; ``overwrite`` only ever replaces a
folder that is itself a release folder (``config.json`` + ``state/``, nothing else), which is
moved aside (``atomic.replace``: ``.NAME.old-PID``) and removed last. Leftovers of a killed writer are cleaned up by
the next write to the same place (an old folder moved aside and not replaced is put back).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import pathlib
from typing import Any, Iterable

import jax
import numpy as np
import orbax.checkpoint as ocp

from hrnet_jax import atomic, errors
from hrnet_jax.errors import BadInputError
from hrnet_jax.pretrained.cfgs import pretrained_cfg_problem
from hrnet_jax.pretrained.state import format_key_report

log = logging.getLogger(__name__)
atomic.quiet_storage_failure_logs()

CONFIG_FILE = 'config.json'
STATE_DIR = 'state'
# 2: config.json always carries the arrays' checksum (version 1 folders may predate it).
FORMAT_VERSION = 2
CHECKSUMMED_SINCE = 2
CHECKSUM_KEY = 'checksum'


class CheckpointIntegrityError(BadInputError):
  """Arrays that changed after writing (checksum mismatch) or hold NaN/inf."""


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

  handlers = ocp.type_handlers
  registry = handlers.create_type_handler_registry(
    (np.ndarray, handlers.NumpyHandler(deepcopy_host_arrays=False)),
    # Unused (leaves are NumPy), but Orbax warns when the registry has no jax.Array handler.
    (jax.Array, handlers.get_type_handler(jax.Array)),
  )
  handler = ocp.PyTreeCheckpointHandler(type_handler_registry=registry, use_compression=False)
  with ocp.Checkpointer(handler) as ckptr:
    ckptr.save(path, args=ocp.args.PyTreeSave(tree))


def _array_digest(a) -> bytes:
  a = np.ascontiguousarray(a)
  return hashlib.sha256(a.reshape(-1).view(np.uint8)).digest()


def content_checksum(arrays: dict[str, Any]) -> str:
  """SHA-256 (hex) of ``arrays`` (dotted path -> array): of every key, dtype, shape and the
  SHA-256 of its bytes, in key order. The per-array hashes run in threads (hashlib releases the
  GIL)."""

  keys = sorted(arrays)
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
    digests = pool.map(_array_digest, (arrays[k] for k in keys))
  total = hashlib.sha256()
  for key, digest in zip(keys, digests):
    a = arrays[key]
    total.update(f'{key}\0{np.asarray(a).dtype.str}\0{np.shape(a)}\0'.encode() + digest)
  return total.hexdigest()


def non_finite_keys(arrays: dict[str, Any]) -> list[str]:
  """Sorted keys of the floating-point arrays holding a NaN or an infinity."""
  return sorted(
    k
    for k, v in arrays.items()
    if np.issubdtype(np.asarray(v).dtype, np.inexact) and not np.isfinite(v).all()
  )


def refuse_non_finite(arrays: dict[str, Any], what: str, hint: str = '') -> None:
  """``CheckpointIntegrityError`` naming every array of ``arrays`` with a NaN/inf."""
  bad = non_finite_keys(arrays)
  if bad:
    raise CheckpointIntegrityError(
      '\n'.join(
        [f'{what}: {len(bad)} array(s) hold NaN or inf values; refused{hint}.']
        + format_key_report('non-finite', bad)
      )
    )


def is_checkpoint_folder(path: str | os.PathLike) -> bool:
  """True when ``path`` holds exactly ``config.json`` and ``state/`` (what this module writes)."""
  path = pathlib.Path(path)
  try:
    names = set(os.listdir(path))
  except OSError:
    return False
  return (
    names == {CONFIG_FILE, STATE_DIR}
    and (path / CONFIG_FILE).is_file()
    and (path / STATE_DIR).is_dir()
  )


def check_output_folder(
  out_dir: str | os.PathLike, *, overwrite: bool = False, protect: Iterable[str | os.PathLike] = ()
) -> pathlib.Path:
  """Checks that a release folder may be written at ``out_dir``; returns its absolute path, any
  symlink resolved (``atomic``'s replace policy).

  First cleans up after killed writers of ``out_dir`` (``atomic.recover_leftovers``). Refused
  (``BadInputError``, nothing touched): ``out_dir`` a file; the current directory, one
  of its ancestors, the home directory or ``/`` when it exists; a ``protect`` path (e.g. the
  source checkpoint) equal to or inside it; an existing non-empty folder without ``overwrite``
  (``FileExistsError``), or with ``overwrite`` when it is not a checkpoint folder.
  """
  out = atomic.resolve_output(out_dir)
  if out.exists() and not out.is_dir():
    raise BadInputError(f'{out_dir}: exists and is a file, not a folder')
  atomic.recover_leftovers(
    out, ours=lambda entry: entry.is_dir() and set(os.listdir(entry)) <= {CONFIG_FILE, STATE_DIR}
  )
  atomic.refuse_unsafe_output(out, out_dir, protect=protect, noun='checkpoint')
  if out.exists():
    contents = sorted(os.listdir(out))
    if contents and not overwrite:
      raise FileExistsError(
        f'{out_dir}: exists and is not empty (--overwrite replaces an '
        'existing hrnet-jax checkpoint folder)'
      )
    if contents and not is_checkpoint_folder(out):
      shown = ', '.join(contents[:5]) + (', ...' if len(contents) > 5 else '')
      raise BadInputError(
        f'{out_dir}: not an hrnet-jax checkpoint folder (it holds {shown}); '
        '--overwrite only replaces a folder holding config.json and state/, '
        'nothing else. Nothing was touched'
      )
  return out


def write_pretrained(
  arrays: dict[str, np.ndarray],
  config: dict,
  out_dir: str | os.PathLike,
  *,
  overwrite: bool = False,
  protect: Iterable[str | os.PathLike] = (),
  allow_non_finite: bool = False,
) -> pathlib.Path:
  """Writes ``arrays`` (dotted Flax paths) and ``config`` as a checkpoint folder, atomically.

  ``config.json`` gets ``format_version`` and the arrays' ``checksum``. The arrays are written
  as they are, without a copy. Raises what ``check_output_folder`` raises, and
  ``CheckpointIntegrityError`` for NaN/inf arrays unless ``allow_non_finite`` (then recorded in
  ``config.json``), and ``OSError`` naming ``out_dir``'s parent for a full disk (with the size
  needed and the space free) or a read-only one. On any failure, Ctrl-C included, the temporary
  folder is removed and ``out_dir`` is left as it was.
  """
  out = check_output_folder(out_dir, overwrite=overwrite, protect=protect)
  if not allow_non_finite:
    refuse_non_finite(arrays, str(out_dir), ' (pass --allow-non-finite to keep them)')
  out.parent.mkdir(parents=True, exist_ok=True)
  needed = sum(np.asarray(a).nbytes for a in arrays.values()) + 2**20
  free = atomic.ensure_free_space(out.parent, needed, 'the checkpoint')
  tmp = atomic.temp_dir(out)
  try:
    _save_state(tmp / STATE_DIR, _nested(arrays))
    config = {
      'format_version': FORMAT_VERSION,
      **config,
      CHECKSUM_KEY: {'sha256': content_checksum(arrays)},
    }
    if allow_non_finite:
      config['allow_non_finite'] = True
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + '\n')
    atomic.replace(tmp, out)  # only ever an empty or a checkpoint folder (check_output_folder)
  except BaseException as e:
    full = isinstance(e, Exception) and atomic.write_error(
      e, out.parent, what='the checkpoint', needed=needed, free=free, written=tmp
    )
    atomic.remove_settled(tmp)  # TensorStore may still be writing into it
    if full:  # named by the folder written to, not by the temporary one
      raise full from None
    raise
  return out


def read_config(ckpt_dir: str | os.PathLike) -> dict:
  """``config.json`` of a checkpoint folder; ``FileNotFoundError`` / ``BadInputError`` name it
  (and the entry at fault: invalid JSON, no ``arch``, a ``pretrained_cfg`` entry preprocessing
  cannot use, see ``cfgs.pretrained_cfg_problem``)."""
  path = pathlib.Path(ckpt_dir) / CONFIG_FILE
  if not pathlib.Path(ckpt_dir).is_dir():
    raise FileNotFoundError(f'{ckpt_dir}: no such folder')
  if not path.is_file():
    raise FileNotFoundError(f'{ckpt_dir}: not a hrnet-jax checkpoint folder (no {CONFIG_FILE})')
  try:
    config = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise BadInputError(f'{path}: invalid JSON ({e})') from None
  if not isinstance(config, dict) or 'arch' not in config:
    raise BadInputError(f'{path}: no "arch" entry')
  problem = pretrained_cfg_problem(config.get('pretrained_cfg'))
  if problem:
    key, text = problem
    raise BadInputError(f'{path}: pretrained_cfg{"." + key if key else ""}: {text}')
  return config


def verify_arrays(ckpt_dir: str | os.PathLike, config: dict, arrays: dict[str, np.ndarray]) -> None:
  """Checks ``arrays`` against the checksum in ``config`` (a note when it has none, as in
  version 1 folders written before checksums) and for NaN/inf; ``CheckpointIntegrityError``
  names the folder, also when a folder whose ``format_version`` always carries a checksum has
  none."""
  expected = (config.get(CHECKSUM_KEY) or {}).get('sha256')
  version = config.get('format_version', 1)
  if expected is None and isinstance(version, int) and version >= CHECKSUMMED_SINCE:
    raise CheckpointIntegrityError(
      f'{ckpt_dir}: {CONFIG_FILE} has format_version {version}, which always records the '
      "arrays' checksum, but holds none: it was edited or damaged; refusing to load it. "
      'Convert or copy it again.'
    )
  if expected is None:
    log.warning(
      '%s: no checksum in %s (written before hrnet-jax recorded one); the weights are not verified',
      ckpt_dir,
      CONFIG_FILE,
    )
  elif content_checksum(arrays) != expected:
    raise CheckpointIntegrityError(
      f'{ckpt_dir}: the arrays do not match the checksum in {CONFIG_FILE}: the data was '
      'changed or corrupted after it was written (bit rot, an incomplete copy); refusing to '
      'load it. Convert or copy it again.'
    )
  if expected is None and not config.get('allow_non_finite'):
    # A verified folder was checked for NaN/inf when it was written.
    refuse_non_finite(arrays, str(ckpt_dir))


def read_pretrained(
  ckpt_dir: str | os.PathLike, *, verify: bool = True
) -> tuple[dict, dict[str, np.ndarray]]:
  """Returns (config, arrays by dotted Flax path) of a checkpoint folder.

  Raises ``FileNotFoundError`` (not a checkpoint folder), ``ValueError`` (unreadable), and,
  with ``verify``, ``CheckpointIntegrityError`` (see ``verify_arrays``).
  """

  config = read_config(ckpt_dir)
  state_path = pathlib.Path(ckpt_dir).absolute() / STATE_DIR
  if not state_path.is_dir():
    raise FileNotFoundError(f'{ckpt_dir}: no {STATE_DIR}/ folder')
  try:
    with ocp.StandardCheckpointer() as ckptr:
      tree = ckptr.restore(state_path)
  except Exception as e:  # Orbax raises many types for a damaged folder.
    raise BadInputError(
      f'{state_path}: cannot read the Orbax checkpoint, it is damaged or '
      f'incomplete ({errors.library_reason(e)})'
    ) from None
  arrays = _flatten(tree)
  if verify:
    verify_arrays(ckpt_dir, config, arrays)
  return config, arrays
