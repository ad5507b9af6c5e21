"""``convert_official_weights``: PyTorch HRNet checkpoint -> hrnet-jax checkpoint folder.

    convert_official_weights SRC OUT_DIR [--arch NAME] [--format auto|official|timm|mmpretrain]
                             [--tag TAG] [--overwrite] [--quiet]
    convert_official_weights --to-pytorch CKPT_DIR OUT.pth
    convert_official_weights --to-paddle CKPT_DIR OUT.pdparams

Exit codes: 0 done; 2 bad input (usage, unreadable file, key mismatch: all problems are listed),
with nothing written.
"""

from __future__ import annotations

import argparse
import sys

from hrnet_jax.configs import MODEL_CONFIGS

from convert.core import convert_checkpoint, to_paddle, to_pytorch
from convert.formats import FORMATS
from convert.sources import ConversionError

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='convert_official_weights',
      description='Convert an official / timm / mmpretrain / PaddleClas HRNet checkpoint (.pth, '
                  '.pth.tar, .bin, .safetensors, .pdparams, or a hub id such as '
                  'timm/hrnet_w18.ms_aug_in1k) into an hrnet-jax checkpoint folder (Orbax state '
                  '+ config.json), or back with --to-pytorch / --to-paddle.')
  parser.add_argument('src', help='checkpoint file or hub id (with --to-pytorch: a folder)')
  parser.add_argument('out', help='output folder (with --to-pytorch: the .pth file)')
  parser.add_argument('--arch', choices=list(MODEL_CONFIGS),
                      help='force the variant (default: inferred from keys and shapes; checked)')
  parser.add_argument('--format', default='auto', choices=('auto',) + FORMATS,
                      help='key layout of SRC (default: detected)')
  parser.add_argument('--tag', help='pretrained tag whose preprocessing is recorded, e.g. '
                      'hrnet_w18.ms_aug_in1k (default: from the hub id, else <arch>.ms_in1k)')
  parser.add_argument('--overwrite', action='store_true', help='replace a non-empty OUT')
  parser.add_argument('--quiet', action='store_true', help='no progress bar or summary')
  export = parser.add_mutually_exclusive_group()
  export.add_argument('--to-pytorch', action='store_true',
                      help='export the folder SRC as an official-format state_dict OUT')
  export.add_argument('--to-paddle', action='store_true',
                      help='export the folder SRC as a PaddleClas .pdparams OUT')
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  try:
    if args.to_pytorch or args.to_paddle:
      out = (to_pytorch if args.to_pytorch else to_paddle)(args.src, args.out)
      if not args.quiet:
        print(f'wrote {out}')
      return 0
    result = convert_checkpoint(args.src, args.out, arch=args.arch, fmt=args.format,
                                tag=args.tag, overwrite=args.overwrite,
                                progress=not args.quiet)
  except ConversionError as e:
    print(f'convert_official_weights: error: {e}', file=sys.stderr)
    return EXIT_BAD_INPUT
  if not args.quiet:
    print(f'{result.arch} ({result.format} format, {result.num_tensors} tensors) -> '
          f'{result.out_dir}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
