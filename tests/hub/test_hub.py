"""``create_model(tag, pretrained=True)`` the timm way against a real, offline Hugging Face cache
(``conftest.hub_cache``) holding timm's own files, logits checked against timm; the conversion
cache (cold, warm, corrupt), offline and unreachable failures, URL sources from a local HTTP
server, ``save_for_hub`` / ``push_to_hub``, timm's data config and transform, and the seed card's
code from docs/hub.md run as it is written."""

import functools
import hashlib
import http.server
import io
import json
import pathlib
import re
import socket
import threading
import time
import types
import urllib.request

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import skimage.data
import timm
import torch
from oracles import assert_close, inputs, timm_model, torch_forward
from PIL import Image

import hrnet_jax
from hrnet_jax.cli.predict import main as predict_main
from hrnet_jax.convert import api
from hrnet_jax.convert.cli import main as convert_main
from hrnet_jax.data import create_transform, resolve_model_data_config
from hrnet_jax.errors import BadInputError, EnvironmentFailure
from hrnet_jax.pretrained import card, checkpoint, get_pretrained_cfg, hub, state
from hrnet_jax.train import trainer

ROOT = pathlib.Path(__file__).resolve().parents[2]
TAG = 'hrnet_w18_small.ms_in1k'


def _arrays(model) -> dict:
  return state.model_arrays(model)


def _assert_same(a: dict, b: dict, skip: tuple = ()):
  keys = [k for k in a if not k.startswith(skip)]
  assert sorted(keys) == sorted(k for k in b if not k.startswith(skip))
  for k in keys:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@functools.lru_cache(maxsize=None)
def _photo_png() -> bytes:
  buf = io.BytesIO()
  Image.fromarray(skimage.data.chelsea()).save(buf, format='PNG')
  return buf.getvalue()


def _code_blocks(text: str) -> list[str]:
  """The python blocks between the card's usage markers."""
  begin, end = text.index(card.USAGE_BEGIN), text.index(card.USAGE_END)
  return re.findall(r'```python\n(.*?)```', text[begin:end], flags=re.S)


def _run_card_code(text: str, monkeypatch) -> list[dict]:
  """Runs the usage blocks of ``text`` in one namespace, the photo served for ``urlopen``;
  returns the namespace after each block."""
  monkeypatch.setattr(urllib.request, 'urlopen', lambda url: io.BytesIO(_photo_png()))
  namespace, seen = {}, []
  for block in _code_blocks(text):
    exec(compile(block, 'card', 'exec'), namespace)
    seen.append(dict(namespace))
  return seen


def test_tag_cold_then_warm_then_corrupt_cache(
  hub_cache, small_timm, tmp_path, monkeypatch, capsys
):
  snapshot = hub_cache.add_timm(TAG, small_timm, tmp_path)
  calls = []
  convert = api.convert_checkpoint
  monkeypatch.setattr(
    api, 'convert_checkpoint', lambda *a, **k: calls.append(a) or convert(*a, **k)
  )

  start = time.perf_counter()
  model = hrnet_jax.create_model(TAG, pretrained=True, in_chans=1)
  cold_s = time.perf_counter() - start
  sha = hashlib.sha256((snapshot / 'model.safetensors').read_bytes()).hexdigest()
  entry = tmp_path / 'cache' / 'converted' / f'{sha}-{TAG}'
  assert [p.name for p in entry.parent.iterdir()] == [entry.name] and len(calls) == 1
  assert model.pretrained_cfg == get_pretrained_cfg(TAG).to_dict()
  # in_chans=1: the stem kernel adapted as timm's adapt_input_conv; the rest as converted.
  ref = timm.models.adapt_input_conv(1, small_timm.conv1.weight.detach()).numpy()
  kernel = np.asarray(model.conv1.kernel.get_value())
  np.testing.assert_allclose(kernel, ref.transpose(2, 3, 1, 0), rtol=1e-6, atol=1e-7)
  model.eval()
  # A summed stem on one channel is the RGB model on that channel repeated three times.
  gray = inputs(1, 64, 64, seed=2)[..., :1]
  ref_logits = torch_forward(small_timm, np.repeat(gray, 3, axis=-1))
  assert_close(model(jnp.asarray(gray)), ref_logits, f'{TAG} (in_chans=1) from the hub cache')
  _, cold = checkpoint.read_pretrained(entry)

  start = time.perf_counter()
  warm = hrnet_jax.pretrained_folder(TAG)
  warm_s = time.perf_counter() - start
  assert warm == entry and len(calls) == 1, 'the warm cache converted again'
  print(f'pretrained_folder({TAG!r}): cold (create_model) {cold_s:.1f} s, warm {warm_s:.1f} s')
  # The CLIs take the tag too, from the same cache: hrnet-predict --model, --config.pretrained.
  photo = tmp_path / 'chelsea.png'
  photo.write_bytes(_photo_png())
  capsys.readouterr()
  assert predict_main(['--model', TAG, str(photo), '--json', '--top-k', '1']) == 0
  assert json.loads(capsys.readouterr().out)['checkpoint'] == str(entry)
  recipe = ml_collections.ConfigDict({'model': '', 'pretrained': TAG})
  resolved = trainer.resolve_model(recipe)
  assert (resolved.model, resolved.pretrained) == ('hrnet_w18_small', str(entry))
  assert len(calls) == 1, 'a CLI converted again'

  # Bit rot in the converted folder: detected by the checksum, converted again, never loaded.
  largest = max(
    (p for p in (entry / 'state').rglob('*') if p.is_file()), key=lambda p: p.stat().st_size
  )
  data = bytearray(largest.read_bytes())
  middle = len(data) // 2
  data[middle : middle + 256] = bytes(255 - b for b in data[middle : middle + 256])
  largest.write_bytes(bytes(data))
  assert hrnet_jax.pretrained_folder(TAG) == entry and len(calls) == 2
  _assert_same(checkpoint.read_pretrained(entry)[1], cold)


def test_timm_adapt_input_conv_for_more_channels():
  weight = torch.randn(8, 3, 3, 3)
  ours = hrnet_jax.factory.adapt_input_conv(5, weight.numpy().transpose(2, 3, 1, 0))
  ref = timm.models.adapt_input_conv(5, weight).numpy().transpose(2, 3, 1, 0)
  np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_offline_miss_is_one_clear_error(hub_cache, tmp_path):
  with pytest.raises(EnvironmentFailure) as e:
    hrnet_jax.create_model('hrnet_w18_small', pretrained=True)  # its default tag: gluon
  text = str(e.value)
  for part in (
    'timm/hrnet_w18_small.gluon_in1k',
    'model.safetensors',
    str(hub_cache.hub),
    'HF_HUB_OFFLINE=1',
    'convert_official_weights PATH/model.safetensors OUT_DIR --tag hrnet_w18_small.gluon_in1k',
  ):
    assert part in text, (part, text)
  assert not (tmp_path / 'cache').exists()


class socket_closed_port:
  """A local TCP port nothing listens on."""

  def __enter__(self) -> int:
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    self.port = s.getsockname()[1]
    s.close()
    return self.port

  def __exit__(self, *exc):
    return False


def test_unreachable_hub_fails_within_seconds(hub_cache, monkeypatch):
  hub_cache.allow_network(monkeypatch)
  with socket_closed_port() as port:
    monkeypatch.delenv('HF_HUB_OFFLINE')
    monkeypatch.setenv('HF_ENDPOINT', f'http://127.0.0.1:{port}')
    hub_cache.reload()
    start = time.perf_counter()
    with pytest.raises(EnvironmentFailure, match='unreachable'):
      hrnet_jax.create_model(TAG, pretrained=True)
  assert time.perf_counter() - start < 5


@pytest.fixture
def http_folder(tmp_path, monkeypatch):
  """A folder served by ``http.server`` on 127.0.0.1 (the real download code runs)."""
  root = tmp_path / 'www'
  root.mkdir()

  class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
      pass

  handler = functools.partial(Quiet, directory=str(root))
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  monkeypatch.setenv('HRNET_JAX_CACHE', str(tmp_path / 'cache'))
  monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
  from huggingface_hub import constants

  monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
  yield root, f'http://127.0.0.1:{server.server_address[1]}'
  server.shutdown()
  server.server_close()


def test_url_source_downloads_checks_the_hash_and_converts(http_folder, small_timm, monkeypatch):
  root, base = http_folder
  torch.save(small_timm.state_dict(), root / 'w.pth')
  sha = hashlib.sha256((root / 'w.pth').read_bytes()).hexdigest()
  (root / 'w.pth').rename(root / f'hrnet_w18_small-{sha[:8]}.pth')
  (root / 'bad-00000000.pth').write_bytes((root / f'hrnet_w18_small-{sha[:8]}.pth').read_bytes())

  monkeypatch.setitem(hub.URLS, 'hrnet_w18_small.ms_in1k', f'{base}/bad-00000000.pth')
  with pytest.raises(BadInputError, match='SHA-256 prefix 00000000'):
    hrnet_jax.pretrained_folder(TAG, progress=False)
  assert not list((root.parent / 'cache' / 'downloads').iterdir())

  monkeypatch.setitem(hub.URLS, 'hrnet_w18_small.ms_in1k', f'{base}/hrnet_w18_small-{sha[:8]}.pth')
  folder = hrnet_jax.pretrained_folder(TAG, progress=False)
  config, arrays = checkpoint.read_pretrained(folder)
  assert (config['source']['sha256'], config['pretrained_cfg']['tag']) == (sha, TAG)
  direct = api.convert_checkpoint(root / f'hrnet_w18_small-{sha[:8]}.pth', root.parent / 'direct')
  _assert_same(arrays, checkpoint.read_pretrained(direct.out_dir)[1])


@pytest.fixture(scope='module')
def small_jax():
  """A built ``hrnet_w18_small.gluon_in1k`` (random weights), its card figures at 64 x 64."""
  model = hrnet_jax.create_model('hrnet_w18_small.gluon_in1k')
  model.pretrained_cfg = {**model.pretrained_cfg, 'input_size': [3, 64, 64]}
  return model


def test_save_for_hub_card_and_round_trip(hub_cache, small_jax, small_timm, tmp_path):
  parity = {'source': 'timm/hrnet_w18_small.gluon_in1k', 'max_abs_diff': 3e-6, 'input': 'x'}
  folder = hrnet_jax.save_for_hub(small_jax, tmp_path / 'pub', repo_id='me/small', parity=parity)
  assert sorted(p.name for p in folder.iterdir()) == [
    'README.md',
    'config.json',
    'model.safetensors',
  ]
  config = json.loads((folder / 'config.json').read_text())
  assert (config['architecture'], config['num_classes'], config['num_features']) == (
    'hrnet_w18_small',
    1000,
    2048,
  )
  assert config['pretrained_cfg']['tag'] == 'hrnet_w18_small.gluon_in1k'
  assert len(config['hrnet_jax']['checksum']['sha256']) == 64

  readme = (folder / 'README.md').read_text()
  for heading in ('# Model card for small', '## Model Details', '## Model Usage', '## Citation'):
    assert heading in readme
  timm_params = sum(p.numel() for p in small_timm.parameters()) / 1e6
  assert f'Params (M): {timm_params:.1f}' in readme  # counted, as timm counts (13.2)
  gmacs = float(re.search(r'GMACs: ([\d.]+)', readme).group(1))
  assert 0.05 < gmacs < 0.3  # timm's 1.61 GMACs at 224 x 224, scaled to 64 x 64: 0.13
  assert 'Image size: 64 x 64' in readme and 'max abs diff of the logits' in readme

  expected = _arrays(small_jax)
  _assert_same(
    checkpoint.read_pretrained(api.pretrained_folder(f'local-dir:{folder}'))[1], expected
  )
  hub_cache.add_folder('me/small', folder)
  back = hrnet_jax.create_model('hf-hub:me/small', pretrained=True)
  assert back.pretrained_cfg == small_jax.pretrained_cfg
  _assert_same(_arrays(back), expected)
  # The card's code is the seed card's (test_seed_card_in_docs_runs runs it) for this repo.
  assert _code_blocks(readme) == _code_blocks(card.usage('hf-hub:me/small'))


def test_push_to_hub_uploads_the_folder(small_jax, monkeypatch):
  from huggingface_hub import HfApi, constants

  monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
  monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
  uploaded = {}

  def upload_folder(self, *, folder_path, repo_id, **kwargs):
    uploaded[repo_id] = sorted(p.name for p in pathlib.Path(folder_path).iterdir())
    return 'https://huggingface.co/me/small/commit/0'

  monkeypatch.setattr(HfApi, 'create_repo', lambda self, repo_id, **kw: repo_id)
  monkeypatch.setattr(HfApi, 'file_exists', lambda self, repo_id, name, **kw: True)
  monkeypatch.setattr(HfApi, 'upload_folder', upload_folder)
  assert hrnet_jax.push_to_hub(small_jax, 'me/small').endswith('/commit/0')
  assert uploaded == {'me/small': ['config.json', 'model.safetensors']}  # the repo had a README

  monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
  with pytest.raises(EnvironmentFailure, match='me/small: HF_HUB_OFFLINE=1'):
    hrnet_jax.push_to_hub(small_jax, 'me/small')


def test_data_config_and_transform_match_timm(small_jax):
  photo = Image.fromarray(skimage.data.chelsea())
  models = {
    'hrnet_w18_small.gluon_in1k': small_jax,  # bicubic (its cfg's size set to 64 above)
    'hrnet_w18.ms_aug_in1k': None,  # bilinear, crop 0.95
    'hrnet_w18_ssld.paddle_in1k': None,  # PaddleClas weights in timm: crop 0.95
  }
  for tag, model in models.items():
    if model is None:  # only pretrained_cfg and in_chans are read
      model = types.SimpleNamespace(pretrained_cfg=get_pretrained_cfg(tag).to_dict(), in_chans=3)
    ref_model = timm.create_model(tag, pretrained=False)
    ref_model.pretrained_cfg = {**ref_model.pretrained_cfg, **model.pretrained_cfg}
    ref_cfg = timm.data.resolve_model_data_config(ref_model)
    ref_cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in ref_cfg.items()}
    cfg = resolve_model_data_config(model)
    assert cfg == {k: ref_cfg[k] for k in cfg}, tag
    ours = create_transform(**cfg, is_training=False)(photo)
    ref = timm.data.create_transform(**ref_cfg, is_training=False)(photo).numpy()
    np.testing.assert_allclose(ours, ref.transpose(1, 2, 0), atol=1e-5, err_msg=tag)


def test_converter_takes_a_tag_and_prints_the_recorded_one(hub_cache, small_timm, tmp_path, capsys):
  hub_cache.add_timm(TAG, small_timm, tmp_path)
  assert convert_main([TAG, str(tmp_path / 'out')]) == 0
  out = capsys.readouterr().out
  assert f'recorded preprocessing: {TAG} (input 224x224, crop_pct 0.875, bilinear)' in out
  # A local file without --tag: the one default-tag rule, create_model('hrnet_w18_small')'s.
  torch.save(small_timm.state_dict(), tmp_path / 'w.pth')
  assert convert_main([str(tmp_path / 'w.pth'), str(tmp_path / 'out2')]) == 0
  out = capsys.readouterr().out
  default = hub.default_weights_tag('hrnet_w18_small')
  assert default == get_pretrained_cfg('hrnet_w18_small').tag == 'hrnet_w18_small.gluon_in1k'
  assert f'recorded preprocessing: {default} (input 224x224, crop_pct 0.875, bicubic)' in out
  assert '--tag chooses another (hrnet_w18_small.ms_in1k)' in out


def test_seed_card_in_docs_runs(hub_cache, tmp_path, monkeypatch):
  """docs/hub.md's seed card (the README's) is the card's usage code for the timm card's tag,
  and it runs: classification logits as timm's on the same input, feature maps, embeddings."""
  text = (ROOT / 'docs' / 'hub.md').read_text()
  assert _code_blocks(text) == _code_blocks(card.usage('hrnet_w18.ms_aug_in1k'))
  assert _code_blocks((ROOT / 'README.md').read_text()) == _code_blocks(text)  # the same card
  reference = timm_model('hrnet_w18.ms_aug_in1k', seed=7)
  hub_cache.add_timm('hrnet_w18.ms_aug_in1k', reference, tmp_path)
  seen = _run_card_code(text, monkeypatch)
  x = np.asarray(seen[0]['transform'](seen[0]['img'])[None])
  assert x.shape == (1, 224, 224, 3)
  assert_close(seen[0]['output'], torch_forward(reference, x), 'seed card logits')
  with torch.no_grad():
    pooled = reference.forward_head(
      reference.forward_features(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())),
      pre_logits=True,
    ).numpy()
  assert_close(seen[2]['embedding'], pooled, 'seed card embedding')
  features = timm.create_model('hrnet_w18.ms_aug_in1k', features_only=True)
  missing, _ = features.load_state_dict(reference.state_dict(), strict=False)
  assert not missing
  assert_close(seen[1]['o'], torch_forward(features.eval(), x)[-1], 'seed card stride-32 map')
