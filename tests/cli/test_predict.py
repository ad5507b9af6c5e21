"""hrnet-predict CLI end to end on a small random-weight checkpoint (64x64 input to stay cheap)."""

import json

import numpy as np
import pytest
import skimage.data
from flax import nnx
from PIL import Image

import hrnet_jax
from hrnet_jax.cli.predict import main
from hrnet_jax.data.imagenet import imagenet_class_names
from hrnet_jax.data.transforms import preprocess
from hrnet_jax.pretrained import get_pretrained_cfg


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
  model = hrnet_jax.create_model('hrnet_w18_small', rngs=nnx.Rngs(3))
  cfg = get_pretrained_cfg('hrnet_w18_small.ms_in1k').to_dict()
  cfg['input_size'] = [3, 64, 64]  # the CLI must honour the checkpoint's cfg
  out = tmp_path_factory.mktemp('ckpt') / 'hrnet_w18_small'
  hrnet_jax.save_pretrained(model, out, pretrained_cfg=cfg)
  return out


@pytest.fixture(scope='module')
def images(tmp_path_factory):
  d = tmp_path_factory.mktemp('imgs')
  Image.fromarray(skimage.data.chelsea()).save(d / 'cat.jpg', quality=95)
  Image.fromarray(skimage.data.camera()).save(d / 'gray.png')
  rgba = np.dstack([skimage.data.coffee(), np.full((400, 600), 128, np.uint8)])
  Image.fromarray(rgba, 'RGBA').save(d / 'rgba.png')
  exif = Image.Exif()
  exif[0x0112] = 6
  Image.fromarray(skimage.data.rocket()).save(d / 'exif.jpg', exif=exif.tobytes())
  (d / 'broken.jpg').write_bytes(b'\xff\xd8 definitely not a jpeg')
  return d


def _good(images):
  return [str(images / n) for n in ('cat.jpg', 'gray.png', 'rgba.png', 'exif.jpg')]


def test_json_probabilities_match_direct_forward(ckpt, images, capsys):
  paths = _good(images)
  rc = main(['--checkpoint', str(ckpt), *paths, '--json', '--top-k', '4', '--batch-size', '3'])
  out, err = capsys.readouterr()
  assert rc == 0, err
  doc = json.loads(out)
  assert doc['arch'] == 'hrnet_w18_small'
  assert doc['pretrained_tag'] == 'hrnet_w18_small.ms_in1k'
  assert [r['image'] for r in doc['results']] == paths

  # Independent reference: same preprocessing and model, eager forward, numpy softmax.
  model = hrnet_jax.load_pretrained(ckpt)
  x = preprocess(paths, model.pretrained_cfg)
  assert x.shape == (4, 64, 64, 3)
  logits = np.asarray(model(x), np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  names = imagenet_class_names()
  for r, p in zip(doc['results'], probs):
    top = r['top_k']
    assert [t['index'] for t in top] == list(np.argsort(-p)[:4])
    np.testing.assert_allclose([t['prob'] for t in top], np.sort(p)[::-1][:4], atol=1e-5)
    assert [t['label'] for t in top] == [names[t['index']] for t in top]


def test_table_output_and_partial_failure(ckpt, images, capsys):
  broken = str(images / 'broken.jpg')
  cat = str(images / 'cat.jpg')
  rc = main(
    [
      '--checkpoint',
      str(ckpt),
      cat,
      broken,
      str(images / 'gray.png'),
      '--top-k',
      '3',
      '--batch-size',
      '1',
    ]
  )
  out, err = capsys.readouterr()
  assert rc == 1
  assert 'broken.jpg' in err and 'cat.jpg' not in err
  lines = out.splitlines()
  assert lines[0] == cat and broken not in out
  rows = lines[1:4]
  assert [r.split('.')[0].strip() for r in rows] == ['1', '2', '3']
  pcts = [float(r.split('%')[0].split()[-1]) for r in rows]
  assert pcts == sorted(pcts, reverse=True) and 0 < pcts[0] <= 100
  assert any(n in rows[0] for n in imagenet_class_names())


def test_batch_size_does_not_change_results(ckpt, images, capsys):
  paths = _good(images)
  docs = []
  for bs in ('1', '4'):
    assert main(['--checkpoint', str(ckpt), *paths, '--json', '--batch-size', bs]) == 0
    docs.append(json.loads(capsys.readouterr().out))
  for a, b in zip(docs[0]['results'], docs[1]['results']):
    assert [t['index'] for t in a['top_k']] == [t['index'] for t in b['top_k']]
    np.testing.assert_allclose(
      [t['prob'] for t in a['top_k']], [t['prob'] for t in b['top_k']], atol=1e-5
    )


def test_all_images_fail_gives_exit_1(ckpt, images, capsys):
  rc = main(
    ['--checkpoint', str(ckpt), str(images / 'broken.jpg'), str(images / 'nope.png'), '--json']
  )
  out, err = capsys.readouterr()
  assert rc == 1
  doc = json.loads(out)
  assert all('error' in r and 'top_k' not in r for r in doc['results'])
  assert 'nope.png' in err and 'broken.jpg' in err


def test_usage_errors_exit_2(tmp_path, images, capsys):
  missing = tmp_path / 'no_such_ckpt'
  assert main(['--checkpoint', str(missing), str(images / 'cat.jpg')]) == 2
  assert str(missing) in capsys.readouterr().err
  assert main(['--checkpoint', str(tmp_path), str(images / 'cat.jpg')]) == 2  # not a ckpt
  assert str(tmp_path) in capsys.readouterr().err
  assert main(['--checkpoint', str(tmp_path)]) == 2  # no images
  assert main(['--checkpoint', str(tmp_path), 'x.jpg', '--top-k', '0']) == 2
  assert main([str(images / 'cat.jpg')]) == 2  # --checkpoint missing
  assert main(['--help']) == 0
  assert '--checkpoint' in capsys.readouterr().out


class _TinyClassifier(nnx.Module):
  """Stand-in model with 10 classes and no pretrained cfg (exercises both fallbacks)."""

  def __init__(self, seen_shapes):
    self.lin = nnx.Linear(3, 10, rngs=nnx.Rngs(0))
    self.arch = 'hrnet_w18'
    self.pretrained_cfg = None
    self._seen = seen_shapes  # outside list: appended to while jit traces

  def __call__(self, x):
    self._seen.append(tuple(x.shape))
    return self.lin(x.mean(axis=(1, 2)))


def test_non_imagenet_head_prints_indices_and_default_cfg(monkeypatch, tmp_path, images, capsys):
  seen = []
  tiny = _TinyClassifier(seen)
  monkeypatch.setattr(hrnet_jax, 'load_pretrained', lambda d: tiny)
  (tmp_path / 'config.json').write_text('{}')  # a checkpoint folder to --checkpoint
  rc = main(['--checkpoint', str(tmp_path), str(images / 'cat.jpg'), '--json', '--top-k', '20'])
  doc = json.loads(capsys.readouterr().out)
  assert rc == 0
  top = doc['results'][0]['top_k']
  assert len(top) == 10  # clamped to num_classes
  assert [t['label'] for t in top] == [str(t['index']) for t in top]
  assert sorted(t['index'] for t in top) == list(range(10))
  assert abs(sum(t['prob'] for t in top) - 1.0) < 1e-6
  assert doc['pretrained_tag'] == 'hrnet_w18.ms_aug_in1k'  # arch default when cfg is None
  assert seen and seen[0][1:] == (224, 224, 3)


def test_recorded_class_names_label_the_classes(monkeypatch, tmp_path, images, capsys):
  # Issue 23: a 3-class fine-tune printed "1. 2  38.130%  (class 2)" instead of its names.
  tiny = _TinyClassifier([])
  names = [f'class-{c}' for c in 'abcdefghij']
  tiny.pretrained_cfg = {'class_names': names}
  monkeypatch.setattr(hrnet_jax, 'load_pretrained', lambda d: tiny)
  (tmp_path / 'config.json').write_text('{}')
  assert main(['--checkpoint', str(tmp_path), str(images / 'cat.jpg'), '--top-k', '3']) == 0
  rows = capsys.readouterr().out.splitlines()[1:]
  assert len(rows) == 3
  for row in rows:
    index = int(row.split('(class ')[1].rstrip(')'))
    assert row.split()[1] == names[index], row
  tiny.pretrained_cfg = {'class_names': names[:3]}  # not one per class: refused, file named
  assert main(['--checkpoint', str(tmp_path), str(images / 'cat.jpg')]) == 2
  err = capsys.readouterr().err
  assert f'{tmp_path / "config.json"}: pretrained_cfg.class_names has 3 names' in err, err
