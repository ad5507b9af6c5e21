"""Writes an HRNet checkpoint in the official on-disk format from a timm model.

timm's HRNet keeps the official state_dict keys, so ``torch.save(model.state_dict())`` is what
HRNet-Image-Classification ships (``hrnetv2_w18_imagenet_pretrained.pth``). Offline there are no
real weights to fetch, so the weights are timm's random init: predictions from it are arbitrary,
but the whole path (file -> converter -> Flax -> prediction) is the real one.

    python scripts/timm_checkpoint.py hrnet_w18_small out/hrnet_w18_small.pth
"""

import argparse
import pathlib

import timm
import torch


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('arch', help='timm HRNet name, e.g. hrnet_w18_small')
  parser.add_argument('out', type=pathlib.Path, help='output .pth file')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  torch.manual_seed(args.seed)
  model = timm.create_model(args.arch, pretrained=False).eval()
  args.out.parent.mkdir(parents=True, exist_ok=True)
  torch.save(model.state_dict(), args.out)
  print(f'wrote {args.out} ({args.arch}, random timm init, official key layout)')


if __name__ == '__main__':
  main()
