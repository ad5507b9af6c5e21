"""TensorFlow SavedModel and TFLite artifacts via ``jax.experimental.jax2tf``.

``jax2tf.convert`` (native serialization, the only mode of current JAX) wraps the program's
StableHLO in one ``XlaCallModule`` op of a ``tf.function``; the SavedModel has one signature,
``serving_default``, with input ``image`` and outputs named as ``Program.output_names``. The
TFLite converter legalizes that StableHLO to TFLite built-in ops (``OpsSet.TFLITE_BUILTINS``
only: no Flex / Select TF ops), keeping the symbolic batch as ``-1`` in the input's shape
signature (``Interpreter.resize_tensor_input`` sets it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Callable

import numpy as np

from hrnet_jax.errors import EnvironmentFailure

# The SavedModel's XlaCallModule runs on TF's CPU and GPU kernels; TPU needs its own lowering.
SAVEDMODEL_PLATFORMS = ('cpu', 'cuda', 'tpu')


def _tf():
  try:
    import tensorflow as tf
  except ImportError as e:
    raise EnvironmentFailure(
      f'tensorflow is not installed ({e}); pip install "hrnet-jax[export]"'
    ) from e
  return tf


def _module(program, platforms):
  """A ``tf.Module`` whose ``serve`` is ``program.fn`` with a named input and outputs."""
  tf = _tf()
  from jax.experimental import jax2tf  # imports tensorflow

  shape = list(program.input_shape)
  poly = None
  if shape[0] is None:
    poly = ['(b, ' + ', '.join(str(d) for d in shape[1:]) + ')']
  converted = jax2tf.convert(
    program.fn,
    polymorphic_shapes=poly,
    with_gradient=False,
    native_serialization_platforms=platforms,
  )
  names = program.output_names

  def serve(image):
    return dict(zip(names, converted(image)))

  module = tf.Module()
  module.serve = tf.function(
    serve,
    autograph=False,
    input_signature=[tf.TensorSpec(shape, tf.as_dtype(program.input_dtype), name='image')],
  )
  return module


def export_savedmodel(program, path: str) -> None:
  """Writes a SavedModel folder at ``path`` (signature ``serving_default``)."""
  tf = _tf()
  module = _module(program, SAVEDMODEL_PLATFORMS)
  tf.saved_model.save(module, path, signatures={'serving_default': module.serve})


def export_tflite(program, path: str) -> None:
  """Writes a ``.tflite`` flatbuffer at ``path``, built-in ops only (conversion fails
  otherwise). The intermediate SavedModel is lowered for CPU only."""
  tf = _tf()
  work = tempfile.mkdtemp(prefix='hrnet-export-')
  try:
    module = _module(program, ('cpu',))
    tf.saved_model.save(module, work, signatures={'serving_default': module.serve})
    converter = tf.lite.TFLiteConverter.from_saved_model(work)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    data = converter.convert()
  finally:
    shutil.rmtree(work, ignore_errors=True)
  with open(path, 'wb') as f:
    f.write(data)


def savedmodel_runner(path: str, output_names) -> Callable[[np.ndarray], list[np.ndarray]]:
  """The SavedModel at ``path`` run by TensorFlow."""
  tf = _tf()
  serve = tf.saved_model.load(path).signatures['serving_default']

  def run(x):
    out = serve(image=tf.constant(x))
    return [out[n].numpy() for n in output_names]

  return run


def tflite_interpreter(path: str):
  """A TFLite interpreter of the file at ``path``: LiteRT's (``ai_edge_litert``) if installed,
  else TensorFlow's ``tf.lite.Interpreter``."""
  try:
    from ai_edge_litert.interpreter import Interpreter
  except ImportError:
    Interpreter = _tf().lite.Interpreter
  return Interpreter(model_path=os.fspath(path))


def tflite_runner(path: str, output_names) -> Callable[[np.ndarray], list[np.ndarray]]:
  """The ``.tflite`` file at ``path`` run by the TFLite interpreter (outputs by name)."""
  interpreter = tflite_interpreter(path)
  runner = interpreter.get_signature_runner('serving_default')

  def run(x):
    out = runner(image=x)
    return [out[n] for n in output_names]

  return run
