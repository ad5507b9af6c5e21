"""Reading a PyTorch HRNet checkpoint from a file or the Hugging Face hub into NumPy arrays.

Accepted files: ``.pth`` / ``.pth.tar`` / ``.bin`` (``torch.load(weights_only=True)``: no code is
unpickled) and ``.safetensors`` (``safetensors.numpy``: no torch). Containers are unwrapped in timm's order
(``timm/models/_helpers.py`` ``load_state_dict``): ``state_dict_ema``, ``model_ema``,
``state_dict``, then ``model`` only when it is a dict (an official training checkpoint stores the
string ``'cls_hrnet'`` there), else the dict itself. ``module.`` (DataParallel/DDP) and
``_orig_mod.`` (torch.compile) prefixes are stripped. PaddleClas ``.pdparams`` files are read
without paddle by ``hrnet_jax.convert.pdparams.load_pdparams`` (a restricted unpickler: NumPy
arrays only). Which layout the keys follow is ``hrnet_jax.convert.layouts.detect``'s job.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import pickle
import re
import zipfile

import numpy as np

from hrnet_jax.convert.pdparams import load_pdparams
from hrnet_jax.errors import BadInputError, EnvironmentFailure
from hrnet_jax.pretrained import hub

_HUB_ID = re.compile(r'^(?:hf[-_]hub:)?[\w.-]+/[\w.-]+$')
# A path with one of these endings is a file, never a hub id (``timm/hrnet_w18.ms_in1k`` is one).
CHECKPOINT_SUFFIXES = (
  '.pth',
  '.pt',
  '.tar',
  '.bin',
  '.safetensors',
  '.ckpt',
  '.pkl',
  '.pdparams',
  '.npz',
  '.h5',
)
_CONTAINER_KEYS = ('state_dict_ema', 'model_ema', 'state_dict', 'model')
_PREFIXES = ('module.', '_orig_mod.')


class ConversionError(BadInputError):
  """Any problem with a source checkpoint (exit 2); the message names the file or key at
  fault."""


@dataclasses.dataclass
class Source:
  """A read checkpoint: ``tensors`` (key -> float/int array, PyTorch layout) and provenance."""

  path: pathlib.Path
  tensors: dict[str, np.ndarray]
  container: str  # 'raw' or the key it was found under ('state_dict', ...)
  hub_id: str | None = None
  training_checkpoint: bool = False  # official tools/train.py checkpoint.pth.tar

  def sha256(self) -> str:
    digest = hashlib.sha256()
    with open(self.path, 'rb') as f:
      for chunk in iter(lambda: f.read(1 << 20), b''):
        digest.update(chunk)
    return digest.hexdigest()


def is_hub_id(src: str) -> bool:
  """``org/name`` (optionally ``hf-hub:``-prefixed) naming no existing path and with no
  checkpoint file extension: ``models/hrnet.pth`` is a (missing) file, not a repository."""
  return (
    not os.path.exists(src)
    and bool(_HUB_ID.match(src))
    and not src.lower().endswith(CHECKPOINT_SUFFIXES)
  )


def download_from_hub(hub_id: str) -> pathlib.Path:
  """Fetches a timm checkpoint (``model.safetensors``, else ``pytorch_model.bin``) with
  huggingface_hub (``hrnet_jax.pretrained.hub.hub_files``: its cache, ``HF_HUB_OFFLINE``, the
  timeout); ``ConversionError`` when it cannot be had."""
  repo_id = re.sub(r'^hf[-_]hub:', '', hub_id)
  try:
    return hub.hub_files(repo_id)[0]
  except (ImportError, BadInputError, EnvironmentFailure) as e:
    raise ConversionError(
      f'{hub_id}: not a local file, and hrnet-jax could not download it from the Hugging Face '
      f'hub: {e}'
    ) from None


def _to_numpy(key: str, value, path) -> np.ndarray:
  if isinstance(value, np.ndarray):  # safetensors.numpy, .pdparams: no torch needed
    return value
  import torch

  if isinstance(value, torch.Tensor):
    value = value.detach().cpu()
    if value.dtype == torch.bfloat16 or value.dtype == torch.float16:
      value = value.float()
    return value.numpy()
  raise ConversionError(f'{path}: entry {key!r} is a {type(value).__name__}, not a tensor')


def _load_raw(path: pathlib.Path) -> dict:
  if path.suffix == '.safetensors':
    from safetensors.numpy import load_file  # no torch needed for a timm safetensors file

    return load_file(str(path))
  import torch

  # Not mmap=True: a mapped file's pages stay resident until its last tensor is freed, next to
  # the transposed copy every kernel needs; read into memory, each tensor is freed once
  # converted (``convert_source``), so the checkpoint is held about once, not twice.
  return torch.load(path, map_location='cpu', weights_only=True)


def _unreadable(path: pathlib.Path, e: Exception) -> ConversionError:
  text = str(e)
  if 'Weights only load failed' in text:
    # torch's own advice (weights_only=False) would run the file's code: not passed on.
    if 'Unsupported global' in text:
      return ConversionError(
        f'{path}: not a plain tensor checkpoint: it holds Python objects that would have to '
        'be unpickled, which can run code, so hrnet-jax does not load it. Save '
        'model.state_dict() with torch.save and convert that file.'
      )
    detail = re.search(r'WeightsUnpickler error:\s*(.+)', text)
    first = detail.group(1).strip() if detail else 'not a tensor pickle'
  else:
    first = text.splitlines()[0] if text else ''
  return ConversionError(
    f'{path}: cannot read as a PyTorch checkpoint, the file is truncated, '
    f'corrupt or not a checkpoint ({type(e).__name__}: {first})'
  )


def _unwrap(obj: dict) -> tuple[dict, str]:
  for key in _CONTAINER_KEYS:
    if isinstance(obj.get(key), dict):
      return obj[key], key
  return obj, 'raw'


def _strip_prefixes(key: str) -> str:
  changed = True
  while changed:
    changed = False
    for prefix in _PREFIXES:
      if key.startswith(prefix):
        key, changed = key[len(prefix) :], True
  return key


def _read_pdparams(path: pathlib.Path) -> Source:
  if zipfile.is_zipfile(path):  # torch.save's format since PyTorch 1.6; .pdparams is a pickle
    raise ConversionError(
      f'{path}: a PyTorch zip archive (torch.save), not a PaddlePaddle .pdparams pickle; '
      'rename it to .pth'
    )
  try:
    tensors = load_pdparams(path)
  except pickle.UnpicklingError as e:
    if 'refused' in str(e):
      raise ConversionError(f'{path}: {e}; nothing was executed') from None
    raise ConversionError(
      f'{path}: cannot read as a PaddlePaddle .pdparams file, the file is '
      f'truncated or corrupt ({e})'
    ) from None
  except ValueError as e:
    raise ConversionError(f'{path}: {e}') from None
  except Exception as e:  # pickle raises many types for a damaged file
    raise ConversionError(
      f'{path}: cannot read as a PaddlePaddle .pdparams file, the file is '
      f'truncated or corrupt ({type(e).__name__}: {e})'
    ) from None
  if not tensors:
    raise ConversionError(f'{path}: the state_dict is empty')
  return Source(path=path, tensors=tensors, container='raw')


def read_source(src: str | os.PathLike, *, hub_id: str | None = None) -> Source:
  """Reads ``src`` (a file path or a hub id such as ``timm/hrnet_w18.ms_aug_in1k``); ``hub_id``
  records the repo a file path was downloaded from (``hrnet_jax.convert.api.pretrained_folder``).

  Raises ``ConversionError`` for a missing, truncated, corrupt or non-checkpoint file, naming it.
  """
  src = str(src)
  if is_hub_id(src):
    hub_id = src
    path = download_from_hub(src)
  else:
    path = pathlib.Path(src)
    if not path.exists():
      raise ConversionError(
        f'{path}: no such file (a hub id has the form org/name, e.g. timm/hrnet_w18.ms_in1k)'
      )
    if not path.is_file():
      raise ConversionError(f'{path}: not a file')
    if path.suffix == '.pdparams':
      return _read_pdparams(path)
  try:
    obj = _load_raw(path)
  except OSError as e:
    if e.errno is not None:  # a read error, not a format error: permission, I/O
      raise
    raise _unreadable(path, e) from None
  except Exception as e:  # torch/pickle/zip/safetensors raise many types for a damaged file
    raise _unreadable(path, e) from None
  if not isinstance(obj, dict):
    raise ConversionError(f'{path}: holds a {type(obj).__name__}, not a state_dict')
  training = obj.get('model') == 'cls_hrnet' or 'epoch' in obj
  state, container = _unwrap(obj)
  tensors = {}
  for key, value in state.items():
    if not isinstance(key, str):
      raise ConversionError(f'{path}: state_dict key {key!r} is not a string')
    tensors[_strip_prefixes(key)] = _to_numpy(key, value, path)
  if not tensors:
    raise ConversionError(f'{path}: the state_dict is empty')
  return Source(
    path=path, tensors=tensors, container=container, hub_id=hub_id, training_checkpoint=training
  )
