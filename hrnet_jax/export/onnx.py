"""ONNX artifacts via jax2onnx (``jax2onnx.to_onnx``), run by onnxruntime.

jax2onnx traces the program's jaxpr and emits one ONNX node per primitive (opset 23), the
weights as initializers, the batch as the symbolic dimension ``B``. Input ``image``, outputs
named as ``Program.output_names``.

``value_info``: jax2onnx records intermediate shapes as optional ``graph.value_info`` entries;
for HRNet some of them are stale (NHWC shapes of tensors its layout pass turned NCHW around the
convs), and onnxruntime's shape inference then refuses the graph (``Add ... Incompatible
dimensions``). ONNX defines ``value_info`` as optional annotations that runtimes re-infer, so
they are dropped: the graph's nodes, inputs and outputs (which carry the real shapes) are kept
as jax2onnx wrote them, and the verification below proves the computation.

Graph: ``onnx_graph.simplify`` then replaces jax2onnx's nearest-upsampling chains by one
``Resize`` each and folds every BatchNorm into its conv. With the chains gone, onnxruntime's
transpose optimizer cancels every NHWC <-> NCHW ``Transpose`` jax2onnx puts around the convs but
the one at the input, so the graph onnxruntime runs for hrnet_w18 has the node types and counts
of timm's own ``torch.onnx.export`` (profile and timings: docs/benchmarks.md, "ONNX graph").

Export time: jax2onnx 0.17.1's optimizer is cubic in the graph size through linear-scan graph
lookups; ``jax2onnx_lookups.fast_lookups`` answers the same lookups in constant time while
``to_onnx`` runs (byte-identical output), taking hrnet_w18 from ~10 minutes to well under one.
"""

from __future__ import annotations

import logging
from typing import Callable

import jax
import numpy as np
from jax import export as jax_export

from hrnet_jax.errors import EnvironmentFailure
from hrnet_jax.export import onnx_graph
from hrnet_jax.export.jax2onnx_lookups import fast_lookups

# jax2onnx pins packages HRNet does not need, so it is installed without its dependencies.
INSTALL = 'pip install "hrnet-jax[export]" && pip install --no-deps jax2onnx==0.17.1'


def _import_jax2onnx():
  # jax2onnx imports each of its plugins; those for libraries HRNet does not use (equinox,
  # dm_pix) log a traceback when absent. Keep them quiet; real failures still raise.
  logging.getLogger('jax2onnx.plugins.plugin_system').setLevel(logging.CRITICAL)
  try:
    import jax2onnx
    import onnx
  except ImportError as e:
    raise EnvironmentFailure(f'ONNX export needs jax2onnx and onnx ({e}); {INSTALL}') from e
  return jax2onnx, onnx


def export(program, path: str) -> None:
  """Writes ``program.fn`` as an ONNX model file at ``path``."""
  jax2onnx, onnx = _import_jax2onnx()
  with fast_lookups():  # same graph, minutes faster: see that module
    model = jax2onnx.to_onnx(
      program.fn,
      [_input_spec(program)],
      model_name='hrnet',
      input_names=['image'],
      output_names=list(program.output_names),
      return_mode='proto',
    )
  del model.graph.value_info[:]  # stale optional annotations, see the module docstring
  onnx_graph.simplify(model)
  onnx.save_model(model, path)


def _input_spec(program):
  """The input as a ``jax.ShapeDtypeStruct`` with the symbolic batch ``B`` (if any)."""
  dims = tuple(jax_export.symbolic_shape('B')[0] if d is None else d for d in program.input_shape)
  return jax.ShapeDtypeStruct(dims, np.dtype(program.input_dtype))


def session(path: str, threads: int | None = None):
  """An onnxruntime ``InferenceSession`` (CPU provider) of the file at ``path``, with
  ``threads`` intra-op threads (None: onnxruntime's default, one per physical core)."""
  try:
    import onnxruntime as ort
  except ImportError as e:
    raise EnvironmentFailure(f'onnxruntime is not installed ({e}); {INSTALL}') from e
  options = ort.SessionOptions()
  if threads:
    options.intra_op_num_threads = threads
  try:
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
  except Exception as e:  # onnxruntime's errors have no common public type
    raise EnvironmentFailure(
      f'{path}: onnxruntime cannot load it: {str(e).splitlines()[0][:300]}'
    ) from e


def runner(path: str, output_names) -> Callable[[np.ndarray], list[np.ndarray]]:
  """The ONNX file at ``path`` run by onnxruntime."""
  sess = session(path)
  return lambda x: sess.run(list(output_names), {'image': x})
