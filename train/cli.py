"""What the absl command-line tools (``hrnet-train``, ``hrnet-eval``) share: flag parsing under
the error policy of ``hrnet_jax.errors``, recipes by name, and ``--help`` under console scripts.

absl's ``--help`` prints the ``__main__`` module's docstring and the flags defined in the file
named by ``sys.argv[0]``, then exits 1. A console script's ``__main__`` is a generated wrapper
with neither, so the entry point registers its own docstring and flags there, and asking for help
exits 0. absl reports a bad flag as ``FATAL Flags parsing error`` (exit 1) and ml_collections an
unknown ``--config.FIELD`` or a missing recipe file as a traceback; here each is one ``PROG:
error:`` line, exit 2.

``--config`` (``hrnet-train`` only; ``hrnet-eval`` reads the run's own config) takes a recipe name
(``digits``: the module ``hrnet_jax.train.recipes.digits``, wherever the package is installed) or
a recipe file, each optionally with ``:ARG`` for ``get_config(ARG)``. An existing file wins over
a recipe of the same name.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import sys
import traceback

from absl import app, flags

from hrnet_jax import errors
from hrnet_jax.train import recipes

flags.DEFINE_bool('verbose', False, 'Tracebacks with error messages.')

# absl's help flags (``-?`` is --help's short name): each prints the usage and exits 1.
_HELP_FLAGS = frozenset({'help', 'helpshort', 'helpfull', 'helpxml', '?'})


def _flag_name(arg: str) -> str | None:
  """``'config'`` for ``--config=X`` / ``-config``; None for a positional argument."""
  if not arg.startswith('-') or arg in ('-', '--'):
    return None
  return arg.lstrip('-').split('=', 1)[0]


def _help_requested(argv: list[str]) -> bool:
  for arg in argv[1:]:
    if arg == '--':
      break
    if _flag_name(arg) in _HELP_FLAGS:
      return True
  return False


def resolve_config(value: str) -> str | None:
  """``--config``'s ``FILE[:ARG]`` or ``NAME[:ARG]`` as ``FILE[:ARG]``: an existing file is kept,
  a recipe name becomes its module file; None when it is neither."""
  target, sep, arg = value.partition(':')
  if os.path.isfile(target):
    return value
  path = recipes.find(target)
  return None if path is None else path + sep + arg


def _resolve_config_flags(prog: str, argv: list[str]) -> list[str]:
  """``argv`` with each ``--config=V`` / ``--config V`` as ``--config=FILE[:ARG]``; an unknown V
  is one ``PROG: error:`` line listing the recipes, exit 2."""
  out, i = list(argv[:1]), 1
  while i < len(argv):
    arg = argv[i]
    if arg == '--':
      out += argv[i:]
      break
    if _flag_name(arg) == 'config' and (arg.lstrip('-') != 'config' or i + 1 < len(argv)):
      if '=' in arg:
        value, i = arg.split('=', 1)[1], i + 1
      else:
        value, i = argv[i + 1], i + 2
      if not value:  # left to ml_collections, which reports the missing value
        out.append('--config=')
        continue
      path = resolve_config(value)
      if path is None:
        print(
          f'{prog}: error: --config={value}: no such file or recipe (recipes: '
          f'{", ".join(recipes.names())})',
          file=sys.stderr,
        )
        sys.exit(errors.EXIT_BAD_INPUT)
      out.append(f'--config={path}')
      continue
    out.append(arg)
    i += 1
  return out


def _load_config(argv: list[str]):
  """The config ``--config=FILE[:ARG]`` names, without overrides (None if it cannot load)."""
  given = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
  if not given:
    return None
  path, _, arg = given.partition(':')
  try:
    spec = importlib.util.spec_from_file_location('_hrnet_config', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()
  except Exception:  # reported by the caller as the flag's own error
    return None


def _config_override_problem(argv: list[str]) -> str | None:
  """The first ``--config.A.B=...`` in ``argv`` naming no field of the config, as a message
  with the close valid names."""
  config = _load_config(argv)
  if config is None:
    return None
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    path = arg[len('--config.') :].split('=', 1)[0].split('.')
    node = config
    for i, name in enumerate(path):
      fields = list(node.keys()) if hasattr(node, 'keys') else []
      if name not in fields:
        where = 'config' + ''.join(f'.{p}' for p in path[:i])
        close = difflib.get_close_matches(name, fields, n=3)
        hint = (
          f'; did you mean {", ".join(f"--{where}.{c}" for c in close)}?'
          if close
          else (f'; {where} has {", ".join(sorted(fields))}' if fields else '')
        )
        return f'--config.{".".join(path)}: {where} has no field {name!r}{hint}'
      node = node[name]
  return None


def parse_flags(prog: str, argv: list[str]) -> list[str]:
  """absl ``flags_parser``: parses ``argv`` and loads ``--config`` now (a recipe name or file),
  so that a bad flag, an unknown config field or a missing recipe is one ``PROG: error:`` line
  and exit 2; ``--help`` (and absl's other help flags) exits 0."""
  if 'config' in flags.FLAGS:
    argv = _resolve_config_flags(prog, argv)
  try:
    rest = flags.FLAGS(argv)
    if 'config' in flags.FLAGS:
      flags.FLAGS.config  # noqa: B018  (loads the file and applies the overrides)
    return rest
  except SystemExit as e:
    if e.code == 1 and _help_requested(argv):  # absl printed the help: asked for, not an error
      sys.exit(errors.EXIT_OK)
    raise
  except Exception as e:  # flags.Error, and ml_collections' KeyError/AttributeError/IOError
    message = _config_override_problem(argv)
    if message is None:
      lines = [line.strip() for line in str(e).splitlines() if line.strip()]
      message = ' '.join(lines) or type(e).__name__
    if errors.verbose_requested(argv):
      traceback.print_exc()
    print(f'{prog}: error: {message}', file=sys.stderr)
    sys.exit(errors.EXIT_BAD_INPUT)


def run(main, doc: str, flag_names: list[str], prog: str) -> None:
  """``app.run(main)`` with ``doc`` as the usage text, ``flag_names`` listed by ``--help`` and
  flag errors reported by ``parse_flags``."""
  # JAX logs the backends it did not find (libtpu) at INFO: noise around a one-line error.
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)
  sys.modules['__main__'].__doc__ = doc
  for name in flag_names + ['verbose']:
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])
  app.run(main, flags_parser=lambda argv: parse_flags(prog, argv))
