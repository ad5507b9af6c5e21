"""tf.data input (image folders and TFDS): augmentation output, deterministic order, exact
resume, per-process shards, exact padded evaluation.

Every image is one solid color, so an example can be recognized after cropping, resizing and
flipping (which keep a solid image solid): the color identifies the file.

The checks run in a child process (this file run as a script): TensorFlow must not be loaded
into the pytest process, where a later import of triton (torch, timm) would abort on clashing
LLVM options ("Option 'bitcode-mdindex-threshold' registered more than once").
"""

import os
import sys

import child_checks
import numpy as np
import pytest
from PIL import Image

CHECKS = {}


def check(fn):
  """Registers a check ``fn(folder, tmp_dir)`` run in the child process."""
  CHECKS[fn.__name__] = fn
  return fn


CLASSES = ('cat', 'dog', 'eel')
N_TRAIN, N_EVAL = 10, 7  # per class


def _palette(n, seed=0):
  rng = np.random.default_rng(seed)
  colors = []
  while len(colors) < n:
    c = rng.integers(0, 256, 3)
    if all(np.abs(c - o).max() > 24 for o in colors):
      colors.append(c)
  return np.asarray(colors, np.uint8)


PALETTE = _palette(len(CLASSES) * (N_TRAIN + N_EVAL))


def _identify(images):
  """Palette index of each (solid) image, from its mean color."""
  means = images.reshape(len(images), -1, 3).mean(axis=1)
  return np.abs(means[:, None, :] - PALETTE[None].astype(float)).max(-1).argmin(1)


def make_folder(root):
  """``root/{train,validation}/<class>/`` with JPEG, PNG and BMP images of varied sizes."""
  k = 0
  for split, n in (('train', N_TRAIN), ('validation', N_EVAL)):
    for c in CLASSES:
      os.makedirs(os.path.join(root, split, c))
      for i in range(n):
        size = (40 + 7 * i, 48 + 5 * (k % 4))
        img = Image.new('RGB', size, tuple(int(v) for v in PALETTE[k]))
        ext = ('png', 'jpg', 'bmp')[k % 3]
        img.save(
          os.path.join(root, split, c, f'{k:03d}.{ext}'),
          **({'quality': 98} if ext == 'jpg' else {}),
        )
        k += 1


def _config(folder_root, **input_overrides):
  from hrnet_jax.train.recipes import base

  c = base.get_config()
  c.dataset.name, c.dataset.folder = 'folder', str(folder_root)
  c.input.image_size = 32
  c.input.crop_pct = 0.8
  c.input.shuffle_buffer = 64
  c.batch_size, c.eval_batch_size = 8, 6
  for k, v in input_overrides.items():
    c.input[k] = v
  return c


def _take(it, n):
  return [next(it) for _ in range(n)]


@check
def folder_train_batches(folder, tmp):
  from hrnet_jax.train import data as input_pipeline

  data = input_pipeline.create_input(_config(folder), process_index=0, process_count=1)
  assert data.info.num_classes == 3 and data.info.class_names == CLASSES
  assert (data.info.num_train, data.info.num_eval) == (30, 21)
  assert data.steps_per_epoch == 30 // 8
  b = next(data.train_batches())
  assert b['image'].shape == (8, 32, 32, 3) and b['image'].dtype == np.uint8
  assert b['label'].dtype == np.int32
  ids = _identify(b['image'])
  assert (ids // N_TRAIN == b['label']).all()  # labels follow the class folders
  # Solid inputs stay solid through crop + resize + flip, and colors survive.
  assert np.abs(b['image'].astype(int) - PALETTE[ids][:, None, None, :]).max() <= 3


@check
def folder_order_is_deterministic_and_resumes_exactly(folder, tmp):
  from hrnet_jax.train import data as input_pipeline

  config = _config(folder)
  data = input_pipeline.create_input(config, process_index=0, process_count=1)
  spe = data.steps_per_epoch
  stream = _take(data.train_batches(0), 2 * spe + 1)
  again = _take(
    input_pipeline.create_input(config, process_index=0, process_count=1).train_batches(0),
    2 * spe + 1,
  )
  for a, b in zip(stream, again):
    np.testing.assert_array_equal(a['image'], b['image'])
  for start in (1, spe + 1):  # mid-epoch and in the second epoch
    for a, b in zip(stream[start:], _take(data.train_batches(start), 2 * spe + 1 - start)):
      np.testing.assert_array_equal(a['image'], b['image'])
  epochs = [
    np.concatenate([_identify(b['image']) for b in stream[e * spe : (e + 1) * spe]]) for e in (0, 1)
  ]
  assert len(set(epochs[0])) == spe * 8  # no example twice in an epoch
  assert not np.array_equal(epochs[0], epochs[1])  # reshuffled


@check
def folder_random_resized_crop_and_resize_read_the_same_examples(folder, tmp):
  from hrnet_jax.train import data as input_pipeline

  crop = next(
    input_pipeline.create_input(_config(folder), process_index=0, process_count=1).train_batches()
  )
  plain = next(
    input_pipeline.create_input(
      _config(folder, train_augment='resize'), process_index=0, process_count=1
    ).train_batches()
  )
  np.testing.assert_array_equal(_identify(crop['image']), _identify(plain['image']))


@check
def folder_processes_read_disjoint_shards(folder, tmp):
  from hrnet_jax.train import data as input_pipeline

  config = _config(folder)
  seen = []
  for pi in range(2):
    data = input_pipeline.create_input(config, process_index=pi, process_count=2)
    assert data.steps_per_epoch == 15 // 4
    seen.append(
      set(
        np.concatenate(
          [_identify(b['image']) for b in _take(data.train_batches(), data.steps_per_epoch)]
        )
      )
    )
  assert not seen[0] & seen[1]


@check
def folder_eval_covers_every_example_once(folder, tmp):
  for pc in (1, 2):
    _eval_covers_every_example_once(folder, pc)


def _eval_covers_every_example_once(folder, pc):
  from hrnet_jax.train import data as input_pipeline
  from hrnet_jax.train.data import base

  config = _config(folder)
  ids, counts = [], set()
  for pi in range(pc):
    data = input_pipeline.create_input(config, process_index=pi, process_count=pc, train=False)
    batches = list(data.eval_batches())
    counts.add(len(batches))
    for b in batches:
      assert b['image'].shape == (6 // pc, 32, 32, 3)
      real = _identify(b['image'][b['mask']])
      assert ((real - 3 * N_TRAIN) // N_EVAL == b['label'][b['mask']]).all()
      ids.extend(real)
  assert counts == {base.num_eval_batches(21, pc, 6 // pc)}
  assert sorted(ids) == list(range(30, 51))


@check
def folder_errors_name_the_path(folder, tmp):
  from hrnet_jax.train import data as input_pipeline

  config = _config(os.path.join(tmp, 'missing'))
  with pytest.raises(FileNotFoundError, match='config.dataset.folder'):
    input_pipeline.create_input(config, process_index=0, process_count=1)
  config = _config(folder)
  config.dataset.eval_split = 'val'
  with pytest.raises(FileNotFoundError, match='val does not exist'):
    input_pipeline.create_input(config, process_index=0, process_count=1)


@check
def folder_percent_slices_split_each_class(folder, tmp):
  """``train[:70%]`` / ``train[70%:]`` of one train folder (the finetune recipe's defaults on a
  folder, issue 23): disjoint, together the whole split, every class in both; a batch larger
  than the slice is one error naming the flag and the largest batch that fits."""
  from hrnet_jax.train import data as input_pipeline

  config = _config(folder)
  config.dataset.train_split, config.dataset.eval_split = 'train[:70%]', 'train[70%:]'
  data = input_pipeline.create_input(config, process_index=0, process_count=1)
  assert (data.info.num_train, data.info.num_eval) == (7 * len(CLASSES), 3 * len(CLASSES))
  assert data.info.class_names == CLASSES
  ev = list(data.eval_batches())
  eval_ids = np.concatenate([_identify(b['image'])[b['mask']] for b in ev])
  labels = np.concatenate([b['label'][b['mask']] for b in ev])
  # Palette index c * N_TRAIN + i is file i (in sorted order) of class c of train/.
  head = {c * N_TRAIN + i for c in range(len(CLASSES)) for i in range(7)}
  tail = {c * N_TRAIN + i for c in range(len(CLASSES)) for i in range(7, N_TRAIN)}
  assert sorted(eval_ids.tolist()) == sorted(tail)
  assert (labels == eval_ids // N_TRAIN).all()
  seen = set()
  for b in _take(data.train_batches(), 6):
    seen |= set(_identify(b['image']).tolist())
  assert seen <= head and len(seen) > 8
  config.batch_size = 22
  with pytest.raises(
    ValueError,
    match=r'config.batch_size=22 exceeds the 21 training examples '
    r".*'train\[:70%\]': pass --config.batch_size=N with N <= 21",
  ):
    input_pipeline.create_input(config, process_index=0, process_count=1)


@check
def tfds_dataset_by_name(folder, tmp):
  import tensorflow_datasets as tfds

  from hrnet_jax.train import data as input_pipeline

  class TinyShapes(tfds.core.GeneratorBasedBuilder):
    """A real (prepared on disk, no download) TFDS dataset of solid-color PNGs."""

    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
          {
            'image': tfds.features.Image(shape=(None, None, 3)),
            'label': tfds.features.ClassLabel(names=list(CLASSES)),
          }
        ),
      )

    def _split_generators(self, dl_manager):
      return {
        'train': self._generate_examples(0, N_TRAIN),
        'validation': self._generate_examples(3 * N_TRAIN, N_EVAL),
      }

    def _generate_examples(self, first, n):
      for c in range(len(CLASSES)):
        for i in range(n):
          k = first + c * n + i
          yield k, {'image': np.full((36 + i, 40, 3), PALETTE[k], np.uint8), 'label': c}

  TinyShapes(data_dir=tmp).download_and_prepare()
  config = _config(tmp)
  config.dataset.name, config.dataset.data_dir = 'tiny_shapes', tmp
  with pytest.raises(ValueError, match='for the folder pass --config.dataset=folder:'):
    input_pipeline.create_input(config, process_index=0, process_count=1)  # folder still set
  config.dataset.folder = ''
  data = input_pipeline.create_input(config, process_index=0, process_count=1)
  assert (data.info.num_train, data.info.num_eval, data.info.num_classes) == (30, 21, 3)
  stream = _take(data.train_batches(0), 4)
  np.testing.assert_array_equal(_take(data.train_batches(2), 2)[1]['image'], stream[3]['image'])
  b = stream[0]
  assert (_identify(b['image']) // N_TRAIN == b['label']).all()
  ids = []
  for pi in range(2):
    half = input_pipeline.create_input(config, process_index=pi, process_count=2, train=False)
    ids.extend(i for b in half.eval_batches() for i in _identify(b['image'][b['mask']]))
  assert sorted(ids) == list(range(30, 51))
  config.dataset.name = 'no_such_dataset_xyz'
  with pytest.raises(ValueError, match="config.dataset.name='no_such_dataset_xyz'"):
    input_pipeline.create_input(config, process_index=0, process_count=1)


# (height, width): square, tall, wide with frequent fallbacks, and two where no attempt can fit.
CROP_SHAPES = ((100, 100), (200, 60), (30, 200), (1000, 10), (10, 1000))
N_CROPS = 4000


@check
def crop_windows_lie_inside_the_image(folder, tmp):
  """Samples ``crop_window`` (through tf.data, as training does) for the parent's comparison
  with torchvision, and checks that every window lies inside its image."""
  import tensorflow as tf

  from hrnet_jax.train.data import tfdata as tf_input

  out = {}
  for hw in CROP_SHAPES:
    ds = tf.data.Dataset.range(N_CROPS).map(
      lambda i: tf.stack(tf_input.crop_window(*hw, tf.stack([tf.constant(7, tf.int64), i])))
    )
    win = next(ds.batch(N_CROPS).as_numpy_iterator())
    y, x, h, w = win.T
    assert (y >= 0).all() and (x >= 0).all() and (h > 0).all() and (w > 0).all()
    assert (y + h <= hw[0]).all() and (x + w <= hw[1]).all()
    out[f'{hw[0]}x{hw[1]}'] = win
  np.savez(os.path.join(tmp, 'crop_windows.npz'), **out)


def _child(tmp):
  """The checks above, in this child process (``child_checks``)."""
  folder = os.path.join(tmp, 'images')
  make_folder(folder)
  child_checks.report(CHECKS, folder, tmp)


@pytest.fixture(scope='module')
def child_tmp(tmp_path_factory):
  return tmp_path_factory.mktemp('tf_input')


@pytest.fixture(scope='module')
def results(child_tmp):
  return child_checks.results(__file__, child_tmp, timeout=900)


@pytest.mark.parametrize('name', list(CHECKS))
def test_tf_input(results, name):
  assert results[name] == 'ok', results[name]


def _torchvision_windows(height, width, n):
  import torch
  from torchvision.transforms import RandomResizedCrop

  img = torch.empty(3, height, width, dtype=torch.uint8)
  with torch.random.fork_rng():
    torch.manual_seed(0)
    return np.asarray(
      [RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)]
    )


def test_crop_window_matches_torchvision_random_resized_crop(results, child_tmp):
  """The TF crop window has torchvision's distribution (area, log aspect ratio, position) and
  exactly its center-crop fallback. TF ran in the child; torchvision runs here."""
  from scipy import stats

  assert results['crop_windows_lie_inside_the_image'] == 'ok'
  tf_windows = np.load(os.path.join(child_tmp, 'crop_windows.npz'))
  for height, width in CROP_SHAPES:
    ours = tf_windows[f'{height}x{width}']
    only_fallback = height > 10 * width or width > 10 * height  # no attempt can fit
    ref = _torchvision_windows(height, width, 20 if only_fallback else N_CROPS)
    if only_fallback:
      assert len(np.unique(ref, axis=0)) == 1
      np.testing.assert_array_equal(ours, np.broadcast_to(ref[0], ours.shape))
      continue

    def features(win):
      y, x, h, w = win.T.astype(float)
      return {
        'area': h * w / (height * width),
        'log_ratio': np.log(w / h),
        'center_y': (y + h / 2) / height,
        'center_x': (x + w / 2) / width,
      }

    a, b = features(ours), features(ref)
    for k in a:
      p = stats.ks_2samp(a[k], b[k]).pvalue
      assert p > 1e-3, (height, width, k, p, a[k].mean(), b[k].mean())
    # Windows of the fallback's size are as frequent (~0.3 for 30x200, where it is common).
    size = (min(height, round(width / 0.75)), min(width, round(height * 4 / 3)))
    rate = [np.mean((win[:, 2] == size[0]) & (win[:, 3] == size[1])) for win in (ours, ref)]
    assert abs(rate[0] - rate[1]) < 0.03, (height, width, rate)


if __name__ == '__main__':
  _child(sys.argv[1])
