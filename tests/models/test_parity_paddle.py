"""Parity with PaddleClas's own HRNet (``ppcls/arch/backbone/legendary_models/hrnet.py``).

One child process (``tests/helpers/paddle_oracle.py``; paddle never shares a process with jax/torch)
serves the module. For every width PaddleClas defines, plain and SE, it builds the model,
randomizes BatchNorm affine parameters and every bias (fc and SE Linears), sets the BN
statistics from a batch at the evaluation size and perturbs them, writes it with
``paddle.save(model.state_dict())`` and evaluates it in float32.

- HRNet_W18_C and SE_HRNet_W18_C (224x224) go through the converter's CLI (format and variant
  auto-detected); logits and every ``features_only`` map (stem, raw and incre branches) are compared: logits and the stem within
  1e-5 x max(|ref|, 10), the stage-4 maps (float32's noise floor, see below) within 2e-5.
- The 14 other variants (one key table serves every width) go through the converter's code
  path in one worker process (spawned, so that it runs on the core the child leaves idle); their
  logits at 64x64 within 1e-5.
- Every variant's parameter count equals PaddleClas's trainable count; the strict converter
  proves its keys and shapes.
"""

import json
import multiprocessing
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import jax
import numpy as np
import pytest
from flax import nnx
from oracles import assert_close, inputs

import hrnet_jax
from hrnet_jax import pretrained
from hrnet_jax.convert import pdparams
from hrnet_jax.convert.classify import convert_source
from hrnet_jax.convert.cli import main as convert_main
from hrnet_jax.convert.layouts import paddle as paddle_keys
from hrnet_jax.convert.sources import read_source
from hrnet_jax.data.transforms import eval_transform, load_image
from hrnet_jax.pretrained import get_pretrained_cfg, state

ORACLE = pathlib.Path(__file__).parents[1] / 'helpers' / 'paddle_oracle.py'
WIDTHS = (18, 30, 32, 40, 44, 48, 60, 64)  # every HRNet_W*_C / SE_HRNet_W*_C PaddleClas defines
# Logits and every features_only map, with their input size (the wide ones smaller, for CI time).
CHECKED = {
  'HRNet_W18_C': (18, False, 224),
  'SE_HRNet_W18_C': (18, True, 224),
}
# Every other width, plain and SE: logits at 64x64 (the size the wide CHECKED ones already
# compiled; at 32x32 the deepest branch is 1x1 and a BN calibrated on 4 values makes SE nets
# chaotic: PaddleClas in float32 is 4e-3 off its own float64).
OTHERS = {
  f'{"SE_" if se else ""}HRNet_W{width}_C': (width, se) for width in WIDTHS for se in (False, True)
}
OTHERS = {name: variant for name, variant in OTHERS.items() if name not in CHECKED}
PHOTOS = ('astronaut.png', 'chelsea.png', 'coffee.png', 'motorcycle_left.png', 'rocket.jpg')


def _arch(width: int, se: bool) -> str:
  return f'{"se_" if se else ""}hrnet_w{width}'


def _num_params(model) -> int:
  return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))


class PaddleClasChild:
  """The oracle process: ``send`` queues a request, ``result`` waits for its answer."""

  def __init__(self, out: pathlib.Path):
    self.out = out
    self.log = open(out / 'oracle.log', 'w+')
    self.proc = subprocess.Popen(
      [sys.executable, str(ORACLE)],
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      stderr=self.log,
      text=True,
    )
    self.answers = {}
    self.sent = 0

  def send(self, op: str, **fields) -> int:
    self.sent += 1
    self.proc.stdin.write(json.dumps(dict(fields, op=op, id=self.sent)) + '\n')
    self.proc.stdin.flush()
    return self.sent

  def result(self, request: int):
    while request not in self.answers:
      line = self.proc.stdout.readline()
      if not line:
        self.log.seek(0)
        pytest.fail(f'PaddleClas oracle exited ({self.proc.poll()}): {self.log.read()[-3000:]}')
      answer = json.loads(line)
      self.answers[answer['id']] = answer
    answer = self.answers[request]
    assert answer['ok'], answer['error']
    return answer['result']

  def close(self):
    self.proc.stdin.close()
    try:
      self.proc.wait(timeout=60)
    finally:
      if self.proc.poll() is None:
        self.proc.kill()
      self.log.close()


@pytest.fixture(scope='module')
def oracle(tmp_path_factory):
  """The child, with every request that depends on nothing of ours already queued:
  ``requests['shapes' | 'images' | NAME]``."""
  import skimage.data

  out = tmp_path_factory.mktemp('paddleclas')
  for size in (224, 64):
    np.save(out / f'x{size}.npy', inputs(2, size, size, seed=size))
  child = PaddleClasChild(out)
  photos = [os.path.join(os.path.dirname(skimage.data.__file__), p) for p in PHOTOS]
  requests = {}
  for seed, (name, (width, se, size)) in enumerate(CHECKED.items()):
    requests[name] = child.send(
      'model',
      name=name,
      width=width,
      se=se,
      seed=seed,
      input=str(out / f'x{size}.npy'),
      out=str(out),
    )
  requests['images'] = child.send('images', paths=photos, out=str(out / 'images.npz'))
  for seed, (name, (width, se)) in enumerate(OTHERS.items(), start=len(CHECKED)):
    requests[name] = child.send(
      'model', name=name, width=width, se=se, seed=seed, input=str(out / 'x64.npy'), out=str(out)
    )
  child.requests, child.photos = requests, photos
  # OTHERS are converted and run in one worker process (spawned: no forked jax), on the core the
  # child leaves idle while this process checks CHECKED.
  worker = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn'))
  child.others = {name: worker.submit(_convert_and_run, name, str(out)) for name in OTHERS}
  yield child
  (out / 'stop').touch()  # a job still waiting for a file that will not come gives up
  worker.shutdown(cancel_futures=True)
  child.close()
  shutil.rmtree(out)  # 1.2 GiB of weights


@pytest.fixture(scope='module')
def converted(oracle):
  """``converted(NAME)``: the Flax folder of PaddleClas's NAME.pdparams (converted once)."""
  done = {}

  def convert(name: str) -> pathlib.Path:
    if name not in done:
      oracle.result(oracle.requests[name])
      done[name] = oracle.out / f'{name}_flax'
      assert convert_main([str(oracle.out / f'{name}.pdparams'), str(done[name]), '--quiet']) == 0
    return done[name]

  return convert


@pytest.mark.parametrize('name', list(CHECKED))
def test_pdparams_converts_and_matches(name, oracle, converted, parity_log):
  width, se, size = CHECKED[name]
  flax_dir = converted(name)
  src = oracle.out / f'{name}.pdparams'
  config = json.loads((flax_dir / 'config.json').read_text())
  assert (config['arch'], config['source']['format']) == (_arch(width, se), 'paddle')
  assert config['model_kwargs'] == {'head_conv_bias': False}
  tags = pretrained.paddleclas_tags(_arch(width, se))  # the plain tag when there is one, else ssld
  assert (config['pretrained_cfg'] or {}).get('tag') == (tags[0] if tags else None)

  # Every PaddleClas key maps to an official one and back (the table is a bijection).
  names = list(pdparams.load_pdparams(src))
  assert [paddle_keys.from_official_key(paddle_keys.to_official_key(k)) for k in names] == names
  if width != 18:  # up to 0.5 GB: free the disk (the W18s are reused)
    src.unlink()

  ref = np.load(oracle.out / f'{name}.npz')
  x = np.load(oracle.out / f'x{size}.npy')
  case = f'paddleclas {name} {size}x{size}'
  model = hrnet_jax.load_pretrained(flax_dir)
  assert _num_params(model) == oracle.result(oracle.requests[name])['trainable']
  logits = model(x)
  parity_log(
    case,
    'logits',
    assert_close(logits, ref['logits'], f'{name} logits'),
    float(np.abs(ref['logits']).max()),
  )
  over = []
  for location, kind in (('incre', 'incre'), ('', 'raw')):
    model = hrnet_jax.create_model(
      _arch(width, se), pretrained=flax_dir, features_only=True, feature_location=location
    )
    model.eval()
    refs = [ref['stem']] + [ref[f'{kind}{i}'] for i in range(1, 5)]
    maps = model(x)
    assert len(maps) == len(refs)
    for i, (o, r) in enumerate(zip(maps, refs)):
      if i == 0 and kind == 'raw':
        continue  # the stem again
      # The stage-4 maps sit at float32's noise floor: ~300 conv+BN layers with randomized,
      # calibrated BatchNorms amplify rounding. Measured (HRNet_W18_C, 64x64, relative to the
      # map's max): our float64 run equals PaddleClas's float64 to 2e-11 (same function), yet
      # PaddleClas float32 is 1.0e-5 off its float64 and we 1.5e-5; our own eager and jit runs
      # differ by 1.4e-5 and moving every input by 1 ulp moves the maps by 1.7e-5. So these
      # maps are bounded at 2e-5, as mmpretrain's branches; logits and the stem at 1e-5.
      relative = 2e-5 if i else 1e-5
      diff = float(np.abs(np.asarray(o) - r).max())
      parity_log(case, f'feature {i} {kind}', diff, float(np.abs(r).max()))
      over += [f'{name} feature {i} ({kind}): max abs diff {diff:.3g}'] * (
        diff > relative * max(float(np.abs(r).max()), 10.0)
      )
  assert not over, over


def _convert_and_run(name: str, out: str) -> dict:
  """In the worker process: waits for the child's ``NAME.pdparams`` (complete once its
  ``NAME.npz`` exists), converts it through the converter's code path (format and variant
  auto-detected; every key, shape and value checked, as the CLI does), deletes it, loads the
  arrays into the model and returns what the test checks, with the logits of ``x64.npy``."""
  jax.config.update('jax_default_matmul_precision', 'highest')  # conftest's, in this process
  out = pathlib.Path(out)
  while not (out / f'{name}.npz').exists():
    if (out / 'stop').exists():
      raise RuntimeError(f'{name}: the PaddleClas child wrote no {name}.npz')
    time.sleep(0.1)
  src = out / f'{name}.pdparams'
  arch, head_conv_bias, num_classes, fmt, arrays = convert_source(read_source(src))
  src.unlink()  # up to 0.5 GB
  model = hrnet_jax.create_model(arch, head_conv_bias=head_conv_bias)
  state.assign_arrays(model, arrays, what=str(src))
  model.eval()
  return {
    'variant': (arch, head_conv_bias, num_classes, fmt),
    'params': _num_params(model),
    'logits': np.asarray(model(np.load(out / 'x64.npy'))),
  }


@pytest.mark.parametrize('name', list(OTHERS))
def test_every_width_converts_and_matches_logits(name, oracle, parity_log):
  """The widths and SE variants not in CHECKED: PaddleClas's ``.pdparams`` converts with
  auto-detection, loads into the model, has PaddleClas's trainable parameter count and gives
  its logits (``_convert_and_run``)."""
  width, se = OTHERS[name]
  trainable = oracle.result(oracle.requests[name])['trainable']
  ours = oracle.others[name].result()
  assert ours['variant'] == (_arch(width, se), False, 1000, 'paddle')
  assert ours['params'] == trainable
  ref = np.load(oracle.out / f'{name}.npz')['logits']
  diff = assert_close(ours['logits'], ref, f'{name} logits')
  parity_log(f'paddleclas {name} 64x64', 'logits', diff, float(np.abs(ref).max()))


def test_eval_transform_equals_paddleclas(oracle, parity_log):
  oracle.result(oracle.requests['images'])
  refs = np.load(oracle.out / 'images.npz')
  cfg = get_pretrained_cfg('HRNet_W18_C')
  assert cfg.tag == 'hrnet_w18.paddleclas_in1k' and cfg.preprocess == 'paddleclas'
  for i, path in enumerate(oracle.photos):
    ours = eval_transform(load_image(path), cfg)
    ref = refs[str(i)]
    assert ours.shape == ref.shape == (224, 224, 3) and ours.dtype == ref.dtype == np.float32
    diff = float(np.abs(ours - ref).max())
    parity_log(
      f'paddleclas eval transform {os.path.basename(path)}',
      'pixels',
      diff,
      float(np.abs(ref).max()),
    )
    assert diff <= 1e-6, f'{path}: max abs diff {diff}'


def test_to_paddle_round_trip_loads_in_paddleclas(oracle, converted, tmp_path):
  """SE-W18 -> Flax -> .pdparams: the names, shapes and values PaddleClas wrote, which
  ``paddle.load`` + ``set_state_dict`` accept (no parameter-name table needed) and which give
  PaddleClas's logits again."""
  src = oracle.out / 'SE_HRNet_W18_C.pdparams'
  back = tmp_path / 'back.pdparams'
  assert convert_main(['--to-paddle', str(converted('SE_HRNet_W18_C')), str(back), '--quiet']) == 0
  original = pdparams.load_pdparams(src)
  exported = pdparams.load_pdparams(back)
  assert sorted(exported) == sorted(original)
  for key, value in original.items():
    assert exported[key].dtype == value.dtype and exported[key].shape == value.shape, key
    np.testing.assert_array_equal(exported[key], value, err_msg=key)
  with open(back, 'rb') as f:
    assert pdparams.PARAM_TABLE_KEY not in pickle.load(f)  # noqa: S301 (our own file)

  loaded = oracle.result(
    oracle.send(
      'load',
      width=18,
      se=True,
      pdparams=str(back),
      input=str(oracle.out / 'x224.npy'),
      out=str(tmp_path / 'logits.npz'),
    )
  )
  assert loaded == {'missing': [], 'unexpected': [], 'differ': []}
  np.testing.assert_array_equal(
    np.load(tmp_path / 'logits.npz')['logits'], np.load(oracle.out / 'SE_HRNet_W18_C.npz')['logits']
  )


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
  evil = {
    'conv_layer1_1.conv.weight': np.zeros((64, 3, 3, 3), np.float32),
    'conv_layer1_1.bn._mean': _RunsCode(marker) if payload == 'system' else _Evaluates(),
  }
  (tmp_path / 'evil.pdparams').write_bytes(pickle.dumps(evil, protocol=4))
  before = set(os.listdir(tmp_path))
  assert convert_main([str(tmp_path / 'evil.pdparams'), str(tmp_path / 'out')]) == 2
  err = capsys.readouterr().err
  assert 'evil.pdparams' in err and 'refused to load global' in err and payload in err
  assert 'nothing was executed' in err
  assert not marker.exists() and set(os.listdir(tmp_path)) == before


def test_pdparams_with_non_array_entry_is_refused(tmp_path, capsys):
  (tmp_path / 'odd.pdparams').write_bytes(
    pickle.dumps({'conv_layer1_1.conv.weight': [1.0, 2.0]}, protocol=2)
  )
  assert convert_main([str(tmp_path / 'odd.pdparams'), str(tmp_path / 'out')]) == 2
  assert "odd.pdparams: entry 'conv_layer1_1.conv.weight' is a list" in capsys.readouterr().err
  assert not (tmp_path / 'out').exists()
