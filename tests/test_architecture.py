"""The layout's rules, read off the source with ``ast`` (no import is executed).

- No import cycle among the project's modules (``hrnet_jax/``, ``convert/`` as
  ``hrnet_jax.convert``, ``train/`` as ``hrnet_jax.train``, ``benchmarks/``), counting imports
  inside functions too: a cycle hidden in a function is still a cycle.
- Imports sit at module top; inside a function only the optional heavy dependencies
  (``OPTIONAL_HEAVY``) may be imported. The benchmark workers are exempt: they set the thread
  and XLA environment of their process before JAX is loaded.
- Direction: each part of the tree imports only the parts below it (``MAY_IMPORT``):
  ``hrnet_jax/models/`` imports only jax, flax, numpy and the standard library; PyTorch, Paddle
  and OpenMMLab names live in ``convert/`` (and tests, benchmarks); no library module imports a
  console script.

The checker also runs on small planted trees, so that a cycle or a wrong-way import is shown to
fail it.
"""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Source folder -> the package name it installs as (pyproject.toml ``package-dir``).
PACKAGES = {
  'hrnet_jax': 'hrnet_jax',
  'convert': 'hrnet_jax.convert',
  'train': 'hrnet_jax.train',
  'benchmarks': 'benchmarks',
}
OPTIONAL_HEAVY = frozenset(
  {
    'torch',
    'tensorflow',
    'paddle',
    'onnx',
    'onnxruntime',
    'onnx_ir',
    'jax2onnx',
    'huggingface_hub',
    'safetensors',
    'tensorflow_datasets',
    'cv2',
    'timm',
    'tqdm',
    'ai_edge_litert',
    'tensorboardX',
    'pycocotools',
  }
)
TORCH_PADDLE_MM = frozenset(
  {
    'torch',
    'torchvision',
    'timm',
    'safetensors',
    'paddle',
    'paddleclas',
    'mmcv',
    'mmengine',
    'mmseg',
    'mmpose',
    'mmdet',
    'mmpretrain',
  }
)
IMPORT_TF = frozenset({'jax.experimental.jax2tf'})  # JAX modules that import TensorFlow
MODELS_MAY_USE = frozenset({'jax', 'flax', 'numpy'})
# Parts that are computation only: no I/O, no third-party library but these.
PURE_PARTS = frozenset({'models', 'metrics', 'codecs', 'inference'})
# The console-script modules (pyproject.toml [project.scripts]) and the absl helper they share.
SCRIPTS = frozenset(
  {
    'hrnet_jax.convert.cli',
    'hrnet_jax.train.main',
    'hrnet_jax.train.eval_main',
    'hrnet_jax.train.cli',
    'hrnet_jax.cli.predict',
    'hrnet_jax.cli.export',
    'hrnet_jax.cli.checkpoints',
  }
)
# Which parts each part may import (besides itself); read bottom-up.
_LIBRARY = {
  'errors',
  'atomic',
  'models',
  'pretrained',
  'runtime',
  'data',
  'factory',
  'api',
  'metrics',
  'codecs',
  'inference',
}
MAY_IMPORT = {
  'errors': set(),
  'interrupts': {'errors'},
  'atomic': {'errors'},
  'models': set(),
  'pretrained': {'errors', 'atomic', 'models'},
  'runtime': {'models'},
  'metrics': set(),  # evaluation metrics (mmseg evaluation/metrics): numpy / jax only
  'codecs': set(),  # keypoint target encoding / decoding (mmpose codecs/): numpy / jax only
  'inference': {'models'},  # test-time inference modes (sliding window, flip, multi-scale)
  'data': {'errors', 'atomic', 'models', 'pretrained', 'codecs'},
  'factory': {'models', 'pretrained'},
  'api': {'errors', 'models', 'pretrained', 'runtime', 'factory', 'convert'},
  'linen': {'models', 'pretrained', 'factory', 'api'},
  'export': _LIBRARY,
  'convert': _LIBRARY - {'runtime'},
  'train': _LIBRARY | {'interrupts'},
  'cli': _LIBRARY | {'interrupts', 'export'},
  'scripts': _LIBRARY | {'interrupts', 'convert', 'train', 'cli', 'export'},
  'benchmarks': None,  # measurement tools: anything
}


@dataclasses.dataclass(frozen=True)
class Import:
  source: str  # importing module
  target: str  # imported module (a project module, or a third-party top-level name)
  line: int
  in_function: bool
  full: str = ''  # the dotted name as written


def part(module: str) -> str:
  """The part of the layout (a key of ``MAY_IMPORT``) a project module belongs to."""
  if module in SCRIPTS:
    return 'scripts'
  names = module.split('.')
  if names[0] == 'benchmarks':
    return 'benchmarks'
  if len(names) == 1:
    return 'api'  # hrnet_jax/__init__.py: the public API
  return names[1]  # a subpackage, or errors, interrupts, atomic, factory, linen


def project_modules(root: pathlib.Path, packages: dict[str, str]) -> dict[str, pathlib.Path]:
  """Module name -> file of every module under ``packages`` (folder -> installed name)."""
  out = {}
  for folder, name in packages.items():
    for path in sorted((root / folder).rglob('*.py')):
      rel = path.relative_to(root / folder).with_suffix('').parts
      if rel[-1] == '__init__':
        rel = rel[:-1]
      out['.'.join((name,) + rel)] = path
  return out


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
  if not node.level:
    return node.module or ''
  base = module.split('.')
  base = base[: len(base) - node.level + (1 if is_package else 0)]
  return '.'.join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: pathlib.Path, modules: dict[str, pathlib.Path]) -> list[Import]:
  """Every import statement of ``module``; project targets are resolved to the module imported
  (``from pkg import mod`` -> ``pkg.mod``), others to their top-level name."""
  tree = ast.parse(path.read_text(), str(path))
  found = []

  def add(target: str, node, in_function: bool):
    full = target
    if target.split('.')[0] in ('hrnet_jax', 'benchmarks'):
      while target not in modules and '.' in target:
        target = target.rsplit('.', 1)[0]
    else:
      target = target.split('.')[0]
    found.append(Import(module, target, node.lineno, in_function, full))

  def visit(node, in_function: bool):
    for child in ast.iter_child_nodes(node):
      inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
      if isinstance(child, ast.Import):
        for alias in child.names:
          add(alias.name, child, inside)
      elif isinstance(child, ast.ImportFrom):
        base = _resolve(child, module, path.name == '__init__.py')
        for alias in child.names:
          full = f'{base}.{alias.name}'
          own = base.split('.')[0] in ('hrnet_jax', 'benchmarks')
          add(base if own and full not in modules else full, child, inside)
      visit(child, inside)

  visit(tree, False)
  return found


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
  """The import cycles of ``edges`` (module -> modules it imports), one per strongly connected
  component with more than one module (or a self-import), as a closed path."""
  index, low, stack, on_stack, cycles = {}, {}, [], set(), []

  def strongconnect(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(edges.get(v, ())):
      if w not in index:
        strongconnect(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1 or v in edges.get(v, ()):
        cycles.append(_closed_path(sorted(component), edges))

  for v in sorted(edges):
    if v not in index:
      strongconnect(v)
  return cycles


def _closed_path(component: list[str], edges: dict[str, set[str]]) -> list[str]:
  """A path start -> ... -> start inside one strongly connected component."""
  start, members = component[0], set(component)
  paths, seen = [[start]], {start}
  while paths:
    path = paths.pop(0)
    for w in sorted(edges.get(path[-1], ())):
      if w == start:
        return path + [start]
      if w in members and w not in seen:
        seen.add(w)
        paths.append(path + [w])
  return component + [start]


def problems(root: pathlib.Path, packages: dict[str, str] = PACKAGES) -> list[str]:
  """Every violation of the layout's rules in the tree at ``root``, one line each."""
  modules = project_modules(root, packages)
  stdlib = sys.stdlib_module_names
  out, edges = [], {m: set() for m in modules}
  for module, path in modules.items():
    where = lambda imp: f'{path.relative_to(root)}:{imp.line}'
    for imp in imports_of(module, path, modules):
      own = imp.target in modules
      if own:
        edges[module].add(imp.target)
      if (
        imp.in_function
        and part(module) != 'benchmarks'
        and imp.full not in IMPORT_TF
        and (own or imp.target not in OPTIONAL_HEAVY | stdlib)
      ):
        out.append(
          f'{where(imp)}: {imp.target} imported inside a function (imports go at '
          'module top; only optional heavy dependencies may wait)'
        )
      src, dst = part(module), part(imp.target) if own else None
      pure = src in PURE_PARTS and not own
      if pure and imp.target not in MODELS_MAY_USE | stdlib | {'__future__'}:
        out.append(
          f'{where(imp)}: hrnet_jax/{src} imports {imp.target} (only jax, flax, '
          'numpy and the standard library)'
        )
      if imp.target in TORCH_PADDLE_MM and src not in ('convert', 'benchmarks'):
        out.append(
          f'{where(imp)}: {imp.target} outside convert/ (PyTorch, Paddle and '
          'OpenMMLab names live in the converter)'
        )
      allowed = MAY_IMPORT[src]
      if own and allowed is not None and dst != src and dst not in allowed:
        out.append(
          f'{where(imp)}: {module} ({src}) imports {imp.target} ({dst}): {src} may '
          f'import only {", ".join(sorted(allowed)) or "itself"}'
        )
  out += ['import cycle: ' + ' -> '.join(cycle) for cycle in find_cycles(edges)]
  return out


def test_tree_follows_the_layout():
  found = problems(ROOT)
  assert not found, '\n' + '\n'.join(found)


def _plant(root: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
  for name, text in files.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text)
  return root


def test_a_planted_cycle_fails(tmp_path):
  root = _plant(
    tmp_path,
    {
      'hrnet_jax/__init__.py': '',
      'hrnet_jax/errors.py': '',
      'convert/__init__.py': '',
      'convert/api.py': 'from hrnet_jax.convert import dense\n',
      'convert/dense.py': 'def f():\n  from hrnet_jax.convert.api import g\n',
    },
  )
  found = problems(root, {'hrnet_jax': 'hrnet_jax', 'convert': 'hrnet_jax.convert'})
  assert (
    'import cycle: hrnet_jax.convert.api -> hrnet_jax.convert.dense -> hrnet_jax.convert.api'
  ) in found
  assert any(
    'convert/dense.py:2: hrnet_jax.convert.api imported inside a function' in p for p in found
  )


@pytest.mark.parametrize(
  'file, text, expected',
  [
    (
      'hrnet_jax/models/hrnet.py',
      'from hrnet_jax.pretrained import state\n',
      'models may import only itself',
    ),
    ('hrnet_jax/models/hrnet.py', 'import PIL\n', 'hrnet_jax/models imports PIL'),
    ('hrnet_jax/pretrained/state.py', 'import torch\n', 'torch outside convert/'),
    ('hrnet_jax/factory.py', 'from hrnet_jax.cli import policy\n', 'factory may import only'),
    (
      'hrnet_jax/pretrained/state.py',
      'from hrnet_jax.convert import api\n',
      'pretrained may import only',
    ),
  ],
  ids=['models->pretrained', 'models->PIL', 'torch-in-library', 'library->cli', 'library->convert'],
)
def test_a_planted_wrong_way_import_fails(tmp_path, file, text, expected):
  root = _plant(
    tmp_path,
    {
      'hrnet_jax/__init__.py': '',
      'hrnet_jax/cli/__init__.py': '',
      'hrnet_jax/cli/policy.py': '',
      'hrnet_jax/pretrained/__init__.py': '',
      'hrnet_jax/pretrained/state.py': '',
      'hrnet_jax/models/__init__.py': '',
      'convert/__init__.py': '',
      'convert/api.py': '',
      file: text,
    },
  )
  found = problems(root, {'hrnet_jax': 'hrnet_jax', 'convert': 'hrnet_jax.convert'})
  assert any(expected in p for p in found), found
