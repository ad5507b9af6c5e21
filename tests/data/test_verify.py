"""Training data checked before the first step (``hrnet_jax.train.data.verify`` and the folder /
TFDS inputs of ``tfdata``): a file that does not decode, an empty class folder or an unsupported
extension is one ``BadInputError`` line naming it (or, with ``config.dataset.skip_bad_images``,
skipped and counted); the successes are cached by size and mtime; a record that fails to decode
in the middle of a TFDS epoch is named by its id and position; ``hrnet-train`` on a bad folder
prints one error line, exits 2 and writes nothing.

``find_unreadable`` and its cache are tested here with plain Python checks. Everything that
decodes runs in a child process (this file run as a script), as in test_train_tf_input: TF must
not be loaded into the pytest process (it clashes with triton's LLVM options).
"""

import io
import json
import logging
import os
import pathlib
import subprocess
import sys

import child_checks
import numpy as np
import pytest
from PIL import Image

from hrnet_jax.train.data import verify

CHECKS = {}
SKIP = 'config.dataset.skip_bad_images=True'


def check(fn):
  """Registers a check ``fn(tmp_dir)`` run in the child process."""
  CHECKS[fn.__name__] = fn
  return fn


# ------------------------------------------------------------------- find_unreadable, cache


@pytest.fixture
def cache(tmp_path, monkeypatch):
  folder = tmp_path / 'cache'
  monkeypatch.setenv(verify.ENV, str(folder))
  return folder


class Recorder:
  """A check that records its calls and rejects files whose text starts with ``bad``."""

  def __init__(self):
    self.calls = []

  def __call__(self, path):
    self.calls.append(path)
    if pathlib.Path(path).read_text().startswith('bad'):
      raise ValueError(f'cannot decode (starts with {pathlib.Path(path).read_text()[:5]!r})')


def _files(folder, texts):
  folder.mkdir(parents=True, exist_ok=True)
  paths = []
  for i, text in enumerate(texts):
    p = folder / f'{i:02d}.jpg'
    p.write_text(text)
    paths.append(str(p))
  return paths


def test_failures_are_reported_in_order_with_their_reason(tmp_path, cache):
  paths = _files(tmp_path / 'd', ['ok', 'bad 1', 'ok', 'bad 2'] * 40)
  paths.append(str(tmp_path / 'd' / 'missing.jpg'))
  bad = verify.find_unreadable(paths, Recorder(), kind='test')
  assert list(bad) == [p for i, p in enumerate(paths[:-1]) if i % 2] + [paths[-1]]
  assert bad[paths[1]] == "cannot decode (starts with 'bad 1')"
  assert 'No such file or directory' in bad[paths[-1]]


def test_rerun_checks_only_new_or_changed_files(tmp_path, cache):
  paths = _files(tmp_path / 'd', ['ok'] * 5 + ['bad'])
  first = Recorder()
  assert list(verify.find_unreadable(paths, first, kind='test')) == [paths[5]]
  assert sorted(first.calls) == sorted(paths)
  again = Recorder()
  assert list(verify.find_unreadable(paths, again, kind='test')) == [paths[5]]
  assert again.calls == [paths[5]]  # failures are never cached
  st = os.stat(paths[1])
  os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 1000))  # same size, newer
  pathlib.Path(paths[2]).write_text('bad now')  # same mtime, another size
  os.utime(paths[2], ns=(st.st_atime_ns, os.stat(paths[2]).st_mtime_ns))
  new = _files(tmp_path / 'e', ['ok'])
  changed = Recorder()
  assert list(verify.find_unreadable(paths + new, changed, kind='test')) == [paths[2], paths[5]]
  assert sorted(changed.calls) == sorted([paths[1], paths[2], paths[5]] + new)
  other = Recorder()  # a different kind of check shares no entry
  verify.find_unreadable(paths, other, kind='other')
  assert sorted(other.calls) == sorted(paths)


def test_damaged_or_disabled_cache_is_never_fatal(tmp_path, cache, monkeypatch):
  paths = _files(tmp_path / 'd', ['ok'] * 3)
  verify.find_unreadable(paths, Recorder(), kind='test')
  (entry,) = cache.iterdir()
  for damage in (b'{"version": 1, "kind": "test", "ok": [1, 2', b'\xff\x00', b'[]', b'{"ok": 3}'):
    entry.write_bytes(damage)
    rec = Recorder()
    assert verify.find_unreadable(paths, rec, kind='test') == {}
    assert sorted(rec.calls) == sorted(paths)  # everything checked again
    assert json.loads(entry.read_text())['ok']  # and the cache rewritten
  cache_file = tmp_path / 'a_file'
  cache_file.write_text('')
  monkeypatch.setenv(verify.ENV, str(cache_file / 'sub'))  # cannot be created
  assert verify.find_unreadable(paths, Recorder(), kind='test') == {}
  monkeypatch.setenv(verify.ENV, 'off')
  rec = Recorder()
  verify.find_unreadable(paths, rec, kind='test')
  verify.find_unreadable(paths, rec, kind='test')
  assert len(rec.calls) == 2 * len(paths)


def test_cache_folder_follows_the_compilation_cache_convention(tmp_path):
  assert verify.cache_dir({'XDG_CACHE_HOME': str(tmp_path)}) == str(tmp_path / 'hrnet_jax/verify')
  assert verify.cache_dir({}) == os.path.expanduser('~/.cache/hrnet_jax/verify')
  assert verify.cache_dir({verify.ENV: 'none', 'XDG_CACHE_HOME': str(tmp_path)}) is None
  assert verify.cache_dir({verify.ENV: str(tmp_path / 'x')}) == str(tmp_path / 'x')


# ------------------------------------------------------------------------------- child checks


def _image(path, color, fmt=None, size=(20, 16)):
  Image.new('RGB', size, color).save(path, fmt)


def _jpeg_bytes(color=(200, 30, 40)):
  b = io.BytesIO()
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (32, 40, 3), np.uint8)).save(b, 'JPEG')
  return b.getvalue()


def make_folder(root, per_class=4):
  """``root/{train,validation}/{cat,dog}/`` of small good JPEG / PNG images."""
  for split in ('train', 'validation'):
    for c, color in (('cat', (200, 30, 40)), ('dog', (20, 90, 230))):
      os.makedirs(os.path.join(root, split, c))
      for i in range(per_class):
        ext = ('jpg', 'png')[i % 2]
        _image(os.path.join(root, split, c, f'{i}.{ext}'), color)
  return root


def _config(folder, skip=False):
  from hrnet_jax.train.recipes import base

  c = base.get_config()
  c.dataset.name, c.dataset.folder = 'folder', str(folder)
  c.dataset.skip_bad_images = skip
  c.input.image_size = 16
  c.batch_size, c.eval_batch_size = 4, 4
  return c


def _create(folder, skip=False):
  from hrnet_jax.train import data

  return data.create_input(_config(folder, skip), process_index=0, process_count=1)


def _error(folder, skip=False):
  from hrnet_jax.errors import BadInputError

  with pytest.raises(BadInputError) as e:
    _create(folder, skip)
  message = str(e.value)
  assert '\n' not in message, message
  return message


@check
def truncated_jpeg_is_named(tmp):
  folder = make_folder(os.path.join(tmp, 'truncated'))
  bad = os.path.join(folder, 'train', 'cat', 'x.jpg')
  pathlib.Path(bad).write_bytes(_jpeg_bytes()[:300])
  message = _error(folder)
  assert message.startswith(f'{bad}: cannot decode (') and 'Invalid JPEG data' in message, message
  assert message.endswith(f'set {SKIP} to skip them'), message


@check
def text_file_named_jpg_is_named(tmp):
  folder = make_folder(os.path.join(tmp, 'text'))
  bad = os.path.join(folder, 'validation', 'dog', 'notes.jpg')
  pathlib.Path(bad).write_text('not an image\n')
  message = _error(folder)
  assert message.startswith(f'{bad}: cannot decode (Unknown image file format'), message


@check
def png_named_jpg_passes_and_decodes(tmp):
  """The check is the pipeline's decoder: it goes by the content, as training does."""
  folder = make_folder(os.path.join(tmp, 'png_as_jpg'))
  _image(os.path.join(folder, 'train', 'cat', 'png.jpg'), (200, 30, 40), fmt='PNG')
  data = _create(folder)
  assert data.info.num_train == 9
  assert next(data.train_batches())['image'].shape == (4, 16, 16, 3)


@check
def empty_class_folder_is_named(tmp):
  folder = make_folder(os.path.join(tmp, 'empty'))
  os.makedirs(os.path.join(folder, 'train', 'eel', '.thumbs'))
  pathlib.Path(folder, 'train', 'eel', '.DS_Store').write_text('')
  eel = os.path.join(folder, 'train', 'eel')
  for skip in (False, True):
    assert _error(folder, skip) == (
      f'{folder}/train: empty class folders: {eel}; remove them or add images'
    )


@check
def unsupported_extensions_are_named_and_counted(tmp):
  folder = make_folder(os.path.join(tmp, 'tif'))
  names = [f'scan{i}.tif' for i in range(6)] + ['README.txt']
  for name in names:
    _image(os.path.join(folder, 'train', 'dog', name), (20, 90, 230), fmt='TIFF')
  message = _error(folder)
  first = sorted(os.path.join(folder, 'train', 'dog', n) for n in names)[0]
  assert message.startswith(f'7 bad files in {folder}/train: {first}: unsupported extension ')
  assert '.txt (supported: .jpg' in message and message.count('unsupported extension') == 5
  assert message.endswith(f'; and 2 more; set {SKIP} to skip them'), message


@check
def hidden_files_are_ignored(tmp):
  folder = make_folder(os.path.join(tmp, 'hidden'))
  pathlib.Path(folder, 'train', 'cat', '.DS_Store').write_bytes(b'\0\1junk')
  os.makedirs(os.path.join(folder, 'train', '.ipynb_checkpoints'))
  os.makedirs(os.path.join(folder, 'train', 'dog', '.cache'))
  pathlib.Path(folder, 'train', 'dog', '.cache', 'x.jpg').write_text('junk')
  data = _create(folder)
  assert data.info.class_names == ('cat', 'dog') and data.info.num_train == 8


@check
def skip_option_skips_and_counts(tmp):
  folder = make_folder(os.path.join(tmp, 'skip'))
  bad = {
    os.path.join(folder, 'train', 'cat', 'cut.jpg'): _jpeg_bytes()[:200],
    os.path.join(folder, 'train', 'dog', 'text.png'): b'hello',
    os.path.join(folder, 'train', 'dog', 'scan.tif'): b'II*\0',
  }
  for path, data in bad.items():
    pathlib.Path(path).write_bytes(data)
  records = []
  handler = logging.Handler()
  handler.emit = records.append
  logging.getLogger('hrnet_jax.train.data.tfdata').addHandler(handler)
  data = _create(folder, skip=True)
  warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
  assert len(warnings) == 1 and f'{folder}/train: skipped 3 bad files' in warnings[0], warnings
  assert all(p in warnings[0] for p in bad), warnings
  assert data.info.num_train == 8 and data.steps_per_epoch == 2
  batches = [b for _, b in zip(range(3), data.train_batches())]
  assert all(b['image'].shape == (4, 16, 16, 3) for b in batches)
  # A class left without any good image is named, even with the option.
  only = make_folder(os.path.join(tmp, 'skip_all'), per_class=1)
  for p in pathlib.Path(only, 'train', 'dog').iterdir():
    p.write_bytes(b'broken')
  assert _error(only, skip=True) == (
    f'{only}/train: class folders without a good image once the bad files are skipped: '
    f'{only}/train/dog'
  )


@check
def verification_is_cached(tmp):
  """A rerun decodes nothing that did not change (the cache is the child's, under tmp)."""
  from hrnet_jax.train.data import tfdata

  folder = make_folder(os.path.join(tmp, 'cached'))
  calls = []
  decode = tfdata.check_image
  tfdata.check_image = lambda p: (calls.append(p), decode(p))[1]
  try:
    _create(folder)
    assert sorted(calls) == sorted(str(p) for p in pathlib.Path(folder).rglob('*.*'))
    calls.clear()
    _create(folder)
    assert calls == []
    path = os.path.join(folder, 'train', 'dog', '1.png')
    _image(path, (1, 2, 3), size=(21, 16))
    assert _create(folder).info.num_train == 8 and calls == [path]  # only the changed file
  finally:
    tfdata.check_image = decode


class BadRecordShapes:
  """A real TFDS dataset (prepared on disk) whose record ``BAD`` of each split is not an image."""

  BAD = 5

  @staticmethod
  def prepare(data_dir):
    import tensorflow_datasets as tfds

    class BadRecordShapes(tfds.core.GeneratorBasedBuilder):
      VERSION = tfds.core.Version('1.0.0')

      def _info(self):
        return tfds.core.DatasetInfo(
          builder=self,
          features=tfds.features.FeaturesDict(
            {
              'image': tfds.features.Image(shape=(None, None, 3)),
              'label': tfds.features.ClassLabel(names=['cat', 'dog']),
            }
          ),
        )

      def _split_generators(self, dl_manager):
        return {'train': self._generate_examples(), 'validation': self._generate_examples()}

      def _generate_examples(self):
        for k in range(16):
          image = np.full((12 + k, 14, 3), 10 * k, np.uint8)
          yield k, {'image': io.BytesIO(b'not an image') if k == 5 else image, 'label': k % 2}

    BadRecordShapes(data_dir=data_dir).download_and_prepare()
    return 'bad_record_shapes'


@check
def tfds_decode_failure_names_the_record(tmp):
  import tensorflow_datasets as tfds

  from hrnet_jax.errors import BadInputError
  from hrnet_jax.train import data as input_pipeline

  data_dir = os.path.join(tmp, 'tfds')
  name = BadRecordShapes.prepare(data_dir)
  config = _config(tmp)
  config.dataset.name, config.dataset.data_dir, config.dataset.folder = name, data_dir, ''
  builder = tfds.builder(name, data_dir=data_dir)
  for split in ('train', 'validation'):
    (bad_id,) = [
      ex['tfds_id'].decode()
      for ex in tfds.as_numpy(
        builder.as_dataset(
          split=split,
          decoders={'image': tfds.decode.SkipDecoding()},
          read_config=tfds.ReadConfig(add_tfds_id=True),
        )
      )
      if ex['image'] == b'not an image'
    ]
    data = input_pipeline.create_input(config, process_index=0, process_count=1)
    # Training resumed at step 1: the failing batch is found past the skipped ones.
    batches = data.train_batches(1) if split == 'train' else data.eval_batches()
    with pytest.raises(BadInputError) as e:
      for _ in range(2 * data.steps_per_epoch):
        next(batches)
    message = str(e.value)
    where = 'of epoch 0' if split == 'train' else 'of the evaluation'
    assert message.startswith(
      f"TFDS dataset '{name}' (in {data_dir}/{name}/1.0.0) split '{split}': record {bad_id} "
      '(position '
    ), message
    assert f'{where}) cannot be decoded (Unknown image file format.' in message, message
    assert message.endswith('.)') and not any(s in message for s in ('\n', '{{', 'Op:', 'name:'))


def _child(tmp):
  """The checks above, in this child process (``child_checks``)."""
  os.environ[verify.ENV] = os.path.join(tmp, 'verify_cache')
  child_checks.report(CHECKS, tmp)


@pytest.fixture(scope='module')
def results(tmp_path_factory):
  return child_checks.results(__file__, tmp_path_factory.mktemp('verify'), timeout=600)


@pytest.mark.parametrize('name', list(CHECKS))
def test_decoding(results, name):
  assert results[name] == 'ok', results[name]


# ---------------------------------------------------------------------------------------- CLI


def test_hrnet_train_names_a_bad_image_and_writes_nothing(tmp_path):
  folder = make_folder(str(tmp_path / 'photos'))
  bad = pathlib.Path(folder, 'train', 'cat', 'x.jpg')
  bad.write_text('this is text\n')
  workdir = tmp_path / 'w'
  env = dict(os.environ, JAX_PLATFORMS='cpu', **{verify.ENV: str(tmp_path / 'cache')})
  env.pop('PYTHONPATH', None)  # the install, not the checkout, provides the package
  proc = subprocess.run(
    [
      str(pathlib.Path(sys.executable).parent / 'hrnet-train'),
      '--config',
      'digits',
      f'--workdir={workdir}',
      '--config.dataset.name=folder',
      '--config.dataset.folder=photos',
      '--config.input.image_size=16',
      '--config.batch_size=4',
      '--config.eval_batch_size=4',
    ],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 2, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith('hrnet-train: error:')]
  assert len(lines) == 1, proc.stderr[-3000:]
  assert lines[0].startswith(
    'hrnet-train: error: photos/train/cat/x.jpg: cannot decode (Unknown image file format.'
  ), lines
  assert lines[0].endswith(f'; set {SKIP} to skip them'), lines
  assert 'Traceback' not in proc.stderr and '{{' not in lines[0]
  assert not workdir.exists()


if __name__ == '__main__':
  _child(sys.argv[1])
