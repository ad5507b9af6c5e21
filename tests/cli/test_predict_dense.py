"""hrnet-predict --task segment / pose on scikit-image photos with random-weight dense models:
files, shapes, determinism and refusals (not semantics: the weights are random)."""

import json
import os
import pathlib
import shutil

import numpy as np
import pytest
import skimage.data
from flax import nnx
from PIL import Image

import hrnet_jax
from hrnet_jax.cli.predict import main
from hrnet_jax.pretrained import default_pretrained_cfg


def _save(tmp_path_factory, arch, input_size, **kwargs):
  model = hrnet_jax.create_model(arch, rngs=nnx.Rngs(5), **kwargs)
  cfg = default_pretrained_cfg(arch)
  cfg['input_size'] = [3, *input_size]  # small, for CI time; the CLI must honour it
  out = tmp_path_factory.mktemp('ckpt') / arch
  hrnet_jax.save_pretrained(model, out, pretrained_cfg=cfg)
  return out


@pytest.fixture(scope='module')
def images(tmp_path_factory):
  d = tmp_path_factory.mktemp('imgs')
  Image.fromarray(skimage.data.chelsea()).save(d / 'cat.jpg', quality=95)  # 451x300
  Image.fromarray(skimage.data.coffee()).save(d / 'coffee.png')  # 600x400
  (d / 'broken.jpg').write_bytes(b'\xff\xd8 not a jpeg')
  return d


def test_segment(tmp_path_factory, images, tmp_path, capsys):
  ckpt = _save(tmp_path_factory, 'hrnetv2_w18_small_seg', (64, 96), num_classes=4)
  photos = [str(images / 'cat.jpg'), str(images / 'coffee.png')]
  assert (
    main(
      [
        '--checkpoint',
        str(ckpt),
        '--task',
        'segment',
        '--output-dir',
        str(tmp_path / 'a'),
        '--json',
        *photos,
      ]
    )
    == 0
  )
  doc = json.loads(capsys.readouterr().out)
  assert doc['arch'] == 'hrnetv2_w18_small_seg' and len(doc['results']) == 2
  for stem, (h, w) in (('cat', (300, 451)), ('coffee', (400, 600))):
    mask = np.load(tmp_path / 'a' / f'{stem}_mask.npy')
    assert mask.shape == (h, w) and mask.dtype == np.int32
    assert mask.min() >= 0 and mask.max() < 4
    png = Image.open(tmp_path / 'a' / f'{stem}_mask.png')
    assert png.mode == 'P' and png.size == (w, h)
    np.testing.assert_array_equal(np.asarray(png), mask)
  # Deterministic: a second run writes the same class maps; without --task, as the checkpoint's
  # task says (issue 23: it used to classify, and failed on the map's shape).
  assert main(['--checkpoint', str(ckpt), '--output-dir', str(tmp_path / 'b'), *photos]) == 0
  for stem in ('cat', 'coffee'):
    np.testing.assert_array_equal(
      np.load(tmp_path / 'a' / f'{stem}_mask.npy'), np.load(tmp_path / 'b' / f'{stem}_mask.npy')
    )
  # Sliding-window inference (hrnet_jax.inference.segment, as hrnet-eval --mode slide).
  slide = ['--task', 'segment', '--slide', '48', '48', '32', '32', '--output-dir']
  assert main(['--checkpoint', str(ckpt), *slide, str(tmp_path / 's'), photos[0]]) == 0
  mask = np.load(tmp_path / 's' / 'cat_mask.npy')
  assert mask.shape == (300, 451) and mask.min() >= 0 and mask.max() < 4
  capsys.readouterr()
  assert main(['--checkpoint', str(ckpt), photos[0]]) == 2
  err = capsys.readouterr().err
  assert 'holds a segment model' in err and 'give --output-dir DIR' in err, err
  # A broken image is reported, the others still written (exit 1); wrong task: exit 2.
  assert (
    main(
      [
        '--checkpoint',
        str(ckpt),
        '--task',
        'segment',
        '--output-dir',
        str(tmp_path / 'c'),
        str(images / 'broken.jpg'),
        photos[0],
      ]
    )
    == 1
  )
  assert 'broken.jpg' in capsys.readouterr().err
  assert (tmp_path / 'c' / 'cat_mask.npy').exists()
  assert (
    main(
      ['--checkpoint', str(ckpt), '--task', 'pose', '--output-dir', str(tmp_path / 'd'), photos[0]]
    )
    == 2
  )
  assert 'segment model' in capsys.readouterr().err


def test_pose(tmp_path_factory, images, tmp_path, capsys):
  ckpt = _save(tmp_path_factory, 'hrnet_w32_pose', (64, 48))
  photo = str(images / 'cat.jpg')
  for run in ('a', 'b'):
    assert (
      main(
        ['--checkpoint', str(ckpt), '--task', 'pose', '--output-dir', str(tmp_path / run), photo]
      )
      == 0
    )
  capsys.readouterr()
  record = json.loads((tmp_path / 'a' / 'cat_keypoints.json').read_text())
  assert record == json.loads((tmp_path / 'b' / 'cat_keypoints.json').read_text())
  kps = np.asarray(record['keypoints'])
  assert kps.shape == (17, 3) and record['names'][0] == 'nose'
  found = kps[:, 2] > 0  # mmpose's decode marks a heatmap without a positive peak with x = y < 0
  assert (kps[found, 0] >= 0).all() and (kps[found, 0] <= 451).all()
  assert (kps[found, 1] >= 0).all() and (kps[found, 1] <= 300).all()
  assert (kps[~found, :2] < 0).all()
  overlay = Image.open(tmp_path / 'a' / 'cat_pose.png')
  assert overlay.size == (451, 300) and overlay.mode == 'RGB'
  assert not np.array_equal(np.asarray(overlay), np.asarray(Image.open(photo)))
  # A classifier checkpoint is not a pose model.
  cls = tmp_path / 'cls'
  hrnet_jax.save_pretrained(hrnet_jax.create_model('hrnet_w18_small'), cls)
  assert (
    main(['--checkpoint', str(cls), '--task', 'pose', '--output-dir', str(tmp_path / 'c'), photo])
    == 2
  )
  assert 'classification model' in capsys.readouterr().err
  assert main(['--checkpoint', str(cls), '--slide', '48', '48', '32', '32', photo]) == 2
  assert '--slide is for --task segment' in capsys.readouterr().err


def test_outputs_never_collide_or_replace_a_users_file(tmp_path_factory, images, tmp_path, capsys):
  ckpt = _save(tmp_path_factory, 'hrnetv2_w18_small_seg', (64, 96), num_classes=4)
  for sub, photo in (('a', 'cat.jpg'), ('b', 'coffee.png')):
    (tmp_path / sub).mkdir()
    shutil.copy(images / photo, tmp_path / sub / f'x{pathlib.Path(photo).suffix}')
  a, b, out = str(tmp_path / 'a' / 'x.jpg'), str(tmp_path / 'b' / 'x.png'), tmp_path / 'out'
  run = lambda *args: main(['--checkpoint', str(ckpt), '--task', 'segment', '--output-dir', *args])
  # Two inputs with one output name: refused before anything is written.
  assert run(str(out), a, b) == 2
  err = capsys.readouterr().err
  assert a in err and b in err and 'x_mask.png' in err and len(err.strip().splitlines()) == 1
  assert not out.exists()
  # A file already there is kept unless --overwrite.
  out.mkdir()
  (out / 'x_mask.png').write_bytes(b'mine')
  assert run(str(out), a) == 2
  assert 'x_mask.png: exists (use --overwrite' in capsys.readouterr().err
  assert (out / 'x_mask.png').read_bytes() == b'mine' and os.listdir(out) == ['x_mask.png']
  assert run(str(out), a, '--overwrite') == 0
  assert Image.open(out / 'x_mask.png').size == (451, 300)
