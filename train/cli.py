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
a recipe file, each optionally with ``:ARG`` for ``get_config(ARG)``, as ``--config=V`` or
``--config V``. An existing file wins over a recipe of the same name. ``--config.dataset=SPEC``
is short for the dataset's fields: ``folder:PATH`` sets ``config.dataset.name='folder'`` and
``config.dataset.folder=PATH`` (so do ``seg_folder:``, ``cityscapes:``, ``ade20k:``), any other
SPEC is the name (a TFDS dataset, ``digits``) and clears ``folder``: the ``--dataset`` of
``hrnet-eval``.

One convention with the argparse commands: long flags take dashes or underscores
(``--batch-size`` is ``--batch_size``, ``--no-json`` is ``--nojson``). ``--help`` is plain text
(no reStructuredText, no script path): the description, the flags with their defaults and, for
``hrnet-train``, the main config fields with the recipe's values. Library log lines
(TensorFlow's C++ notices, absl / Orbax INFO) are off unless ``--verbose``; warnings are one
``PROG: warning:`` line each.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import sys
import textwrap
import traceback
from typing import Any, Callable, Sequence

from absl import app, flags
from absl import logging as absl_logging

from hrnet_jax import errors
from hrnet_jax.train import recipes

flags.DEFINE_bool('verbose', False, 'Tracebacks with error messages.')

# absl's help flags (``-?`` is --help's short name): each prints the usage and exits 1.
_HELP_FLAGS = frozenset({'help', 'helpshort', 'helpfull', 'helpxml', '?'})
# Datasets read from a folder: ``NAME:PATH`` in ``--config.dataset`` / ``hrnet-eval --dataset``.
FOLDER_DATASETS = ('folder', 'seg_folder', 'cityscapes', 'ade20k')
HELP_WIDTH = 100


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


def split_dataset(spec: str) -> tuple[str, str]:
  """A dataset spec as ``(name, folder)``: ``'folder:PATH'`` -> ``('folder', 'PATH')`` (likewise
  ``FOLDER_DATASETS``); anything else (``'digits'``, a TFDS name, ``'mnist:3.0.1'``) ->
  ``(spec, '')``."""
  name, sep, path = spec.partition(':')
  if sep and name in FOLDER_DATASETS:
    return name, path
  return spec, ''


def normalize_argv(argv: list[str]) -> list[str]:
  """``argv`` with dashed long flags as absl's names (``--batch-size=8`` -> ``--batch_size=8``,
  ``--no-json`` -> ``--nojson``, for flags that exist) and each ``--config.dataset=SPEC`` (or
  ``--config.dataset SPEC``) as ``--config.dataset.name=NAME --config.dataset.folder=FOLDER``
  (``split_dataset``). Arguments after ``--`` are kept as they are."""
  out, i = list(argv[:1]), 1
  while i < len(argv):
    arg = argv[i]
    i += 1
    if arg == '--':
      out += argv[i - 1 :]
      break
    if arg == '--config.dataset' or arg.startswith('--config.dataset='):
      if '=' in arg:
        spec = arg.split('=', 1)[1]
      else:
        spec, i = (argv[i], i + 1) if i < len(argv) else ('', i)
      name, folder = split_dataset(spec)
      out += [f'--config.dataset.name={name}', f'--config.dataset.folder={folder}']
      continue
    out.append(_undashed(arg))
  return out


def _undashed(arg: str) -> str:
  """``arg`` with its flag name in absl's spelling when the dashed one names a defined flag."""
  name = _flag_name(arg)
  if name is None or '-' not in name or name.startswith('config.'):
    return arg
  under = name.replace('-', '_')
  if under.startswith('no_') and under not in flags.FLAGS and under[3:] in flags.FLAGS:
    under = 'no' + under[3:]  # absl's negation of a boolean: --nojson
  elif under not in flags.FLAGS:
    return arg
  return arg.replace(name, under, 1)


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


def _plain(doc: str) -> str:
  """A module docstring as plain text: reStructuredText's double backticks removed."""
  return doc.replace('``', '').strip()


def _flag_help(name: str) -> list[str]:
  """The ``--help`` lines of flag ``name``: its dashed spelling, then its help and default."""
  flag = flags.FLAGS[name]
  dashed = name.replace('_', '-')
  head = f'  --[no-]{dashed}' if flag.boolean else f'  --{dashed}=VALUE'
  text = _plain(flag.help)
  if flag.default is not None and not flag.boolean:
    text += f' (default: {flag.default})'
  wrapped = textwrap.wrap(text, HELP_WIDTH - 6, break_on_hyphens=False)
  return [head] + [f'      {line}' for line in wrapped]


def _field_value(config, path: str) -> str:
  node = config
  for part in path.split('.'):
    node = node[part]
  return repr(tuple(node) if isinstance(node, list) else node)


def _config_fields_help(config, recipe: str, fields: Sequence[tuple[str, str]]) -> list[str]:
  """The ``--help`` lines listing ``fields`` (``(path, meaning)``) with their values in
  ``config``, the loaded ``recipe``."""
  lines = textwrap.wrap(
    f'Main config fields (--config.FIELD=VALUE; values of recipe {recipe}; every field and its '
    'meaning: train/recipes/base.py):',
    HELP_WIDTH,
  )
  for path, meaning in fields:
    lines.append(f'  --config.{path}={_field_value(config, path)}')
    lines += [f'      {line}' for line in textwrap.wrap(meaning, HELP_WIDTH - 6)]
  return lines


def help_text(
  prog: str,
  doc: str,
  flag_names: Sequence[str],
  argv: list[str],
  config_fields: Sequence[tuple[str, str]] = (),
) -> str:
  """``--help``: ``doc`` as plain text, the flags (dashed) and, with ``config_fields``, those
  fields of the recipe ``argv``'s ``--config=FILE`` names (the base recipe without one)."""
  lines = [_plain(doc), '', 'Flags (long flags take dashes or underscores):']
  for name in [*flag_names, 'verbose']:
    lines += _flag_help(name)
  if config_fields:
    config, _ = _load_config(argv)
    recipe = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
    if config is None:
      config, _ = _load_config([f'--config={recipes.find("base")}'])
      recipe = 'base'
    name = os.path.splitext(os.path.basename(recipe.partition(':')[0]))[0]
    lines += [''] + _config_fields_help(config, name, config_fields)
  return '\n'.join(lines)


def parse_flags(
  prog: str, argv: list[str], help_fn: Callable[[list[str]], str] | None = None
) -> list[str]:
  """absl ``flags_parser``: parses ``argv`` (``normalize_argv``'s spellings) and loads
  ``--config`` now (a recipe name or file), so that a bad flag, an unknown config field, a
  missing recipe or one that fails to load is one ``PROG: error:`` line naming the flag, exit 2.
  ``--help`` (and absl's other help flags) prints ``help_fn(argv)`` (absl's help without one)
  and exits 0."""
  argv = normalize_argv(argv)
  given = None
  if 'config' in flags.FLAGS:
    argv, given = _resolve_config_flags(prog, argv)
  if help_fn is not None and _help_requested(argv):
    print(help_fn(argv))
    sys.exit(errors.EXIT_OK)
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


class _OneLine(logging.Formatter):
  """``PROG: warning: MESSAGE``: absl's default prefixes each line with the date, the thread
  id and the file:line, which is for developers (``--verbose`` keeps it)."""

  def __init__(self, prog: str):
    super().__init__()
    self._prog = prog

  def format(self, record: logging.LogRecord) -> str:
    return f'{self._prog}: {record.levelname.lower()}: {record.getMessage()}'


def configure_logging(prog: str, verbose: bool) -> None:
  """Python / absl logging of a command: warnings as ``PROG: warning:`` lines; with
  ``verbose`` INFO too (ours and absl's, Orbax's included), in absl's format."""
  logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)
  # Orbax logs every save step at INFO through absl's logger.
  logging.getLogger('absl').setLevel(logging.INFO if verbose else logging.WARNING)
  if not verbose:
    absl_logging.get_absl_handler().setFormatter(_OneLine(prog))


def run(
  main,
  doc: str,
  flag_names: list[str],
  prog: str,
  config_fields: Sequence[tuple[str, str]] = (),
) -> None:
  """``app.run(main)`` with flag errors reported by ``parse_flags`` and ``--help`` from
  ``help_text`` (``doc``, ``flag_names``, ``config_fields``). Without ``--verbose``,
  TensorFlow's C++ INFO / WARNING lines (the oneDNN notice) are off (``TF_CPP_MIN_LOG_LEVEL``;
  the user's own setting wins)."""
  verbose = errors.verbose_requested()
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '0' if verbose else '2')
  # JAX logs the backends it did not find (libtpu) at INFO: noise around a one-line error.
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)
  help_fn = lambda argv: help_text(prog, doc, flag_names, argv, config_fields)
  # ml_collections finds the --config.FIELD overrides in sys.argv itself: it gets the rewrite too.
  sys.argv[:] = normalize_argv(sys.argv)
  app.run(main, flags_parser=lambda argv: parse_flags(prog, argv, help_fn))
