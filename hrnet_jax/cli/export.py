"""``hrnet-export``: a checkpoint folder to StableHLO, ONNX, TF SavedModel or TFLite, verified.

    hrnet-export --checkpoint converted/hrnet_w18 --format onnx hrnet_w18.onnx

Writes ``OUT`` (a folder for ``savedmodel``) and ``OUT.json`` (input contract, preprocessing,
class names, verification figures). ``--checkpoint`` may be a training workdir (its ``best/``,
or ``--step N``: ``hrnet_jax.cli.checkpoints``). While it runs, one line on stdout says what is
being done (on a terminal with the seconds elapsed); the last line gives the whole command's
wall time and the verification's max abs diff beside its bound. Exit status
(``hrnet_jax.errors``): 0 written, 1 the export failed or did not verify (nothing written), 2
bad arguments or checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import sys
import threading
import time
from typing import Iterator, Sequence

from hrnet_jax.cli import checkpoints, policy
from hrnet_jax.cli.policy import run_cli
from hrnet_jax.errors import BadInputError, EnvironmentFailure
from hrnet_jax.export import onnx as onnx_export
from hrnet_jax.export.core import export
from hrnet_jax.export.program import ExportOptions

PROG = 'hrnet-export'
FORMATS = ('stablehlo', 'onnx', 'savedmodel', 'tflite')
# What each format needs beyond the base install (pyproject.toml: the export extra; jax2onnx
# without its pins, see the README's "Deploy").
ONNX_INSTALL = onnx_export.INSTALL
NEEDS = {
  'onnx': (('jax2onnx', 'onnx', 'onnx_ir', 'onnxruntime'), ONNX_INSTALL),
  'savedmodel': (('tensorflow',), 'pip install "hrnet-jax[export]"'),
  'tflite': (('tensorflow',), 'pip install "hrnet-jax[export]"'),
}


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog=PROG,
    description='Export a hrnet-jax checkpoint (convert_official_weights, hrnet-train) as '
    'StableHLO, ONNX, a TF SavedModel or TFLite, with OUT.json (input contract, '
    'preprocessing, class names). The artifact is run in its own runtime and compared with '
    'the JAX model before anything is written.',
  )
  p.add_argument(
    'out', metavar='OUT', help='artifact path (a folder for savedmodel); metadata goes to OUT.json'
  )
  checkpoints.add_arguments(p)
  p.add_argument('--format', required=True, choices=FORMATS)
  p.add_argument(
    '--batch-size',
    type=policy.positive_int,
    metavar='N',
    help='fix the batch (default: symbolic, any batch)',
  )
  p.add_argument(
    '--input-size',
    type=policy.positive_int,
    nargs=2,
    metavar=('H', 'W'),
    help="input height and width (default: the checkpoint's input_size)",
  )
  p.add_argument(
    '--input-dtype',
    choices=('uint8', 'float32'),
    default='uint8',
    help='uint8: RGB pixels 0..255, normalized inside (default); float32: already normalized',
  )
  p.add_argument(
    '--layout',
    choices=('nhwc', 'nchw'),
    default='nhwc',
    help='input (and feature map) layout (default nhwc)',
  )
  p.add_argument(
    '--features-only',
    action='store_true',
    help='export the multi-resolution backbone (feature maps) instead of logits',
  )
  p.add_argument(
    '--feature-location',
    choices=('incre', ''),
    default='incre',
    help="with --features-only: through incre_modules ('incre') or raw ('')",
  )
  p.add_argument(
    '--out-indices',
    type=int,
    nargs='+',
    default=[0, 1, 2, 3, 4],
    metavar='I',
    help='with --features-only: maps to return, of 0..4 (default all)',
  )
  p.add_argument(
    '--fold-bn',
    action='store_true',
    help='fold every BatchNorm into its conv first (faster inference)',
  )
  p.add_argument(
    '--dtype',
    choices=('float32', 'bfloat16'),
    default='float32',
    help='compute dtype (weights stay float32); bfloat16 is verified with a looser bound',
  )
  p.add_argument('--overwrite', action='store_true', help='replace an existing OUT')
  p.add_argument(
    '--verbose', action='store_true', help="tracebacks on errors, and the libraries' log lines"
  )
  return p


def check_installed(fmt: str) -> None:
  """``EnvironmentFailure`` naming the missing modules of ``fmt`` and the command that installs
  them, before any work."""
  modules, command = NEEDS.get(fmt, ((), ''))
  missing = [m for m in modules if importlib.util.find_spec(m) is None]
  if missing:
    raise EnvironmentFailure(
      f'--format {fmt} needs {", ".join(missing)}, not installed; install with: {command}'
    )


@contextlib.contextmanager
def progress(what: str, stream=None) -> Iterator[None]:
  """Says ``what`` is being done on ``stream`` (stdout, so that a failure stays one line on
  stderr): one line, which on a terminal counts the seconds until the block ends."""
  stream = stream or sys.stdout
  if not stream.isatty():
    print(f'{PROG}: {what} ...', file=stream, flush=True)
    yield
    return
  done = threading.Event()
  t0 = time.perf_counter()

  def tick():
    while not done.wait(1.0):
      print(
        f'\r{PROG}: {what} ... {time.perf_counter() - t0:.0f} s', end='', file=stream, flush=True
      )

  print(f'{PROG}: {what} ...', end='', file=stream, flush=True)
  thread = threading.Thread(target=tick, daemon=True)
  thread.start()
  try:
    yield
  finally:
    done.set()
    thread.join()
    print(file=stream, flush=True)


def _body(args, t0: float) -> int:

  if not args.features_only and (
    args.feature_location != 'incre' or args.out_indices != [0, 1, 2, 3, 4]
  ):
    raise BadInputError('--feature-location and --out-indices need --features-only')
  bad = [i for i in args.out_indices if not 0 <= i <= 4]
  if bad:
    raise BadInputError(f'--out-indices must be in 0..4, got {bad}')
  check_installed(args.format)
  checkpoint = checkpoints.resolve_args(args, PROG)
  options = ExportOptions(
    checkpoint=checkpoint,
    batch_size=args.batch_size,
    input_size=tuple(args.input_size) if args.input_size else None,
    features_only=args.features_only,
    feature_location=args.feature_location,
    out_indices=tuple(sorted(set(args.out_indices))),
    fold_bn=args.fold_bn,
    dtype=args.dtype,
    input_dtype=args.input_dtype,
    layout=args.layout,
  )
  what = f'exporting {checkpoint} as {args.format} and verifying it in its runtime'
  with progress(what):
    meta = export(options, args.format, args.out, overwrite=args.overwrite)
  check = meta['verification']
  # The output closest to its bound (each output has its own: 1e-5 x max(|its ref|, 10)).
  name, worst = max(check['outputs'].items(), key=lambda kv: kv[1]['max_abs_diff'] / kv[1]['bound'])
  which = f', {name}' if len(check['outputs']) > 1 else ''
  print(
    f'{args.out}: {meta["format"]}, {meta["size_bytes"] / 2**20:.1f} MiB, written in '
    f'{time.perf_counter() - t0:.1f} s (conversion {meta["export_seconds"]:.1f} s); verified at '
    f'batch {check["batch"]}: max abs diff {worst["max_abs_diff"]:.3g} <= bound '
    f'{worst["bound"]:.3g} ({check["bound_relative"]:g} x max(|ref|, 10){which})'
  )
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the CLI; returns the exit status."""
  t0 = policy.command_start(argv)
  parser = build_parser()
  try:
    args = parser.parse_args(argv)
  except SystemExit as e:  # argparse: 2 on bad usage, 0 on --help
    return int(e.code or 0)
  policy.quiet_libraries(args.verbose)
  return run_cli(PROG, lambda: _body(args, t0), verbose=args.verbose)


if __name__ == '__main__':
  sys.exit(main())
