"""The ONNX graph rewrites (hrnet_jax/export/onnx_graph.py) and ``OnnxRuntimeModel``.

One hrnet_w18_small checkpoint (random weights, randomized BatchNorm statistics and affines) at
32x32 px is exported once through ``OnnxRuntimeModel.for_checkpoint``; its graph must hold no
upsampling chain and no BatchNorm, and onnxruntime must return the JAX model's logits within the
export's float32 bound. The rewrites alone are checked on a small conv / BN / upsample / add net
against jax2onnx's unrewritten graph.
"""

import collections
import json

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import skimage.data
from flax import nnx
from PIL import Image

import hrnet_jax
from hrnet_jax.cli.predict import main as predict_main
from hrnet_jax.errors import BadInputError
from hrnet_jax.export import RELATIVE_BOUND, OnnxRuntimeModel, core, onnx_graph
from hrnet_jax.models.layers import upsample_nearest
from hrnet_jax.pretrained import get_pretrained_cfg

SIZE = 32


def _randomize_batchnorms(model, seed=0):
  rng = np.random.default_rng(seed)
  for _, module in nnx.iter_graph(model):
    if isinstance(module, nnx.BatchNorm):
      for param, low in ((module.mean, -1.0), (module.var, 0.5), (module.scale, 0.5)):
        param[...] = jnp.asarray(rng.uniform(low, low + 1.5, param[...].shape), jnp.float32)
      module.bias[...] = jnp.asarray(rng.uniform(-1, 1, module.bias[...].shape), jnp.float32)


def _ops(model: onnx.ModelProto) -> collections.Counter:
  return collections.Counter(n.op_type for n in model.graph.node)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('onnx_runtime')
  model = hrnet_jax.create_model('hrnet_w18_small')
  _randomize_batchnorms(model)
  # Preprocessing at the exported size, so hrnet-predict --runtime onnxruntime finds the export.
  cfg = dict(get_pretrained_cfg('hrnet_w18_small.ms_in1k').to_dict())
  cfg.update(input_size=[3, SIZE, SIZE], crop_pct=1.0)
  hrnet_jax.save_pretrained(model, tmp / 'ckpt', pretrained_cfg=cfg)
  onnx_model = OnnxRuntimeModel.for_checkpoint(
    tmp / 'ckpt', input_size=(SIZE, SIZE), cache_dir=tmp / 'cache'
  )
  return tmp, model, onnx_model


def test_for_checkpoint_matches_the_jax_model(exported):
  _, model, onnx_model = exported
  model.eval()
  x = np.random.default_rng(1).standard_normal((3, SIZE, SIZE, 3), np.float32)
  with jax.default_matmul_precision('highest'):
    (ref,) = [np.asarray(model(jnp.asarray(x)))]
  (logits,) = onnx_model(x)
  assert logits.shape == ref.shape == (3, 1000)
  bound = RELATIVE_BOUND['float32'] * max(float(np.abs(ref).max()), 10.0)
  assert np.abs(logits - ref).max() <= bound
  assert onnx_model.metadata['verification']['max_abs_diff'] <= bound


def test_predict_runtime_onnxruntime_agrees_with_jax(exported, monkeypatch, capsys):
  """``hrnet-predict --runtime onnxruntime`` runs the cached export (no second export) and
  ranks the classes as the JAX path does."""
  tmp, _, _ = exported
  monkeypatch.setenv('HRNET_JAX_ONNX_CACHE', str(tmp / 'cache'))
  monkeypatch.setattr(core, 'export', lambda *a, **k: pytest.fail('exported again'))
  photo = tmp / 'photo.png'
  Image.fromarray(skimage.data.astronaut()).save(photo)
  tops = {}
  for runtime in ('jax', 'onnxruntime'):
    argv = ['--checkpoint', str(tmp / 'ckpt'), str(photo), '--json', '--runtime', runtime]
    assert predict_main(argv) == 0
    (result,) = json.loads(capsys.readouterr().out)['results']
    tops[runtime] = result['top_k']
  assert [c['index'] for c in tops['jax']] == [c['index'] for c in tops['onnxruntime']]
  np.testing.assert_allclose(
    [c['prob'] for c in tops['jax']], [c['prob'] for c in tops['onnxruntime']], atol=1e-3
  )


def test_graph_has_one_resize_per_upsampling_and_no_batchnorm(exported):
  _, _, onnx_model = exported
  ops = _ops(onnx.load(onnx_model.path))
  # hrnet_w18_small: one module per stage with 2, 3, 4 branches; n (n - 1) / 2 upsamplings each.
  assert ops['Resize'] == 1 + 3 + 6, ops
  for gone in ('BatchNormalization', 'Expand', 'Shape', 'Gather', 'Concat'):
    assert ops[gone] == 0, ops


def test_cached_artifact_is_reused_until_the_checkpoint_changes(exported, monkeypatch):
  tmp, model, onnx_model = exported

  def no_export(*args, **kwargs):
    raise AssertionError('exported again')

  with monkeypatch.context() as patch:
    patch.setattr(core, 'export', no_export)
    again = OnnxRuntimeModel.for_checkpoint(
      tmp / 'ckpt', input_size=(SIZE, SIZE), cache_dir=tmp / 'cache'
    )
  assert again.path == onnx_model.path
  with monkeypatch.context() as patch:
    patch.setattr(core, 'export', no_export)
    with pytest.raises(AssertionError, match='exported again'):  # another size: another graph
      OnnxRuntimeModel.for_checkpoint(tmp / 'ckpt', input_size=(64, 64), cache_dir=tmp / 'cache')


def test_wrong_input_names_the_expected_shape(exported):
  _, _, onnx_model = exported
  with pytest.raises(BadInputError, match=r'float32 of shape \[.*32, 32, 3\]'):
    onnx_model(np.zeros((1, SIZE + 1, SIZE, 3), np.float32))
  with pytest.raises(BadInputError, match='got uint8'):
    onnx_model(np.zeros((1, SIZE, SIZE, 3), np.uint8))
  with pytest.raises(FileNotFoundError, match='no such ONNX file'):
    OnnxRuntimeModel(exported[0] / 'missing.onnx')


class _Net(nnx.Module):
  """conv -> BN -> relu at two resolutions, the coarse one upsampled x2 and added; and the
  global average pool of the sum (a classifier's head)."""

  def __init__(self):
    rngs = nnx.Rngs(0)
    self.conv = nnx.Conv(3, 8, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(8, use_running_average=True, rngs=rngs)
    self.down_conv = nnx.Conv(8, 8, (3, 3), strides=2, rngs=rngs)
    self.down_bn = nnx.BatchNorm(8, use_running_average=True, rngs=rngs)

  def __call__(self, x):
    x = jax.nn.relu(self.bn(self.conv(x)))
    y = jax.nn.relu(self.down_bn(self.down_conv(x)))
    z = x + upsample_nearest(y, x.shape[1:3])
    return z, jnp.mean(jax.nn.relu(z), axis=(1, 2))


def test_rewrites_keep_the_values():
  import jax2onnx

  net = _Net()
  _randomize_batchnorms(net)
  spec = [jax.ShapeDtypeStruct((jax.export.symbolic_shape('B')[0], 16, 16, 3), np.float32)]
  model = jax2onnx.to_onnx(net, spec, return_mode='proto')
  del model.graph.value_info[:]
  before = _ops(model)
  x = np.random.default_rng(2).standard_normal((2, 16, 16, 3), np.float32)
  run = lambda m: ort.InferenceSession(
    m.SerializeToString(), providers=['CPUExecutionProvider']
  ).run(None, {model.graph.input[0].name: x})
  expected = run(model)
  counts = onnx_graph.simplify(model)
  after = _ops(model)
  assert before['Expand'] == 2 and before['BatchNormalization'] == 2, before
  assert counts['nearest_resize'] == 2 and counts['merge_resizes'] == 1
  assert counts['fold_batchnorm'] == 2 and counts['global_average_pool'] == 1
  assert after['Resize'] == 1 and after['Expand'] == after['BatchNormalization'] == 0, after
  assert after['GlobalAveragePool'] == 1 and after['ReduceMean'] == 0, after
  onnx.checker.check_model(model)
  got = run(model)
  for got_k, expected_k, jax_k in zip(got, expected, net(jnp.asarray(x)), strict=True):
    bound = 1e-5 * max(np.abs(expected_k).max(), 10)
    np.testing.assert_allclose(got_k, expected_k, rtol=0, atol=bound)
    np.testing.assert_allclose(got_k, np.asarray(jax_k), rtol=0, atol=1e-4)
