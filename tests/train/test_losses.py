"""Parity of the dense losses with the oracles' own code.

- ``pixel_cross_entropy`` on the train-mode logits of a converted mmseg ``fcn_hr18s`` (random
  weights, BatchNorm statistics and biases; ``hrnetv2_w18_small_seg``) equals that model's
  ``EncoderDecoder.loss(...)['decode.loss_ce']`` in train mode (batch-statistics BatchNorm);
- on random logits, every option (``avg_non_ignore``, ``class_weight``, OHEM with and without a
  threshold) equals mmseg ``FCNHead.loss_by_feat`` built with that ``CrossEntropyLoss`` /
  ``OHEMPixelSampler``, under ``jax.jit``;
- ``keypoint_mse`` equals mmpose ``KeypointMSELoss``.

All relative to 1e-5.
"""

import functools

import jax
import jax.numpy as jnp
import mm_models
import numpy as np
import pytest
import torch
from oracles import inputs

import hrnet_jax
from hrnet_jax.train.losses import keypoint_mse, ohem_pixel_weights, pixel_cross_entropy

NUM_CLASSES = 5


def _labels(shape, seed, ignore=0.15, num_classes=NUM_CLASSES):
  rs = np.random.RandomState(seed)
  labels = rs.randint(0, num_classes, shape)
  labels[rs.rand(*shape) < ignore] = 255
  return labels


@pytest.fixture(scope='module')
def fcn_hr18s(tmp_path_factory):
  """(mmseg EncoderDecoder, its converted release folder)."""
  return mm_models.mmseg_fcn_hr18s(tmp_path_factory.mktemp('fcn_hr18s'), NUM_CLASSES, seed=11)


def test_pixel_cross_entropy_equals_mmseg_encoder_decoder_loss(fcn_hr18s):
  reference, folder = fcn_hr18s
  x = inputs(2, 64, 64, seed=12)
  labels = _labels((2, 64, 64), seed=13)
  reference.train()  # batch-statistics BatchNorm, as a train step
  ref = reference.loss(
    torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), mm_models.seg_data_samples(labels)
  )
  ref = float(ref['decode.loss_ce'])

  model = hrnet_jax.create_model('hrnetv2_w18_small_seg', pretrained=folder)  # train mode
  logits = model(jnp.asarray(x))  # eager: compiles faster than a train-mode jit here
  assert logits.shape == (2, 16, 16, NUM_CLASSES)
  ours = float(pixel_cross_entropy(logits, jnp.asarray(labels)))
  assert abs(ours - ref) <= 1e-5 * abs(ref), (ours, ref)


def _mmseg_head_loss(logits_nhwc, labels, loss_decode, sampler=None):
  head_cfg = dict(
    type='FCNHead',
    in_channels=4,
    channels=4,
    num_convs=1,
    concat_input=False,
    dropout_ratio=-1,
    num_classes=logits_nhwc.shape[-1],
    norm_cfg=dict(type='BN'),
    align_corners=False,
    loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, **loss_decode),
    sampler=sampler,
  )
  head = mm_models.build('mmseg', head_cfg)
  seg_logits = torch.from_numpy(logits_nhwc.transpose(0, 3, 1, 2).copy())
  return float(head.loss_by_feat(seg_logits, mm_models.seg_data_samples(labels))['loss_ce'])


CLASS_WEIGHT = [0.5, 1.0, 2.0, 0.8, 1.5]


@pytest.mark.parametrize(
  'loss_decode, sampler, ignore',
  [
    ({}, None, 0.2),
    ({'avg_non_ignore': True}, None, 0.2),
    # mmseg indexes class_weight with every label (ignored ones too): no ignored pixel.
    ({'class_weight': CLASS_WEIGHT}, None, 0.0),
    ({'class_weight': CLASS_WEIGHT, 'avg_non_ignore': True}, None, 0.0),
    ({}, {'thresh': 0.7, 'min_kept': 40}, 0.2),  # the threshold decides
    ({'avg_non_ignore': True}, {'thresh': 0.05, 'min_kept': 300}, 0.2),  # min_kept decides
    ({}, {'thresh': None, 'min_kept': 100}, 0.2),  # the 200 largest losses
    ({'class_weight': CLASS_WEIGHT}, {'thresh': None, 'min_kept': 150}, 0.0),
  ],
)
def test_pixel_cross_entropy_options_equal_mmseg_decode_head(loss_decode, sampler, ignore):
  rs = np.random.RandomState(21)
  logits = (rs.randn(2, 7, 9, NUM_CLASSES) * 2).astype(np.float32)
  labels = _labels((2, 26, 35), seed=22, ignore=ignore)  # a non-integer resize factor
  ref = _mmseg_head_loss(
    logits,
    labels,
    loss_decode,
    None if sampler is None else dict(type='OHEMPixelSampler', **sampler),
  )
  loss = jax.jit(
    functools.partial(
      pixel_cross_entropy,
      avg_non_ignore=loss_decode.get('avg_non_ignore', False),
      class_weight=loss_decode.get('class_weight'),
      ohem=sampler,
    )
  )
  ours = float(loss(jnp.asarray(logits), jnp.asarray(labels)))
  assert abs(ours - ref) <= 1e-5 * abs(ref), (ours, ref)


def test_ohem_keeps_what_mmseg_keeps():
  """The OHEM weights themselves, pixel by pixel, against mmseg's sampler."""
  from mmseg.structures import build_pixel_sampler

  rs = np.random.RandomState(31)
  logits = (rs.randn(2, 12, 10, NUM_CLASSES) * 2).astype(np.float32)
  labels = _labels((2, 12, 10), seed=32)
  context = type('Head', (), {'ignore_index': 255})()
  for thresh, min_kept in ((0.6, 20), (0.01, 50), (0.3, 200)):
    sampler = build_pixel_sampler(
      dict(type='OHEMPixelSampler', thresh=thresh, min_kept=min_kept), context=context
    )
    ref = sampler.sample(
      torch.from_numpy(logits.transpose(0, 3, 1, 2).copy()), torch.from_numpy(labels[:, None])
    ).numpy()
    ours = ohem_pixel_weights(
      jnp.asarray(logits), jnp.asarray(labels), thresh=thresh, min_kept=min_kept
    )
    np.testing.assert_array_equal(np.asarray(ours), ref, err_msg=f'thresh {thresh}')
  with pytest.raises(ValueError, match='min_kept'):
    ohem_pixel_weights(jnp.asarray(logits), jnp.asarray(labels), min_kept=1)
  with pytest.raises(ValueError, match='ohem keys'):
    pixel_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), ohem={'threshold': 0.7})


def test_keypoint_mse_equals_mmpose():
  from mmpose.models.losses import KeypointMSELoss

  rs = np.random.RandomState(41)
  heatmaps = rs.rand(3, 16, 12, 7).astype(np.float32)
  targets = rs.rand(3, 16, 12, 7).astype(np.float32)
  weights = rs.rand(3, 7).astype(np.float32)
  weights[0, 2] = weights[2, 5] = 0.0
  nchw = lambda a: torch.from_numpy(a.transpose(0, 3, 1, 2).copy())
  for use_weight in (True, False):
    ref = float(
      KeypointMSELoss(use_target_weight=use_weight)(
        nchw(heatmaps), nchw(targets), torch.from_numpy(weights) if use_weight else None
      )
    )
    ours = float(
      keypoint_mse(
        jnp.asarray(heatmaps), jnp.asarray(targets), jnp.asarray(weights) if use_weight else None
      )
    )
    assert abs(ours - ref) <= 1e-5 * abs(ref), (use_weight, ours, ref)
  with pytest.raises(ValueError, match='target_weights'):
    keypoint_mse(jnp.asarray(heatmaps), jnp.asarray(targets), jnp.ones((3, 6)))
