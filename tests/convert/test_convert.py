"""convert_official_weights: containers, formats, refusals, hub ids, and the reverse export."""

import hashlib
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from oracles import assert_close, inputs, timm_model, torch_forward

import hrnet_jax
from hrnet_jax.convert import CheckpointMismatchError, convert_checkpoint, sources
from hrnet_jax.convert.cli import main as convert_main
from hrnet_jax.pretrained import checkpoint, state

NAME = 'hrnet_w18_small'


@pytest.fixture(scope='module')
def reference():
  return timm_model(NAME, seed=3)


@pytest.fixture(scope='module')
def state_dict(reference):
  return reference.state_dict()


@pytest.fixture(scope='module')
def x():
  return inputs(2, 64, 96, seed=5)


def _check_logits(ckpt, reference, x):
  assert_close(
    hrnet_jax.load_pretrained(ckpt)(jnp.asarray(x)), torch_forward(reference, x), f'{ckpt} logits'
  )


def _config(ckpt):
  return json.loads((ckpt / 'config.json').read_text())


def test_official_training_checkpoint(tmp_path, reference, state_dict, x):
  """tools/train.py checkpoint.pth.tar: 'model' is the string 'cls_hrnet', weights in
  'state_dict' saved from a DataParallel model (module. prefix)."""
  optimizer = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, nesterov=True)
  container = {
    'epoch': 7,
    'model': 'cls_hrnet',
    'perf': 0.71,
    'state_dict': {f'module.{k}': v for k, v in state_dict.items()},
    'optimizer': optimizer.state_dict(),
  }
  torch.save(container, tmp_path / 'checkpoint.pth.tar')
  assert convert_main([str(tmp_path / 'checkpoint.pth.tar'), str(tmp_path / 'out'), '--quiet']) == 0
  config = _config(tmp_path / 'out')
  assert config['arch'] == NAME and config['source']['container'] == 'state_dict'
  assert config['source']['training_checkpoint'] is True
  assert config['pretrained_cfg']['tag'] == 'hrnet_w18_small.gluon_in1k'  # the one default rule
  _check_logits(tmp_path / 'out', reference, x)


def test_compiled_prefix_bin_and_sha256(tmp_path, reference, state_dict, x):
  torch.save({f'_orig_mod.{k}': v for k, v in state_dict.items()}, tmp_path / 'pytorch_model.bin')
  assert convert_main([str(tmp_path / 'pytorch_model.bin'), str(tmp_path / 'out'), '--quiet']) == 0
  digest = hashlib.sha256((tmp_path / 'pytorch_model.bin').read_bytes()).hexdigest()
  assert _config(tmp_path / 'out')['source']['sha256'] == digest
  _check_logits(tmp_path / 'out', reference, x)


def test_safetensors_is_timm_format(tmp_path, reference, state_dict, x):
  from safetensors.torch import save_file

  save_file({k: v.contiguous() for k, v in state_dict.items()}, tmp_path / 'model.safetensors')
  assert convert_main([str(tmp_path / 'model.safetensors'), str(tmp_path / 'out'), '--quiet']) == 0
  assert _config(tmp_path / 'out')['source']['format'] == 'timm'
  _check_logits(tmp_path / 'out', reference, x)


def test_hub_id_downloads_with_huggingface_hub(tmp_path, monkeypatch, state_dict, reference, x):
  import huggingface_hub
  from safetensors.torch import save_file

  save_file({k: v.contiguous() for k, v in state_dict.items()}, tmp_path / 'model.safetensors')
  calls = []

  def fake_download(repo_id, filename, **kwargs):  # the hub itself is unreachable here
    calls.append((repo_id, filename))
    return str(tmp_path / filename)

  monkeypatch.setattr(huggingface_hub, 'hf_hub_download', fake_download)
  assert convert_main(['timm/hrnet_w18_small.gluon_in1k', str(tmp_path / 'out'), '--quiet']) == 0
  assert calls == [('timm/hrnet_w18_small.gluon_in1k', 'model.safetensors')]
  config = _config(tmp_path / 'out')
  assert config['source']['hub_id'] == 'timm/hrnet_w18_small.gluon_in1k'
  assert config['source']['format'] == 'timm'
  assert config['pretrained_cfg']['interpolation'] == 'bicubic'  # the gluon tag's preprocessing
  _check_logits(tmp_path / 'out', reference, x)


def test_hub_id_is_timm_format_whatever_the_file(tmp_path, monkeypatch, state_dict):
  # The hub serves timm's files: official keys from a hub id are timm's, .bin or .safetensors.
  torch.save(state_dict, tmp_path / 'pytorch_model.bin')
  monkeypatch.setattr(sources, 'download_from_hub', lambda hub_id: tmp_path / 'pytorch_model.bin')
  assert convert_main(['timm/hrnet_w18_small.ms_in1k', str(tmp_path / 'out'), '--quiet']) == 0
  config = _config(tmp_path / 'out')
  assert (config['source']['format'], config['source']['hub_id']) == (
    'timm',
    'timm/hrnet_w18_small.ms_in1k',
  )


def test_hub_id_offline_is_a_clear_error(tmp_path, monkeypatch, capsys):
  from huggingface_hub import constants

  monkeypatch.setenv('HF_HUB_OFFLINE', '1')
  monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)  # read at import: set it directly too
  monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf'))
  monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'hf' / 'hub'))
  assert convert_main(['timm/hrnet_w18.ms_aug_in1k', str(tmp_path / 'out')]) == 2
  err = capsys.readouterr().err
  assert 'timm/hrnet_w18.ms_aug_in1k' in err and 'could not download' in err
  assert not (tmp_path / 'out').exists()


def _assert_refused(tmp_path, capsys, args, *expected):
  before = set(os.listdir(tmp_path))
  assert convert_main(args) == 2
  err = capsys.readouterr().err
  for text in expected:
    assert text in err, f'{text!r} not in report:\n{err}'
  assert set(os.listdir(tmp_path)) == before, 'a refused conversion must write nothing'
  return err


def test_refuses_and_reports_every_problem(tmp_path, capsys, state_dict):
  broken = dict(state_dict)
  del broken['stage3.0.fuse_layers.2.0.1.1.running_var']
  broken['stage2.0.extra.weight'] = torch.zeros(3)
  broken['transition2.2.0.0.weight'] = torch.zeros(64, 32, 1, 1)
  torch.save(broken, tmp_path / 'broken.pth')
  err = _assert_refused(
    tmp_path,
    capsys,
    [str(tmp_path / 'broken.pth'), str(tmp_path / 'out')],
    'broken.pth',
    '1 missing, 1 unexpected, 1 mis-shaped',
    'stage3.0.fuse_layers.2.0.1.1.running_var',
    'stage2.0.extra.weight',
    'transition2.2.0.0.weight: checkpoint (64, 32, 1, 1) vs hrnet_w18_small (64, 32, 3, 3)',
  )
  assert 'nothing was written' in err


def test_mismatch_names_the_keys_as_the_file_spells_them(tmp_path, state_dict):
  # mmpretrain names (backbone. + official, head.fc.) without the neck (HRFuseScales).
  mm = {
    (f'head.fc.{k[len("classifier.") :]}' if k.startswith('classifier.') else f'backbone.{k}'): v
    for k, v in state_dict.items()
    if not k.startswith(('incre_modules.', 'downsamp_modules.', 'final_layer.'))
  }
  del mm['backbone.conv1.weight']
  mm['head.fc.weight'] = torch.zeros(1000, 3)
  torch.save({'state_dict': mm}, tmp_path / 'mm.pth')
  with pytest.raises(CheckpointMismatchError) as err:
    convert_checkpoint(tmp_path / 'mm.pth', tmp_path / 'out')
  missing = err.value.missing
  assert {
    'backbone.conv1.weight',
    'neck.0.increase_layers.0.0.conv1.weight',
    'neck.0.downsample_layers.0.bn.running_var',
    'neck.0.final_layer.conv.weight',
  } <= set(missing)
  assert not any(k.startswith(('conv1.', 'incre_modules.', 'final_layer.')) for k in missing)
  assert err.value.unexpected == []
  assert err.value.mismatched == [f'head.fc.weight: checkpoint (1000, 3) vs {NAME} (1000, 2048)']
  assert str(err.value).startswith(f'{tmp_path / "mm.pth"}: does not match {NAME} (')
  assert not (tmp_path / 'out').exists()


def test_refuses_wrong_forced_arch(tmp_path, capsys, state_dict):
  torch.save(state_dict, tmp_path / 'small.pth')
  args = [str(tmp_path / 'small.pth'), str(tmp_path / 'out'), '--arch', 'hrnet_w18']
  # The first 20 keys per category and the counts; --verbose lists every key.
  _assert_refused(
    tmp_path,
    capsys,
    args,
    'does not match hrnet_w18',
    'missing (',
    'unexpected',
    'mis-shaped (',
    'more (--verbose lists all)',
  )
  _assert_refused(tmp_path, capsys, args + ['--verbose'], 'stage4.2.branches.0.3.conv1.weight')


def test_refuses_truncated_and_foreign_files(tmp_path, capsys, state_dict):
  torch.save(state_dict, tmp_path / 'full.pth')
  data = (tmp_path / 'full.pth').read_bytes()
  (tmp_path / 'truncated.pth').write_bytes(data[: len(data) // 2])
  (tmp_path / 'notes.pth').write_text('not a checkpoint')
  torch.save([1, 2, 3], tmp_path / 'list.pth')
  _assert_refused(
    tmp_path,
    capsys,
    [str(tmp_path / 'truncated.pth'), str(tmp_path / 'out')],
    'truncated.pth',
    'truncated, corrupt or not a checkpoint',
  )
  _assert_refused(
    tmp_path,
    capsys,
    [str(tmp_path / 'notes.pth'), str(tmp_path / 'out')],
    'notes.pth',
    'truncated, corrupt or not a checkpoint',
  )
  _assert_refused(
    tmp_path,
    capsys,
    [str(tmp_path / 'list.pth'), str(tmp_path / 'out')],
    'list.pth',
    'not a state_dict',
  )
  _assert_refused(
    tmp_path,
    capsys,
    [str(tmp_path / 'absent.pth'), str(tmp_path / 'out')],
    'absent.pth',
    'no such file',
  )


def test_existing_output_is_kept_unless_overwrite(tmp_path, capsys, state_dict):
  torch.save(state_dict, tmp_path / 'w.pth')
  (tmp_path / 'out').mkdir()
  (tmp_path / 'out' / 'keep.txt').write_text('mine')
  assert convert_main([str(tmp_path / 'w.pth'), str(tmp_path / 'out')]) == 2
  assert 'not empty' in capsys.readouterr().err
  assert os.listdir(tmp_path / 'out') == ['keep.txt']
  # --overwrite replaces only a checkpoint folder: a folder with the user's files is refused.
  assert (
    convert_main([str(tmp_path / 'w.pth'), str(tmp_path / 'out'), '--overwrite', '--quiet']) == 2
  )
  assert 'not an hrnet-jax checkpoint folder' in capsys.readouterr().err
  assert os.listdir(tmp_path / 'out') == ['keep.txt']
  (tmp_path / 'out' / 'keep.txt').unlink()
  for _ in range(2):  # into the empty folder, then over the checkpoint written there
    assert (
      convert_main([str(tmp_path / 'w.pth'), str(tmp_path / 'out'), '--overwrite', '--quiet']) == 0
    )
    assert sorted(os.listdir(tmp_path / 'out')) == ['config.json', 'state']
    assert sorted(os.listdir(tmp_path)) == ['out', 'w.pth']


@pytest.mark.parametrize('name', [NAME, 'hrnet_w18_ssld'])
def test_round_trip_flax_pytorch_flax_is_bit_exact(tmp_path, name):
  import timm

  reference = timm_model(name, seed=4)
  torch.save(reference.state_dict(), tmp_path / 'a.pth')
  assert convert_main([str(tmp_path / 'a.pth'), str(tmp_path / 'a'), '--quiet']) == 0
  assert (
    convert_main(['--to-pytorch', str(tmp_path / 'a'), str(tmp_path / 'b.pth'), '--quiet']) == 0
  )
  exported = torch.load(tmp_path / 'b.pth', weights_only=True)
  fresh = timm.create_model(name)
  fresh.load_state_dict(exported, strict=True)  # timm accepts it as is
  for key, value in reference.state_dict().items():
    if not key.endswith('num_batches_tracked'):
      assert torch.equal(exported[key], value), key
  fresh.eval()
  x = inputs(2, 64, 64)
  np.testing.assert_array_equal(torch_forward(fresh, x), torch_forward(reference, x))
  assert convert_main([str(tmp_path / 'b.pth'), str(tmp_path / 'c'), '--quiet']) == 0
  _, first = checkpoint.read_pretrained(tmp_path / 'a')
  _, again = checkpoint.read_pretrained(tmp_path / 'c')
  assert first.keys() == again.keys()
  for path in first:
    np.testing.assert_array_equal(first[path], again[path], err_msg=path)


def test_pretrained_backbone_and_new_head(tmp_path, state_dict, reference, x):
  torch.save(state_dict, tmp_path / 'w.pth')
  assert convert_main([str(tmp_path / 'w.pth'), str(tmp_path / 'out'), '--quiet']) == 0
  full = hrnet_jax.load_pretrained(tmp_path / 'out')
  tuned = hrnet_jax.create_model(NAME, pretrained=tmp_path / 'out', num_classes=10)
  tuned.eval()
  assert tuned(jnp.asarray(x)).shape == (2, 10)
  np.testing.assert_array_equal(
    tuned.forward_features(jnp.asarray(x)), full.forward_features(jnp.asarray(x))
  )
  with pytest.raises(ValueError, match="checkpoint is 'hrnet_w18_small', not 'hrnet_w18'"):
    hrnet_jax.create_model('hrnet_w18', pretrained=tmp_path / 'out')


def test_loaded_weights_live_on_the_device(tmp_path, state_dict, x):
  # Host (NumPy) weights are copied to the device by every jitted call: on an H200 that made
  # hrnet_w18's inference 2.5x slower than with the same weights on the device.
  torch.save(state_dict, tmp_path / 'w.pth')
  assert convert_main([str(tmp_path / 'w.pth'), str(tmp_path / 'out'), '--quiet']) == 0
  model = hrnet_jax.load_pretrained(tmp_path / 'out')
  graphdef, weights = nnx.split(model)
  forward = jax.jit(lambda weights, x: nnx.merge(graphdef, weights)(x))
  x = jax.device_put(x)
  with jax.transfer_guard_host_to_device('disallow'):
    forward(weights, x).block_until_ready()


def test_strict_loading_assigns_nothing_on_mismatch():
  model = hrnet_jax.create_model(NAME)
  arrays = state.model_arrays(model)
  original = arrays['conv1.kernel'].copy()
  arrays['conv1.kernel'] = original + 1
  del arrays['bn1.var']
  arrays['bogus.kernel'] = np.zeros(1)
  arrays['conv2.kernel'] = np.zeros((1, 1, 1, 1))
  with pytest.raises(state.CheckpointMismatchError) as err:
    state.assign_arrays(model, arrays, what='test')
  assert (err.value.missing, err.value.unexpected) == (['bn1.var'], ['bogus.kernel'])
  assert err.value.mismatched[0].startswith('conv2.kernel')
  np.testing.assert_array_equal(model.conv1.kernel[...], original)


def test_console_script(tmp_path, state_dict):
  torch.save(state_dict, tmp_path / 'w.pth')
  done = subprocess.run(
    [sys.executable, '-m', 'hrnet_jax.convert.cli', str(tmp_path / 'w.pth'), str(tmp_path / 'out')],
    capture_output=True,
    text=True,
  )
  assert done.returncode == 0, done.stderr
  assert 'hrnet_w18_small (official format, 461 tensors)' in done.stdout
  bad = subprocess.run(
    [
      sys.executable,
      '-m',
      'hrnet_jax.convert.cli',
      str(tmp_path / 'nothing.pth'),
      str(tmp_path / 'out2'),
    ],
    capture_output=True,
    text=True,
  )
  assert bad.returncode == 2 and 'nothing.pth: no such file' in bad.stderr


def test_overwrite_through_a_symlink_replaces_the_folder_it_points_to(tmp_path, state_dict):
  # The link is resolved before any check and never removed; no leftover blocks the next run.
  torch.save(state_dict, tmp_path / 'w.pth')
  assert convert_main([str(tmp_path / 'w.pth'), str(tmp_path / 'real'), '--quiet']) == 0
  os.symlink(tmp_path / 'real', tmp_path / 'link')
  for _ in range(2):
    args = [str(tmp_path / 'w.pth'), str(tmp_path / 'link'), '--overwrite', '--quiet']
    assert convert_main(args) == 0
    assert os.path.islink(tmp_path / 'link')
    assert checkpoint.is_checkpoint_folder(tmp_path / 'real')
    assert sorted(os.listdir(tmp_path)) == ['link', 'real', 'w.pth']


def test_tensors_that_cannot_be_weights_are_refused(tmp_path, capsys, state_dict):
  # A 0/1 stem conv and a negative running variance would convert to a model that computes
  # nonsense (or NaN): refused per key, exit 2, nothing written.
  bad = dict(state_dict)
  bad['conv1.weight'] = state_dict['conv1.weight'] > 0
  bad['bn1.running_var'] = state_dict['bn1.running_var'].clone()
  bad['bn1.running_var'][3] = -1.0
  bad['layer1.0.conv1.weight'] = state_dict['layer1.0.conv1.weight'].long()
  torch.save(bad, tmp_path / 'bad.pth')
  assert convert_main([str(tmp_path / 'bad.pth'), str(tmp_path / 'out'), '--quiet']) == 2
  err = capsys.readouterr().err
  assert f'{tmp_path / "bad.pth"}: 3 tensor(s) cannot be {NAME} weights' in err
  assert 'not floating point (2)' in err and 'conv1.weight: bool' in err
  assert 'layer1.0.conv1.weight: int64' in err
  assert 'negative BatchNorm running variance (1)' in err and 'bn1.running_var' in err
  assert sorted(os.listdir(tmp_path)) == ['bad.pth']
