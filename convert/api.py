"""PyTorch HRNet checkpoint <-> hrnet-jax checkpoint folder, strictly.

Every source tensor is used exactly once (``num_batches_tracked`` ignored), every Flax leaf is
filled and every shape is checked before anything is written; on any problem one
``MismatchError`` lists ALL missing / unexpected / mis-shaped keys and the output is untouched.
The key rules live in ``hrnet_jax.convert.layouts.official`` (one table for both directions).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib

import numpy as np

from hrnet_jax import atomic, pretrained

from hrnet_jax.pretrained import checkpoint, state

from hrnet_jax.convert.layouts import official as keys
from hrnet_jax.models.configs import MODEL_CONFIGS, get_config
from hrnet_jax.factory import create_model

from hrnet_jax.convert import layouts as formats, pdparams as paddle
from hrnet_jax.convert.arch import infer_arch, looks_like_hrnet
from hrnet_jax.convert.sources import ConversionError, Source, read_source


class MismatchError(ConversionError):
  """The source does not fit the architecture; lists every problem."""

  def __init__(self, path, arch: str, missing, unexpected, mismatched):
    self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
    lines = [f'{path}: does not match {arch} ({len(missing)} missing, {len(unexpected)} '
             f'unexpected, {len(mismatched)} mis-shaped keys); nothing was written.']
    for title, items in (('missing', missing), ('unexpected', unexpected),
                         ('mis-shaped', mismatched)):
      lines += state.format_key_report(title, items)
    super().__init__('\n'.join(lines))


@dataclasses.dataclass
class ConversionResult:
  out_dir: pathlib.Path
  arch: str
  format: str
  num_tensors: int
  config: dict


# Formats whose every variant has bias-free head convs: they keep the base name with
# head_conv_bias=False.
_NO_HEAD_BIAS_FORMATS = ('mmpretrain', 'paddle')


def _resolve_arch(official: dict[str, np.ndarray], fmt: str, arch: str | None
                  ) -> tuple[str, bool]:
  base, head_bias, _ = infer_arch(official)
  if arch is None:
    # Bias-free timm/official files are the PaddleClas ssld weights as timm converted them.
    if not head_bias and fmt not in _NO_HEAD_BIAS_FORMATS and f'{base}_ssld' in MODEL_CONFIGS:
      return f'{base}_ssld', False
    return base, head_bias
  try:
    cfg = get_config(arch)
  except ValueError as e:
    raise ConversionError(f'--arch: {e}') from None
  return arch, cfg.head_conv_bias and fmt not in _NO_HEAD_BIAS_FORMATS


def _pretrained_cfg(arch: str, source: Source, tag: str | None, fmt: str) -> dict | None:
  if tag is None and source.hub_id:
    tag = source.hub_id.split('/', 1)[1]
  if tag is None and fmt == 'paddle':
    # PaddleClas's plain tag of the arch, else its only (ssld) one; SE widths without published
    # weights have none.
    tags = pretrained.paddleclas_tags(arch)
    if not tags:
      return None
    tag = tags[0]
  if tag is None:
    # Local official/mmpretrain files are the MSRA ImageNet weights (the ms_in1k tags).
    base = arch.replace('_ssld', '')
    tag = f'{base}.ms_in1k' if f'{base}.ms_in1k' in pretrained.list_pretrained() else arch
  try:
    cfg = pretrained.get_pretrained_cfg(tag)
  except ValueError as e:
    raise ConversionError(f'--tag: {e}') from None
  if cfg.arch.replace('_ssld', '') != arch.replace('_ssld', ''):
    raise ConversionError(f'--tag: {tag} is a {cfg.arch} tag, the checkpoint is {arch}')
  return cfg.to_dict()


def _progress(items, total: int, enabled: bool, desc: str):
  if not enabled:
    return items
  from tqdm import tqdm
  return tqdm(items, total=total, desc=desc, unit='tensor', leave=False, disable=None)


def _expected_leaves(arch: str, num_classes: int, head_conv_bias: bool
                     ) -> dict[str, tuple[str, tuple[int, ...], np.dtype]]:
  """Flax path -> (official key, Flax shape, dtype) of every leaf of ``arch``, read off an
  abstract build of the model: no weights are drawn or allocated."""
  leaves = state.abstract_arrays(lambda rngs: create_model(
      arch, num_classes=num_classes, head_conv_bias=head_conv_bias, rngs=rngs))
  return {path: (keys.torch_key(path), leaf.shape, leaf.dtype) for path, leaf in leaves.items()}


def convert_source(source: Source, *, arch: str | None = None, fmt: str = 'auto',
                   allow_non_finite: bool = False, progress: bool = False
                   ) -> tuple[str, bool, int, str, dict[str, np.ndarray]]:
  """Maps the tensors of ``source`` onto a Flax HRNet.

  Returns ``(arch, head_conv_bias, num_classes, format, arrays)`` where ``arrays`` maps dotted
  Flax paths to arrays in Flax layout. Empties ``source.tensors`` as it goes: each tensor is
  released once converted, so the checkpoint is not held twice. Raises ``MismatchError``
  listing every problem, ``ConversionError`` for a non-HRNet checkpoint and
  ``CheckpointIntegrityError`` naming every NaN/inf tensor unless ``allow_non_finite``
  (``source`` is then left whole).
  """
  if fmt not in ('auto',) + formats.FORMATS:
    raise ConversionError(f'--format must be auto or one of {formats.FORMATS}, got {fmt!r}')
  source_keys = [k for k in source.tensors if not formats.is_bn_counter(k)]
  if fmt == 'auto':
    fmt = formats.detect_format(source_keys)
    if fmt == 'official' and (source.hub_id or source.path.suffix == '.safetensors'):
      fmt = 'timm'
  original = {formats.to_official_key(k, fmt): k for k in source_keys}
  official = {new: formats.to_official_value(new, source.tensors[old], fmt)
              for new, old in original.items()}
  if not looks_like_hrnet(official):
    examples = ', '.join(source_keys[:5])
    raise ConversionError(f'{source.path}: not an HRNet checkpoint (no stage2 / transition1 '
                          f'keys; {len(source_keys)} keys such as {examples})')

  arch, head_conv_bias = _resolve_arch(official, fmt, arch)
  classifier = official.get('classifier.weight')
  num_classes = int(classifier.shape[0]) if classifier is not None and classifier.ndim == 2 else 1000
  expected = _expected_leaves(arch, num_classes, head_conv_bias)

  wanted = {k for k, _, _ in expected.values()}
  missing = sorted(formats.from_official_key(k, fmt) for k in wanted - official.keys())
  unexpected = sorted(original[k] for k in official.keys() - wanted)
  mismatched = sorted(
      f'{original[k]}: checkpoint {tuple(official[k].shape)} vs {arch} '
      f'{keys.torch_shape(path, shape)}'
      for path, (k, shape, _) in expected.items()
      if k in official and tuple(official[k].shape) != keys.torch_shape(path, shape))
  if missing or unexpected or mismatched:
    raise MismatchError(source.path, arch, missing, unexpected, mismatched)
  if not allow_non_finite:
    checkpoint.refuse_non_finite({original[k]: v for k, v in official.items()}, str(source.path),
                                 ' (--allow-non-finite keeps them); nothing was written')

  source.tensors.clear()  # ``official`` now holds the only references
  arrays = {}
  for path, (k, _, dtype) in _progress(expected.items(), len(expected), progress, 'converting'):
    # One copy at most (transpose and cast together), none for a BN vector already in float32.
    arrays[path] = np.asarray(keys.torch_to_flax(path, official.pop(k)), dtype=dtype, order='C')
  return arch, head_conv_bias, num_classes, fmt, arrays


def convert_checkpoint(src: str | os.PathLike, out_dir: str | os.PathLike, *,
                       arch: str | None = None, fmt: str = 'auto', tag: str | None = None,
                       overwrite: bool = False, allow_non_finite: bool = False,
                       progress: bool = False, backbone_only: bool = False,
                       num_outputs: int | None = None) -> ConversionResult:
  """Converts ``src`` (file or hub id) into the checkpoint folder ``out_dir``.

  ``create_model(arch, pretrained=out_dir)`` and ``hrnet_jax.load_pretrained(out_dir)`` read it.
  Raises ``ConversionError`` (``MismatchError`` for key problems) naming the file and keys at
  fault, the ``hrnet_jax.errors`` types of ``checkpoint.write_pretrained`` for an ``out_dir``
  that may not be written (checked before reading ``src``), and ``OSError`` for a failed write;
  ``out_dir`` is then untouched.
  Dense layouts (mmseg, mmpose, mmdet, HRNet-Semantic-Segmentation, deep-high-resolution-net) and
  ``backbone_only`` (a dense ``arch`` started from any checkpoint's backbone) go to
  ``hrnet_jax.convert.dense``; ``num_outputs`` sets a new head's classes / keypoints there.
  """
  checkpoint.check_output_folder(out_dir, overwrite=overwrite,
                                 protect=[src] if os.path.exists(src) else [])
  source = read_source(src)
  from convert import dense  # dense layouts and --backbone-only (``hrnet_jax.convert.dense``)
  if backbone_only or dense.is_dense(source, fmt, arch):
    return dense.convert_dense_checkpoint(source, out_dir, arch=arch, fmt=fmt,
                                          backbone_only=backbone_only, num_outputs=num_outputs,
                                          overwrite=overwrite, allow_non_finite=allow_non_finite)
  arch, head_conv_bias, num_classes, fmt, arrays = convert_source(
      source, arch=arch, fmt=fmt, allow_non_finite=allow_non_finite, progress=progress)
  config = {
      'arch': arch,
      'model_kwargs': {'head_conv_bias': head_conv_bias},
      'num_classes': num_classes,
      'pretrained_cfg': _pretrained_cfg(arch, source, tag, fmt),
      'source': {
          'file': source.path.name,
          'sha256': source.sha256(),
          'format': fmt,
          'container': source.container,
          'hub_id': source.hub_id,
          'training_checkpoint': source.training_checkpoint,
      },
  }
  out = checkpoint.write_pretrained(arrays, config, out_dir, overwrite=overwrite,
                                   protect=[source.path], allow_non_finite=allow_non_finite)
  return ConversionResult(out, arch, fmt, len(arrays), config)


def _official_arrays(ckpt_dir: str | os.PathLike) -> tuple[dict, dict[str, tuple[str, np.ndarray]]]:
  """``(config, {official key: (Flax path, Flax-layout array)})`` of a checkpoint folder."""
  config, arrays = checkpoint.read_pretrained(ckpt_dir)
  out = {}
  for path, value in arrays.items():
    try:
      out[keys.torch_key(path)] = (path, value)
    except KeyError as e:
      raise ConversionError(f'{ckpt_dir}: {e.args[0]}') from None
  return config, out


def _refuse_folder(out_path: str | os.PathLike, example: str) -> pathlib.Path:
  """``out_path`` as a path; ``ConversionError`` if it is an existing folder (exports write a
  file)."""
  out = pathlib.Path(out_path)
  if out.is_dir():
    raise ConversionError(f'{out_path}: is a folder; the export writes a file (e.g. '
                          f'{os.path.join(out_path, example)})')
  return out


def to_paddle(ckpt_dir: str | os.PathLike, out_path: str | os.PathLike) -> pathlib.Path:
  """Writes an hrnet-jax checkpoint folder as a PaddleClas ``.pdparams`` (PaddleClas names and
  layout) that ``model.set_state_dict(paddle.load(path))`` accepts; only bias-free variants
  (PaddleClas has no conv biases) of the W18..W64 family. Atomic."""
  _refuse_folder(out_path, 'model.pdparams')
  config, official = _official_arrays(ckpt_dir)
  cfg = get_config(config['arch'])
  same_family = MODEL_CONFIGS.get(f'se_hrnet_w{cfg.stage2.num_channels[0]}')
  # Head conv biases only (official ``*.0.bias``; ``*.1.bias`` is the BatchNorm's, always there).
  biased = any(path.startswith(('downsamp_modules', 'final_layer')) and path.endswith('conv.bias')
               for path, _ in official.values())
  if biased or same_family is None or cfg.stages + (cfg.stage1,) != same_family.stages + (
      same_family.stage1,):
    raise ConversionError(f'{ckpt_dir}: {config["arch"]} has head conv biases or a stage layout '
                          'PaddleClas HRNet does not have; cannot export to PaddleClas')
  tensors = {}
  for key, (path, value) in official.items():
    value = keys.flax_to_torch(path, value)
    tensors[formats.from_official_key(key, 'paddle')] = np.ascontiguousarray(
        paddle.to_official_value(key, value))  # the transpose is its own inverse
  return paddle.save_pdparams(tensors, out_path)


def to_pytorch(ckpt_dir: str | os.PathLike, out_path: str | os.PathLike) -> pathlib.Path:
  """Writes an hrnet-jax checkpoint folder as an official-format state_dict (``torch.save``),
  which timm's ``load_state_dict(strict=True)`` accepts. Atomic (temporary file + rename)."""
  import torch

  out = _refuse_folder(out_path, 'model.pth')
  _, official = _official_arrays(ckpt_dir)
  state_dict = collections.OrderedDict()
  for key, (path, value) in official.items():
    state_dict[key] = torch.from_numpy(np.ascontiguousarray(keys.flax_to_torch(path, value)))
    if key.endswith('running_mean'):  # BN buffers PyTorch's strict loading expects
      state_dict[key.replace('running_mean', 'num_batches_tracked')] = torch.tensor(0)
  return atomic.write_file(out, lambda tmp: torch.save(state_dict, tmp))
