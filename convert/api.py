"""PyTorch / PaddleClas HRNet checkpoint <-> hrnet-jax checkpoint folder, strictly.

``convert_checkpoint`` reads the source (``hrnet_jax.convert.sources``), detects its layout once
(``hrnet_jax.convert.layouts.detect``), maps it onto the model (``hrnet_jax.convert.classify`` for
classification layouts, ``hrnet_jax.convert.dense`` for dense layouts and ``--backbone-only``),
builds ``config.json`` with the library's one builder (``hrnet_jax.factory.release_config``) and
writes the folder once, atomically (``hrnet_jax.pretrained.checkpoint.write_pretrained``); on any
problem nothing is written. ``to_pytorch`` / ``to_paddle`` export a folder back.
"""

from __future__ import annotations

import collections
import os
import pathlib

import numpy as np

from hrnet_jax import atomic
from hrnet_jax.convert import dense, layouts, pdparams
from hrnet_jax.convert.classify import convert_source, pretrained_cfg
from hrnet_jax.convert.layouts import official, paddle
from hrnet_jax.convert.layouts.dense import DENSE_FORMATS
from hrnet_jax.convert.mapping import ConversionResult, source_record
from hrnet_jax.convert.sources import ConversionError, read_source
from hrnet_jax.factory import release_config
from hrnet_jax.models.configs import MODEL_CONFIGS, get_config
from hrnet_jax.models.dense import DENSE_CONFIGS
from hrnet_jax.pretrained import checkpoint, default_pretrained_cfg


def convert_checkpoint(
  src: str | os.PathLike,
  out_dir: str | os.PathLike,
  *,
  arch: str | None = None,
  fmt: str = 'auto',
  tag: str | None = None,
  overwrite: bool = False,
  allow_non_finite: bool = False,
  progress: bool = False,
  backbone_only: bool = False,
  num_outputs: int | None = None,
) -> ConversionResult:
  """Converts ``src`` (file or hub id) into the checkpoint folder ``out_dir``.

  ``create_model(arch, pretrained=out_dir)`` and ``hrnet_jax.load_pretrained(out_dir)`` read it.
  Raises ``ConversionError`` naming the file at fault (``CheckpointMismatchError``, listing every
  key at fault, when the keys or shapes do not fit; both ``BadInputError``), the
  ``hrnet_jax.errors`` types of ``checkpoint.write_pretrained`` for an ``out_dir`` that may not be
  written (checked before reading ``src``), and ``OSError`` for a failed write; ``out_dir`` is
  then untouched.
  Dense layouts (mmseg, mmpose, mmdet, HRNet-Semantic-Segmentation, deep-high-resolution-net), a
  dense ``arch`` and ``backbone_only`` (a dense ``arch`` started from any checkpoint's backbone)
  go to ``hrnet_jax.convert.dense``; ``num_outputs`` sets a new head's classes / keypoints there.
  """
  checkpoint.check_output_folder(
    out_dir, overwrite=overwrite, protect=[src] if os.path.exists(src) else []
  )
  source = read_source(src)
  if fmt not in ('auto',) + layouts.FORMATS:
    raise ConversionError(f'--format must be auto or one of {layouts.FORMATS}, got {fmt!r}')
  if fmt == 'auto':
    fmt = layouts.detect(source.tensors, path=source.path, hub_id=source.hub_id)
  if backbone_only or fmt in DENSE_FORMATS or arch in DENSE_CONFIGS:
    result = dense.convert_dense(
      source, arch=arch, fmt=fmt, backbone_only=backbone_only, num_outputs=num_outputs
    )
    arch, arrays = result.arch, result.arrays
    config = release_config(
      arch,
      head_conv_bias=result.head_conv_bias,
      num_outputs=result.num_outputs,
      pretrained_cfg=default_pretrained_cfg(arch),
      source=source_record(
        source,
        fmt,
        backbone_only=backbone_only,
        dropped=result.dropped,
        initialized=result.initialized,
      ),
    )
  else:
    arch, head_conv_bias, num_classes, fmt, arrays = convert_source(
      source, arch=arch, fmt=fmt, allow_non_finite=allow_non_finite, progress=progress
    )
    config = release_config(
      arch,
      head_conv_bias=head_conv_bias,
      num_outputs=num_classes,
      pretrained_cfg=pretrained_cfg(arch, source, tag, fmt),
      source=source_record(source, fmt),
    )
  out = checkpoint.write_pretrained(
    arrays,
    config,
    out_dir,
    overwrite=overwrite,
    protect=[source.path],
    allow_non_finite=allow_non_finite,
  )
  return ConversionResult(out, arch, fmt, len(arrays), config)


def _official_arrays(ckpt_dir: str | os.PathLike) -> tuple[dict, dict[str, tuple[str, np.ndarray]]]:
  """``(config, {official key: (Flax path, Flax-layout array)})`` of a checkpoint folder."""
  config, arrays = checkpoint.read_pretrained(ckpt_dir)
  out = {}
  for path, value in arrays.items():
    try:
      out[official.torch_key(path)] = (path, value)
    except KeyError as e:
      raise ConversionError(f'{ckpt_dir}: {e.args[0]}') from None
  return config, out


def _refuse_folder(out_path: str | os.PathLike, example: str) -> pathlib.Path:
  """``out_path`` as a path; ``ConversionError`` if it is an existing folder (exports write a
  file)."""
  out = pathlib.Path(out_path)
  if out.is_dir():
    raise ConversionError(
      f'{out_path}: is a folder; the export writes a file (e.g. {os.path.join(out_path, example)})'
    )
  return out


def to_paddle(ckpt_dir: str | os.PathLike, out_path: str | os.PathLike) -> pathlib.Path:
  """Writes an hrnet-jax checkpoint folder as a PaddleClas ``.pdparams`` (PaddleClas names and
  layout) that ``model.set_state_dict(paddle.load(path))`` accepts; only bias-free variants
  (PaddleClas has no conv biases) of the W18..W64 family. Atomic."""
  _refuse_folder(out_path, 'model.pdparams')
  config, arrays = _official_arrays(ckpt_dir)
  cfg = get_config(config['arch'])
  same_family = MODEL_CONFIGS.get(f'se_hrnet_w{cfg.stage2.num_channels[0]}')
  # Head conv biases only (official ``*.0.bias``; ``*.1.bias`` is the BatchNorm's, always there).
  biased = any(
    path.startswith(('downsamp_modules', 'final_layer')) and path.endswith('conv.bias')
    for path, _ in arrays.values()
  )
  if (
    biased
    or same_family is None
    or cfg.stages + (cfg.stage1,) != same_family.stages + (same_family.stage1,)
  ):
    raise ConversionError(
      f'{ckpt_dir}: {config["arch"]} has head conv biases or a stage layout '
      'PaddleClas HRNet does not have; cannot export to PaddleClas'
    )
  tensors = {}
  for key, (path, value) in arrays.items():
    value = official.flax_to_torch(path, value)
    tensors[paddle.from_official_key(key)] = np.ascontiguousarray(
      paddle.to_official_value(key, value)
    )  # the transpose is its own inverse
  return pdparams.save_pdparams(tensors, out_path)


def to_pytorch(ckpt_dir: str | os.PathLike, out_path: str | os.PathLike) -> pathlib.Path:
  """Writes an hrnet-jax checkpoint folder as an official-format state_dict (``torch.save``),
  which timm's ``load_state_dict(strict=True)`` accepts. Atomic (temporary file + rename); a full
  disk is an ``OSError`` naming the folder and the size needed (``atomic.write_file``)."""
  import torch

  out = _refuse_folder(out_path, 'model.pth')
  _, arrays = _official_arrays(ckpt_dir)
  state_dict = collections.OrderedDict()
  for key, (path, value) in arrays.items():
    state_dict[key] = torch.from_numpy(np.ascontiguousarray(official.flax_to_torch(path, value)))
    if key.endswith('running_mean'):  # BN buffers PyTorch's strict loading expects
      state_dict[key.replace('running_mean', 'num_batches_tracked')] = torch.tensor(0)
  size = sum(t.numel() * t.element_size() for t in state_dict.values()) + 2**20  # + zip entries
  return atomic.write_file(
    out, lambda tmp: torch.save(state_dict, tmp), size=size, what='the state_dict'
  )
