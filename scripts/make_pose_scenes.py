"""Writes the pose scenes keypoint set (stick figures with COCO's 17 keypoints on scikit-image
photos, joints true by construction; ``hrnet_jax.train.data.pose_scenes``) in the COCO layout.

    python scripts/make_pose_scenes.py ROOT [--num-train 200 --num-val 50 --size 128 128 --seed 0]
    hrnet-train --config pose_scenes --config.dataset.folder=ROOT --workdir RUN

Exit 2 with one ``make_pose_scenes: error:`` line for bad arguments or a ROOT that holds other
files.
"""

import argparse
import sys

from hrnet_jax.cli.policy import positive_int, run_cli
from hrnet_jax.train.data.pose_scenes import write_pose_scenes

PROG = 'make_pose_scenes'


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
  parser.add_argument('root', help='output folder (new, empty or an earlier pose scenes set)')
  parser.add_argument('--num-train', type=positive_int, default=200, help='train images')
  parser.add_argument('--num-val', type=positive_int, default=50, help='validation images')
  parser.add_argument(
    '--size', type=positive_int, nargs=2, default=(128, 128), metavar=('H', 'W'), help='px'
  )
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)

  def body() -> None:
    manifest = write_pose_scenes(
      args.root, num_train=args.num_train, num_val=args.num_val, size=args.size, seed=args.seed
    )
    counts = ', '.join(
      f'{v["images"]} {k} images ({v["persons"]} persons)' for k, v in manifest['splits'].items()
    )
    print(f'wrote {args.root}: {counts} of {args.size[0]}x{args.size[1]}')

  return run_cli(PROG, body)


if __name__ == '__main__':
  sys.exit(main())
