"""The digit scenes generator: deterministic, labels true by construction (checked against the
pixels and the manifest), atomic and careful writes, and its script's error policy."""

import json
import pathlib
import runpy

import numpy as np
import pytest
from PIL import Image

from hrnet_jax.errors import BadInputError
from hrnet_jax.train.data import digit_scenes

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / 'scripts' / 'make_scenes.py'
SIZE = (64, 80)


def files(root: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
  root = tmp_path_factory.mktemp('scenes') / 'digits'
  manifest = digit_scenes.write_digit_scenes(root, num_train=12, num_val=4, size=SIZE, seed=3)
  return root, manifest


def test_deterministic_from_seed(scenes, tmp_path):
  root, manifest = scenes
  again = digit_scenes.write_digit_scenes(
    tmp_path / 'a', num_train=12, num_val=4, size=SIZE, seed=3
  )
  assert again == manifest
  assert files(tmp_path / 'a') == files(root)
  other = digit_scenes.write_digit_scenes(
    tmp_path / 'b', num_train=12, num_val=4, size=SIZE, seed=4
  )
  assert other['splits'] != manifest['splits']


def test_layout_and_classes(scenes):
  root, manifest = scenes
  assert json.loads((root / 'classes.json').read_text()) == ['background'] + [
    str(d) for d in range(10)
  ]
  assert json.loads((root / digit_scenes.MANIFEST).read_text()) == manifest
  for split, count in (('train', 12), ('val', 4)):
    names = sorted(p.stem for p in (root / 'images' / split).glob('*.jpg'))
    assert names == sorted(manifest['splits'][split]) and len(names) == count
    assert names == sorted(p.stem for p in (root / 'annotations' / split).glob('*.png'))
  assert not [p for p in root.parent.iterdir() if p.name.startswith('.')]  # no temp leftovers


def test_labels_true_by_construction(scenes):
  """Every labelled pixel lies in the box of a digit of its class; each digit's ink (the box's
  pixels nearest its colour) is labelled with its class, and its region is nearer its colour
  than the background around it; outside the digits all is background."""
  root, manifest = scenes
  digits_seen = set()
  lo, hi = digit_scenes.DIGIT_SIZE
  for split, images in manifest['splits'].items():
    for name, painted in images.items():
      label = np.asarray(Image.open(root / 'annotations' / split / f'{name}.png'))
      image = np.asarray(Image.open(root / 'images' / split / f'{name}.jpg')).astype(float)
      assert Image.open(root / 'annotations' / split / f'{name}.png').mode == 'P'
      assert label.shape == SIZE and image.shape == (*SIZE, 3)
      inside = np.zeros(SIZE, bool)
      assert digit_scenes.DIGITS_PER_IMAGE[0] <= len(painted) <= digit_scenes.DIGITS_PER_IMAGE[1]
      for d in painted:
        assert lo <= d['size'] <= min(hi, *SIZE) and d['class_id'] == d['digit'] + 1
        assert d['colour'] in ([0, 0, 0], [255, 255, 255])  # black or white ink
        box = (slice(d['top'], d['top'] + d['size']), slice(d['left'], d['left'] + d['size']))
        assert not inside[box].any()  # digits do not overlap
        inside[box] = True
        window = label[box]
        assert set(np.unique(window)) <= {0, d['class_id'], 255}
        region = window == d['class_id']
        assert region.sum() >= 0.1 * d['size'] ** 2
        colour = np.asarray(d['colour'])
        distance = np.linalg.norm(image[box] - colour, axis=-1)
        ink = distance <= np.quantile(distance, 0.05)  # surely stroke: nearest the colour
        assert region[ink].mean() >= 0.9, (name, d)
        if (window == 0).any():
          assert distance[region].mean() < distance[window == 0].mean(), (name, d)
        digits_seen.add(d['digit'])
      assert (label[~inside] == 0).all()
  assert len(digits_seen) >= 8


def test_refuses_a_foreign_folder_and_replaces_its_own(tmp_path):
  foreign = tmp_path / 'photos'
  foreign.mkdir()
  (foreign / 'holiday.jpg').write_bytes(b'x')
  with pytest.raises(BadInputError, match='photos: exists and is not a digit scenes dataset'):
    digit_scenes.write_digit_scenes(foreign, num_train=1, num_val=1, size=(32, 32))
  assert files(foreign) == {'holiday.jpg': b'x'}

  root = tmp_path / 'set'
  digit_scenes.write_digit_scenes(root, num_train=2, num_val=1, size=(32, 32), seed=0)
  leftover = tmp_path / '.set.tmp-999999-x'  # of a killed writer (no such pid)
  (leftover / 'images' / 'train').mkdir(parents=True)
  digit_scenes.write_digit_scenes(root, num_train=1, num_val=1, size=(32, 32), seed=1)
  assert sorted(p.name for p in (root / 'images' / 'train').iterdir()) == ['train_00000.jpg']
  assert sorted(p.name for p in tmp_path.iterdir()) == ['photos', 'set']


@pytest.mark.parametrize(
  'argv, message',
  [
    (['--size', '8', '32'], 'size=(8, 32): height and width must be >= 16 px'),
    (['--num-train', '0'], 'argument --num-train: must be >= 1, got 0'),
  ],
  ids=['small-size', 'zero-count'],
)
def test_script_bad_input_is_one_line_exit_2(tmp_path, capsys, monkeypatch, argv, message):
  monkeypatch.setattr('sys.argv', [str(SCRIPT), 'digits', str(tmp_path / 'out'), *argv])
  with pytest.raises(SystemExit) as e:
    runpy.run_path(str(SCRIPT), run_name='__main__')
  err = capsys.readouterr().err
  assert e.value.code == 2
  lines = [line for line in err.splitlines() if line.startswith('make_scenes: error:')]
  assert len(lines) == 1 and message in lines[0], err
  assert not (tmp_path / 'out').exists()


def test_script_writes_the_set(tmp_path, capsys, monkeypatch):
  argv = [str(SCRIPT), 'digits', str(tmp_path / 'out'), '--num-train', '2', '--num-val', '1']
  monkeypatch.setattr('sys.argv', argv + ['--size', '32', '40', '--seed', '5'])
  with pytest.raises(SystemExit) as e:
    runpy.run_path(str(SCRIPT), run_name='__main__')
  assert e.value.code == 0
  assert 'wrote' in capsys.readouterr().out
  manifest = json.loads((tmp_path / 'out' / digit_scenes.MANIFEST).read_text())
  assert manifest['size'] == [32, 40] and manifest['seed'] == 5
  assert Image.open(tmp_path / 'out' / 'images' / 'train' / 'train_00001.jpg').size == (40, 32)
