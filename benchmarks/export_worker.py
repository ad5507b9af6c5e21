"""Times one exported artifact (``Spec``, framework 'export') in its own runtime; prints its row.

Modes: 'stablehlo' (``hrnet_jax.export.load``: ``jax.export`` deserialized and jitted), 'onnx'
(onnxruntime, CPU provider), 'tflite' (the TFLite interpreter, one thread per core, XNNPACK),
all from ``hrnet-export`` with float32 NHWC input and a symbolic batch; and 'timm-onnx': timm's
own ``torch.onnx.export`` of the same weights (NCHW, dynamic batch) in onnxruntime. Each
artifact is exported once per (model, image size) into ``<weights dir>/../export/`` and reused by
the other batch sizes; its export time (s) and size (MiB) are in the row (``export_s``,
``artifact_mb``).
"""

from __future__ import annotations

import json
import os
import time

from benchmarks.common import (
  Spec,
  base_row,
  cpu_model,
  peak_rss_mb,
  synthetic_batch,
  task_columns,
  time_steps,
  versions,
  worker_main,
)

MODES = ('stablehlo', 'onnx', 'tflite', 'timm-onnx')


def _artifact_dir(spec: Spec) -> str:
  path = os.path.join(os.path.dirname(os.path.abspath(spec.weights)), 'export')
  os.makedirs(path, exist_ok=True)
  return path


def export_hrnet(spec: Spec) -> tuple[str, dict]:
  """``hrnet-export`` of ``spec.weights`` (a checkpoint folder) as ``spec.mode``, cached."""
  from hrnet_jax.export import ExportOptions, export

  path = os.path.join(_artifact_dir(spec), f'{spec.model}_{spec.img_size}.{spec.mode}')
  if not os.path.exists(path + '.json'):
    export(
      ExportOptions(spec.weights, input_size=(spec.img_size, spec.img_size), input_dtype='float32'),
      spec.mode,
      path,
      overwrite=True,
    )
  with open(path + '.json') as f:
    meta = json.load(f)
  return path, {
    'export_s': meta['export_seconds'],
    'artifact_mb': meta['size_bytes'] / 2**20,
    'max_abs_diff': meta['verification']['max_abs_diff'],
  }


def export_timm(spec: Spec) -> tuple[str, dict]:
  """timm's model with ``spec.weights`` (a state_dict file) through ``torch.onnx.export``."""
  import timm
  import torch

  path = os.path.join(_artifact_dir(spec), f'{spec.model}_{spec.img_size}.timm.onnx')
  info_path = path + '.json'
  if not os.path.exists(info_path):
    model = timm.create_model(spec.model, pretrained=False)
    model.load_state_dict(torch.load(spec.weights, map_location='cpu'))
    model.eval()
    x = torch.zeros(1, 3, spec.img_size, spec.img_size)
    t0 = time.perf_counter()
    torch.onnx.export(
      model,
      (x,),
      path,
      input_names=['image'],
      output_names=['logits'],
      dynamic_axes={'image': {0: 'B'}, 'logits': {0: 'B'}},
      dynamo=False,
    )
    with open(info_path, 'w') as f:
      json.dump(
        {'export_s': time.perf_counter() - t0, 'artifact_mb': os.path.getsize(path) / 2**20}, f
      )
  with open(info_path) as f:
    return path, json.load(f)


def build_step(spec: Spec):
  """``(step, info)``: ``step()`` runs the artifact on the spec's batch (synchronously)."""
  import numpy as np

  if spec.mode not in MODES:
    raise ValueError(f'export mode must be one of {MODES}, got {spec.mode!r}')
  x, _ = synthetic_batch(spec)
  path, info = export_timm(spec) if spec.mode == 'timm-onnx' else export_hrnet(spec)
  if spec.mode in ('onnx', 'timm-onnx'):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count()
    sess = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    feed = {
      'image': np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if spec.mode == 'timm-onnx' else x
    }
    return (lambda: sess.run(None, feed)), info
  if spec.mode == 'tflite':
    from hrnet_jax.export.tf import tflite_interpreter

    interpreter = tflite_interpreter(path)
    index = interpreter.get_input_details()[0]['index']
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()
    out_index = interpreter.get_output_details()[0]['index']

    def step():
      interpreter.set_tensor(index, x)
      interpreter.invoke()
      return interpreter.get_tensor(out_index)

    return step, info
  import jax

  from hrnet_jax.export import load

  model = load(path)
  xd = jax.device_put(x)
  return (lambda: jax.block_until_ready(model(xd))), info


def run(spec: Spec) -> dict:
  step, info = build_step(spec)
  timing = time_steps(step, lambda _: None, spec)
  row = base_row(spec)
  row.update(task_columns(spec, timing, peak_rss_mb()))
  row.update(
    layout='NCHW' if spec.mode == 'timm-onnx' else 'NHWC',
    compiled=True,
    device_name=cpu_model(),
    peak_mem_kind='rss',
    num_threads=os.cpu_count(),
    export_s=round(info['export_s'], 2),
    artifact_mb=round(info['artifact_mb'], 1),
    versions=versions('jax', 'jaxlib', 'onnxruntime', 'tensorflow', 'jax2onnx', 'torch', 'timm'),
    note=(f'max abs diff vs JAX {info["max_abs_diff"]:.3g}' if 'max_abs_diff' in info else ''),
  )
  return row


if __name__ == '__main__':
  worker_main(run)
