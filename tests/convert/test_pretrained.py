"""Pretrained cfgs vs timm's registry (hrnet.py default_cfgs), the weights' sources vs their
publishers' model zoos, and the ImageNet class names."""

import importlib.util
import json
import pathlib

import pytest
import timm  # test extra: the oracle for every check below

from hrnet_jax.data.imagenet import imagenet_class_names
from hrnet_jax.models.dense import DENSE_CONFIGS
from hrnet_jax.pretrained import (
  PretrainedCfg,
  default_tag,
  get_pretrained_cfg,
  hub,
  list_pretrained,
)

TIMM_TAGS = timm.list_pretrained('hrnet*')
TIMM_ARCHS = timm.list_models('hrnet*')


def test_every_timm_tag_is_listed():
  assert len(TIMM_TAGS) == 14
  timm_tags = [t for t in list_pretrained() if get_pretrained_cfg(t).preprocess == 'timm']
  assert sorted(timm_tags) == sorted(TIMM_TAGS)


@pytest.mark.parametrize('tag', TIMM_TAGS)
def test_cfg_matches_timm(tag):
  ref = timm.models.get_pretrained_cfg(tag)
  cfg = get_pretrained_cfg(tag)
  assert cfg.tag == tag
  assert cfg.arch == tag.split('.')[0]
  assert cfg.hf_hub_id == ref.hf_hub_id == 'timm/' + tag
  assert cfg.num_classes == ref.num_classes
  assert cfg.input_size == tuple(ref.input_size)
  assert cfg.crop_pct == ref.crop_pct
  assert cfg.interpolation == ref.interpolation
  assert cfg.mean == tuple(ref.mean)
  assert cfg.std == tuple(ref.std)
  assert cfg.test_input_size == (tuple(ref.test_input_size) if ref.test_input_size else None)
  assert cfg.test_crop_pct == ref.test_crop_pct
  assert cfg.license == ref.license
  assert 70.0 < cfg.top1 < 85.0 and cfg.top1 < cfg.top5 < 100.0


@pytest.mark.parametrize('arch', TIMM_ARCHS)
def test_bare_arch_resolves_to_timm_default_tag(arch):
  ref = timm.models.get_pretrained_cfg(arch)  # timm: first tag in default_cfgs
  cfg = get_pretrained_cfg(arch)
  assert cfg.hf_hub_id == ref.hf_hub_id
  assert default_tag(arch) == cfg.tag
  assert cfg.tag in list_pretrained(arch)


def test_known_defaults_and_values():
  assert get_pretrained_cfg('hrnet_w18').tag == 'hrnet_w18.ms_aug_in1k'
  assert get_pretrained_cfg('hrnet_w18_small').tag == 'hrnet_w18_small.gluon_in1k'
  assert list_pretrained('hrnet_w18') == [
    'hrnet_w18.ms_aug_in1k',
    'hrnet_w18.ms_in1k',
    'hrnet_w18.paddleclas_in1k',
    'hrnet_w18.paddleclas_ssld_in1k',
  ]
  assert get_pretrained_cfg('timm/hrnet_w18.ms_in1k').tag == 'hrnet_w18.ms_in1k'
  aug = get_pretrained_cfg('hrnet_w18.ms_aug_in1k')
  assert (aug.crop_pct, aug.top1, aug.top5) == (0.95, 78.110, 94.062)
  ssld = get_pretrained_cfg('hrnet_w48_ssld.paddle_in1k')
  assert ssld.test_input_size == (3, 288, 288) and ssld.test_crop_pct == 1.0
  assert (ssld.top1, ssld.test_top1) == (83.656, 84.484)
  assert get_pretrained_cfg('hrnet_w64.ms_in1k').test_crop_pct is None


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match='hrnet_w18.ms_aug_in1k') as e:
    get_pretrained_cfg('hrnet_w99')
  assert 'hrnet_w99' in str(e.value) and 'hrnet_w48_ssld' in str(e.value)
  with pytest.raises(ValueError, match='hrnet_w99'):
    list_pretrained('hrnet_w99')
  with pytest.raises(ValueError):
    get_pretrained_cfg('hrnet_w18.imagenet22k')


def test_dict_round_trip_through_json():
  for tag in list_pretrained():
    cfg = get_pretrained_cfg(tag)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert isinstance(d['input_size'], list)
    assert PretrainedCfg.from_dict(d) == cfg


def test_from_dict_accepts_timm_cfg_and_rejects_bad():
  ref = timm.models.get_pretrained_cfg('hrnet_w18_ssld.paddle_in1k').to_dict()
  ref['tag'] = 'hrnet_w18_ssld.paddle_in1k'  # timm's dict carries the tag separately
  cfg = PretrainedCfg.from_dict(ref)  # extra keys (pool_size, first_conv, ...) ignored
  assert cfg.arch == 'hrnet_w18_ssld' and cfg.test_input_size == (3, 288, 288)
  assert cfg.hf_hub_id == 'timm/' + ref['tag']
  with pytest.raises(ValueError, match='tag'):
    PretrainedCfg.from_dict({'crop_pct': 0.9})
  with pytest.raises(ValueError, match='mean'):
    PretrainedCfg.from_dict({'tag': 'x.y', 'mean': [0.5, 0.5]})


def test_cfg_is_frozen():
  cfg = get_pretrained_cfg('hrnet_w18')
  with pytest.raises(Exception):
    cfg.crop_pct = 1.0


def test_imagenet_class_names():
  names = imagenet_class_names()
  assert len(names) == 1000 and len(set(names)) == 1000
  assert names[0] == 'tench'
  assert names[1] == 'goldfish'
  assert names[207] == 'golden retriever'
  assert names[281] == 'tabby'
  assert names[954] == 'banana'
  assert names[999] == 'toilet tissue'
  assert (names[134], names[517]) == ('crane (bird)', 'crane (machine)')
  assert all(n == n.strip() and n for n in names)
  names.append('x')  # a caller mutating its copy must not corrupt the cache
  assert len(imagenet_class_names()) == 1000


def test_class_names_follow_timm_synset_order():
  info = timm.data.ImageNetInfo()
  names = imagenet_class_names()
  for i in range(1000):
    lemmas = [s.strip() for s in info.index_to_description(i).split(',')]
    assert names[i].split(' (')[0] in lemmas, (i, names[i], lemmas)


def _package_file(package: str, relative: str) -> str:
  """A file of an installed package, read without importing it."""
  (folder,) = importlib.util.find_spec(package).submodule_search_locations
  return (pathlib.Path(folder) / relative).read_text()


@pytest.mark.parametrize('arch', TIMM_ARCHS)
def test_one_default_tag_rule_is_timms(arch):
  ref = timm.models.get_pretrained_cfg(arch)
  assert hub.default_weights_tag(arch) == default_tag(arch)
  assert hub.resolve_source(arch).location == ref.hf_hub_id  # the repo timm downloads


def test_url_sources_are_the_publishers():
  """Every URL source is the one its publisher's installed model zoo gives: mmseg's and mmpose's
  metafiles, PaddleClas's MODEL_URLS (ssld files by its own ``_set_ssld_pretrained`` rule)."""
  zoo = '\n'.join(
    [
      _package_file('mmseg', '.mim/configs/hrnet/metafile.yaml'),
      _package_file('mmpose', '.mim/configs/body_2d_keypoint/topdown_heatmap/coco/hrnet_coco.yml'),
      _package_file(
        'mmpose', '.mim/configs/face_2d_keypoint/topdown_heatmap/wflw/hrnetv2_wflw.yml'
      ),
    ]
  )
  paddle = _package_file('paddleclas', 'ppcls/arch/backbone/legendary_models/hrnet.py')
  dense = [t for t in hub.URLS if t.split('.')[0] in DENSE_CONFIGS]
  # mmdet's pyramid models (no URL source yet) and hrnet_w18_small_pose (nobody publishes one)
  # aside, every dense model has its publisher's.
  assert {t.split('.')[0] for t in dense} == {
    n for n, c in DENSE_CONFIGS.items() if c.task != 'detect'
  } - {'hrnet_w18_small_pose'}
  for tag, url in hub.URLS.items():
    if tag in dense:
      assert f'Weights: {url}' in zoo, tag
    else:
      plain = url.replace('_ssld_pretrained', '_pretrained')
      assert f'"{plain}"' in paddle, tag
      assert ('ssld' in tag) == (url != plain)
      assert hub.resolve_source(get_pretrained_cfg(tag).paddleclas_name).location == url
  assert hub.default_weights_tag('hrnetv2_w18_seg') == 'hrnetv2_w18_seg.mmseg_cityscapes'
