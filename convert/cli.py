"""``convert_official_weights``: PyTorch HRNet checkpoint -> hrnet-jax checkpoint folder.

    convert_official_weights SRC|TAG OUT_DIR [--arch NAME] [--format auto|official|timm|mmpretrain|
                             paddle|mmseg|mmpose|mmdet|hrnet_seg|hrnet_pose] [--tag TAG] [--overwrite]
                             [--backbone-only [--num-outputs N]] [--allow-non-finite] [--quiet]
                             [--verbose]
    convert_official_weights --to-pytorch CKPT_DIR OUT.pth
    convert_official_weights --to-paddle CKPT_DIR OUT.pdparams

Exit codes (``hrnet_jax.errors``): 0 done; 1 environment failure (disk full, permission denied);
2 bad input (usage, missing or unreadable file, not an HRNet checkpoint, key mismatch, NaN/inf
weights, an OUT_DIR that may not be written); 130 Ctrl-C, 143 SIGTERM. On any failure nothing is
written and nothing existing is touched.
"""

from __future__ import annotations

import argparse
import sys

from hrnet_jax.cli import policy
from hrnet_jax.convert.api import convert_checkpoint, to_paddle, to_pytorch
from hrnet_jax.convert.layouts import FORMATS
from hrnet_jax.models.configs import MODEL_CONFIGS
from hrnet_jax.models.dense import DENSE_CONFIGS
from hrnet_jax.pretrained import list_pretrained

PROG = 'convert_official_weights'


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog=PROG,
    description='Convert an official / timm / mmpretrain / PaddleClas / mmseg / mmpose / mmdet '
    'HRNet checkpoint (.pth, .pth.tar, .bin, .safetensors, .pdparams, or a hub id '
    'such as timm/hrnet_w18.ms_aug_in1k) into an hrnet-jax checkpoint folder (Orbax '
    'state + config.json), or back with --to-pytorch / --to-paddle.',
  )
  parser.add_argument(
    'src',
    help='checkpoint file, hub id, or a model name as create_model takes it (a tag such as '
    'hrnet_w18.ms_aug_in1k, hf-hub:ORG/REPO, local-dir:PATH; with --to-pytorch: a folder)',
  )
  parser.add_argument('out', help='output folder (with --to-pytorch: the .pth file)')
  parser.add_argument(
    '--arch',
    choices=list(MODEL_CONFIGS) + list(DENSE_CONFIGS),
    help='force the variant (default: inferred from keys and shapes; checked)',
  )
  parser.add_argument(
    '--format',
    default='auto',
    choices=('auto',) + FORMATS,
    help='key layout of SRC (default: detected)',
  )
  parser.add_argument(
    '--tag',
    help='pretrained tag whose preprocessing is recorded, e.g. hrnet_w18.ms_in1k (default: '
    "the hub id's, PaddleClas's for a .pdparams, else the arch's default tag, as "
    "create_model('ARCH', pretrained=True) uses: hrnet_w18 -> hrnet_w18.ms_aug_in1k); "
    'the tag recorded is printed',
  )
  parser.add_argument(
    '--overwrite',
    action='store_true',
    help='replace OUT if it is an existing hrnet-jax checkpoint folder '
    '(config.json + state/ and nothing else); any other folder is refused',
  )
  parser.add_argument(
    '--allow-non-finite',
    action='store_true',
    help='keep NaN/inf weights instead of refusing them (recorded in config.json)',
  )
  parser.add_argument('--quiet', action='store_true', help='no progress bar or summary')
  parser.add_argument(
    '--verbose', action='store_true', help='full key lists and tracebacks on errors'
  )
  parser.add_argument(
    '--backbone-only',
    action='store_true',
    help='start the dense model --arch from the backbone of SRC (any layout); '
    'its neck/head keep their initialisation, the dropped keys are listed',
  )
  parser.add_argument(
    '--num-outputs',
    type=int,
    metavar='N',
    help='with --backbone-only: classes (segmentation) or keypoints (pose)',
  )
  export = parser.add_mutually_exclusive_group()
  export.add_argument(
    '--to-pytorch',
    action='store_true',
    help='export the folder SRC as an official-format state_dict OUT',
  )
  export.add_argument(
    '--to-paddle', action='store_true', help='export the folder SRC as a PaddleClas .pdparams OUT'
  )
  return parser


def recorded_line(cfg: dict | None, tag: str | None) -> str:
  """The line naming the preprocessing a conversion recorded, and how to choose another."""
  if not cfg:
    return 'recorded preprocessing: none (no published tag for this arch; --tag sets one)'
  size = 'x'.join(str(v) for v in cfg['input_size'][1:])
  line = (
    f'recorded preprocessing: {cfg["tag"]} (input {size}, crop_pct {cfg["crop_pct"]:g}, '
    f'{cfg["interpolation"]})'
  )
  try:
    tags = list_pretrained(cfg['arch']) if tag is None else []
  except ValueError:  # a dense arch: no timm tags to choose from
    tags = []
  others = [t for t in tags if t != cfg['tag']]
  return line + (f'; --tag chooses another ({", ".join(others)})' if others else '')


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)

  def run() -> int:
    if args.to_pytorch or args.to_paddle:
      out = (to_pytorch if args.to_pytorch else to_paddle)(args.src, args.out)
      if not args.quiet:
        print(f'wrote {out}')
      return 0
    result = convert_checkpoint(
      args.src,
      args.out,
      arch=args.arch,
      fmt=args.format,
      tag=args.tag,
      overwrite=args.overwrite,
      allow_non_finite=args.allow_non_finite,
      progress=not args.quiet,
      backbone_only=args.backbone_only,
      num_outputs=args.num_outputs,
    )
    if not args.quiet:
      print(
        f'{result.arch} ({result.format} format, {result.num_tensors} tensors) -> {result.out_dir}'
      )
      print(recorded_line(result.config.get('pretrained_cfg'), args.tag))
      for title in ('dropped', 'initialized'):  # dense conversions: every key not carried over
        names = result.config['source'].get(title, [])
        if names:
          print(f'{title} ({len(names)}):\n  ' + '\n  '.join(names))
    return 0

  return policy.run_cli(PROG, run, verbose=args.verbose)


if __name__ == '__main__':
  sys.exit(main())
