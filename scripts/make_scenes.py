"""Writes an embedded dataset built from images that ship in packages, labels true by
construction:

- ``digits``: the digit scenes segmentation set (scikit-learn digits on scikit-image photos;
  ``hrnet_jax.train.data.digit_scenes``) in the ``seg_folder`` layout;
- ``pose``: the pose scenes keypoint set (stick figures with COCO's 17 keypoints on
  scikit-image photos; ``hrnet_jax.train.data.pose_scenes``) in the COCO layout.

    python scripts/make_scenes.py digits ROOT [--num-train 200 --num-val 50 --size 128 128 --seed 0]
    python scripts/make_scenes.py pose ROOT [...]

The embedded runs: ``digits ROOT --size 32 32 --num-train 4000 --num-val 200`` for the
``seg_digit_scenes`` recipe, ``pose ROOT --num-train 200 --num-val 50`` for ``pose_scenes``.

Exit 2 with one ``make_scenes: error:`` line for bad arguments or a ROOT that holds other files.
"""

import argparse
import sys

from hrnet_jax.cli.policy import positive_int, run_cli
from hrnet_jax.train.data.digit_scenes import write_digit_scenes
from hrnet_jax.train.data.pose_scenes import write_pose_scenes

PROG = 'make_scenes'
WRITERS = {'digits': write_digit_scenes, 'pose': write_pose_scenes}


def _images(split) -> int:
  """A split's image count in either manifest (digits: per-image entries; pose: counts)."""
  return split['images'] if isinstance(split, dict) and 'images' in split else len(split)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
  parser.add_argument('kind', choices=WRITERS, help='which set')
  parser.add_argument('root', help='output folder (new, empty or an earlier set of that kind)')
  parser.add_argument('--num-train', type=positive_int, default=200, help='train images')
  parser.add_argument('--num-val', type=positive_int, default=50, help='validation images')
  parser.add_argument(
    '--size', type=positive_int, nargs=2, default=(128, 128), metavar=('H', 'W'), help='px'
  )
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)

  def body() -> None:
    manifest = WRITERS[args.kind](
      args.root, num_train=args.num_train, num_val=args.num_val, size=args.size, seed=args.seed
    )
    counts = ', '.join(f'{_images(v)} {k}' for k, v in manifest['splits'].items())
    print(f'wrote {args.root}: {counts} images of {args.size[0]}x{args.size[1]}')

  return run_cli(PROG, body)


if __name__ == '__main__':
  sys.exit(main())
