"""Parity with PaddleClas's own HRNet (``ppcls/arch/backbone/legendary_models/hrnet.py``).

One child process (``tests/paddle_oracle.py``; paddle never shares a process with jax/torch)
builds every width PaddleClas defines, plain and SE, randomizes BatchNorm statistics and affine
parameters and every bias (fc and SE Linears), writes each with ``paddle.save(
model.state_dict())`` and evaluates it on random inputs. Each ``.pdparams`` is converted through
the CLI code path (format and variant auto-detected) and compared: logits for every width (64x64
inputs), and logits plus every ``features_only`` map (stem, raw and incre branches) for the
checked four (W18 at 224x224, W48 / SE-W64 at 64x64 for CI time).

The reference is PaddleClas's code run in float64 on the saved float32 weights: with these
randomized statistics the deepest maps reach |x| ~ 5e3, where PaddleClas in float32 is itself
up to 2.6e-5 (relative to the map's max) away from float64, more than the 1e-5 bound allows
between two float32 runs. Our float32 output is compared with that float64 reference: logits
within 1e-5 x max(|ref|, 10); the feature maps, whose float32 noise floor this is, within 2e-5
(measured: ours 0.7-2.3e-5, PaddleClas's own float32 0.7-2.6e-5), as the mmpretrain branches.
"""

import json
import os
import pathlib
import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import hrnet_jax
from convert import paddle as paddle_keys
from convert.cli import main as convert_main
from hrnet_jax import pretrained
from hrnet_jax.pretrained import get_pretrained_cfg
from hrnet_jax.transforms import eval_transform, load_image

from oracles import assert_close, inputs

ORACLE = pathlib.Path(__file__).with_name('paddle_oracle.py')
WIDTHS = (18, 30, 32, 40, 44, 48, 60, 64)  # every HRNet_W*_C / SE_HRNet_W*_C PaddleClas defines
MODELS = {f'{"SE_" if se else ""}HRNet_W{w}_C': (w, se) for w in WIDTHS for se in (False, True)}
# The four checked map by map; their input size (the wide ones smaller, for CI time).
FEATURES = {'HRNet_W18_C': 224, 'SE_HRNet_W18_C': 224, 'HRNet_W48_C': 64, 'SE_HRNet_W64_C': 64}
PHOTOS = ('astronaut.png', 'chelsea.png', 'coffee.png', 'motorcycle_left.png', 'rocket.jpg')


def width_of(name: str) -> int:
  return MODELS[name][0]


def _arch(name: str) -> str:
  width, se = MODELS[name]
  return f'{"se_" if se else ""}hrnet_w{width}'


@pytest.fixture(scope='module')
def oracle(tmp_path_factory):
  import skimage.data
  out = tmp_path_factory.mktemp('paddleclas')
  for size in (224, 64):
    np.save(out / f'x{size}.npy', inputs(2, size, size, seed=size))
  photos = [os.path.join(os.path.dirname(skimage.data.__file__), p) for p in PHOTOS]
  job = {
      'out': str(out),
      'models': [{'name': name, 'width': w, 'se': se, 'seed': i, 'dtype': 'float64',
                  'input': str(out / f'x{FEATURES.get(name, 64)}.npy')}
                 for i, (name, (w, se)) in enumerate(MODELS.items())],
      'counts': list(MODELS.values()),
      'images': photos,
  }
  (out / 'job.json').write_text(json.dumps(job))
  done = subprocess.run([sys.executable, str(ORACLE), str(out / 'job.json')],
                        capture_output=True, text=True, timeout=1200)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  return out, photos


@pytest.mark.parametrize('name', list(MODELS))
def test_pdparams_converts_and_matches(name, oracle, tmp_path, parity_log):
  out, _ = oracle
  src = out / f'{name}.pdparams'
  try:
    assert convert_main([str(src), str(tmp_path / 'flax'), '--quiet']) == 0
    config = json.loads((tmp_path / 'flax' / 'config.json').read_text())
    assert (config['arch'], config['source']['format']) == (_arch(name), 'paddle')
    assert config['model_kwargs'] == {'head_conv_bias': False}
    tags = pretrained.paddleclas_tags(_arch(name))  # the plain tag when there is one, else ssld
    assert (config['pretrained_cfg'] or {}).get('tag') == (tags[0] if tags else None)

    # Every PaddleClas key maps to an official one and back (the table is a bijection).
    paddle_keys_ = list(paddle_keys.load_pdparams(src))
    assert [paddle_keys.from_official_key(paddle_keys.to_official_key(k))
            for k in paddle_keys_] == paddle_keys_

    ref = np.load(out / f'{name}.npz')
    x = np.load(out / f'x{FEATURES.get(name, 64)}.npy')
    size = f'{x.shape[1]}x{x.shape[2]}'
    logits = hrnet_jax.load_pretrained(tmp_path / 'flax')(jnp.asarray(x))
    diff = assert_close(logits, ref['logits'], f'{name} logits')
    parity_log(f'paddleclas {name} {size}', 'logits', diff, float(np.abs(ref['logits']).max()))
    if name not in FEATURES:
      return
    for location, kind in (('incre', 'incre'), ('', 'raw')):
      model = hrnet_jax.create_model(_arch(name), pretrained=tmp_path / 'flax',
                                     features_only=True, feature_location=location)
      model.eval()
      refs = [ref['stem']] + [ref[f'{kind}{i}'] for i in range(1, 5)]
      for i, (o, r) in enumerate(zip(model(jnp.asarray(x)), refs)):
        diff = assert_close(o, r, f'{name} feature {i} ({kind})', relative=2e-5)
        parity_log(f'paddleclas {name} {size}', f'feature {i} {kind}', diff,
                   float(np.abs(r).max()))
  finally:
    if width_of(name) != 18:  # up to 0.5 GB each: free the disk once done (W18s are reused)
      src.unlink(missing_ok=True)


def test_parameter_counts_equal_paddleclas(oracle):
  out, _ = oracle
  counts = json.loads((out / 'counts.json').read_text())
  for name, (width, se) in MODELS.items():
    model = nnx.eval_shape(lambda: hrnet_jax.create_model(_arch(name), head_conv_bias=False))
    ours = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert ours == counts[f'{width},{int(se)}'], name


def test_eval_transform_equals_paddleclas(oracle, parity_log):
  out, photos = oracle
  refs = np.load(out / 'images.npz')
  cfg = get_pretrained_cfg('HRNet_W18_C')
  assert cfg.tag == 'hrnet_w18.paddleclas_in1k' and cfg.preprocess == 'paddleclas'
  for i, path in enumerate(photos):
    ours = eval_transform(load_image(path), cfg)
    ref = refs[str(i)]
    assert ours.shape == ref.shape == (224, 224, 3) and ours.dtype == ref.dtype == np.float32
    diff = float(np.abs(ours - ref).max())
    parity_log(f'paddleclas eval transform {os.path.basename(path)}', 'pixels', diff,
               float(np.abs(ref).max()))
    assert diff <= 1e-6, f'{path}: max abs diff {diff}'


def test_to_paddle_round_trip_is_bit_exact(oracle, tmp_path):
  """SE-W18 -> Flax -> .pdparams: the same names, shapes and values PaddleClas wrote."""
  out, _ = oracle
  src = out / 'SE_HRNet_W18_C.pdparams'
  assert convert_main([str(src), str(tmp_path / 'flax'), '--quiet']) == 0
  assert convert_main(['--to-paddle', str(tmp_path / 'flax'), str(tmp_path / 'back.pdparams'),
                       '--quiet']) == 0
  original = paddle_keys.load_pdparams(src)
  exported = paddle_keys.load_pdparams(tmp_path / 'back.pdparams')
  assert sorted(exported) == sorted(original)
  for key, value in original.items():
    assert exported[key].dtype == value.dtype and exported[key].shape == value.shape, key
    np.testing.assert_array_equal(exported[key], value, err_msg=key)


class _RunsCode:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):  # unpickling would call os.system
    return os.system, (f'touch {self.marker}',)


class _Evaluates:
  def __reduce__(self):
    return eval, ('__import__("os").getpid()',)


@pytest.mark.parametrize('payload', ['system', 'builtins.eval'])
def test_malicious_pdparams_is_refused_and_nothing_runs(payload, tmp_path, capsys):
  marker = tmp_path / 'pwned'
  evil = {'conv_layer1_1.conv.weight': np.zeros((64, 3, 3, 3), np.float32),
          'conv_layer1_1.bn._mean': _RunsCode(marker) if payload == 'system' else _Evaluates()}
  (tmp_path / 'evil.pdparams').write_bytes(pickle.dumps(evil, protocol=4))
  before = set(os.listdir(tmp_path))
  assert convert_main([str(tmp_path / 'evil.pdparams'), str(tmp_path / 'out')]) == 2
  err = capsys.readouterr().err
  assert 'evil.pdparams' in err and 'refused to load global' in err and payload in err
  assert 'nothing was executed' in err
  assert not marker.exists() and set(os.listdir(tmp_path)) == before


def test_pdparams_with_non_array_entry_is_refused(tmp_path, capsys):
  (tmp_path / 'odd.pdparams').write_bytes(pickle.dumps(
      {'conv_layer1_1.conv.weight': [1.0, 2.0]}, protocol=2))
  assert convert_main([str(tmp_path / 'odd.pdparams'), str(tmp_path / 'out')]) == 2
  assert "odd.pdparams: entry 'conv_layer1_1.conv.weight' is a list" in capsys.readouterr().err
  assert not (tmp_path / 'out').exists()
