"""eval_transform vs timm's create_transform on real photos; load_image modes, EXIF, errors."""

import functools

import numpy as np
import pytest
import skimage.data
import timm
import torch
from PIL import Image
from sklearn.datasets import load_sample_images
from timm.data import create_transform, resolve_data_config, resolve_model_data_config
from timm.data.transforms_factory import transforms_imagenet_eval

from hrnet_jax.data.transforms import eval_transform, load_image, preprocess
from hrnet_jax.pretrained import get_pretrained_cfg

TOL = 1e-5


@functools.lru_cache(maxsize=None)
def photos() -> dict:
  """Real photos as PIL images: square, landscape, portrait, grayscale, odd sizes."""
  out = {
    n: Image.fromarray(getattr(skimage.data, n)())
    for n in ('astronaut', 'chelsea', 'coffee', 'camera', 'rocket')
  }
  china, flower = load_sample_images().images
  out['china'], out['flower'] = Image.fromarray(china), Image.fromarray(flower)
  out['chelsea_portrait'] = out['chelsea'].transpose(Image.Transpose.ROTATE_90)  # 451x300
  out['coffee_odd'] = out['coffee'].crop((7, 3, 7 + 517, 3 + 333))  # odd crop offsets
  return out


@functools.lru_cache(maxsize=None)
def timm_transform(tag: str, use_test_size: bool):
  # The exact timm inference recipe: model -> pretrained_cfg -> data config -> transform.
  model = timm.create_model(tag, pretrained=False)
  if use_test_size:
    cfg = resolve_data_config(model=model, use_test_size=True)
  else:
    cfg = resolve_model_data_config(model)
  return create_transform(**cfg)


def timm_hwc(transform, img: Image.Image) -> np.ndarray:
  with torch.no_grad():
    return transform(img.convert('RGB')).numpy().transpose(1, 2, 0)


CASES = [
  ('hrnet_w18_small.gluon_in1k', False),  # bicubic, crop 0.875, 224
  ('hrnet_w18.ms_in1k', False),  # bilinear, crop 0.875
  ('hrnet_w18.ms_aug_in1k', False),  # bilinear, crop 0.95 (resize 235)
  ('hrnet_w18_ssld.paddle_in1k', True),  # test size: crop 1.0 at 288
]


@pytest.mark.parametrize('tag,use_test_size', CASES)
def test_matches_timm_on_photos(tag, use_test_size):
  t = timm_transform(tag, use_test_size)
  cfg = get_pretrained_cfg(tag)
  size = cfg.test_input_size[1:] if use_test_size else cfg.input_size[1:]
  for name, img in photos().items():
    ref = timm_hwc(t, img)
    out = eval_transform(img, cfg, use_test_size=use_test_size)
    assert out.dtype == np.float32 and out.shape == (*size, 3), name
    assert np.abs(out - ref).max() <= TOL, (tag, name, np.abs(out - ref).max())
    # The comparison has teeth: a one-pixel shift of the crop is far outside the tolerance.
    assert np.abs(np.roll(out, 1, axis=1) - ref).max() > 0.1


def test_dict_cfg_and_overrides_match_timm():
  cfg = get_pretrained_cfg('hrnet_w18_small_v2.gluon_in1k').to_dict()
  for size, crop_pct in [((224, 256), 0.875), ((256, 200), 0.95), (224, 1.0), (192, 1.15)]:
    # Non-square sizes take timm's ResizeKeepRatio path; crop_pct > 1 zero-pads.
    t = transforms_imagenet_eval(
      img_size=size, crop_pct=crop_pct, interpolation=cfg['interpolation']
    )
    for name in ('chelsea', 'chelsea_portrait', 'coffee_odd', 'camera'):
      img = photos()[name]
      ref = timm_hwc(t, img)
      out = eval_transform(img, cfg, input_size=size, crop_pct=crop_pct)
      assert out.shape == ref.shape, (size, name)
      assert np.abs(out - ref).max() <= TOL, (size, crop_pct, name)


def test_input_size_forms_and_test_size_flag():
  cfg = get_pretrained_cfg('hrnet_w48_ssld.paddle_in1k')
  img = photos()['rocket']
  a = eval_transform(img, cfg, input_size=160)
  assert a.shape == (160, 160, 3)
  np.testing.assert_array_equal(a, eval_transform(img, cfg, input_size=(3, 160, 160)))
  assert eval_transform(img, cfg).shape == (224, 224, 3)
  assert eval_transform(img, cfg, use_test_size=True).shape == (288, 288, 3)
  # Without test sizes in the cfg the flag falls back to input_size.
  assert eval_transform(img, get_pretrained_cfg('hrnet_w18'), use_test_size=True).shape == (
    224,
    224,
    3,
  )


def test_uint8_array_input_equals_pil():
  arr = skimage.data.astronaut()
  cfg = get_pretrained_cfg('hrnet_w18')
  np.testing.assert_array_equal(eval_transform(arr, cfg), eval_transform(Image.fromarray(arr), cfg))
  with pytest.raises(ValueError, match='uint8'):
    eval_transform(arr.astype(np.float32), cfg)


def test_bad_cfg_values_raise():
  img = photos()['chelsea']
  with pytest.raises(ValueError, match='interpolation'):
    eval_transform(img, {'interpolation': 'cubic-ish'})
  with pytest.raises(ValueError, match='crop_mode'):
    eval_transform(img, {'crop_mode': 'squash'})
  with pytest.raises(ValueError, match='input_size'):
    eval_transform(img, get_pretrained_cfg('hrnet_w18'), input_size=(1, 2, 3, 4))


# ---- load_image ----------------------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path):
  arr = np.zeros((20, 40, 3), np.uint8)
  arr[:, :20] = (255, 0, 0)  # stored left half red
  arr[:, 20:] = (0, 0, 255)  # stored right half blue
  exif = Image.Exif()
  exif[0x0112] = 6  # Orientation: display = stored rotated 90 degrees clockwise
  path = tmp_path / 'rotated.jpg'
  Image.fromarray(arr).save(path, exif=exif.tobytes(), quality=95)
  assert Image.open(path).size == (40, 20)  # the raw file is landscape

  img = load_image(path)
  assert img.mode == 'RGB' and img.size == (20, 40)  # upright: portrait
  got = np.asarray(img).astype(int)
  # Clockwise rotation moves the stored left (red) to the top, right (blue) to the bottom.
  assert got[5, 10, 0] > 200 and got[5, 10, 2] < 60
  assert got[35, 10, 2] > 200 and got[35, 10, 0] < 60


def test_modes_convert_to_rgb(tmp_path):
  rgba = np.zeros((8, 10, 4), np.uint8)
  rgba[..., 1] = 200
  rgba[..., 3] = 17  # translucent: alpha is dropped like timm's img.convert('RGB')
  Image.fromarray(rgba, 'RGBA').save(tmp_path / 'a.png')
  img = load_image(tmp_path / 'a.png')
  assert img.mode == 'RGB' and img.size == (10, 8)
  assert np.asarray(img)[0, 0].tolist() == [0, 200, 0]

  gray = skimage.data.camera()
  Image.fromarray(gray).save(tmp_path / 'g.png')
  g = np.asarray(load_image(tmp_path / 'g.png'))
  assert g.shape == gray.shape + (3,)
  np.testing.assert_array_equal(g[..., 0], gray)
  np.testing.assert_array_equal(g[..., 2], gray)

  Image.fromarray(skimage.data.chelsea()).convert('P').save(tmp_path / 'p.png')
  assert load_image(tmp_path / 'p.png').mode == 'RGB'

  Image.fromarray(skimage.data.chelsea()).convert('CMYK').save(tmp_path / 'c.jpg')
  c = load_image(tmp_path / 'c.jpg')
  assert c.mode == 'RGB' and c.size == (451, 300)

  deep = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000  # 16-bit grayscale
  Image.fromarray(deep).save(tmp_path / 'd16.png')
  d = np.asarray(load_image(tmp_path / 'd16.png'))
  np.testing.assert_array_equal(d[..., 0], (deep >> 8).astype(np.uint8))  # scaled, not clipped


def test_unreadable_files_raise_value_error_naming_file(tmp_path):
  txt = tmp_path / 'notes.jpg'
  txt.write_text('this is not an image')
  with pytest.raises(ValueError, match='notes.jpg'):
    load_image(txt)
  with pytest.raises(ValueError, match='missing.png'):
    load_image(tmp_path / 'missing.png')
  good = tmp_path / 'good.jpg'
  Image.fromarray(skimage.data.coffee()).save(good)
  truncated = tmp_path / 'truncated.jpg'
  truncated.write_bytes(good.read_bytes()[:2000])
  with pytest.raises(ValueError, match='truncated.jpg'):
    load_image(truncated)
  with pytest.raises(ValueError, match=str(tmp_path.name)):
    load_image(tmp_path)  # a directory


def test_preprocess_batches_paths_and_images(tmp_path):
  cfg = get_pretrained_cfg('hrnet_w18.ms_aug_in1k')
  Image.fromarray(skimage.data.rocket()).save(tmp_path / 'r.png')
  img = photos()['flower']
  batch = preprocess([tmp_path / 'r.png', img], cfg)
  assert batch.shape == (2, 224, 224, 3) and batch.dtype == np.float32
  np.testing.assert_array_equal(batch[1], eval_transform(img, cfg))
  ref = timm_hwc(timm_transform('hrnet_w18.ms_aug_in1k', False), photos()['rocket'])
  assert np.abs(batch[0] - ref).max() <= TOL  # PNG is lossless: same pixels as the array
  with pytest.raises(ValueError):
    preprocess([], cfg)
