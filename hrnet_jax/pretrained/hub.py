"""Where pretrained weights come from, the timm way: model names, sources, downloads, the cache.

A model name is what ``timm.create_model`` takes (mirrors ``timm/models/_factory.py
parse_model_name`` and ``_builder._resolve_pretrained_source``):

- ``'hrnet_w18'``: the arch, its default tag (``cfgs.default_tag``: timm's first tag);
- ``'hrnet_w18.ms_aug_in1k'``: a tag; a timm tag's weights are the Hub repo ``timm/<tag>``
  (``model.safetensors``, else ``pytorch_model.bin``), a PaddleClas tag's and a dense model's
  the URL its publisher gives (``URLS``);
- ``'hf-hub:org/repo[@revision]'``: a Hub repo in timm's format or written by ``save_for_hub``;
- ``'local-dir:/path'``: a folder holding either format (or a release folder).

Hub files are downloaded with huggingface_hub into its own cache (``HF_HOME`` / ``HF_HUB_CACHE``;
``HF_HUB_OFFLINE=1``: cached files only, no HTTP at all); URL files with ``urllib`` into
``cache_root()/downloads``, checked against the SHA-256 prefix their publisher put in the file
name (OpenMMLab's ``publish_model.py`` convention, ``NAME-<sha256[:8]>[_DATE].pth``). The load
path never calls ``model_info`` / ``repo_info``. The converted release folders are kept under
``cache_root()/converted/<source sha256>-<tag>`` (see ``hrnet_jax.convert.api.pretrained_folder``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import re
import socket
import urllib.error
import urllib.parse
import urllib.request

from hrnet_jax import atomic
from hrnet_jax.errors import BadInputError, EnvironmentFailure
from hrnet_jax.models.dense import DENSE_CONFIGS
from hrnet_jax.pretrained import cfgs

log = logging.getLogger(__name__)

SOURCES = ('hf-hub', 'local-dir')
SOURCE_ALIASES = {'hf_hub': 'hf-hub'}  # timm's deprecated spelling
HUB_FILES = ('model.safetensors', 'pytorch_model.bin')
CONFIG_FILE = 'config.json'
CACHE_ENV = 'HRNET_JAX_CACHE'
TIMEOUT_S = 10  # per connection: an unreachable host fails within seconds, not minutes
_OFF = frozenset({'1', 'true', 'yes', 'on'})
_SOURCE_PREFIX = re.compile(r'[a-zA-Z][a-zA-Z0-9+.\-_]+')  # 2+ chars: not a Windows drive
_URL_HASH = re.compile(r'-([0-9a-f]{8,64})(?:_\d{8})?\.[a-z.]+$')

# Weights published at a URL, by tag. PaddleClas 2.6: ``ppcls/arch/backbone/legendary_models/
# hrnet.py`` ``MODEL_URLS`` (the ssld files: ``ppcls/utils/save_load.py _set_ssld_pretrained``,
# ``_pretrained`` -> ``_ssld_pretrained``; SE_HRNet has no published URL); mmseg 1.2.2: ``configs/hrnet/metafile.yaml`` (the 160k Cityscapes
# FCN rows, the configs ``DENSE_CONFIGS`` mirror); mmpose 1.3.2:
# ``configs/body_2d_keypoint/topdown_heatmap/coco/hrnet_coco.yml`` and
# ``configs/face_2d_keypoint/topdown_heatmap/wflw/hrnetv2_wflw.yml``.
_PADDLE = 'https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/'
_MMSEG = 'https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/'
_MMPOSE = 'https://download.openmmlab.com/mmpose/'
URLS: dict[str, str] = {
  **{
    tag: f'{_PADDLE}{cfgs.get_pretrained_cfg(tag).paddleclas_name}_pretrained.pdparams'
    for tag in cfgs.list_pretrained()
    if (cfgs.get_pretrained_cfg(tag).paddleclas_name or 'SE_').startswith('HRNet_')
  },
  'hrnetv2_w18_small_seg.mmseg_cityscapes': f'{_MMSEG}fcn_hr18s_512x1024_160k_cityscapes/'
  'fcn_hr18s_512x1024_160k_cityscapes_20200602_190901-4a0797ea.pth',
  'hrnetv2_w18_seg.mmseg_cityscapes': f'{_MMSEG}fcn_hr18_512x1024_160k_cityscapes/'
  'fcn_hr18_512x1024_160k_cityscapes_20200602_190822-221e4a4f.pth',
  'hrnetv2_w48_seg.mmseg_cityscapes': f'{_MMSEG}fcn_hr48_512x1024_160k_cityscapes/'
  'fcn_hr48_512x1024_160k_cityscapes_20200602_190946-59b7973e.pth',
  'hrnet_w32_pose.mmpose_coco': f'{_MMPOSE}v1/body_2d_keypoint/topdown_heatmap/coco/'
  'td-hm_hrnet-w32_8xb64-210e_coco-256x192-81c58e40_20220909.pth',
  'hrnet_w48_pose.mmpose_coco': f'{_MMPOSE}v1/body_2d_keypoint/topdown_heatmap/coco/'
  'td-hm_hrnet-w48_8xb32-210e_coco-256x192-0e67c616_20220913.pth',
  'hrnetv2_w18_face.mmpose_wflw': f'{_MMPOSE}face/hrnetv2/hrnetv2_w18_wflw_256x256-2bf032a6_20210125.pth',
}


@dataclasses.dataclass(frozen=True)
class WeightSource:
  """Where the weights of a model name are.

  Attributes:
    kind: ``'hf-hub'`` (``location`` a repo id), ``'url'`` or ``'local-dir'`` (a folder).
    location: the repo id, URL or folder.
    arch: the architecture, or None when the source's ``config.json`` (or keys) name it.
    tag: the pretrained tag whose preprocessing the weights expect, or None (read from the
      source's ``config.json``, else the converter's default).
    revision: a Hub revision (``hf-hub:org/repo@rev``), else None (``main``).
  """

  kind: str
  location: str
  arch: str | None = None
  tag: str | None = None
  revision: str | None = None


@dataclasses.dataclass(frozen=True)
class Fetched:
  """The local files of a source: the weights file, its SHA-256, and the parsed
  ``config.json`` beside it (None when the source has none)."""

  weights: pathlib.Path
  sha256: str
  config: dict | None


def parse_model_name(name: str) -> tuple[str | None, str]:
  """``(source, id)`` of a model name, as timm's ``parse_model_name``: ``'hf-hub:org/repo'`` ->
  ``('hf-hub', 'org/repo')``, ``'local-dir:/p'`` -> ``('local-dir', '/p')``, a plain name ->
  ``(None, name)``. ``BadInputError`` for an unknown prefix, an empty id, or a plain name that
  looks like a repo id or a path (which would otherwise load another model of the same name)."""
  prefix, sep, rest = name.partition(':')
  if not sep or not _SOURCE_PREFIX.fullmatch(prefix):
    if any(c in name for c in '/\\:'):
      raise BadInputError(
        f'model name {name!r} looks like a Hugging Face Hub repo id or a path: use '
        f"'hf-hub:{name}' for the Hub or 'local-dir:{name}' for a folder"
      )
    return None, name
  prefix = SOURCE_ALIASES.get(prefix.lower(), prefix.lower())
  if prefix not in SOURCES:
    raise BadInputError(
      f'unknown model source {prefix!r} in {name!r}; valid sources: {", ".join(SOURCES)}'
    )
  if not rest:
    raise BadInputError(f'model name {name!r} has nothing after {prefix + ":"!r}')
  return prefix, rest


def split_tag(name: str) -> tuple[str, str | None]:
  """``'hrnet_w18.ms_aug_in1k'`` -> ``('hrnet_w18', 'hrnet_w18.ms_aug_in1k')``; ``'hrnet_w18'``
  -> ``('hrnet_w18', None)`` (timm's ``split_model_name_tag``, the tag kept whole)."""
  arch, _, short = name.partition('.')
  return arch, name if short else None


def default_weights_tag(arch: str) -> str | None:
  """The one default-tag rule: a classifier's is timm's default (``cfgs.default_tag``: the first
  tag listed, ``hrnet_w18`` -> ``hrnet_w18.ms_aug_in1k``), a dense model's its ``URLS`` entry;
  None when the arch has no published weights."""
  if arch in DENSE_CONFIGS:
    return next((t for t in URLS if split_tag(t)[0] == arch), None)
  try:
    return cfgs.default_tag(arch)
  except ValueError:
    return None


def resolve_source(name: str) -> WeightSource:
  """The source of a model name's weights (module docstring). ``BadInputError`` names the
  unknown tag or an arch without published weights."""
  source, ident = parse_model_name(name)
  if source == 'hf-hub':
    repo, _, revision = ident.partition('@')
    return WeightSource('hf-hub', repo, revision=revision or None)
  if source == 'local-dir':
    return WeightSource('local-dir', os.path.abspath(os.path.expanduser(ident)))
  arch, tag = split_tag(ident)
  if tag is None:
    tag = default_weights_tag(arch)
  if tag in URLS:
    return WeightSource('url', URLS[tag], arch=arch, tag=tag)
  try:
    cfg = cfgs.get_pretrained_cfg(tag or ident)  # also a PaddleClas name ('HRNet_W18_C')
  except ValueError as e:
    raise BadInputError(f'{ident}: no published weights; {e}') from None
  if cfg.tag != tag:
    return resolve_source(cfg.tag)
  if cfg.hf_hub_id is None:
    raise BadInputError(f'{tag}: no download source; convert a local copy instead')
  return WeightSource('hf-hub', cfg.hf_hub_id, arch=arch, tag=tag)


def cache_root(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """The folder of this library's downloads and converted weights: ``cache_dir``, else
  ``HRNET_JAX_CACHE``, else ``huggingface_hub``'s assets folder (``HF_HOME/assets``, meant for
  files downstream libraries create) ``/hrnet_jax``. Creates nothing."""
  if cache_dir is None:
    cache_dir = os.environ.get(CACHE_ENV) or None
  if cache_dir is None:
    from huggingface_hub import constants

    cache_dir = os.path.join(constants.HF_ASSETS_CACHE, 'hrnet_jax')
  return pathlib.Path(os.path.abspath(os.path.expanduser(os.fspath(cache_dir))))


def converted_dir(sha256: str, tag: str | None, cache_dir=None) -> pathlib.Path:
  """Where the release folder converted from the source file of hash ``sha256`` is kept."""
  return cache_root(cache_dir) / 'converted' / f'{sha256}-{tag or "auto"}'


def file_sha256(path: str | os.PathLike) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def hub_offline() -> bool:
  """``HF_HUB_OFFLINE`` as huggingface_hub reads it (at its import) or as set since."""
  from huggingface_hub import constants

  return constants.HF_HUB_OFFLINE or os.environ.get('HF_HUB_OFFLINE', '').lower() in _OFF


def reachable(url: str, timeout_s: float = TIMEOUT_S) -> bool:
  """Whether a TCP connection to ``url``'s host opens within ``timeout_s``."""
  parsed = urllib.parse.urlparse(url)
  port = parsed.port or (443 if parsed.scheme == 'https' else 80)
  try:
    socket.create_connection((parsed.hostname, port), timeout=timeout_s).close()
  except OSError:
    return False
  return True


def convert_hint(filename: str, tag: str | None, arch: str | None) -> str:
  out = 'OUT_DIR'
  tag_flag = f' --tag {tag}' if tag and tag in cfgs.list_pretrained() else ''
  load = f"create_model({arch!r}, pretrained='{out}')" if arch else f"load_pretrained('{out}')"
  return (
    f'download {filename} elsewhere and convert it: convert_official_weights '
    f'PATH/{filename} {out}{tag_flag}, then {load}'
  )


def hub_files(
  repo_id: str,
  *,
  revision: str | None = None,
  with_config: bool = False,
  tag: str | None = None,
  arch: str | None = None,
) -> tuple[pathlib.Path, pathlib.Path | None]:
  """``(weights, config.json or None)`` of a Hub repo, downloaded with huggingface_hub (progress
  bar, its cache) or taken from its cache: ``model.safetensors``, else ``pytorch_model.bin``.

  Offline (``HF_HUB_OFFLINE=1``, or the endpoint unreachable within ``TIMEOUT_S``) only cached
  files are used, with no HTTP request at all. Raises ``EnvironmentFailure`` for an offline miss
  (naming the repo, the file, the cache folder and the command that converts a local copy),
  ``BadInputError`` when the repo or both files do not exist, and ``ImportError`` without
  huggingface_hub.
  """
  try:
    from huggingface_hub import constants, hf_hub_download
  except ImportError:
    raise ImportError(
      f'{repo_id}: huggingface_hub downloads hub weights: pip install "hrnet-jax[convert]"'
    ) from None
  from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

  offline = hub_offline()
  unreachable = not offline and not reachable(constants.ENDPOINT)
  local_only = offline or unreachable

  def get(filename: str) -> pathlib.Path:
    return pathlib.Path(
      hf_hub_download(
        repo_id,
        filename,
        revision=revision,
        library_name='hrnet-jax',
        etag_timeout=TIMEOUT_S,
        local_files_only=local_only,
      )
    )

  weights, cut_off = None, local_only
  for filename in HUB_FILES:
    try:
      weights = get(filename)
      break
    except LocalEntryNotFoundError:  # not cached, and the hub did not answer
      cut_off = True
    except EntryNotFoundError:  # the repo publishes the other file name
      pass
    except Exception as e:  # no such repo, no access, a server error: named, not retried
      raise BadInputError(
        f'{repo_id}: cannot download {filename} from {constants.ENDPOINT} '
        f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""})'
      ) from None
  if weights is None:
    if cut_off:
      why = 'HF_HUB_OFFLINE=1' if offline else f'{constants.ENDPOINT} is unreachable'
      raise EnvironmentFailure(
        f'{repo_id}: {" / ".join(HUB_FILES)} not in the Hugging Face cache '
        f'{constants.HF_HUB_CACHE} and {why}, so nothing was downloaded; '
        + convert_hint(HUB_FILES[0], tag, arch)
      )
    raise BadInputError(f'{repo_id}: the repo has neither {" nor ".join(HUB_FILES)}')
  config = None
  if with_config:
    try:
      config = get(CONFIG_FILE)
    except EntryNotFoundError:  # LocalEntryNotFoundError included: the weights suffice
      config = None
  return weights, config


def url_file(url: str, cache_dir=None, *, progress: bool = True) -> pathlib.Path:
  """The file at ``url``, downloaded once into ``cache_root(cache_dir)/downloads`` (atomic) and
  checked against the SHA-256 prefix in its name (``-<hex>.pth``) when it has one.

  Raises ``EnvironmentFailure`` when the host cannot be reached (within ``TIMEOUT_S``) or
  ``HF_HUB_OFFLINE=1`` forbids the download, naming the URL, the cache path and the command that
  converts a local copy; ``BadInputError`` for an HTTP error or a hash mismatch (nothing kept).
  """
  name = os.path.basename(urllib.parse.urlparse(url).path)
  path = cache_root(cache_dir) / 'downloads' / name
  expected = _URL_HASH.search(name)
  if path.is_file():
    if expected is None or file_sha256(path).startswith(expected.group(1)):
      return path
    log.warning('%s: cached file does not match its hash; downloading it again', path)
  if hub_offline():
    raise EnvironmentFailure(
      f'{url}: not downloaded yet ({path} missing) and HF_HUB_OFFLINE=1; '
      + convert_hint(name, None, None)
    )

  def download(tmp: str) -> None:
    try:
      with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(tmp, 'wb') as f:
        total = int(response.headers.get('Content-Length') or 0) or None
        bar = _bar(total, name, progress)
        for chunk in iter(lambda: response.read(1 << 20), b''):
          f.write(chunk)
          bar.update(len(chunk))
        bar.close()
    except urllib.error.HTTPError as e:
      raise BadInputError(f'{url}: HTTP {e.code} {e.reason}') from None
    except (urllib.error.URLError, OSError) as e:
      reason = getattr(e, 'reason', e)
      raise EnvironmentFailure(
        f'{url}: cannot download it ({reason}); {convert_hint(name, None, None)}'
      ) from None
    if expected is not None and not file_sha256(tmp).startswith(expected.group(1)):
      raise BadInputError(
        f'{url}: the downloaded file does not match the SHA-256 prefix {expected.group(1)} '
        'in its name (a damaged or replaced file); nothing was kept'
      )

  return atomic.write_file(path, download, what=name)


def _bar(total: int | None, name: str, enabled: bool):
  try:
    from tqdm import tqdm
  except ImportError:
    enabled = False
  if not enabled:
    return _NoBar()
  return tqdm(total=total, desc=name, unit='B', unit_scale=True, leave=False, disable=None)


class _NoBar:
  def update(self, n: int) -> None:
    pass

  def close(self) -> None:
    pass


def fetch(source: WeightSource, cache_dir=None, *, progress: bool = True) -> Fetched:
  """The local weights file (and ``config.json``) of ``source``: downloaded, or found in a
  cache or folder. ``local-dir`` folders hold ``model.safetensors`` or ``pytorch_model.bin``
  (``FileNotFoundError`` names the folder otherwise). Raises what ``hub_files`` / ``url_file``
  raise."""
  config_path = None
  if source.kind == 'hf-hub':
    weights, config_path = hub_files(
      source.location,
      revision=source.revision,
      with_config=True,
      tag=source.tag,
      arch=source.arch,
    )
  elif source.kind == 'url':
    weights = url_file(source.location, cache_dir, progress=progress)
  else:
    folder = pathlib.Path(source.location)
    found = [folder / f for f in HUB_FILES if (folder / f).is_file()]
    if not found:
      raise FileNotFoundError(
        f'{folder}: no {" or ".join(HUB_FILES)} (nor a release folder: config.json + state/)'
      )
    weights = found[0]
    config_path = folder / CONFIG_FILE if (folder / CONFIG_FILE).is_file() else None
  config = None
  if config_path is not None:
    try:
      config = json.loads(pathlib.Path(config_path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise BadInputError(f'{config_path}: invalid JSON ({e})') from None
  return Fetched(weights=weights, sha256=file_sha256(weights), config=config)
