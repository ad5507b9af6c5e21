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
from typing import Any

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


def _fail(prog: str, message: str, argv: list[str] | None = None) -> None:
  """Prints ``PROG: error: MESSAGE`` (the traceback first with ``--verbose``) and exits 2."""
  if errors.verbose_requested(argv) and sys.exc_info()[0] is not None:
    traceback.print_exc()
  print(f'{prog}: error: {message}', file=sys.stderr)
  sys.exit(errors.EXIT_BAD_INPUT)


def _resolve_config_flags(prog: str, argv: list[str]) -> tuple[list[str], str | None]:
  """``argv`` with each ``--config=V`` / ``--config V`` as ``--config=FILE[:ARG]``, and the last
  ``V`` as given (the one absl keeps). A missing V or one that is neither a file nor a recipe is
  one ``PROG: error:`` line (the recipes listed), exit 2: both spellings alike."""
  out, i, given = list(argv[:1]), 1, None
  while i < len(argv):
    arg = argv[i]
    if arg == '--':
      out += argv[i:]
      break
    if _flag_name(arg) != 'config':
      out.append(arg)
      i += 1
      continue
    if '=' in arg:
      value, i = arg.split('=', 1)[1], i + 1
    else:
      value = argv[i + 1] if i + 1 < len(argv) else ''
      if value.startswith('-'):  # the next flag, not a value
        value = ''
      i += 2 if value else 1
    recipes_list = f'recipes: {", ".join(recipes.names())}'
    if not value:
      _fail(prog, f'--config: no value; give a recipe name or a recipe file ({recipes_list})')
    path = resolve_config(value)
    if path is None:
      _fail(prog, f'--config={value}: no such file or recipe ({recipes_list})')
    out.append(f'--config={path}')
    given = value
  return out, given


def _load_config(argv: list[str]) -> tuple[Any, BaseException | None]:
  """The config the last ``--config=FILE[:ARG]`` names, without overrides, and the exception
  loading it raised (``(None, None)`` without ``--config``)."""
  given = [a.split('=', 1)[1] for a in argv if a.startswith('--config=')]
  if not given:
    return None, None
  path, _, arg = given[-1].partition(':')
  try:
    spec = importlib.util.spec_from_file_location('_hrnet_config', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return (module.get_config(arg) if arg else module.get_config()), None
  except Exception as e:  # the recipe's own error (syntax, get_config's arguments, ...)
    return None, e


def _config_override_problem(config, argv: list[str]) -> str | None:
  """The first ``--config.A.B=...`` in ``argv`` naming no field of ``config``, as a message
  naming the flag with the close valid names (or all of them)."""
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    flag = arg.split('=', 1)[0]
    path = flag[len('--config.') :].split('.')
    node = config
    for i, name in enumerate(path):
      where = 'config' + ''.join(f'.{p}' for p in path[:i])
      if not hasattr(node, 'keys'):
        return f'{flag}: {where} is a value, not a group of fields'
      fields = list(node.keys())
      if name not in fields:
        close = difflib.get_close_matches(name, fields, n=3)
        inside = f' in {where}' if i else ''
        if close:
          names = ', '.join(f'--{where}.{c}' for c in close)
          return f'{flag}: no such field{inside} (did you mean {names}?)'
        return f'{flag}: no such field{inside}; {where} has {", ".join(sorted(fields))}'
      node = node[name]
  return None


def _one_line(exc: BaseException) -> str:
  """``exc``'s message on one line: a ``KeyError``'s own text, not its repr."""
  text = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else str(exc)
  lines = [line.strip() for line in str(text).splitlines() if line.strip()]
  return ' '.join(lines) or type(exc).__name__


def parse_flags(prog: str, argv: list[str]) -> list[str]:
  """absl ``flags_parser``: parses ``argv`` and loads ``--config`` now (a recipe name or file),
  so that a bad flag, an unknown config field, a missing recipe or one that fails to load is one
  ``PROG: error:`` line naming the flag, exit 2; ``--help`` (and absl's other help flags) exits
  0."""
  given = None
  if 'config' in flags.FLAGS:
    argv, given = _resolve_config_flags(prog, argv)
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
    config, load_error = _load_config(argv) if given is not None else (None, None)
    if load_error is not None:  # ml_collections' message would hold the traceback as text
      message = f'--config={given}: {type(load_error).__name__}: {_one_line(load_error)}'
    else:
      message = (config is not None and _config_override_problem(config, argv)) or _one_line(e)
    _fail(prog, message, argv)


def run(main, doc: str, flag_names: list[str], prog: str) -> None:
  """``app.run(main)`` with ``doc`` as the usage text, ``flag_names`` listed by ``--help`` and
  flag errors reported by ``parse_flags``."""
  # JAX logs the backends it did not find (libtpu) at INFO: noise around a one-line error.
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)
  sys.modules['__main__'].__doc__ = doc
  for name in flag_names + ['verbose']:
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])
  app.run(main, flags_parser=lambda argv: parse_flags(prog, argv))
