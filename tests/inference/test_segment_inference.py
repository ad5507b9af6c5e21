"""Parity of ``hrnet_jax.inference.segment`` with mmseg's own inference code, in eval mode, on
a converted mmseg ``fcn_hr18s`` (random weights, BatchNorm statistics and biases):

- ``whole_logits`` = ``EncoderDecoder.whole_inference`` at an input size not divisible by 4;
- ``slide_logits`` = ``EncoderDecoder.slide_inference`` on 96x80 with 64x64 crops every 42x42
  (overlapping windows, the last of each axis moved back to the border);
- ``tta_probs`` at scale 0.75 with flip = the softmax mean of mmseg's per-view
  ``predict`` (``postprocess_result``: flip back, resize to ``ori_shape``), and its argmax =
  ``SegTTAModel.merge_preds``; the scaled views are made by PyTorch's ``F.interpolate``;
- ``rescaled_size`` = the image size mmcv ``Resize(scale_factor=r, keep_ratio=True)`` gives.

All under ``jit`` (as the evaluation runs them); logits to 1e-5 x max(|ref|, 10).
"""

import functools

import jax.numpy as jnp
import mm_models
import numpy as np
import pytest
import torch
from flax import nnx
from oracles import assert_close, inputs

import hrnet_jax
from hrnet_jax.inference import segment

NUM_CLASSES = 4


@pytest.fixture(scope='module')
def models(tmp_path_factory):
  """(mmseg EncoderDecoder, our model from its converted checkpoint), both in eval mode."""
  reference, folder = mm_models.mmseg_fcn_hr18s(
    tmp_path_factory.mktemp('fcn_hr18s'), NUM_CLASSES, seed=21
  )
  return reference, hrnet_jax.load_pretrained(folder)


def _nchw(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def _metas(hw, **extra):
  return [
    dict(ori_shape=hw, img_shape=hw, pad_shape=hw, padding_size=[0, 0, 0, 0], **extra)
    for _ in range(2)
  ]


def test_whole_logits_equals_mmseg_whole_inference(models, parity_log):
  reference, model = models
  x = inputs(2, 66, 70, seed=22)  # stride-4 logits 17x18, resized back to 66x70
  with torch.no_grad():
    ref = reference.whole_inference(_nchw(x), _metas((66, 70))).numpy().transpose(0, 2, 3, 1)
  out = nnx.jit(segment.whole_logits)(model, jnp.asarray(x))
  diff = assert_close(out, ref, 'whole_logits 66x70')
  parity_log('mmseg fcn_hr18s whole 66x70', 'logits', diff, float(np.abs(ref).max()))


def test_slide_logits_equals_mmseg_slide_inference(models, parity_log):
  from mmengine.config import ConfigDict

  reference, model = models
  crop, stride = (64, 64), (42, 42)
  assert segment.slide_windows((96, 80), crop, stride) == [
    (0, 64, 0, 64),
    (0, 64, 16, 80),
    (32, 96, 0, 64),
    (32, 96, 16, 80),
  ]
  x = inputs(2, 96, 80, seed=23)
  reference.test_cfg = ConfigDict(mode='slide', crop_size=crop, stride=stride)
  with torch.no_grad():
    ref = reference.slide_inference(_nchw(x), _metas((96, 80))).numpy().transpose(0, 2, 3, 1)
  slide = nnx.jit(
    functools.partial(segment.slide_logits, num_classes=NUM_CLASSES, crop_hw=crop, stride_hw=stride)
  )
  diff = assert_close(slide(model, jnp.asarray(x)), ref, 'slide_logits 96x80')
  parity_log('mmseg fcn_hr18s slide 96x80 crop 64', 'logits', diff, float(np.abs(ref).max()))
  with pytest.raises(ValueError, match='3 classes, not 4'):
    segment.slide_logits(
      lambda images: images[:, ::4, ::4],  # a stand-in model with 3 outputs
      jnp.asarray(x),
      num_classes=NUM_CLASSES,
      crop_hw=crop,
      stride_hw=stride,
    )


def test_tta_probs_equal_mmseg_flip_and_scale_test(models, parity_log):
  import torch.nn.functional as F
  from mmseg.models import SegTTAModel
  from mmseg.structures import SegDataSample

  reference, model = models
  x = inputs(2, 66, 70, seed=24)
  out_hw = (80, 84)  # the original (label) size every view is resized to
  scales = (0.75,)  # 1.0 is the whole-image view: its own test
  views = [[], []]  # per image, its data samples of every view (mmseg TestTimeAug order)
  for ratio in scales:
    size = segment.rescaled_size((66, 70), ratio)
    xt = _nchw(x)
    if size != (66, 70):
      xt = F.interpolate(xt, size=size, mode='bilinear', align_corners=False)
    for flip in (False, True):
      samples = []
      for meta in _metas(size, flip=flip, flip_direction='horizontal'):
        meta['ori_shape'] = out_hw
        samples.append(SegDataSample(metainfo=meta))
      reference.test_cfg.mode = 'whole'
      with torch.no_grad():
        predicted = reference.predict(xt.flip(dims=(3,)) if flip else xt, samples)
      for i, sample in enumerate(predicted):
        sample.set_metainfo({'img_path': f'{i}.png'})
        views[i].append(sample)
  ref_probs = np.stack(
    [
      np.mean([v.seg_logits.data.softmax(dim=0).numpy() for v in image_views], axis=0)
      for image_views in views
    ]
  ).transpose(0, 2, 3, 1)
  ref_labels = np.stack(
    [p.pred_sem_seg.data[0].numpy() for p in SegTTAModel(module=reference).merge_preds(views)]
  )

  tta = functools.partial(
    segment.tta_probs, num_classes=NUM_CLASSES, out_size_hw=out_hw, scales=scales, flip=True
  )
  probs = nnx.jit(tta)(model, jnp.asarray(x))
  assert probs.shape == (2, *out_hw, NUM_CLASSES)
  diff = float(np.abs(np.asarray(probs) - ref_probs).max())
  assert diff <= 1e-5, f'tta_probs: max abs diff {diff:.3g}'
  parity_log('mmseg fcn_hr18s TTA 0.75 + flip', 'probabilities', diff, 1.0)
  labels = np.asarray(segment.predict_labels(probs))
  top2 = np.sort(ref_probs, axis=-1)[..., -2:]
  decided = top2[..., 1] - top2[..., 0] > 1e-5  # where a 1e-6 difference cannot flip the argmax
  assert decided.mean() > 0.99
  np.testing.assert_array_equal(labels[decided], ref_labels[decided])


@pytest.mark.parametrize('hw', [(1024, 2048), (333, 500), (66, 70), (512, 512), (97, 13)])
def test_rescaled_size_equals_mmcv_resize(hw):
  from mmcv.transforms import Resize

  for ratio in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 0.3):
    out = Resize(scale_factor=ratio, keep_ratio=True)({'img': np.zeros((*hw, 3), np.uint8)})
    assert segment.rescaled_size(hw, ratio) == tuple(out['img_shape']), (hw, ratio)
  with pytest.raises(ValueError, match='positive'):
    segment.rescaled_size(hw, 0.0)


def test_view_logits_refuses_bad_modes():
  identity = lambda images: images  # never reached
  x = jnp.zeros((1, 32, 32, 3))
  with pytest.raises(ValueError, match='inference mode'):
    segment.view_logits(identity, x, num_classes=NUM_CLASSES, mode='sliding')
  with pytest.raises(ValueError, match='crop_hw and stride_hw'):
    segment.view_logits(identity, x, num_classes=NUM_CLASSES, mode='slide')
  with pytest.raises(ValueError, match='must be positive'):
    segment.slide_windows((32, 32), (0, 32), (16, 16))
