"""The persistent compilation cache of the CLIs: directory rules, and a second ``hrnet-predict``
process that loads its executable from the cache instead of compiling it."""

import json
import os
import subprocess
import sys

import pytest
from flax import nnx

import hrnet_jax
from hrnet_jax.pretrained import get_pretrained_cfg
from hrnet_jax.runtime import compile_cache


def test_resolve_dir_rules(tmp_path):
  xdg = {'XDG_CACHE_HOME': str(tmp_path / 'xdg')}
  assert compile_cache.resolve_dir({}) == compile_cache.default_dir()
  assert compile_cache.resolve_dir({compile_cache.ENV: str(tmp_path / 'c')}) == str(tmp_path / 'c')
  assert compile_cache.resolve_dir({compile_cache.JAX_ENV: str(tmp_path / 'j')}) == str(
    tmp_path / 'j'
  )
  both = {compile_cache.ENV: str(tmp_path / 'c'), compile_cache.JAX_ENV: str(tmp_path / 'j')}
  assert compile_cache.resolve_dir(both) == str(tmp_path / 'c')  # ours wins
  for off in ('off', 'OFF', '0', '', 'none', ' false '):
    assert compile_cache.resolve_dir({compile_cache.ENV: off, **xdg}) is None
  assert compile_cache.resolve_dir({compile_cache.ENV: '~/x'}) == os.path.expanduser('~/x')


def test_default_dir_follows_xdg(monkeypatch, tmp_path):
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  assert compile_cache.default_dir() == str(tmp_path / 'hrnet_jax' / 'jax')
  monkeypatch.delenv('XDG_CACHE_HOME')
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  assert compile_cache.default_dir() == str(tmp_path / 'home' / '.cache' / 'hrnet_jax' / 'jax')


# Runs hrnet-predict's main() and prints the number of persistent-cache hits JAX reported.
_PREDICT = """
import json, sys
import jax.monitoring
hits = []
jax.monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name == '/jax/compilation_cache/cache_hits' else None)
from hrnet_jax.cli.predict import main
rc = main(sys.argv[1:])
print(json.dumps({'rc': rc, 'hits': len(hits)}))
"""


def _predict(args, env):
  out = subprocess.run(
    [sys.executable, '-c', _PREDICT, *args], env=env, capture_output=True, text=True, timeout=600
  )
  assert out.returncode == 0, out.stderr[-2000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_predict_process_hits_the_cache(tmp_path):
  import numpy as np
  import skimage.data
  from PIL import Image

  model = hrnet_jax.create_model('hrnet_w18_small', rngs=nnx.Rngs(0))
  cfg = get_pretrained_cfg('hrnet_w18_small.ms_in1k').to_dict()
  cfg['input_size'] = [3, 32, 32]  # smallest input: the compile stays cheap
  ckpt = tmp_path / 'ckpt'
  hrnet_jax.save_pretrained(model, ckpt, pretrained_cfg=cfg)
  Image.fromarray(skimage.data.chelsea()).save(tmp_path / 'cat.png')
  cache = tmp_path / 'cache'
  env = {**os.environ, compile_cache.ENV: str(cache), 'JAX_PLATFORMS': 'cpu'}
  args = ['--checkpoint', str(ckpt), str(tmp_path / 'cat.png'), '--json']

  first = _predict(args, env)
  entries = sorted(p.name for p in cache.iterdir())
  assert first['hits'] == 0 and entries, (first, entries)
  second = _predict(args, env)
  assert second['hits'] >= 1, second
  assert sorted(p.name for p in cache.iterdir()) == entries  # nothing recompiled
