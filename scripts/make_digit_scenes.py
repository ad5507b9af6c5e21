"""Writes the digit scenes segmentation set (scikit-learn digits on scikit-image photos, labels
true by construction; ``hrnet_jax.train.data.digit_scenes``) in the ``seg_folder`` layout.

    python scripts/make_digit_scenes.py ROOT [--num-train 200 --num-val 50 --size 128 128 --seed 0]
    hrnet-train --config segment --config.dataset.folder=ROOT --workdir RUN

The embedded run (``seg_digit_scenes`` recipe) uses ``--size 32 32 --num-train 4000 --num-val 200``.

Exit 2 with one ``make_digit_scenes: error:`` line for bad arguments or a ROOT that holds other
files.
"""

import argparse
import sys

from hrnet_jax.cli.policy import positive_int, run_cli
from hrnet_jax.train.data.digit_scenes import write_digit_scenes

PROG = 'make_digit_scenes'


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
  parser.add_argument('root', help='output folder (new, empty or an earlier digit scenes set)')
  parser.add_argument('--num-train', type=positive_int, default=200, help='train images')
  parser.add_argument('--num-val', type=positive_int, default=50, help='validation images')
  parser.add_argument(
    '--size', type=positive_int, nargs=2, default=(128, 128), metavar=('H', 'W'), help='px'
  )
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)

  def body() -> None:
    manifest = write_digit_scenes(
      args.root, num_train=args.num_train, num_val=args.num_val, size=args.size, seed=args.seed
    )
    counts = ', '.join(f'{len(v)} {k}' for k, v in manifest['splits'].items())
    print(f'wrote {args.root}: {counts} images of {args.size[0]}x{args.size[1]}')

  return run_cli(PROG, body)


if __name__ == '__main__':
  sys.exit(main())
