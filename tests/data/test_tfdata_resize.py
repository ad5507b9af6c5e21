"""The classification input's eval resize + center crop (``tfdata.eval_preprocess``), which
computes only the crop's pixels, equals resizing the whole image with ``tf.image.resize
(antialias=True)`` and cropping it afterwards (within one uint8 step from float rounding), on
real photos of several sizes and orientations, for every interpolation the config accepts."""

import io

import ml_collections
import numpy as np
import pytest
import skimage.data
from PIL import Image

from hrnet_jax.train.data import tfdata

SIZES = [(500, 375), (375, 500), (231, 300), (640, 427)]  # (W, H) of the JPEGs


@pytest.mark.parametrize('method', tfdata.TFInput.INTERPOLATIONS)
def test_eval_crop_equals_resize_then_crop(method):
  tf = tfdata._tf()  # imported in the test: TF before torchvision crashes collection
  worst, exact = 0, 0
  for name in ('astronaut', 'coffee', 'chelsea'):
    for w, h in SIZES:
      buf = io.BytesIO()
      Image.fromarray(getattr(skimage.data, name)()).resize((w, h)).save(buf, 'JPEG', quality=90)
      data = buf.getvalue()
      for size, crop_pct in ((224, 0.875), (256, 0.95)):
        cfg = ml_collections.ConfigDict(
          dict(image_size=size, crop_pct=crop_pct, interpolation=method)
        )
        out = tfdata.eval_preprocess(tf.constant(data), 0, cfg)[0].numpy()
        short = int(np.floor(size / crop_pct))
        scale = short / min(h, w)
        nh, nw = (short, int(w * scale)) if h <= w else (int(h * scale), short)
        image = tf.io.decode_image(data, channels=3)
        ref = tf.image.resize(image, [nh, nw], method=method, antialias=True).numpy()
        ref = np.clip(np.round(ref), 0, 255).astype(np.uint8)
        top, left = int(round((nh - size) / 2)), int(round((nw - size) / 2))
        ref = ref[top : top + size, left : left + size]
        assert out.shape == ref.shape == (size, size, 3)
        diff = np.abs(out.astype(int) - ref.astype(int))
        worst, exact = max(worst, int(diff.max())), exact + int((diff == 0).mean() > 0.999)
  assert worst <= 1
  assert exact == 3 * len(SIZES) * 2  # off by one only where float rounding meets .5
