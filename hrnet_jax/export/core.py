"""Export a checkpoint to one format, verify it in its own runtime, then write it.

Every artifact is written under a temporary name in the destination folder, loaded and run by
its own runtime (``jax.export`` deserialized / TensorFlow / the TFLite interpreter /
onnxruntime) on a fixed random batch, compared with the checkpoint's unmodified float32 JAX model
(``Program.reference``), and renamed to ``OUT`` only if every output is within the bound;
``OUT.json`` (the program's metadata plus the verification figures) is written last, the same
way. On a mismatch or any failure nothing is left behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import time
from importlib import metadata
from typing import Any, Callable

import numpy as np

from hrnet_jax import atomic
from hrnet_jax.errors import BadInputError, EnvironmentFailure
from hrnet_jax.export import onnx, stablehlo, tf
from hrnet_jax.export.program import ExportOptions, Program, build

FORMATS = ('stablehlo', 'onnx', 'savedmodel', 'tflite')
# Max abs diff allowed per output: RELATIVE_BOUND[dtype] x max(|reference|, 10), the float32
# bound of every parity test in this project; a bfloat16 program is compared with the float32
# model, so its bound is bf16 rounding (2^-8 relative) accumulated over HRNet's depth.
RELATIVE_BOUND = {'float32': 1e-5, 'bfloat16': 5e-2}
VERIFY_BATCH = 2
# onnxruntime's CPU provider has no bfloat16 Conv kernel and TFLite no bfloat16 built-in ops.
BFLOAT16_FORMATS = ('stablehlo', 'savedmodel')


class ExportMismatchError(EnvironmentFailure):
  """The exported artifact does not compute what the JAX model computes (exit 1)."""


def available_memory() -> int | None:
  """Bytes of memory a new allocation can still get: Linux's ``MemAvailable``, capped by the
  cgroup (v2) limit left; None where neither can be read."""
  limits = []
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          limits.append(int(line.split()[1]) * 1024)
  except (OSError, ValueError, IndexError):
    pass
  try:
    with open('/sys/fs/cgroup/memory.max') as f:
      limit = f.read().strip()
    if limit != 'max':
      with open('/sys/fs/cgroup/memory.current') as f:
        limits.append(int(limit) - int(f.read()))
  except (OSError, ValueError):
    pass
  return min(limits) if limits else None


def check_sample_fits(options: ExportOptions) -> None:
  """``BadInputError`` naming ``--input-size`` (and ``--batch-size``) when the verification
  cannot even hold its sample batch and the model's first feature map (the stem's 64 channels at
  half resolution, float32) in the memory available, checked before anything is loaded."""
  if options.input_size is None:
    return
  h, w = options.input_size
  batch = options.batch_size or VERIFY_BATCH
  sample = batch * h * w * 3 * np.dtype(options.input_dtype).itemsize
  first_map = batch * (h // 2) * (w // 2) * 64 * 4
  needed, available = sample + first_map, available_memory()
  if available is not None and needed > available:
    flags = f'--input-size {h} {w}' + (f' --batch-size {batch}' if options.batch_size else '')
    raise BadInputError(
      f'{flags}: verifying the export runs the model on {batch} images of {h}x{w}, which needs '
      f'at least {needed:,} bytes ({needed / 2**30:.1f} GiB: {sample / 2**30:.1f} GiB for the '
      f'{options.input_dtype} batch, {first_map / 2**30:.1f} GiB for the first feature map); '
      f'{available / 2**30:.1f} GiB of memory are available. Use a smaller --input-size'
      + (' or --batch-size' if options.batch_size else '')
    )


def _exporter(fmt: str) -> Callable[[Program, str], None]:
  return {
    'stablehlo': stablehlo.export,
    'onnx': onnx.export,
    'savedmodel': tf.export_savedmodel,
    'tflite': tf.export_tflite,
  }[fmt]


def _runner(fmt: str, path: str, names) -> Callable[[np.ndarray], list[np.ndarray]]:
  if fmt == 'stablehlo':
    return stablehlo.runner(path)
  return {'onnx': onnx.runner, 'savedmodel': tf.savedmodel_runner, 'tflite': tf.tflite_runner}[fmt](
    path, names
  )


def verify(
  program: Program, run: Callable[[np.ndarray], list[np.ndarray]], *, batch: int, dtype: str
) -> dict[str, Any]:
  """Runs the artifact (``run``) and the reference on ``program.sample_input(batch)``.

  Returns ``{'batch', 'bound_relative', 'outputs': {name: {'max_abs_diff', 'max_abs_ref',
  'bound'}}, 'max_abs_diff'}``. Raises ``ExportMismatchError`` naming the first output whose
  shape differs or whose max abs diff exceeds its bound (or is not finite).
  """
  x = program.sample_input(batch)
  refs = program.reference_outputs(batch)
  try:
    outs = [np.asarray(o, np.float32) for o in run(x)]
  except Exception as e:  # each runtime has its own error types
    raise EnvironmentFailure(
      f'the exported artifact failed to run in its runtime: '
      f'{type(e).__name__}: {str(e).splitlines()[0][:300]}'
    ) from e
  relative = RELATIVE_BOUND[dtype]
  report: dict[str, Any] = {'batch': batch, 'bound_relative': relative, 'outputs': {}}
  for name, out, ref in zip(program.output_names, outs, refs, strict=True):
    if out.shape != ref.shape:
      raise ExportMismatchError(f'output {name!r}: shape {out.shape} != JAX model {ref.shape}')
    diff = float(np.abs(out - ref).max())
    bound = relative * max(float(np.abs(ref).max()), 10.0)
    report['outputs'][name] = {
      'max_abs_diff': diff,
      'max_abs_ref': float(np.abs(ref).max()),
      'bound': bound,
    }
    if not diff <= bound:  # also catches NaN
      raise ExportMismatchError(
        f'output {name!r}: max abs diff {diff:.3g} > bound {bound:.3g} '
        f'({relative:g} x max(|ref|, 10)); nothing was written'
      )
  report['max_abs_diff'] = max(o['max_abs_diff'] for o in report['outputs'].values())
  return report


def _versions() -> dict[str, str]:
  out = {}
  for name in ('jax', 'jaxlib', 'flax', 'tensorflow', 'jax2onnx', 'onnx', 'onnxruntime'):
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      pass
  return out


def written_by_export(out: pathlib.Path) -> bool:
  """Whether ``out`` and ``out.json`` are an artifact and metadata this module wrote: the
  metadata names ``out`` as its artifact, and ``out`` is a folder exactly for 'savedmodel'."""
  try:
    meta = json.loads(out.with_name(out.name + '.json').read_text())
  except (OSError, ValueError):
    return False
  if not isinstance(meta, dict) or meta.get('artifact') != out.name:
    return False
  fmt = meta.get('format')
  return fmt in FORMATS and (not os.path.lexists(out) or out.is_dir() == (fmt == 'savedmodel'))


def _leftover_of_export(entry: pathlib.Path, out: pathlib.Path) -> bool:
  """A killed export's working folder (the artifact and its metadata) or an aside copy."""
  if entry.is_dir() and not (entry / 'saved_model.pb').exists():
    return set(os.listdir(entry)) <= {out.name, 'metadata.json'}
  return True


def export(
  options: ExportOptions, fmt: str, out: str | os.PathLike, *, overwrite: bool = False
) -> dict[str, Any]:
  """Exports the checkpoint of ``options`` as ``fmt`` to ``out`` (a folder for 'savedmodel',
  else a file) and its metadata to ``out + '.json'``; returns that metadata.

  Raises ``BadInputError`` (bad option, missing checkpoint, missing destination folder, an
  ``input_size`` whose verification batch cannot fit in memory: ``check_sample_fits``),
  ``FileExistsError`` (``out`` exists, no ``overwrite``), ``ExportMismatchError`` (verification
  failed), ``EnvironmentFailure`` (an export library is missing or failed) or ``OSError`` naming
  ``out``'s folder when its disk has no room for the artifact (checked before writing, with the
  size needed and the space free) or filled while it was written. Nothing is written unless
  verification passed.
  """
  if fmt not in FORMATS:
    raise BadInputError(f'--format must be one of {FORMATS}, got {fmt!r}')
  if options.dtype == 'bfloat16' and fmt not in BFLOAT16_FORMATS:
    raise BadInputError(
      f'--dtype bfloat16: {fmt} runtimes have no bfloat16 kernels; '
      f'use it with {" or ".join(BFLOAT16_FORMATS)}, or float32'
    )
  check_sample_fits(options)
  given = os.fspath(out)
  out = atomic.resolve_output(given)
  if not out.parent.is_dir():
    raise BadInputError(f'{given}: destination folder {out.parent} does not exist')
  meta = out.with_name(out.name + '.json')
  atomic.recover_leftovers(out, ours=lambda entry: _leftover_of_export(entry, out))
  atomic.refuse_unsafe_output(out, given, protect=[options.checkpoint], noun='artifact')
  for path, name in ((out, given), (meta, given + '.json')):
    if os.path.lexists(path) and not overwrite:
      raise FileExistsError(f'{name}: exists (use --overwrite)')
  if (os.path.lexists(out) or os.path.lexists(meta)) and not written_by_export(out):
    raise BadInputError(
      f'{given}: not an artifact hrnet-export wrote (no {given}.json naming it); --overwrite '
      'only replaces what hrnet-export wrote. Nothing was touched'
    )

  program = build(options)
  # The weights are constants of every format's artifact; the rest is small.
  needed = program.weights_bytes + 2**20
  what = f'the {fmt} artifact'
  free = atomic.ensure_free_space(out.parent, needed, what)
  work = atomic.temp_dir(out)
  try:
    artifact = os.path.join(work, os.path.basename(out))
    t0 = time.perf_counter()
    try:
      _exporter(fmt)(program, artifact)
    except (BadInputError, EnvironmentFailure):
      raise
    except Exception as e:  # converter errors have no common type
      if atomic.write_error(e, out.parent, what=what, needed=needed, free=free, written=work):
        raise  # a full disk: reported below
      raise EnvironmentFailure(
        f'{fmt} export failed: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ""}'
      ) from e
    export_s = time.perf_counter() - t0
    batch = options.batch_size or VERIFY_BATCH
    report = verify(
      program,
      lambda x: _runner(fmt, artifact, program.output_names)(x),
      batch=batch,
      dtype=options.dtype,
    )
    metadata = {
      'format': fmt,
      'artifact': os.path.basename(out),
      **program.metadata,
      'verification': report,
      'export_seconds': round(export_s, 2),
      'size_bytes': atomic.size_bytes(artifact),
      'versions': _versions(),
      'options': {k: v for k, v in dataclasses.asdict(options).items() if k != 'checkpoint'},
    }
    tmp_meta = os.path.join(work, 'metadata.json')
    with open(tmp_meta, 'w') as f:
      json.dump(metadata, f, indent=2)
    # Existence without ``overwrite`` was refused above.
    atomic.replace(artifact, out)
    atomic.replace(tmp_meta, meta)
  except Exception as e:
    full = atomic.write_error(e, out.parent, what=what, needed=needed, free=free, written=work)
    if full is not None:  # named by the destination folder, not the temporary one
      raise full from None
    raise
  finally:
    shutil.rmtree(work, ignore_errors=True)
  return metadata
