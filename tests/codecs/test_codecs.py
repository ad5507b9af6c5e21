"""The heatmap codecs against mmpose's own (``MSRAHeatmap``, ``MSRAHeatmap(unbiased=True)`` i.e.
DARK, ``UDPHeatmap``), on the same random keypoints and heatmaps.

Keypoints are drawn over and beyond the crop (some just inside or outside its border, some far
enough out that the Gaussian misses the heatmap, some unlabelled), in float32 and float64.
Decoding runs on realistic heatmaps: the encoded targets plus Gaussian noise, with one channel
all zero and one all negative (no positive maximum). Targets, weights, decoded keypoints and
scores agree to 1e-6 abs (in fact bit for bit) at mmpose's recipe sizes and at a heatmap width
where OpenCV's blur ends in its scalar code inside the heatmap (DARK and UDP decoding run
OpenCV's ``GaussianBlur`` in mmpose).
"""

import mm_shim
import numpy as np
import pytest

from hrnet_jax.codecs import heatmap
from hrnet_jax.codecs.msra import MSRAHeatmap
from hrnet_jax.codecs.registry import get_codec
from hrnet_jax.codecs.udp import UDPHeatmap

mm_shim.install()
pytestmark = pytest.mark.filterwarnings('ignore:Passing more than 2 positional:DeprecationWarning')

TOL = 1e-6
# input (w, h), heatmap (W, H), sigma, blur kernel: mmpose's 256x192 and 384x288 recipes, and a
# heatmap 52 wide, whose padded width (62) leaves OpenCV's last 6 columns to its scalar code.
SIZES = {
  '256x192': ((192, 256), (48, 64), 2, 11),
  '384x288': ((288, 384), (72, 96), 3, 17),
  '160x208': ((208, 160), (52, 40), 2, 11),
}
CODECS = ('msra', 'dark', 'udp')


def _codecs(codec: str, size: str):
  from mmpose.codecs import MSRAHeatmap as MmMSRA
  from mmpose.codecs import UDPHeatmap as MmUDP

  input_size, heatmap_size, sigma, kernel = SIZES[size]
  if codec == 'udp':
    args = dict(sigma=sigma, blur_kernel_size=kernel)
    return UDPHeatmap(input_size, heatmap_size, **args), MmUDP(input_size, heatmap_size, **args)
  args = dict(sigma=sigma, unbiased=codec == 'dark', blur_kernel_size=kernel)
  return MSRAHeatmap(input_size, heatmap_size, **args), MmMSRA(input_size, heatmap_size, **args)


def _instance(rng, input_size, k=17, dtype=np.float64):
  """One instance's keypoints [1, K, 2] and visibility [1, K]: random over 1.6x the crop, and
  fixed ones at and beyond its border."""
  w, h = input_size
  keypoints = rng.uniform(-0.3, 1.3, (1, k, 2)) * (w, h)
  keypoints[0, :6] = [
    (-0.6, 0.5 * h),  # rounds to the first column
    (w - 0.4, h - 0.6),  # rounds to just outside the last pixel
    (0.3 * w, -5.0),  # Gaussian partly above the heatmap
    (-60.0, 0.5 * h),  # Gaussian wholly outside: weight 0
    (0.5 * w, h + 60.0),
    (0.5 * w, 0.5 * h),  # unlabelled below
  ]
  visible = (rng.random((1, k)) > 0.15).astype(np.float32)
  visible[0, 5] = 0
  return keypoints.astype(dtype), visible


def _noisy(rng, heatmaps):
  out = (heatmaps + rng.normal(0, 0.05, heatmaps.shape)).astype(np.float32)
  # No positive maximum, location (-1, -1): for keypoint 0 UDP's neighbours wrap to the last one.
  out[0] = -np.abs(out[0]) - 0.01
  out[1] = 0
  return out


def _mm_decode(mm, heatmaps):
  with np.errstate(divide='ignore', invalid='ignore'):  # mmpose's blur of the all-zero channel
    return mm.decode(heatmaps)


def _close(ours, ref, what):
  assert np.shape(ours) == np.shape(ref), f'{what}: shape {np.shape(ours)} vs {np.shape(ref)}'
  np.testing.assert_allclose(ours, ref, rtol=0, atol=TOL, err_msg=what)  # NaN == NaN
  return float(np.nanmax(np.abs(np.asarray(ours, np.float64) - ref), initial=0))


@pytest.mark.parametrize('size', SIZES)
@pytest.mark.parametrize('codec', CODECS)
def test_encode_decode_equal_mmpose(codec, size, parity_log):
  ours, mm = _codecs(codec, size)
  rng = np.random.default_rng(0)
  diffs, zeroed = {}, 0
  for trial in range(6):
    dtype = np.float32 if trial % 2 else np.float64
    keypoints, visible = _instance(rng, ours.input_size, dtype=dtype)
    ref = mm.encode(keypoints, visible)
    targets, weights = ours.encode(keypoints, visible)
    assert targets.dtype == ref['heatmaps'].dtype == np.float32
    diffs['heatmaps'] = max(diffs.get('heatmaps', 0), _close(targets, ref['heatmaps'], 'heatmaps'))
    np.testing.assert_array_equal(weights, ref['keypoint_weights'])
    zeroed += int(((visible == 1) & (weights == 0)).sum())

    noisy = _noisy(rng, ref['heatmaps'])
    ref_keypoints, ref_scores = _mm_decode(mm, noisy)
    keypoints_out, scores = ours.decode(noisy)
    assert keypoints_out.dtype == ref_keypoints.dtype
    diffs['keypoints'] = max(
      diffs.get('keypoints', 0), _close(keypoints_out, ref_keypoints, 'decoded keypoints')
    )
    _close(scores, ref_scores, 'scores')
  assert zeroed >= 6, 'the sample should hold labelled keypoints whose Gaussian misses the map'
  for output, diff in diffs.items():
    parity_log(f'codec {codec} {size}', output, diff, 1.0)


@pytest.mark.parametrize('codec', CODECS)
def test_decode_batch_of_nhwc_heatmaps(codec):
  """``decode_batch`` of the model's [B, H, W, K] output equals mmpose's decode per instance."""
  ours, mm = _codecs(codec, '256x192')
  rng = np.random.default_rng(1)
  batch = []
  for _ in range(3):
    keypoints, visible = _instance(rng, ours.input_size)
    batch.append(_noisy(rng, mm.encode(keypoints, visible)['heatmaps']))
  keypoints_out, scores = ours.decode_batch(np.stack(batch).transpose(0, 2, 3, 1))
  assert keypoints_out.shape == (3, 17, 2) and scores.shape == (3, 17)
  for i, heatmaps in enumerate(batch):
    ref_keypoints, ref_scores = _mm_decode(mm, heatmaps)
    _close(keypoints_out[i], ref_keypoints[0], f'instance {i} keypoints')
    _close(scores[i], ref_scores[0], f'instance {i} scores')


def test_blur_equals_opencv_for_every_width():
  """The blur DARK and UDP decode with equals OpenCV's (what mmpose calls) bit for bit, for the
  kernels mmpose's configs use and widths on both sides of OpenCV's vector blocks."""
  import cv2

  rng = np.random.default_rng(2)
  for kernel in (7, 9, 11, 17):
    border = (kernel - 1) // 2
    for w in range(20, 60):
      maps = rng.random((2, 24, w), dtype=np.float32)
      ours = heatmap.gaussian_blur(maps, kernel)
      for m, out in zip(maps, ours):
        padded = np.pad(m, border)
        ref = cv2.GaussianBlur(padded, (kernel, kernel), 0)[border:-border, border:-border]
        ref = ref * (m.max() / ref.max())
        np.testing.assert_array_equal(out, ref, err_msg=f'kernel {kernel}, width {w}')


def test_bad_shapes_and_names_are_refused():
  codec = get_codec('msra', input_size=(192, 256), heatmap_size=(48, 64), sigma=2)
  assert isinstance(codec, MSRAHeatmap)
  assert isinstance(get_codec('udp', input_size=(192, 256), heatmap_size=(48, 64)), UDPHeatmap)
  with pytest.raises(ValueError, match='heatmaps: shape .* is not \\[K, H, W\\] with H, W = 64'):
    codec.decode(np.zeros((17, 48, 64), np.float32))
  with pytest.raises(ValueError, match='is not \\[B, H, W, K\\]'):
    codec.decode_batch(np.zeros((17, 64, 48), np.float32))
  with pytest.raises(ValueError, match="codec: 'simcc' is not one of msra, udp"):
    get_codec('simcc')
  with pytest.raises(ValueError, match='blur_kernel_size: 10 is not a positive odd number'):
    MSRAHeatmap((192, 256), (48, 64), 2, unbiased=True, blur_kernel_size=10)
