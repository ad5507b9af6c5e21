"""Export a checkpoint to StableHLO, ONNX, TF SavedModel or TFLite, verified before writing.

    hrnet-export --checkpoint converted/hrnet_w18 --format onnx hrnet_w18.onnx

    from hrnet_jax.export import ExportOptions, export, load
    export(ExportOptions('converted/hrnet_w18'), 'stablehlo', 'hrnet_w18.stablehlo')
    model = load('hrnet_w18.stablehlo')       # jax.export deserialized, jitted
    (logits,) = model(images_uint8)           # [B, 224, 224, 3] uint8 -> [B, 1000] float32

Modules: ``program`` (checkpoint -> one JAX function with preprocessing and metadata),
``stablehlo`` / ``onnx`` / ``tf`` (one per library), ``core`` (verify, then write), ``cli``.
The ONNX and TF libraries are imported only when their format is asked for.
"""

from hrnet_jax.export.core import FORMATS, RELATIVE_BOUND, ExportMismatchError, export, verify
from hrnet_jax.export.program import ExportOptions, Program, build
from hrnet_jax.export.stablehlo import ExportedModel, load

__all__ = [
  'ExportMismatchError',
  'ExportOptions',
  'ExportedModel',
  'FORMATS',
  'Program',
  'RELATIVE_BOUND',
  'build',
  'export',
  'load',
  'verify',
]
