"""PyTorch / PaddleClas HRNet checkpoint <-> hrnet-jax checkpoint folder, strictly; weights by
name the timm way.

``convert_checkpoint`` reads the source (``hrnet_jax.convert.sources``), detects its layout once
(``hrnet_jax.convert.layouts.detect``), maps it onto the model (``hrnet_jax.convert.classify`` for
classification layouts, ``hrnet_jax.convert.dense`` for dense layouts and ``--backbone-only``),
builds ``config.json`` with the library's one builder (``hrnet_jax.factory.release_config``) and
writes the folder once, atomically (``hrnet_jax.pretrained.checkpoint.write_pretrained``); on any
problem nothing is written. ``to_pytorch`` / ``to_paddle`` export a folder back.

``create_model(name, pretrained=True)`` is timm's: ``pretrained_folder`` resolves the name
(``hrnet_jax.pretrained.hub``: tag, ``hf-hub:``, ``local-dir:``), fetches the source file, and
converts it once into the cache (``hub.converted_dir``, keyed by the file's SHA-256; a folder
whose checksum fails is converted again, never loaded). ``save_for_hub`` / ``push_to_hub``
publish a model as ``model.safetensors`` (flat dotted Flax paths) + ``config.json`` (timm's
fields, and this library's release config under ``"hrnet_jax"``) + a model card.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import pathlib
import shutil
import tempfile
from typing import Any

import numpy as np

from hrnet_jax import atomic, factory
from hrnet_jax.convert import dense, layouts, pdparams
from hrnet_jax.convert.classify import convert_source, pretrained_cfg
from hrnet_jax.convert.layouts import official, paddle
from hrnet_jax.convert.layouts.dense import DENSE_FORMATS
from hrnet_jax.convert.mapping import ConversionResult, source_record
from hrnet_jax.convert.sources import ConversionError, is_hub_id, read_source
from hrnet_jax.errors import BadInputError, EnvironmentFailure
from hrnet_jax.factory import release_config
from hrnet_jax.models.configs import MODEL_CONFIGS, get_config
from hrnet_jax.models.dense import DENSE_CONFIGS
from hrnet_jax.pretrained import (
  card,
  checkpoint,
  default_pretrained_cfg,
  get_pretrained_cfg,
  hub,
  list_pretrained,
)

log = logging.getLogger(__name__)

HUB_WEIGHTS, HUB_CONFIG, HUB_README = 'model.safetensors', 'config.json', 'README.md'
HUB_KEY = 'hrnet_jax'  # config.json entry holding the release config of a save_for_hub folder


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
  hub_id: str | None = None,
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
  ``tag`` None records a timm hub id's tag, else PaddleClas's for a ``.pdparams``, else the one
  default-tag rule (``hub.default_weights_tag``: timm's default tag of the arch); the tag
  recorded is ``result.config['pretrained_cfg']['tag']``. ``hub_id``: the repo a file ``src``
  was downloaded from (recorded; its tag is the default).
  """
  checkpoint.check_output_folder(
    out_dir, overwrite=overwrite, protect=[src] if os.path.exists(src) else []
  )
  named = _named_weights(src)
  if named is not None:  # a tag, or an hf-hub: / local-dir: name
    src = hub.fetch(named, progress=progress).weights
    arch, tag = arch or named.arch, tag or named.tag
    hub_id = hub_id or (named.location if named.kind == 'hf-hub' else None)
  source = read_source(src, hub_id=hub_id)
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
    hub_tag = source.hub_id and source.hub_id.split('/', 1)[-1] in list_pretrained()
    if tag is None and not hub_tag and fmt != 'paddle':
      tag = hub.default_weights_tag(arch)
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


def _named_weights(src: str | os.PathLike) -> hub.WeightSource | None:
  """The source a model name ``src`` names (``hub.resolve_source``: a tag of a known arch, a
  PaddleClas name, ``hf-hub:`` / ``local-dir:``), or None for a path or an ``org/name`` hub id
  (``read_source``'s)."""
  src = os.fspath(src)
  if os.path.exists(src) or (is_hub_id(src) and not src.startswith('hf-hub:')):
    return None
  try:
    prefix, ident = hub.parse_model_name(src)
  except BadInputError:
    return None  # a path: read_source names it
  if prefix is None and hub.split_tag(ident)[0] not in factory.REGISTRY:
    try:
      get_pretrained_cfg(ident)  # a PaddleClas name
    except ValueError:
      return None
  return hub.resolve_source(src)


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


def _hub_tag(source: hub.WeightSource, config: dict | None) -> str | None:
  """The tag of a source: its name's, else its timm ``config.json``'s (``architecture`` +
  ``pretrained_cfg.tag``) or Hub repo name's when they are known tags."""
  if source.tag:
    return source.tag
  cfg = (config or {}).get('pretrained_cfg') or {}
  candidates = [f'{(config or {}).get("architecture")}.{cfg.get("tag")}', cfg.get('tag')]
  candidates.append(source.location.rsplit('/', 1)[-1])
  return next((t for t in candidates if t in list_pretrained()), None)


def _cached_release(out: pathlib.Path, sha256: str) -> bool:
  """Whether ``out`` is a whole release folder converted from the file of hash ``sha256``,
  its arrays matching their checksum. A damaged one is removed (it is the cache's own)."""
  if not out.exists():
    return False
  try:
    config, _ = checkpoint.read_pretrained(out)
    if (config.get('source') or {}).get('sha256') == sha256:
      return True
    problem = 'was converted from another file'
  except (BadInputError, FileNotFoundError) as e:  # CheckpointIntegrityError included
    problem = str(e).splitlines()[0]
  log.warning('%s: %s; converting it again', out, problem)
  atomic.remove_settled(out)
  return False


def _read_hub_folder(fetched: hub.Fetched) -> tuple[dict, dict[str, np.ndarray]]:
  """``(release config, arrays)`` of a ``save_for_hub`` folder, the arrays checked against the
  checksum its ``config.json`` records (``CheckpointIntegrityError`` names the file)."""
  from safetensors.numpy import load_file

  config = dict(fetched.config[HUB_KEY])
  try:
    arrays = load_file(str(fetched.weights))
  except Exception as e:  # safetensors raises several types for a damaged file
    raise ConversionError(f'{fetched.weights}: cannot read as safetensors ({e})') from None
  checkpoint.verify_arrays(fetched.weights, config, arrays)
  return config, arrays


def pretrained_folder(
  name: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None, progress: bool = True
) -> pathlib.Path:
  """The release folder of the weights ``name`` names, for ``create_model(arch,
  pretrained=folder)`` / ``load_pretrained``; what ``hrnet-predict --model`` and
  ``hrnet-train --config.pretrained`` resolve a name with.

  ``name``: a tag or arch (``'hrnet_w18.ms_aug_in1k'``, ``'hrnet_w18'``: its default tag),
  ``'hf-hub:org/repo[@rev]'`` (timm's format or ``save_for_hub``'s), ``'local-dir:PATH'``
  (either format, or a release folder) or the path of a release folder (returned as it is). The source file is fetched
  (``hub.fetch``: downloads, ``HF_HUB_OFFLINE``) and converted with the strict converter once;
  later calls find the converted folder in ``hub.converted_dir`` (``cache_dir``, else
  ``HRNET_JAX_CACHE``, else ``HF_HOME/assets/hrnet_jax``) and convert nothing. A cached folder
  whose arrays fail their checksum is converted again, never loaded.

  Raises ``BadInputError`` (an unknown name, a source that is not HRNet weights: the
  converter's errors), ``EnvironmentFailure`` (offline, or the host unreachable, with the file
  not cached: the message names the repo, file, cache folder and the command converting a local
  copy) and ``FileNotFoundError`` (a ``local-dir`` without weights).
  """
  if checkpoint.is_checkpoint_folder(name):  # a release folder given as a path
    return pathlib.Path(name)
  source = hub.resolve_source(os.fspath(name))
  if source.kind == 'local-dir' and checkpoint.is_checkpoint_folder(source.location):
    return pathlib.Path(source.location)
  fetched = hub.fetch(source, cache_dir, progress=progress)
  tag = _hub_tag(source, fetched.config)
  out = hub.converted_dir(fetched.sha256, tag, cache_dir)
  if _cached_release(out, fetched.sha256):
    return out
  if HUB_KEY in (fetched.config or {}):
    config, arrays = _read_hub_folder(fetched)
    source_info = {'file': fetched.weights.name, 'sha256': fetched.sha256, 'format': HUB_KEY}
    config = {k: v for k, v in config.items() if k not in ('format_version', 'checksum')}
    checkpoint.write_pretrained(arrays, {**config, 'source': source_info}, out)
  else:
    convert_checkpoint(
      fetched.weights,
      out,
      arch=source.arch,
      tag=tag,
      progress=progress,
      hub_id=source.location if source.kind == 'hf-hub' else None,
    )
  return out


def create_model(
  name: str,
  pretrained: bool | str | os.PathLike | None = False,
  *,
  cache_dir: str | os.PathLike | None = None,
  **kwargs: Any,
):
  """timm's ``create_model``: ``name`` an arch, a tag, ``'hf-hub:org/repo[@rev]'`` or
  ``'local-dir:PATH'`` (``pretrained_folder``); ``pretrained`` True loads the weights it names
  (a prefixed name always does), a folder loads that release folder (``name`` then an arch or
  tag), False / None builds a fresh model carrying the tag's ``pretrained_cfg``. ``kwargs``
  are ``hrnet_jax.factory.create_model``'s (``num_classes`` (0: embeddings; another count keeps
  a fresh classifier), ``features_only``, ``in_chans`` (stem adapted), ``dtype``, ...). Returns
  the model in training mode, as timm; raises what ``pretrained_folder`` and
  ``factory.create_model`` raise."""
  prefix, ident = hub.parse_model_name(name)
  if prefix is None:
    arch, tag = hub.split_tag(ident)
    if pretrained is True:
      pretrained = pretrained_folder(ident, cache_dir=cache_dir)
    model = factory.create_model(arch, pretrained=pretrained or None, **kwargs)
    if not pretrained and tag is not None:
      model.pretrained_cfg = get_pretrained_cfg(tag).to_dict()
    return model
  if pretrained not in (True, False, None):
    raise BadInputError(f'{name}: a {prefix} name loads its own weights; pretrained={pretrained!r}')
  folder = pretrained_folder(name, cache_dir=cache_dir)
  return factory.create_model(checkpoint.read_config(folder)['arch'], pretrained=folder, **kwargs)


def _hub_config(model, arrays: dict, config: dict) -> dict:
  """``config.json`` of a ``save_for_hub`` folder: timm's fields (``architecture``,
  ``num_classes``, ``num_features``, ``pretrained_cfg``) and the release config with its
  checksum under ``HUB_KEY``."""
  release = {
    'format_version': checkpoint.FORMAT_VERSION,
    **config,
    checkpoint.CHECKSUM_KEY: {'sha256': checkpoint.content_checksum(arrays)},
  }
  return {
    'architecture': model.arch,
    'num_classes': config.get('num_classes', 0),
    'num_features': getattr(model, 'num_features', None),
    'pretrained_cfg': config.get('pretrained_cfg'),
    HUB_KEY: release,
  }


def save_for_hub(
  model,
  folder: str | os.PathLike,
  *,
  repo_id: str | None = None,
  parity: dict | None = None,
  image_size: tuple[int, int] | None = None,
  overwrite: bool = False,
) -> pathlib.Path:
  """Writes ``model`` as a Hub folder, atomically: ``model.safetensors`` (every Param and
  BatchStat by dotted Flax path), ``config.json`` (``_hub_config``) and ``README.md``, a model
  card whose figures are computed (``hrnet_jax.pretrained.card``) at ``image_size`` (default:
  the ``pretrained_cfg``'s input size), with ``parity`` (``{'source', 'max_abs_diff',
  'input'}``) when given and usage code loading ``hf-hub:<repo_id>`` (default
  ``<user>/<folder name>``). ``create_model('local-dir:FOLDER' | 'hf-hub:REPO')`` loads it back
  bit-exactly. Raises ``ValueError`` as ``factory.model_release``, ``FileExistsError`` for a
  non-empty ``folder`` unless ``overwrite`` (then only a folder of these three files is
  replaced, ``BadInputError`` otherwise). Returns the folder."""
  from safetensors.numpy import save_file

  arrays, config = factory.model_release(model)
  out = atomic.resolve_output(folder)
  atomic.refuse_unsafe_output(out, folder, protect=(), noun='Hub folder')
  if out.exists() and os.listdir(out):
    if not overwrite:
      raise FileExistsError(f'{folder}: exists and is not empty (overwrite=True replaces it)')
    if not set(os.listdir(out)) <= {HUB_WEIGHTS, HUB_CONFIG, HUB_README}:
      raise BadInputError(f'{folder}: not a save_for_hub folder; nothing was touched')
  repo_id = repo_id or f'user/{out.name}'
  size = image_size or tuple(
    (config.get('pretrained_cfg') or {}).get('input_size', (3, 224, 224))[1:]
  )
  readme = card.generate_readme(
    model,
    repo_id=repo_id,
    pretrained_cfg=config.get('pretrained_cfg'),
    image_size=size,
    parity=parity,
  )
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = atomic.temp_dir(out)
  try:
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp / HUB_WEIGHTS))
    hub_config = _hub_config(model, arrays, config)
    (tmp / HUB_CONFIG).write_text(json.dumps(hub_config, indent=2, sort_keys=True) + '\n')
    (tmp / HUB_README).write_text(readme)
    atomic.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out


def push_to_hub(
  model,
  repo_id: str,
  *,
  commit_message: str = 'Add hrnet-jax weights',
  private: bool | None = None,
  revision: str | None = None,
  parity: dict | None = None,
  image_size: tuple[int, int] | None = None,
) -> str:
  """``save_for_hub`` into a temporary folder, uploaded to the Hub repo ``repo_id`` (created if
  missing) with huggingface_hub; the card is uploaded only when the repo has no README yet, as
  timm's ``push_to_hf_hub``. Returns the commit URL. Offline (``HF_HUB_OFFLINE=1``): one
  ``EnvironmentFailure`` line, nothing uploaded."""
  from huggingface_hub import HfApi

  if hub.hub_offline():
    raise EnvironmentFailure(f'{repo_id}: HF_HUB_OFFLINE=1, so nothing was uploaded')
  with tempfile.TemporaryDirectory(prefix='hrnet_jax_hub_') as tmp:
    folder = save_for_hub(
      model, pathlib.Path(tmp) / 'repo', repo_id=repo_id, parity=parity, image_size=image_size
    )
    api = HfApi()
    api.create_repo(repo_id, exist_ok=True, private=private)
    if api.file_exists(repo_id, HUB_README, revision=revision):
      (folder / HUB_README).unlink()
    return str(
      api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        revision=revision,
        commit_message=commit_message,
      )
    )
