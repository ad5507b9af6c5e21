"""``hrnet-export``: a checkpoint folder to StableHLO, ONNX, TF SavedModel or TFLite, verified.

    hrnet-export --checkpoint converted/hrnet_w18 --format onnx hrnet_w18.onnx

Writes ``OUT`` (a folder for ``savedmodel``) and ``OUT.json`` (input contract, preprocessing,
class names, verification figures). Exit status (``hrnet_jax.errors``): 0 written, 1 the export
failed or did not verify (nothing written), 2 bad arguments or checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from hrnet_jax.cli import policy
from hrnet_jax.cli.policy import run_cli
from hrnet_jax.errors import BadInputError
from hrnet_jax.export.core import export
from hrnet_jax.export.program import ExportOptions

PROG = 'hrnet-export'
FORMATS = ('stablehlo', 'onnx', 'savedmodel', 'tflite')


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog=PROG,
    description='Export a hrnet-jax checkpoint folder (convert_official_weights, '
    'hrnet-train) to another runtime. The artifact is run in its own runtime and compared '
    'with the JAX model before anything is written.',
  )
  p.add_argument(
    'out', metavar='OUT', help='artifact path (a folder for savedmodel); metadata goes to OUT.json'
  )
  p.add_argument('--checkpoint', required=True, metavar='DIR', help='checkpoint folder')
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
  p.add_argument('--verbose', action='store_true', help='tracebacks on errors')
  return p


def _body(args) -> int:

  if not args.features_only and (
    args.feature_location != 'incre' or args.out_indices != [0, 1, 2, 3, 4]
  ):
    raise BadInputError('--feature-location and --out-indices need --features-only')
  bad = [i for i in args.out_indices if not 0 <= i <= 4]
  if bad:
    raise BadInputError(f'--out-indices must be in 0..4, got {bad}')
  options = ExportOptions(
    checkpoint=args.checkpoint,
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
  meta = export(options, args.format, args.out, overwrite=args.overwrite)
  check = meta['verification']
  print(
    f'{args.out}: {meta["format"]}, {meta["size_bytes"] / 2**20:.1f} MiB, exported in '
    f'{meta["export_seconds"]:.1f} s; verified at batch {check["batch"]}: max abs diff '
    f'{check["max_abs_diff"]:.3g} (bound {check["bound_relative"]:g} x max(|ref|, 10))'
  )
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the CLI; returns the exit status."""
  parser = build_parser()
  try:
    args = parser.parse_args(argv)
  except SystemExit as e:  # argparse: 2 on bad usage, 0 on --help
    return int(e.code or 0)
  return run_cli(PROG, lambda: _body(args), verbose=args.verbose)


if __name__ == '__main__':
  sys.exit(main())
