"""Export a checkpoint to StableHLO, ONNX, TF SavedModel or TFLite, verified before writing.

    hrnet-export --checkpoint converted/hrnet_w18 --format onnx hrnet_w18.onnx

    from hrnet_jax.export import ExportOptions, export, load
    export(ExportOptions('converted/hrnet_w18'), 'stablehlo', 'hrnet_w18.stablehlo')
    model = load('hrnet_w18.stablehlo')       # jax.export deserialized, jitted
    (logits,) = model(images_uint8)           # [B, 224, 224, 3] uint8 -> [B, 1000] float32
    onnx_model = OnnxRuntimeModel.for_checkpoint('converted/hrnet_w18', input_size=(224, 224))
    (logits,) = onnx_model(x)                 # [B, 224, 224, 3] normalized float32, onnxruntime

Modules: ``program`` (checkpoint -> one JAX function with preprocessing and metadata),
``stablehlo`` / ``onnx`` / ``tf`` (one per library; ``onnx_graph`` rewrites jax2onnx's graph),
``core`` (verify, then write), ``predictor`` (``OnnxRuntimeModel``).
The ONNX and TF libraries are imported only when their format is asked for.
"""

from hrnet_jax.export.core import FORMATS, RELATIVE_BOUND, ExportMismatchError, export, verify
from hrnet_jax.export.predictor import OnnxRuntimeModel
from hrnet_jax.export.program import ExportOptions, Program, build
from hrnet_jax.export.stablehlo import ExportedModel, load

__all__ = [
  'ExportMismatchError',
  'ExportOptions',
  'ExportedModel',
  'FORMATS',
  'OnnxRuntimeModel',
  'Program',
  'RELATIVE_BOUND',
  'build',
  'export',
  'load',
  'verify',
]
