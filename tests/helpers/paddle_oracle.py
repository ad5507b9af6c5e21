"""PaddleClas as the oracle, run in a child process (``python tests/helpers/paddle_oracle.py``).

Imports only what it needs from the installed ``paddleclas`` wheel (installed ``--no-deps``):
the HRNet model (``ppcls/arch/backbone/legendary_models/hrnet.py``) and the eval operators
(``deploy/python/preprocess.py``). Their parent packages' ``__init__`` files import the whole
toolkit and its many extras, so the parents are registered as bare packages pointing at the
installed folders and only the leaf modules (and what they import) are executed. Nothing of
PaddleClas is copied here.

One process serves a whole test module: it reads one JSON request per line on stdin and answers
each, in order, with one JSON line ``{"id", "ok", "result" | "error"}`` on its stdout (anything
paddle prints goes to stderr). Requests (``op`` and its fields):

- ``model`` ``{name, width, se, seed, input: NPY, out: DIR}``: builds ``HRNet(width, has_se)``,
  randomizes it (``randomize``, BN statistics calibrated at the input's size), writes
  ``DIR/NAME.pdparams`` (``paddle.save(model.state_dict())``) and ``DIR/NAME.npz`` (``logits``;
  ``stem``, ``raw1..4``, ``incre1..4`` as NHWC) for the NHWC float32 input, the ``.npz`` last
  and renamed into place (once it exists, both files are complete); answers
  ``{trainable}``, the model's trainable parameter count.
- ``load`` ``{width, se, pdparams, input, out: NPZ}``: a fresh model, ``set_state_dict(paddle.load(
  pdparams))``; writes its ``logits``; answers the missing / unexpected keys and the keys whose
  value in the model differs from the file's.
- ``images`` ``{paths, out: NPZ}``: PaddleClas's eval pipeline on each file (HWC float32).
"""

import importlib
import importlib.util
import json
import logging
import os
import pathlib
import sys
import traceback
import types

import numpy as np


def import_paddleclas(module: str):
  """Imports ``paddleclas.<module>`` without running the ``__init__`` of its parent packages."""
  if 'paddleclas' in sys.modules:
    root = pathlib.Path(sys.modules['paddleclas'].__path__[0])
  else:
    root = pathlib.Path(importlib.util.find_spec('paddleclas').submodule_search_locations[0])
  parts = ['paddleclas'] + module.split('.')
  for i in range(1, len(parts)):
    name = '.'.join(parts[:i])
    if name not in sys.modules:
      package = types.ModuleType(name)
      package.__path__ = [str(root.joinpath(*parts[1:i]))]
      sys.modules[name] = package
  return importlib.import_module('.'.join(parts))


def build(hrnet, width: int, se: bool):
  # The SE_HRNet_W*_C factories raise KeyError in paddleclas 2.6.0 (no MODEL_URLS entries).
  return hrnet.HRNet(width=width, has_se=se, stages_pattern=hrnet.MODEL_STAGES_PATTERN['HRNet'])


def randomize(model, rng: np.random.RandomState, size: tuple[int, int]):
  """Random BN affine, Linear biases (fc, SE) and BN statistics measured on a random batch of
  ``size`` (the size the model is then evaluated at: the deep branches' statistics depend on
  it, and statistics measured at another size let activations grow to ~1e4), then perturbed
  per channel, as tests/helpers/oracles.py ``randomize_`` does for torch models."""
  import paddle

  bns = [m for m in model.sublayers() if isinstance(m, paddle.nn.BatchNorm)]
  for m in model.sublayers():
    if isinstance(m, paddle.nn.BatchNorm):
      c = m.weight.shape[0]
      m.weight.set_value((rng.rand(c) + 0.5).astype('float32'))
      m.bias.set_value((rng.randn(c) * 0.5).astype('float32'))
    elif isinstance(m, paddle.nn.Linear):
      m.bias.set_value((rng.randn(m.bias.shape[0]) * 0.5).astype('float32'))
  stats = {}

  def measure(layer, inputs):
    x = inputs[0]
    stats[id(layer)] = (
      x.mean(axis=[0, 2, 3]).numpy(),
      x.var(axis=[0, 2, 3], unbiased=False).numpy(),
    )

  hooks = [m.register_forward_pre_hook(measure) for m in bns]
  model.train()  # each BN normalizes by the batch statistics it measures
  with paddle.no_grad():
    model(paddle.to_tensor(rng.randn(4, 3, *size).astype('float32')))
  for h in hooks:
    h.remove()
  for m in bns:
    mean, var = stats[id(m)]
    m._mean.set_value((mean + rng.randn(*mean.shape) * 0.2 * np.sqrt(var)).astype('float32'))
    m._variance.set_value((var * (rng.rand(*var.shape) * 0.6 + 0.7)).astype('float32'))
  model.eval()


def forward(model, x_nhwc: np.ndarray) -> dict[str, np.ndarray]:
  """Logits and, through forward hooks, the stem and the raw / incre stage-4 branches (NHWC)."""
  import paddle

  captured = {}
  hooks = [
    model.conv_layer1_1.register_forward_post_hook(
      lambda layer, inputs, output: captured.__setitem__('stem', [output])
    ),
    model.st4.register_forward_post_hook(
      lambda layer, inputs, output: captured.__setitem__('raw', list(output))
    ),
    model.last_cls.register_forward_post_hook(
      lambda layer, inputs, output: captured.__setitem__('incre', list(output))
    ),
  ]
  with paddle.no_grad():
    logits = model(paddle.to_tensor(x_nhwc.transpose(0, 3, 1, 2).copy()))
  for h in hooks:
    h.remove()
  arrays = {'logits': logits.numpy()}
  nhwc = lambda t: t.numpy().transpose(0, 2, 3, 1)
  arrays['stem'] = nhwc(captured['stem'][0])
  for kind in ('raw', 'incre'):
    for i, t in enumerate(captured[kind], start=1):
      arrays[f'{kind}{i}'] = nhwc(t)
  return arrays


def run_model(hrnet, name: str, width: int, se: bool, seed: int, x_path: str, out: str) -> dict:
  import paddle

  paddle.seed(seed)
  model = build(hrnet, width, se)
  x = np.load(x_path)
  randomize(model, np.random.RandomState(seed), x.shape[1:3])
  out = pathlib.Path(out)
  paddle.save(model.state_dict(), str(out / f'{name}.pdparams'))
  np.savez(out / f'{name}.partial.npz', **forward(model, x))
  os.replace(out / f'{name}.partial.npz', out / f'{name}.npz')  # last: both files complete
  return {
    'trainable': sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)
  }


def load_model(hrnet, width: int, se: bool, pdparams: str, x_path: str, out: str) -> dict:
  import paddle

  paddle.seed(12345)  # a different init: only the loaded file can give the logits
  model = build(hrnet, width, se)
  state = paddle.load(pdparams)
  missing, unexpected = model.set_state_dict(state)
  differ = [
    k
    for k, v in model.state_dict().items()
    if k in state and not np.array_equal(v.numpy(), np.asarray(state[k]))
  ]
  model.eval()
  np.savez(out, logits=forward(model, np.load(x_path))['logits'])
  return {'missing': list(missing), 'unexpected': list(unexpected), 'differ': differ}


def eval_images(paths) -> dict[str, np.ndarray]:
  """The eval transform_ops of PaddleClas's HRNet configs (ppcls/configs/ImageNet/HRNet/*.yaml)."""
  pre = import_paddleclas('deploy.python.preprocess')
  ops = [
    pre.DecodeImage(to_rgb=True, channel_first=False),
    pre.ResizeImage(resize_short=256),
    pre.CropImage(size=224),
    pre.NormalizeImage(
      scale='1.0/255.0', mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], order=''
    ),
  ]
  out = {}
  for i, path in enumerate(paths):
    x = pathlib.Path(path).read_bytes()
    for op in ops:
      x = op(x)
    out[str(i)] = x
  return out


def main() -> None:
  reply = os.fdopen(os.dup(1), 'w')
  os.dup2(2, 1)  # whatever paddle prints goes to stderr; stdout carries only the answers
  import_paddleclas('ppcls.utils.logger').init_logger(log_level=logging.ERROR)
  hrnet = import_paddleclas('ppcls.arch.backbone.legendary_models.hrnet')
  ops = {
    'model': lambda r: run_model(
      hrnet, r['name'], r['width'], r['se'], r['seed'], r['input'], r['out']
    ),
    'load': lambda r: load_model(hrnet, r['width'], r['se'], r['pdparams'], r['input'], r['out']),
    'images': lambda r: np.savez(r['out'], **eval_images(r['paths'])),
  }
  for line in sys.stdin:
    request = json.loads(line)
    try:
      answer = {'id': request['id'], 'ok': True, 'result': ops[request['op']](request)}
    except Exception:  # reported to the test, which fails with it
      answer = {'id': request['id'], 'ok': False, 'error': traceback.format_exc()}
    reply.write(json.dumps(answer) + '\n')
    reply.flush()


if __name__ == '__main__':
  main()
