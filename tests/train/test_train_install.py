"""Recipes by name from an installed package, not from the checkout: a wheel built from the
source tree and installed with ``pip install --target``, and the editable install of this
environment. From a folder outside the checkout, ``hrnet_jax.train`` must come from the install
and the recipe ``digits`` must resolve to the installed module file and load.

The wheel is built from a copy of the source tree (the files git tracks or would track), so the
build writes no ``build/`` folder into the checkout.
"""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Run with ``python -c CHECK PACKAGE_DIR``: where hrnet_jax.train was imported from, and the
# recipe 'digits' resolved by name (as ``--config digits`` does) and loaded.
CHECK = """
import importlib.util, os, sys
import hrnet_jax.train
from hrnet_jax.train import cli, recipes
where = os.path.realpath(sys.argv[1])
init = os.path.realpath(hrnet_jax.train.__file__)
assert init.startswith(where + os.sep), init
path = cli.resolve_config('digits')
assert path == recipes.find('digits') and os.path.realpath(path).startswith(where + os.sep), path
spec = importlib.util.spec_from_file_location('_recipe', path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
config = module.get_config()
assert config.dataset.name == 'digits' and config.model == 'hrnet_w18_small', config
print('ok', path)
"""


def _env(**extra):
  env = dict(os.environ, JAX_PLATFORMS='cpu', **extra)
  if 'PYTHONPATH' not in extra:
    env.pop('PYTHONPATH', None)
  return env


def _run(cmd, cwd, env, timeout=120):
  proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, f'{cmd}\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}'
  return proc


def _copy_source(dst: pathlib.Path) -> None:
  """The files of the checkout that git tracks or would track (not ignored), into ``dst``."""
  try:
    listed = subprocess.run(
      ['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
      cwd=ROOT,
      capture_output=True,
      check=True,
    ).stdout
    names = [n for n in listed.decode().split('\0') if n]
  except (OSError, subprocess.CalledProcessError):  # not a git checkout: everything but outputs
    skip = {'.git', '.venv', 'build', 'dist', '__pycache__', '.pytest_cache'}
    names = [
      str(p.relative_to(ROOT))
      for p in ROOT.rglob('*')
      if p.is_file()
      and not skip & set(p.relative_to(ROOT).parts)
      and not any(part.endswith('.egg-info') for part in p.relative_to(ROOT).parts)
    ]
  for name in names:
    if (ROOT / name).is_file():  # listed but deleted in the work tree: left out
      (dst / name).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(ROOT / name, dst / name)


def test_wheel_install_resolves_recipes_from_the_installed_package(tmp_path):
  src, dist, site, elsewhere = (tmp_path / d for d in ('src', 'dist', 'site', 'elsewhere'))
  elsewhere.mkdir()
  _copy_source(src)
  pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check', '-q']
  _run(
    pip + ['wheel', '--no-deps', '--no-build-isolation', '-w', str(dist), str(src)],
    tmp_path,
    _env(),
  )
  wheels = sorted(dist.glob('hrnet_jax-*.whl'))
  assert len(wheels) == 1, wheels
  _run(pip + ['install', '--no-deps', '--target', str(site), str(wheels[0])], tmp_path, _env())
  assert (site / 'hrnet_jax' / 'train' / 'recipes' / 'digits.py').is_file()
  env = _env(PYTHONPATH=str(site))
  proc = _run([sys.executable, '-c', CHECK, str(site)], elsewhere, env)
  assert proc.stdout.startswith('ok ')
  # The console script of that install, with the recipe by name: absl parses --config (loading
  # the recipe) before --help prints and exits 0.
  script = site / 'bin' / 'hrnet-train'
  if not script.exists():
    pytest.fail(f'{script}: pip install --target wrote no console script')
  proc = _run([str(script), '--config', 'digits', '--help'], elsewhere, env)
  assert '--workdir' in proc.stdout


def test_editable_install_resolves_recipes_from_the_checkout(tmp_path):
  proc = _run([sys.executable, '-c', CHECK, str(ROOT / 'train')], tmp_path, _env())
  assert proc.stdout.startswith('ok ')
