"""The command lines' surface and the process-wide pieces under them: recipes by name or file
(``--config digits``, ``--config FILE[:ARG]``), the one-line error for neither, ``--help``
exiting 0 with the flags listed, ``sigterm_polled`` inside and outside ``interrupts_raise``, one
module calling ``signal.signal``, and no import cycle in ``hrnet_jax.train``.

The CLIs run as subprocesses from a folder outside the checkout, as users run them.
"""

import ast
import os
import pathlib
import signal
import subprocess
import sys
import threading

import ml_collections  # noqa: F401  (the train extra; a missing install must fail, not skip)
import pytest

from hrnet_jax import interrupts  # noqa: E402
from hrnet_jax.errors import Terminated  # noqa: E402
from hrnet_jax.train import cli, recipes  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
RECIPES = (
  'base',
  'digits',
  'finetune',
  'imagenet_cosine',
  'imagenet_official',
  'pose',
  'pose_coco_hrnet_w32_256x192',
  'pose_coco_hrnet_w32_384x288',
  'pose_coco_hrnet_w48_256x192',
  'pose_scenes',
  'seg_ade20k_hrnetv2_w18',
  'seg_cityscapes_hrnetv2_w18',
  'seg_cityscapes_hrnetv2_w48',
  'seg_digit_scenes',
  'segment',
)
TRAIN_FLAGS = (
  '--config',
  '--workdir',
  '--distributed',
  '--coordinator_address',
  '--num_processes',
  '--process_id',
  '--verbose',
)
EVAL_FLAGS = (
  '--checkpoint',
  '--dataset',
  '--split',
  '--data_dir',
  '--batch_size',
  '--step',
  '--image_size',
  '--crop_pct',
  '--json',
  '--verbose',
)


def _script(name):
  """The console script ``name`` of this environment."""
  path = pathlib.Path(sys.executable).parent / name
  assert path.exists(), f'{path}: the console script is not installed (pip install -e .)'
  return str(path)


def _run(cmd, cwd, timeout=300):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('PYTHONPATH', None)  # the install, not the checkout, provides the package
  return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------ recipe names


def test_recipe_names_resolve_to_the_package_modules():
  assert recipes.names() == RECIPES
  digits = recipes.find('digits')
  assert digits == str(ROOT / 'train' / 'recipes' / 'digits.py')  # the editable install
  assert recipes.find('nope') is None and recipes.find('__init__') is None
  assert cli.resolve_config('digits') == digits
  assert cli.resolve_config('imagenet_cosine:x') == recipes.find('imagenet_cosine') + ':x'
  assert cli.resolve_config(digits + ':x') == digits + ':x'  # a file is kept as given
  assert cli.resolve_config('nope') is None
  assert cli.resolve_config('train/recipes/nope.py') is None


def test_recipe_file_wins_over_a_name(tmp_path, monkeypatch):
  (tmp_path / 'digits').write_text('def get_config():\n  return None\n')
  monkeypatch.chdir(tmp_path)
  assert cli.resolve_config('digits') == 'digits'


def test_unknown_recipe_is_one_error_line(tmp_path):
  proc = _run([_script('hrnet-train'), '--config', 'nope', f'--workdir={tmp_path / "w"}'], tmp_path)
  assert proc.returncode == 2, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith('hrnet-train: error:')]
  assert lines == [
    f'hrnet-train: error: --config=nope: no such file or recipe (recipes: {", ".join(RECIPES)})'
  ], proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr and not (tmp_path / 'w').exists()


def test_recipe_by_name_loads_outside_the_checkout(tmp_path):
  """``--config digits`` from another folder loads the recipe: a misspelt field of it is
  reported with the close valid name (the override check reads the loaded recipe)."""
  proc = _run(
    [
      sys.executable,
      '-m',
      'hrnet_jax.train.main',
      '--config',
      'digits',
      '--config.modell=hrnet_w18',
      f'--workdir={tmp_path / "w"}',
    ],
    tmp_path,
  )
  assert proc.returncode == 2, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith('hrnet-train: error:')]
  assert len(lines) == 1 and 'did you mean --config.model' in lines[0], proc.stderr[-3000:]
  assert not (tmp_path / 'w').exists()


# --------------------------------------------------------------------------------------- help


@pytest.mark.parametrize(
  'cmd, flags, first_line',
  [
    (
      ['hrnet-train', '--config', 'digits', '--help'],
      TRAIN_FLAGS,
      'hrnet-train: train or fine-tune',
    ),
    (['hrnet-eval', '--help'], EVAL_FLAGS, 'hrnet-eval: score a trained or converted model'),
    ([sys.executable, '-m', 'hrnet_jax.train.main', '--help'], TRAIN_FLAGS, 'hrnet-train: train'),
  ],
  ids=['hrnet-train', 'hrnet-eval', 'python-m'],
)
def test_help_is_plain_text_with_dashed_flags(tmp_path, cmd, flags, first_line):
  """Issue 23: ``--help`` exits 0 with the description first, every flag in its dashed spelling,
  no reStructuredText backticks, no console-script path, and for ``hrnet-train`` the main config
  fields with the values of the recipe given (the base recipe's without one)."""
  if not cmd[0].startswith('/'):
    cmd = [_script(cmd[0])] + cmd[1:]
  proc = _run(cmd, tmp_path)
  out = proc.stdout
  assert proc.returncode == 0, out[-2000:] + proc.stderr[-2000:]
  assert out.startswith(first_line), out[:300]
  dashed = [f.replace('_', '-') for f in flags]
  missing = [f for f in dashed if f'  {f}=' not in out and f'  --[no-]{f[2:]}\n' not in out]
  assert not missing, f'{missing} not in:\n{out}'
  assert '``' not in out and str(pathlib.Path(sys.executable).parent) not in out
  assert 'Exit status' in out  # the command's docstring heads the help
  if first_line.startswith('hrnet-train'):
    recipe = 'digits' if 'digits' in cmd else 'base'
    assert f'Main config fields (--config.FIELD=VALUE; values of recipe {recipe}' in out, out
    assert f"  --config.dataset.name='{'digits' if recipe == 'digits' else 'imagenet2012'}'" in out


# ------------------------------------------------------------------------------------- SIGTERM


def test_sigterm_polled_alone_installs_and_restores_its_handler():
  """As ``train_and_evaluate`` called from a notebook: no ``interrupts_raise`` around it."""
  before = signal.getsignal(signal.SIGTERM)
  with interrupts.sigterm_polled() as flag:
    assert signal.getsignal(signal.SIGTERM) != before
    assert not flag.raised
    signal.raise_signal(signal.SIGTERM)
    assert flag.raised
  assert signal.getsignal(signal.SIGTERM) == before


def test_sigterm_polled_inside_interrupts_raise_switches_its_handler():
  """As under the CLIs: the block's own handler stays installed and sets the flag; after the
  polled block SIGTERM raises ``Terminated`` again."""
  before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  with pytest.raises(Terminated):
    with interrupts.interrupts_raise():
      handler = signal.getsignal(signal.SIGTERM)
      with interrupts.sigterm_polled() as flag:
        assert signal.getsignal(signal.SIGTERM) == handler  # not replaced
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)  # a second one too: still just the flag
      assert flag.raised
      signal.raise_signal(signal.SIGTERM)
  assert {s: signal.getsignal(s) for s in before} == before


def test_sigterm_polled_disabled_changes_nothing():
  """Several processes: JAX's preemption service owns SIGTERM; under the CLI it raises."""
  before = signal.getsignal(signal.SIGTERM)
  with pytest.raises(Terminated):
    with interrupts.interrupts_raise():
      with interrupts.sigterm_polled(enabled=False) as flag:
        signal.raise_signal(signal.SIGTERM)
  assert not flag.raised
  with interrupts.sigterm_polled(enabled=False):
    assert signal.getsignal(signal.SIGTERM) == before


def test_sigterm_polled_off_the_main_thread_changes_nothing():
  before, seen = signal.getsignal(signal.SIGTERM), []

  def body():
    with interrupts.sigterm_polled() as flag:
      seen.append((signal.getsignal(signal.SIGTERM), flag.raised))

  thread = threading.Thread(target=body)
  thread.start()
  thread.join()
  assert seen == [(before, False)]


def _calls_signal_signal(path: pathlib.Path) -> list[int]:
  """Lines of ``path`` that call ``signal.signal`` (or ``signal`` imported from it)."""
  tree = ast.parse(path.read_text(), str(path))
  bare = any(
    isinstance(n, ast.ImportFrom)
    and n.module == 'signal'
    and any(a.name == 'signal' for a in n.names)
    for n in ast.walk(tree)
  )
  return [
    n.lineno
    for n in ast.walk(tree)
    if isinstance(n, ast.Call)
    and (
      (
        isinstance(n.func, ast.Attribute)
        and n.func.attr == 'signal'
        and isinstance(n.func.value, ast.Name)
        and n.func.value.id == 'signal'
      )
      or (bare and isinstance(n.func, ast.Name) and n.func.id == 'signal')
    )
  ]


def test_one_module_installs_signal_handlers():
  found = {
    str(p.relative_to(ROOT)): lines
    for folder in ('hrnet_jax', 'train', 'convert')
    for p in sorted((ROOT / folder).rglob('*.py'))
    if (lines := _calls_signal_signal(p))
  }
  assert list(found) == ['hrnet_jax/interrupts.py'], found


# -------------------------------------------------------------------------------- the package


def _train_imports() -> dict[str, set[str]]:
  """Module of ``hrnet_jax.train`` -> the modules of it that it imports, from the source."""
  modules = {}
  for path in sorted((ROOT / 'train').rglob('*.py')):
    parts = ('hrnet_jax', 'train') + path.relative_to(ROOT / 'train').with_suffix('').parts
    modules['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
  edges = {}
  for name, path in modules.items():
    edges[name] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      targets = []
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module:
        targets = [f'{node.module}.{a.name}' for a in node.names] + [node.module]
      # Only the modules named: ``from pkg.mod import x`` initialises ``pkg`` first, before
      # ``mod`` runs, which is no cycle; ``from pkg import x`` (a name of pkg) is an edge.
      edges[name] |= {t for t in targets if t in modules and t != name}
  return edges


def test_train_package_has_no_import_cycle():
  edges = _train_imports()
  state = {}

  def visit(module, path):
    state[module] = 'open'
    for t in sorted(edges[module]):
      assert state.get(t) != 'open', 'import cycle: ' + ' -> '.join(path + [t])
      if t not in state:
        visit(t, path + [t])
    state[module] = 'done'

  for module in sorted(edges):
    if module not in state:
      visit(module, [module])
  data = 'hrnet_jax.train.data'
  assert edges[data] >= {f'{data}.arrays', f'{data}.tfdata'}
  assert not edges[f'{data}.base']  # the shared types import no source
  assert data not in edges[f'{data}.arrays'] | edges[f'{data}.tfdata']
