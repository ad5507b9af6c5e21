#!/usr/bin/env bash
# The main job on embedded defaults (no network): official-format checkpoint -> converter ->
# Flax prediction on real photos shipped with scikit-image / scikit-learn; then training on
# scikit-learn's handwritten digits and an exact evaluation of the result. Needs the quickstart
# extra (README, command 1): pip install -e ".[quickstart]".
set -euo pipefail
out=${1:-quickstart_out}
arch=hrnet_w18_small

photos=$(python - <<'PY'
import os, skimage, sklearn
sk = os.path.join(os.path.dirname(skimage.__file__), 'data')
sl = os.path.join(os.path.dirname(sklearn.__file__), 'datasets', 'images')
print(' '.join([os.path.join(sk, f) for f in ('astronaut.png', 'chelsea.png', 'coffee.png')]
               + [os.path.join(sl, f) for f in ('china.jpg', 'flower.jpg')]))
PY
)

echo "== 1. an official-format HRNet checkpoint (timm random init; offline)"
python scripts/timm_checkpoint.py "$arch" "$out/$arch.pth"

echo "== 2. convert_official_weights"
convert_official_weights "$out/$arch.pth" "$out/$arch" --overwrite

echo "== 3. hrnet-predict on real photos (random weights: the classes are arbitrary)"
# shellcheck disable=SC2086
hrnet-predict --checkpoint "$out/$arch" $photos --top-k 3

echo "== 4. hrnet-train on scikit-learn's handwritten digits (embedded, offline), then hrnet-eval"
rm -rf "$out/digits"
hrnet-train --config digits --workdir "$out/digits"
hrnet-eval --checkpoint "$out/digits" --dataset digits
