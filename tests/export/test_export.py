"""hrnet-export: every format round-trips in its own runtime (hrnet_w18_small, 64x64 to stay cheap).

The checkpoint is a timm model with randomized BatchNorm statistics and biases, saved as the
official repo ships its weights and converted by the converter's CLI. Each format is exported
by the CLI once with a symbolic batch (logits, uint8 NHWC input) and once as a backbone (feature
maps, float32 input; NCHW and --fold-bn for ONNX and TFLite), then run by its own runtime,
called directly here (onnxruntime, TensorFlow, the TFLite interpreter,
``hrnet_jax.export.load``), at batch 1 and 3 through the same artifact, and compared with the
JAX model.

Cost: the formats share each program. Within this module ``core.build`` is memoized by
``ExportOptions``, so the checkpoint is loaded, the program traced and its float32 reference
compiled and run once per option set, not once per format; what each format does (export,
verification in its runtime, writing) is unchanged.

The checkpoint records its own class names and a 64x64 input size in ``config.json`` (as
hrnet-train writes them), so that the ONNX consumer snippet of the README, run on scikit-image's
photos, can be held to hrnet-predict's top-1 label (issue 23). Each export's printed lines and
the log records it let through are kept (``RUNS``): the summary must give the command's wall
time and the bound beside the max abs diff, and onnx_ir's warnings must not reach the user.
"""

import ast
import contextlib
import io
import json
import logging
import os
import re
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import torch
from flax import nnx
from oracles import assert_close, timm_model
from PIL import Image

import hrnet_jax
from hrnet_jax.cli.export import main
from hrnet_jax.cli.predict import main as predict_main
from hrnet_jax.convert.cli import main as convert_main

SIZE = 64
NAMES = [f'label {i:03d}' for i in range(1000)]
README = os.path.join(os.path.dirname(__file__), '..', '..', 'README.md')
RUNS = {}  # str(out) -> (stdout, wall seconds, log records of the export)
FORMATS = ('stablehlo', 'onnx', 'savedmodel', 'tflite')
NCHW_FOLDED = ('onnx', 'tflite')  # feature maps exported with --layout nchw --fold-bn


@pytest.fixture(scope='module', autouse=True)
def one_build_per_options():
  """``core.build`` memoized by options for this module: formats share one program."""
  from hrnet_jax.export import core

  real, built = core.build, {}

  def build(options):
    if options not in built:
      built[options] = real(options)
    return built[options]

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(core, 'build', build)
    yield built


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('export_ckpt')
  torch.save(timm_model('hrnet_w18_small').state_dict(), tmp / 'w18s.pth')
  assert convert_main([str(tmp / 'w18s.pth'), str(tmp / 'flax'), '--quiet']) == 0
  config = json.loads((tmp / 'flax' / 'config.json').read_text())
  config['pretrained_cfg'].update(input_size=[3, SIZE, SIZE], class_names=NAMES)
  (tmp / 'flax' / 'config.json').write_text(json.dumps(config))
  return tmp / 'flax'


class _Records(logging.Handler):
  def __init__(self):
    super().__init__(logging.DEBUG)
    self.records = []

  def emit(self, record):
    self.records.append(record)


def _export(ckpt, out, fmt, *extra):
  stdout, records = io.StringIO(), _Records()
  logging.getLogger().addHandler(records)
  t0 = time.perf_counter()
  with contextlib.redirect_stdout(stdout):
    rc = main(
      [
        '--checkpoint',
        str(ckpt),
        '--format',
        fmt,
        str(out),
        '--input-size',
        str(SIZE),
        str(SIZE),
        *extra,
      ]
    )
  wall = time.perf_counter() - t0
  logging.getLogger().removeHandler(records)
  assert rc == 0
  RUNS[str(out)] = (stdout.getvalue(), wall, records.records)
  return out, json.loads(open(f'{out}.json').read())


@pytest.fixture(scope='module', params=FORMATS)
def artifacts(request, ckpt, tmp_path_factory):
  """(format, logits artifact, its metadata, features artifact, its metadata)."""
  fmt = request.param
  tmp = tmp_path_factory.mktemp(f'export_{fmt}')
  logits = _export(ckpt, tmp / f'logits.{fmt}', fmt)
  # ONNX users ask for NCHW; TFLite, the on-device format, for folded BatchNorms (same float32
  # bound). Each pair of formats shares one feature program.
  layout = ('--layout', 'nchw', '--fold-bn') if fmt in NCHW_FOLDED else ()
  features = _export(
    ckpt, tmp / f'features.{fmt}', fmt, '--features-only', '--input-dtype', 'float32', *layout
  )
  return fmt, *logits, *features


def _jitted(model):
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
  return lambda x: jax.tree.map(np.asarray, forward(state, jnp.asarray(x)))


@pytest.fixture(scope='module')
def references(ckpt):
  """The JAX model on 3 test inputs: (pretrained_cfg, uint8 images, their logits, float32
  inputs, their feature maps). The batch-1 checks use the first input of each."""
  model = hrnet_jax.load_pretrained(ckpt)
  cfg = model.pretrained_cfg
  rng = np.random.default_rng(3)
  images = rng.integers(0, 256, (3, SIZE, SIZE, 3), np.uint8)
  normalized = (images / 255.0 - np.array(cfg['mean'])) / np.array(cfg['std'])
  x = rng.standard_normal((3, SIZE, SIZE, 3), np.float32)
  features = _jitted(hrnet_jax.load_pretrained(ckpt, features_only=True))(x)
  return cfg, images, _jitted(model)(normalized.astype(np.float32)), x, features


def _runtime(fmt, path, names):
  """The artifact at ``path`` loaded once in its own runtime: ``run(x)`` returns its outputs
  in ``names`` order."""
  if fmt == 'stablehlo':
    model = hrnet_jax.export.load(path)
    return lambda x: [np.asarray(o) for o in model(x)]
  if fmt == 'onnx':
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return lambda x: sess.run(names, {'image': x})
  import tensorflow as tf

  if fmt == 'savedmodel':
    serve = tf.saved_model.load(str(path)).signatures['serving_default']
    return lambda x: [serve(image=tf.constant(x))[n].numpy() for n in names]
  runner = tf.lite.Interpreter(model_path=str(path)).get_signature_runner('serving_default')
  return lambda x: [runner(image=x)[n] for n in names]  # resizes the input per batch


def test_logits_round_trip_batch_1_and_3(artifacts, references, parity_log):
  fmt, path, meta = artifacts[:3]
  cfg, images, logits = references[:3]
  pre = meta['preprocessing']
  assert meta['input'] == {
    **meta['input'],
    'shape': [None, SIZE, SIZE, 3],
    'dtype': 'uint8',
    'layout': 'NHWC',
  }
  assert pre['mean'] == list(cfg['mean']) and pre['std'] == list(cfg['std'])
  assert meta['class_names'] == NAMES  # the checkpoint's own, not ImageNet's
  check = meta['verification']
  assert check['max_abs_diff'] <= check['outputs']['logits']['bound']
  # What the command printed: a progress line, then the whole command's wall time (not the
  # conversion's share alone) and the bound beside the diff; no library warnings let through.
  printed, wall, records = RUNS[str(path)]
  progress, summary = printed.strip().splitlines()
  assert progress.startswith(f'hrnet-export: exporting {meta["checkpoint"]} as {fmt}'), printed
  total, conversion = map(
    float, re.search(r'in ([\d.]+) s \(conversion ([\d.]+) s\)', summary).groups()
  )
  assert wall - 0.5 <= total <= wall + 0.05 and conversion == round(meta['export_seconds'], 1)
  assert f'max abs diff {check["max_abs_diff"]:.3g} <= bound ' in summary, summary
  assert f'bound {check["outputs"]["logits"]["bound"]:.3g} (1e-05 x max(|ref|, 10))' in summary
  assert not [r.getMessage() for r in records if r.name.startswith('onnx_ir')]
  run = _runtime(fmt, path, ['logits'])
  for batch in (1, 3):
    (out,) = run(images[:batch])
    ref = logits[:batch]
    diff = assert_close(out, ref, f'{fmt} logits batch {batch}')
    parity_log(f'export {fmt} hrnet_w18_small b{batch}', 'logits', diff, float(np.abs(ref).max()))


def test_features_round_trip_batch_1_and_3(artifacts, references, parity_log):
  fmt, _, _, path, meta = artifacts
  x, features = references[3:]
  names = [o['name'] for o in meta['outputs']]
  assert names == [f'feature_{i}' for i in range(5)]
  nchw = fmt in NCHW_FOLDED
  assert meta['fold_bn'] == nchw and meta['input']['dtype'] == 'float32'
  assert meta['input']['layout'] == ('NCHW' if nchw else 'NHWC')
  run = _runtime(fmt, path, names)
  for batch in (1, 3):
    outs = run(x[:batch].transpose(0, 3, 1, 2).copy() if nchw else x[:batch])
    for name, out, ref, info in zip(names, outs, features, meta['outputs'], strict=True):
      ref = ref[:batch]
      if nchw:
        out = np.transpose(out, (0, 2, 3, 1))
      assert info['shape'] == [None] + [ref.shape[i] for i in ((3, 1, 2) if nchw else (1, 2, 3))]
      diff = assert_close(out, ref, f'{fmt} {name} batch {batch}')
      parity_log(f'export {fmt} hrnet_w18_small b{batch}', name, diff, float(np.abs(ref).max()))


def _readme_onnx_consumer() -> str:
  """The README's ONNX consumer snippet (the code block after its marker)."""
  text = open(README).read()
  block = text.split('<!-- readme:onnx-consumer -->', 1)[1]
  return block.split('```python\n', 1)[1].split('```', 1)[0]


def test_format_specific_contracts(artifacts, ckpt, tmp_path, capsys):
  fmt, path = artifacts[:2]
  if fmt == 'onnx':
    import onnx

    onnx.checker.check_model(str(path))
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == 'B' and [d.dim_value for d in dims[1:]] == [SIZE, SIZE, 3]
    # The README's consumer: what it imports, and its top-1 = hrnet-predict's on real photos
    # (portrait, landscape, odd sizes: the resize and crop rounding of the preprocessing).
    snippet = _readme_onnx_consumer()
    imported = {
      alias.name.split('.')[0] if isinstance(node, ast.Import) else node.module
      for node in ast.walk(ast.parse(snippet))
      if isinstance(node, (ast.Import, ast.ImportFrom))
      for alias in node.names
    }
    assert imported == {'json', 'math', 'numpy', 'onnxruntime', 'PIL'}, imported
    photos = []
    for name in ('chelsea', 'coffee', 'rocket', 'astronaut'):
      photos.append(str(tmp_path / f'{name}.png'))
      Image.fromarray(getattr(skimage.data, name)()).save(photos[-1])
    assert predict_main(['--checkpoint', str(ckpt), *photos, '--json', '--top-k', '1']) == 0
    expected = [r['top_k'][0]['label'] for r in json.loads(capsys.readouterr().out)['results']]
    for photo, label in zip(photos, expected, strict=True):
      code = snippet.replace("'hrnet_w18.onnx", repr(str(path))[:-1]).replace(
        "'cat.jpg'", repr(photo)
      )
      printed = io.StringIO()
      with contextlib.redirect_stdout(printed):
        exec(compile(code, 'README.md', 'exec'), {})
      assert printed.getvalue().strip() == label, photo
  elif fmt == 'tflite':
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path))
    ops = {op['op_name'] for op in interpreter._get_ops_details()}
    assert 'CONV_2D' in ops
    assert not [op for op in ops if op.startswith('Flex') or op == 'CUSTOM'], ops
    assert list(interpreter.get_input_details()[0]['shape_signature']) == [-1, SIZE, SIZE, 3]
  elif fmt == 'stablehlo':
    model = hrnet_jax.export.load(path)
    assert model.metadata['format'] == 'stablehlo'
    assert set(model.exported.platforms) == {'cpu', 'cuda', 'tpu'}
  else:
    assert os.path.isfile(path / 'saved_model.pb')


def test_bfloat16_fixed_batch_stablehlo(ckpt, tmp_path):
  path, meta = _export(
    ckpt, tmp_path / 'bf16.stablehlo', 'stablehlo', '--dtype', 'bfloat16', '--batch-size', '2'
  )
  check = meta['verification']
  assert check['bound_relative'] == hrnet_jax.export.RELATIVE_BOUND['bfloat16']
  assert 0 < check['max_abs_diff'] <= check['outputs']['logits']['bound']
  assert meta['input']['shape'][0] == 2 and check['batch'] == 2
  assert hrnet_jax.export.load(path).exported.in_avals[0].shape == (2, SIZE, SIZE, 3)


def _one_error_line(capsys, *needles):
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('hrnet-export: error: '), err
  for needle in needles:
    assert needle in err[0], err


def test_bad_arguments_exit_2(ckpt, tmp_path, capsys):
  out = str(tmp_path / 'm.onnx')
  missing = str(tmp_path / 'no_such_ckpt')
  assert main(['--checkpoint', missing, '--format', 'onnx', out]) == 2
  _one_error_line(capsys, missing)
  assert main(['--checkpoint', str(tmp_path), '--format', 'onnx', out]) == 2  # not a ckpt
  _one_error_line(capsys, str(tmp_path))
  assert main(['--checkpoint', str(ckpt), '--format', 'onnx', out, '--out-indices', '2']) == 2
  _one_error_line(capsys, '--features-only')
  assert main(['--checkpoint', str(ckpt), '--format', 'tflite', out, '--dtype', 'bfloat16']) == 2
  _one_error_line(capsys, 'bfloat16')
  assert (
    main(['--checkpoint', str(ckpt), '--format', 'onnx', str(tmp_path / 'nowhere' / 'm.onnx')]) == 2
  )
  _one_error_line(capsys, 'nowhere')
  assert main(['--checkpoint', str(ckpt), '--format', 'keras', out]) == 2  # argparse
  assert main(['--checkpoint', str(ckpt), '--format', 'onnx', out, '--batch-size', '0']) == 2
  assert '--batch-size' in capsys.readouterr().err
  (tmp_path / 'taken.stablehlo').write_bytes(b'keep me')
  assert (
    main(['--checkpoint', str(ckpt), '--format', 'stablehlo', str(tmp_path / 'taken.stablehlo')])
    == 2
  )
  _one_error_line(capsys, 'taken.stablehlo', '--overwrite')
  assert (tmp_path / 'taken.stablehlo').read_bytes() == b'keep me'
  assert sorted(os.listdir(tmp_path)) == ['taken.stablehlo']


def test_mismatch_writes_nothing_exit_1(ckpt, tmp_path, capsys, monkeypatch):
  """The CLI's verification (real) against a runtime whose outputs are the JAX model's + 1e-2:
  exit 1, one line naming the output, nothing written. The StableHLO export is real; the
  runtime is replaced so that no artifact needs compiling."""
  from hrnet_jax.export import core

  programs = []
  build = core.build
  monkeypatch.setattr(
    core, 'build', lambda options: programs.append(build(options)) or programs[-1]
  )
  monkeypatch.setattr(
    core, '_runner', lambda *a: lambda x: [r + 1e-2 for r in programs[-1].reference_outputs(len(x))]
  )
  assert (
    main(
      [
        '--checkpoint',
        str(ckpt),
        '--format',
        'stablehlo',
        str(tmp_path / 'm.shlo'),
        '--input-size',
        str(SIZE),
        str(SIZE),
      ]
    )
    == 1
  )
  _one_error_line(capsys, 'logits', 'max abs diff', 'nothing was written')
  assert os.listdir(tmp_path) == []


def test_dense_model_exports_unchanged(tmp_path, capsys):
  """A dense model (segmentation, randomized BatchNorms) goes through hrnet-export as a
  classifier does: the CLI verifies the StableHLO artifact against the JAX model and writes
  the stride-4 class logits; --features-only is refused (its outputs are maps already)."""
  model = hrnet_jax.create_model('hrnetv2_w18_small_seg')
  rng = np.random.default_rng(0)
  for _, module in nnx.iter_graph(model):
    if isinstance(module, nnx.BatchNorm):
      for param, low in (
        (module.mean, -1.0),
        (module.var, 0.5),
        (module.scale, 0.5),
        (module.bias, -1.0),
      ):
        param[...] = jnp.asarray(rng.uniform(low, low + 1.5, param[...].shape), jnp.float32)
  hrnet_jax.save_pretrained(model, tmp_path / 'seg')
  _, meta = _export(tmp_path / 'seg', tmp_path / 'seg.stablehlo', 'stablehlo')
  assert meta['task'] == 'segment' and meta['num_classes'] == 19 and meta['class_names'] is None
  assert meta['outputs'] == [
    {'name': 'logits', 'channels': 19, 'reduction': 4, 'shape': [None, SIZE // 4, SIZE // 4, 19]}
  ]
  check = meta['verification']['outputs']['logits']
  assert 0 <= check['max_abs_diff'] <= check['bound'] and check['max_abs_ref'] > 0
  assert (
    main(
      [
        '--checkpoint',
        str(tmp_path / 'seg'),
        '--format',
        'stablehlo',
        str(tmp_path / 'f.stablehlo'),
        '--features-only',
      ]
    )
    == 2
  )
  _one_error_line(capsys, 'dense model', '--features-only')


def test_jax2onnx_fast_lookups_change_nothing():
  """The ONNX exporter's constant-time lookups (hrnet_jax/export/jax2onnx_lookups.py) give
  jax2onnx's own graph, byte for byte, on a small conv / add / relu net with transposes to
  cancel, and put jax2onnx's functions back afterwards."""
  import jax2onnx
  from jax2onnx.converter import ir_optimizations, output_binding

  from hrnet_jax.export.jax2onnx_lookups import fast_lookups

  rng = np.random.default_rng(0)
  w1, w2 = (jnp.asarray(rng.standard_normal((3, 3, c, 8), np.float32)) for c in (3, 8))

  def net(x):
    conv = lambda y, w: jax.lax.conv_general_dilated(
      y, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
    )
    y = jax.nn.relu(conv(x, w1))
    return (jax.nn.relu(conv(y, w2) + y).mean(axis=(1, 2)),)

  spec = [jax.ShapeDtypeStruct((2, 16, 16, 3), np.float32)]
  export = lambda: jax2onnx.to_onnx(net, spec, return_mode='proto').SerializeToString()
  originals = (ir_optimizations._producer_node, output_binding._value_is_graph_connected)
  with fast_lookups() as active:
    assert ir_optimizations._producer_node is not originals[0]
    fast = export()
  assert active, 'jax2onnx is not the version jax2onnx_lookups was written against'
  assert (ir_optimizations._producer_node, output_binding._value_is_graph_connected) == originals
  assert fast == export()


def test_overwrite_replaces_only_what_hrnet_export_wrote(ckpt, tmp_path, capsys):
  # A user's folder holding the checkpoint, the checkpoint itself, a user's file: all refused.
  proj = tmp_path / 'proj'
  shutil.copytree(ckpt, proj / 'ck')
  (proj / 'notes.txt').write_text('mine')
  user_file = tmp_path / 'user.stablehlo'
  user_file.write_bytes(b'keep me')
  cases = [
    (proj / 'ck', proj, 'the input'),
    (proj / 'ck', proj / 'ck', 'the input'),
    (ckpt, user_file, 'not an artifact hrnet-export wrote'),
  ]
  for checkpoint, out, expected in cases:
    args = ['--checkpoint', str(checkpoint), '--format', 'stablehlo', str(out), '--overwrite']
    assert main(args) == 2
    _one_error_line(capsys, str(out), expected)
  assert sorted(os.listdir(proj)) == ['ck', 'notes.txt']
  assert (proj / 'notes.txt').read_text() == 'mine'
  assert sorted(os.listdir(proj / 'ck')) == ['config.json', 'state']
  assert user_file.read_bytes() == b'keep me'
  # A killed export's working folder (pid above Linux's largest: not alive) goes with the next.
  left = tmp_path / '.m.stablehlo.tmp-4194999-x'
  left.mkdir()
  (left / 'm.stablehlo').write_bytes(b'partial')
  # Its own artifact, reached through a symlink: replaced where the link points, link kept.
  out, _ = _export(ckpt, tmp_path / 'm.stablehlo', 'stablehlo')
  assert not left.exists()
  os.symlink(out, tmp_path / 'link.stablehlo')
  os.symlink(f'{out}.json', tmp_path / 'link.stablehlo.json')
  _export(ckpt, tmp_path / 'link.stablehlo', 'stablehlo', '--overwrite')
  assert os.path.islink(tmp_path / 'link.stablehlo')
  assert json.loads((tmp_path / 'm.stablehlo.json').read_text())['artifact'] == 'm.stablehlo'
  assert not [n for n in os.listdir(tmp_path) if '.tmp-' in n or '.old-' in n]
