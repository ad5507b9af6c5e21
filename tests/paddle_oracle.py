"""PaddleClas as the oracle, run in a child process (``python tests/paddle_oracle.py JOB.json``).

Imports only what it needs from the installed ``paddleclas`` wheel (installed ``--no-deps``):
the HRNet model (``ppcls/arch/backbone/legendary_models/hrnet.py``) and the eval operators
(``deploy/python/preprocess.py``). Their parent packages' ``__init__`` files import the whole
toolkit and its many extras, so the parents are registered as bare packages pointing at the
installed folders and only the leaf modules (and what they import) are executed. Nothing of
PaddleClas is copied here.

JOB.json: ``{"out": DIR, "models": [{"name", "width", "se", "seed", "input": NPY or null}],
"counts": [[width, se], ...], "images": [PATH, ...]}``. Writes, under DIR: ``NAME.pdparams``
(``paddle.save(model.state_dict())``), ``NAME.npz`` (``logits``; ``stem``, ``raw1..4``,
``incre1..4`` as NHWC) for models with an input, ``counts.json`` (trainable parameters) and
``images.npz`` (PaddleClas's eval pipeline on each image file, HWC float32).
"""

import importlib
import importlib.util
import json
import logging
import pathlib
import sys
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


def randomize(model, rng: np.random.RandomState):
  """Random BN affine, Linear biases (fc, SE) and BN statistics measured on a random batch, then
  perturbed per channel (as tests/oracles.py ``randomize_`` does for torch models)."""
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
    stats[id(layer)] = (x.mean(axis=[0, 2, 3]).numpy(), x.var(axis=[0, 2, 3], unbiased=False).numpy())

  hooks = [m.register_forward_pre_hook(measure) for m in bns]
  model.train()  # each BN normalizes by the batch statistics it measures
  with paddle.no_grad():
    model(paddle.to_tensor(rng.randn(4, 3, 64, 64).astype('float32')))
  for h in hooks:
    h.remove()
  for m in bns:
    mean, var = stats[id(m)]
    m._mean.set_value((mean + rng.randn(*mean.shape) * 0.2 * np.sqrt(var)).astype('float32'))
    m._variance.set_value((var * (rng.rand(*var.shape) * 0.6 + 0.7)).astype('float32'))
  model.eval()


def run_model(hrnet, spec: dict, out: pathlib.Path) -> None:
  import paddle
  paddle.seed(spec['seed'])
  model = hrnet.HRNet(width=spec['width'], has_se=spec['se'],
                      stages_pattern=hrnet.MODEL_STAGES_PATTERN['HRNet'])
  randomize(model, np.random.RandomState(spec['seed']))
  paddle.save(model.state_dict(), str(out / f'{spec["name"]}.pdparams'))
  if not spec.get('input'):
    return
  captured = {}
  hooks = [
      model.conv_layer1_1.register_forward_post_hook(
          lambda layer, inputs, output: captured.__setitem__('stem', [output])),
      model.st4.register_forward_post_hook(
          lambda layer, inputs, output: captured.__setitem__('raw', list(output))),
      model.last_cls.register_forward_post_hook(
          lambda layer, inputs, output: captured.__setitem__('incre', list(output))),
  ]
  x = np.load(spec['input'])
  dtype = spec.get('dtype', 'float32')
  if dtype != 'float32':
    model.to(dtype=dtype)  # the saved float32 weights, evaluated at higher precision
  with paddle.no_grad():
    logits = model(paddle.to_tensor(x.transpose(0, 3, 1, 2).astype(dtype)))
  for h in hooks:
    h.remove()
  arrays = {'logits': logits.numpy()}
  nhwc = lambda t: t.numpy().transpose(0, 2, 3, 1)
  arrays['stem'] = nhwc(captured['stem'][0])
  for kind in ('raw', 'incre'):
    for i, t in enumerate(captured[kind], start=1):
      arrays[f'{kind}{i}'] = nhwc(t)
  np.savez(out / f'{spec["name"]}.npz', **arrays)


def trainable_counts(hrnet, pairs) -> dict[str, int]:
  import paddle
  counts = {}
  for width, se in pairs:
    with paddle.LazyGuard():  # no weights drawn: only shapes are counted
      model = hrnet.HRNet(width=width, has_se=se, stages_pattern=hrnet.MODEL_STAGES_PATTERN['HRNet'])
    counts[f'{width},{int(se)}'] = sum(int(np.prod(p.shape)) for p in model.parameters()
                                      if not p.stop_gradient)
  return counts


def eval_images(paths) -> dict[str, np.ndarray]:
  """The eval transform_ops of PaddleClas's HRNet configs (ppcls/configs/ImageNet/HRNet/*.yaml)."""
  pre = import_paddleclas('deploy.python.preprocess')
  ops = [pre.DecodeImage(to_rgb=True, channel_first=False), pre.ResizeImage(resize_short=256),
         pre.CropImage(size=224),
         pre.NormalizeImage(scale='1.0/255.0', mean=[0.485, 0.456, 0.406],
                            std=[0.229, 0.224, 0.225], order='')]
  out = {}
  for i, path in enumerate(paths):
    x = pathlib.Path(path).read_bytes()
    for op in ops:
      x = op(x)
    out[str(i)] = x
  return out


def main(job_path: str) -> None:
  job = json.loads(pathlib.Path(job_path).read_text())
  out = pathlib.Path(job['out'])
  import_paddleclas('ppcls.utils.logger').init_logger(log_level=logging.ERROR)
  hrnet = import_paddleclas('ppcls.arch.backbone.legendary_models.hrnet')
  for spec in job.get('models', []):
    run_model(hrnet, spec, out)
  if job.get('counts'):
    (out / 'counts.json').write_text(json.dumps(trainable_counts(hrnet, job['counts'])))
  if job.get('images'):
    np.savez(out / 'images.npz', **eval_images(job['images']))


if __name__ == '__main__':
  main(sys.argv[1])
