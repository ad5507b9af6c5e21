"""SegmentationInput on a generated digit scenes set and on tiny Cityscapes / ADE20K trees:
batches, resume-exact order, eval shards, mmseg's augmentations (against mmcv / mmseg's own
transforms where they are deterministic), the layouts (against mmseg's datasets) and every
bad-input refusal."""

import json
import os
import pathlib

import mm_shim
import numpy as np
import pytest
from PIL import Image

from hrnet_jax.errors import BadInputError
from hrnet_jax.train.data import segmentation as seg
from hrnet_jax.train.data import tfdata, verify
from hrnet_jax.train.data.digit_scenes import write_digit_scenes
from hrnet_jax.train.recipes import segment

mm_shim.install()
from mmcv.transforms import RandomResize, Resize  # noqa: E402
from mmseg.datasets import ADE20KDataset, CityscapesDataset  # noqa: E402
from mmseg.datasets.transforms import LoadAnnotations, RandomCrop  # noqa: E402

SIZE = (64, 80)  # (H, W) of the generated images
CROP = (48, 48)
VALID_IDS = set(range(11)) | {255}


@pytest.fixture(autouse=True)
def no_verify_cache(monkeypatch):
  monkeypatch.setenv(verify.ENV, 'off')


@pytest.fixture(scope='module')
def root(tmp_path_factory):
  path = tmp_path_factory.mktemp('seg') / 'scenes'
  write_digit_scenes(path, num_train=12, num_val=5, size=SIZE, seed=0)
  return path


def make_config(folder, **inputs):
  config = segment.get_config()
  config.dataset.folder = str(folder)
  config.batch_size = 4
  config.seed = 7
  config.input.crop_size = CROP
  config.input.scale = (128, 64)
  config.input.test_scale = (128, 96)
  for key, value in inputs.items():
    config.input[key] = value
  return config


def make_input(folder, process_index=0, process_count=1, train=True, **inputs):
  return seg.SegmentationInput(
    make_config(folder, **inputs),
    process_index=process_index,
    process_count=process_count,
    train=train,
  )


def take(data, n, start=0):
  it = data.train_batches(start)
  return [next(it) for _ in range(n)]


def assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['image'], y['image'])
    np.testing.assert_array_equal(x['label'], y['label'])


# ------------------------------------------------------------------------- train batches


def test_batches_shapes_dtypes_and_ids(root):
  data = make_input(root)
  assert data.info.num_classes == 11 and data.info.class_names[:2] == ('background', '0')
  assert (data.info.num_train, data.info.num_eval) == (12, 5)
  assert data.steps_per_epoch == 3 and data.ignore_index == 255
  batches = take(data, 4)  # into the second epoch
  for b in batches:
    assert b['image'].shape == (4, *CROP, 3) and b['image'].dtype == np.uint8
    assert b['label'].shape == (4, *CROP) and b['label'].dtype == np.uint8
    assert set(np.unique(b['label'])) <= VALID_IDS
  ids = set(np.unique(np.concatenate([b['label'] for b in batches])))
  assert len(ids - {0, 255}) >= 5  # digits survive resize and crop


def test_resume_exact_and_independent_of_process_count(root):
  full = take(make_input(root), 7)
  assert_same(take(make_input(root), 3, start=4), full[4:7])  # resumed mid-epoch 2
  assert not np.array_equal(full[0]['image'], full[3]['image'])  # epochs differ
  halves = [take(make_input(root, p, 2), 4) for p in (0, 1)]
  joined = [{k: np.concatenate([a[k], b[k]]) for k in ('image', 'label')} for a, b in zip(*halves)]
  assert_same(joined, full[:4])


def test_padding_when_the_resized_image_is_smaller_than_the_crop(root):
  # scale (32, 32): factor min(32 / 80, 32 / 64) = 0.4 -> 26 x 32, inside the 48 x 48 crop.
  data = make_input(root, scale=(32, 32), ratio_range=(1.0, 1.0))
  for b in take(data, 2):
    assert (b['label'][:, 26:] == 255).all() and (b['label'][:, :, 32:] == 255).all()
    assert (b['image'][:, 26:] == 0).all() and (b['image'][:, :, 32:] == 0).all()
    assert (b['label'][:, :26, :32] != 255).mean() > 0.5
    assert b['image'][:, :26, :32].std() > 10


def test_flip_flips_image_and_label_together(root):
  # Ratio 1: 64 x 80 images, larger than the crop, so no padding (which follows the flip).
  kept = take(make_input(root, flip_prob=0.0, ratio_range=(1.0, 1.0)), 2)
  flipped = take(make_input(root, flip_prob=1.0, ratio_range=(1.0, 1.0)), 2)
  assert_same(flipped, [{k: b[k][:, :, ::-1] for k in ('image', 'label')} for b in kept])
  assert not np.array_equal(kept[0]['label'], flipped[0]['label'])


def test_photometric_distortion_changes_only_the_image(root):
  plain = take(make_input(root, photometric_distortion=False), 3)
  distorted = take(make_input(root, photometric_distortion=True), 3)
  changed = 0
  for p, d in zip(plain, distorted):
    np.testing.assert_array_equal(p['label'], d['label'])
    changed += sum(not np.array_equal(x, y) for x, y in zip(p['image'], d['image']))
  assert changed >= 8  # of 12: each image is left alone only with probability 1/16


# -------------------------------------------------------------- transforms vs mmcv / mmseg


@pytest.mark.parametrize('shape', [(37, 53), (64, 64), (100, 61)])
def test_random_resize_and_resize_match_mmcv(shape):
  """With ratio_range (r, r) RandomResize is deterministic: the output size, the label (cv2
  nearest) exactly, the image (cv2 bilinear) up to its fixed-point rounding; and the eval
  Resize(test_scale, keep_ratio=True)."""
  tf = tfdata._tf()  # imported in the test: TF before torchvision crashes collection
  rng = np.random.default_rng(sum(shape))
  image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
  label = rng.integers(0, 20, shape, dtype=np.uint8)
  seed = tf.constant([1, 2], tf.int64)
  for scale in [(128, 64), (96, 96), (50, 70)]:
    for r in [0.5, 0.77, 1.3, 2.0]:
      ref = RandomResize(scale=scale, ratio_range=(r, r), keep_ratio=True)(
        {'img': image.copy(), 'gt_seg_map': label.copy()}
      )
      out_image, out_label = seg.random_resize(image, label, seed, scale, (r, r))
      assert out_image.shape == ref['img'].shape
      np.testing.assert_array_equal(out_label.numpy(), ref['gt_seg_map'])
      assert np.abs(out_image.numpy().astype(int) - ref['img']).max() <= 1
    ref = Resize(scale=scale, keep_ratio=True)({'img': image.copy()})['img']
    h, w = seg.keep_ratio_size(shape[0], shape[1], scale)
    out = seg.resize_image(image, h, w).numpy()
    assert out.shape == ref.shape and np.abs(out.astype(int) - ref).max() <= 1


def crop_label():
  """64 x 64: class 1 in columns 0-15, ignore in 48-63, class 0 between. A 32 x 32 crop at
  column offset x passes cat_max_ratio=0.75 only for x < 8 (a quarter of the draws); counting
  ignore as a class would pass x >= 16 too."""
  label = np.zeros((64, 64), np.uint8)
  label[:, :16] = 1
  label[:, 48:] = 255
  return label


def passes(crop: np.ndarray, ratio: float) -> bool:
  ids, counts = np.unique(crop, return_counts=True)
  counts = counts[ids != 255]
  return len(counts) > 1 and counts.max() / counts.sum() < ratio


def test_random_crop_bounds_and_cat_max_ratio_like_mmseg():
  tf = tfdata._tf()  # imported in the test: TF before torchvision crashes collection
  label = crop_label()
  yy, xx = np.mgrid[:64, :64]
  image = np.stack([yy, xx, np.zeros_like(yy)], -1).astype(np.uint8)  # pixel = its position
  trials = 300

  @tf.function
  def crop(seed, ratio):
    return seg.random_crop(tf.constant(image), tf.constant(label), seed, (32, 32), ratio, 255)

  ours, offsets = {}, set()
  for ratio in (0.75, 1.0):
    results = [crop(tf.constant([i, 0], tf.int64), ratio) for i in range(trials)]
    ours[ratio] = np.mean([passes(lab.numpy(), 0.75) for _, lab in results])
    for img, lab in results:
      top, left = int(img[0, 0, 0]), int(img[0, 0, 1])
      np.testing.assert_array_equal(lab.numpy(), label[top : top + 32, left : left + 32])
      offsets.add((top, left))
  assert {t for t, _ in offsets} == set(range(33)) and {x for _, x in offsets} == set(range(33))

  np.random.seed(0)
  oracle = RandomCrop(crop_size=(32, 32), cat_max_ratio=0.75)
  theirs = np.mean(
    [
      passes(
        oracle({'img': image, 'gt_seg_map': label, 'seg_fields': ['gt_seg_map']})['gt_seg_map'],
        0.75,
      )
      for _ in range(trials)
    ]
  )
  # One draw passes with p = 8/33; ten re-draws make it ~0.95, for mmseg and for us.
  assert ours[1.0] < 0.35 and ours[0.75] > 0.88
  assert abs(ours[0.75] - theirs) < 0.06, (ours, theirs)

  # A crop larger than the image is the whole image (mmseg: zero margin), padded later.
  small_image, small_label = seg.random_crop(
    tf.constant(image[:20, :24]), tf.constant(label[:20, :24]), [3, 4], CROP, 1.0, 255
  )
  np.testing.assert_array_equal(small_label.numpy(), label[:20, :24])
  padded_image, padded_label = seg.pad_to(small_image, small_label, CROP, 255)
  assert (padded_label.numpy()[20:] == 255).all() and (padded_image.numpy()[:, 24:] == 0).all()


# ------------------------------------------------------------------------------- eval


def test_eval_shards_cover_the_split_once(root):
  names = sorted(p.stem for p in (root / 'images' / 'val').iterdir())
  seen = []
  for p in range(3):
    data = make_input(root, p, 3, train=False)
    assert data.steps_per_epoch == 0 and data.info.num_train == 0 and data.info.num_eval == 5
    assert data.num_eval_examples == 2
    examples = list(data.eval_examples())
    assert len(examples) == 2
    for ex in examples:
      assert ex['image'].shape == (96, 120, 3) and ex['image'].dtype == np.uint8
      assert ex['label'].shape == SIZE and ex['label'].dtype == np.uint8
      assert isinstance(ex['name'], str) and isinstance(ex['valid'], bool)
      stored = np.asarray(Image.open(root / 'annotations' / 'val' / f'{ex["name"]}.png'))
      np.testing.assert_array_equal(ex['label'], stored)
    seen += [ex['name'] for ex in examples if ex['valid']]
  assert sorted(seen) == names  # each exactly once; the one padding repeat is not valid


def test_test_scale_empty_keeps_the_image_size(root):
  ex = next(make_input(root, train=False, test_scale=()).eval_examples())
  assert ex['image'].shape == (*SIZE, 3) and ex['label'].shape == SIZE


# ---------------------------------------------------------------------- dataset layouts


def write_pair(image_path, label_path, label, *, image_size=None, mode='L'):
  """A random RGB image and its label PNG (mode 'L', or 'P' with a palette)."""
  h, w = label.shape if image_size is None else image_size
  pathlib.Path(image_path).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(label_path).parent.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(h * w)
  Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(image_path)
  png = Image.frombytes(mode, label.shape[::-1], label.tobytes())
  if mode == 'P':
    png.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tolist())
  png.save(label_path)


def cityscapes_tree(root: pathlib.Path, labels: dict[str, np.ndarray]):
  """labels: {'split/city/frame': label}; writes the image, labelTrainIds and the other gtFine
  files mmseg does not read."""
  for key, label in labels.items():
    split, city, frame = key.split('/')
    gt = root / 'gtFine' / split / city / f'{frame}_gtFine_labelTrainIds.png'
    image = root / 'leftImg8bit' / split / city / f'{frame}_leftImg8bit.png'
    write_pair(image, gt, label)
    Image.fromarray(label).save(gt.with_name(f'{frame}_gtFine_labelIds.png'))
    (gt.parent / f'{frame}_gtFine_polygons.json').write_text('{}')


def test_cityscapes_layout_like_mmseg(tmp_path):
  rng = np.random.default_rng(0)
  ids = np.array(list(range(19)) + [255], np.uint8)
  cityscapes_tree(
    tmp_path,
    {
      k: ids[rng.integers(0, 20, (16, 24))]
      for k in (
        'train/aachen/aachen_000000_000019',
        'train/bremen/bremen_000001_000019',
        'val/lindau/lindau_000000_000019',
        'val/lindau/lindau_000001_000019',
      )
    },
  )
  config = make_config(tmp_path)
  config.dataset.name = 'cityscapes'
  config.batch_size = 2
  data = seg.SegmentationInput(config, process_index=0, process_count=1)
  assert data.info.class_names == CityscapesDataset.METAINFO['classes']
  assert (data.info.num_classes, data.info.num_train, data.info.num_eval) == (19, 2, 2)
  mm = CityscapesDataset(
    data_root=str(tmp_path),
    data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
    pipeline=[],
    lazy_init=True,
  ).load_data_list()
  examples = list(data.eval_examples())
  assert len(mm) == len(examples)
  assert [ex['name'] for ex in examples] == [
    'lindau/lindau_000000_000019_leftImg8bit',
    'lindau/lindau_000001_000019_leftImg8bit',
  ]
  for ex, info in zip(examples, sorted(mm, key=lambda d: d['img_path'])):
    ref = LoadAnnotations()({**info, 'seg_fields': []})
    np.testing.assert_array_equal(ex['label'], ref['gt_seg_map'])
  assert set(np.unique(next(data.train_batches())['label'])) <= set(ids)


def test_cityscapes_without_train_ids_says_how_to_make_them(tmp_path):
  cityscapes_tree(tmp_path, {'val/lindau/lindau_000000_000019': np.zeros((8, 8), np.uint8)})
  gt = tmp_path / 'gtFine/val/lindau/lindau_000000_000019_gtFine_labelTrainIds.png'
  gt.unlink()
  config = make_config(tmp_path)
  config.dataset.name = 'cityscapes'
  with pytest.raises(BadInputError) as e:
    seg.SegmentationInput(config, process_index=0, process_count=1, train=False)
  assert 'lindau_000000_000019_leftImg8bit.png: no label' in str(e.value)
  assert 'tools/dataset_converters/cityscapes.py' in str(e.value)


def ade20k_tree(root: pathlib.Path, labels: dict[str, np.ndarray]):
  for key, label in labels.items():
    split, name = key.split('/')
    write_pair(
      root / 'images' / split / f'{name}.jpg', root / 'annotations' / split / f'{name}.png', label
    )


def test_ade20k_reduces_zero_label_like_mmseg(tmp_path):
  raw = np.array([[0, 1, 150, 255], [2, 3, 4, 5]], np.uint8).repeat(4, 0).repeat(4, 1)
  ade20k_tree(
    tmp_path,
    {'training/ADE_train_00000001': raw, 'validation/ADE_val_00000001': raw[:, ::-1].copy()},
  )
  config = make_config(tmp_path)
  config.dataset.name = 'ade20k'
  config.dataset.reduce_zero_label = False  # forced on for ADE20K
  config.batch_size = 1
  data = seg.SegmentationInput(config, process_index=0, process_count=1)
  assert data.info.class_names == ADE20KDataset.METAINFO['classes']
  assert (data.info.num_classes, data.info.num_train, data.info.num_eval) == (150, 1, 1)
  (ex,) = list(data.eval_examples())
  assert ex['name'] == 'ADE_val_00000001'
  (info,) = ADE20KDataset(
    data_root=str(tmp_path),
    data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
    pipeline=[],
    lazy_init=True,
  ).load_data_list()
  assert info['img_path'] == str(tmp_path / 'images/validation/ADE_val_00000001.jpg')
  ref = LoadAnnotations()({**info, 'seg_fields': []})['gt_seg_map']
  np.testing.assert_array_equal(ex['label'], ref)
  assert set(np.unique(ex['label'])) == {0, 1, 2, 3, 4, 149, 255}


# -------------------------------------------------------------------------- bad input


def small_folder(root: pathlib.Path, classes=('a', 'b', 'c')) -> pathlib.Path:
  label = np.array([[0, 1], [2, 255]], np.uint8).repeat(4, 0).repeat(4, 1)
  for split in ('train', 'val'):
    for i in range(2):
      write_pair(
        root / 'images' / split / 'sub' / f'{i}.png',
        root / 'annotations' / split / 'sub' / f'{i}.png',
        label,
        mode='P',
      )
  (root / 'classes.json').write_text(json.dumps(list(classes)))
  return root


def construct(root, **dataset):
  config = make_config(root)
  config.batch_size = 2
  for key, value in dataset.items():
    config.dataset[key] = value
  return seg.SegmentationInput(config, process_index=0, process_count=1)


def test_a_good_small_folder_passes(tmp_path):
  data = construct(small_folder(tmp_path))
  assert data.info.class_names == ('a', 'b', 'c') and data.info.num_train == 2
  assert [ex['name'] for ex in data.eval_examples()] == ['sub/0', 'sub/1']


def _label(root, split='train', name='sub/1'):
  return root / 'annotations' / split / f'{name}.png'


def _image(root, split='train', name='sub/1'):
  return root / 'images' / split / f'{name}.png'


BAD = {
  'label-size': (
    lambda r: Image.fromarray(np.zeros((8, 9), np.uint8)).save(_label(r)),
    lambda r: f'{_label(r)}: is 9x8 (width x height) but its image {_image(r)} is 8x8',
  ),
  'label-id': (
    lambda r: Image.fromarray(np.full((8, 8), 3, np.uint8)).save(_label(r)),
    lambda r: f'{_label(r)}: label id 3 >= num_classes=3 and not ignore_index=255',
  ),
  'label-rgb': (
    lambda r: Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(_label(r)),
    lambda r: f'{_label(r)}: mode RGB: a label PNG holds one class id per pixel',
  ),
  'image-without-label': (
    lambda r: _label(r).unlink(),
    lambda r: f'{_image(r)}: no label {_label(r)}',
  ),
  'label-without-image': (
    lambda r: _image(r).unlink(),
    lambda r: f'{_label(r)}: a label without an image {r}/images/train/sub/1.',
  ),
  'empty-split': (
    lambda r: [p.unlink() for p in (r / 'images' / 'val' / 'sub').iterdir()],
    lambda r: f'{r}/images/val: no images (*.jpg',
  ),
  'missing-split': (
    lambda r: os.rename(r / 'annotations' / 'val', r / 'annotations' / 'validation'),
    lambda r: f'{r}/annotations/val: no such folder',
  ),
  'classes-not-a-list': (
    lambda r: (r / 'classes.json').write_text('{"a": 1}'),
    lambda r: f'{r}/classes.json: must be a non-empty JSON list of strings',
  ),
  'classes-not-strings': (
    lambda r: (r / 'classes.json').write_text('["a", 2]'),
    lambda r: f'{r}/classes.json: must be a non-empty JSON list of strings',
  ),
  'classes-not-json': (
    lambda r: (r / 'classes.json').write_text('a, b'),
    lambda r: f'{r}/classes.json: not JSON',
  ),
  'classes-missing': (
    lambda r: (r / 'classes.json').unlink(),
    lambda r: f'{r}/classes.json: no such file',
  ),
}


@pytest.mark.parametrize('case', list(BAD))
def test_bad_input_is_one_line_naming_the_file(tmp_path, case):
  root = small_folder(tmp_path)
  damage, expected = BAD[case]
  damage(root)
  with pytest.raises(BadInputError) as e:
    construct(root)
  message = str(e.value)
  assert '\n' not in message and expected(root) in message, message


def test_missing_root(tmp_path):
  with pytest.raises(BadInputError, match=r"config.dataset.folder='.*nowhere': not a folder"):
    construct(tmp_path / 'nowhere')


def test_many_bad_labels_are_counted(tmp_path):
  root = small_folder(tmp_path)
  for split in ('train',):
    for i in range(2):
      Image.fromarray(np.full((8, 8), 7, np.uint8)).save(_label(root, split, f'sub/{i}'))
  with pytest.raises(BadInputError, match=r'^2 bad labels: .*sub/0.png: label id 7 .*sub/1.png'):
    construct(root)


def test_the_check_cache_sees_a_changed_image(tmp_path, monkeypatch):
  monkeypatch.setenv(verify.ENV, str(tmp_path / 'cache'))
  root = small_folder(tmp_path / 'data')
  construct(root)  # checked, cached
  construct(root)  # from the cache
  Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(_image(root))
  with pytest.raises(BadInputError, match=r'is 8x8 \(width x height\) but its image .*is 10x8'):
    construct(root)


# --------------------------------------------------------------------------------- TFDS

PET_CLASSES = ('pet', 'background', 'border')  # oxford_iiit_pet's trimap ids 1, 2, 3
N_TFDS = {'train': 6, 'test': 3}


def _tfds_example(split, i, bad=False):
  """The arrays of example ``i`` of ``split``: an RGB image and a trimap mask (ids 1-3, as
  oxford_iiit_pet's ``segmentation_mask``; ``bad``: one id 9)."""
  rng = np.random.default_rng([len(split), i])
  h, w = 20 + i, 24
  mask = rng.integers(1, 4, (h, w, 1)).astype(np.uint8)
  if bad:
    mask[0, 0] = 9
  return rng.integers(0, 256, (h, w, 3)).astype(np.uint8), mask


@pytest.fixture(scope='module')
def tfds_root(tmp_path_factory):
  """A prepared tiny TFDS dataset (no download) and one with a bad mask in train."""
  import tensorflow_datasets as tfds

  class TinySegMasks(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version('1.0.0')
    BAD = False

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
          {
            'image': tfds.features.Image(shape=(None, None, 3)),
            'segmentation_mask': tfds.features.Image(shape=(None, None, 1)),
            'file_name': tfds.features.Text(),
          }
        ),
      )

    def _split_generators(self, dl_manager):
      return {split: self._generate_examples(split) for split in N_TFDS}

    def _generate_examples(self, split):
      for i in range(N_TFDS[split]):
        image, mask = _tfds_example(split, i, bad=self.BAD and split == 'train' and i == 4)
        name = f'{split}_{i}.jpg'
        yield name, {'image': image, 'segmentation_mask': mask, 'file_name': name}

  class TinySegBadMasks(TinySegMasks):
    BAD = True

  root = tmp_path_factory.mktemp('tfds')
  TinySegBadMasks(data_dir=root).download_and_prepare()  # the good one: prepared on first use
  return root


def tfds_config(root, name='tiny_seg_masks', **dataset):
  config = make_config('', crop_size=(16, 16), scale=(32, 16), test_scale=())
  config.dataset.update(
    name=f'tfds:{name}',
    data_dir=str(root),
    train_split='train',
    eval_split='test',
    classes=PET_CLASSES,
    reduce_zero_label=True,
  )
  config.dataset.update(dataset)
  config.batch_size = 2
  return config


def test_tfds_masks_train_and_eval(tfds_root):
  data = seg.SegmentationInput(tfds_config(tfds_root), process_index=0, process_count=1)
  assert (data.info.num_train, data.info.num_eval, data.info.num_classes) == (6, 3, 3)
  assert data.info.class_names == PET_CLASSES
  # Eval: each image and its reduced mask as written, at their own size, named by file_name.
  examples = list(data.eval_examples())
  assert sorted(ex['name'] for ex in examples) == ['test_0', 'test_1', 'test_2']
  for ex in examples:
    image, mask = _tfds_example('test', int(ex['name'][-1]))
    np.testing.assert_array_equal(ex['image'], image)
    np.testing.assert_array_equal(ex['label'], mask[..., 0] - 1)
  # Train: mmseg's pipeline on them, resumable; reduce_zero_label leaves ids 0-2 and the padding.
  stream = take(data, 4)
  assert stream[0]['image'].shape == (2, 16, 16, 3) and stream[0]['label'].dtype == np.uint8
  assert set(np.unique(np.concatenate([b['label'] for b in stream]))) <= {0, 1, 2, 255}
  assert_same(take(data, 2, start=2), stream[2:])


@pytest.mark.parametrize(
  'dataset, expected',
  [
    (
      {'name': 'tiny_seg_bad_masks'},
      'tfds:tiny_seg_bad_masks train train_4 segmentation_mask: label id 8 after '
      'reduce_zero_label >= num_classes=3',
    ),
    ({'label_key': 'mask'}, "has no feature 'mask' (features: "),
    ({'classes': ()}, 'config.dataset.classes is empty: a TFDS mask'),
    ({'eval_split': 'validation'}, "bad split 'validation'"),
    ({'name': 'no_such_dataset_xyz'}, 'config.dataset.name=tfds:no_such_dataset_xyz: '),
  ],
)
def test_tfds_bad_input_is_one_line(tfds_root, dataset, expected):
  config = tfds_config(tfds_root, **dataset)
  with pytest.raises(BadInputError) as e:
    seg.SegmentationInput(config, process_index=0, process_count=1)
  assert '\n' not in str(e.value) and expected in str(e.value), str(e.value)
