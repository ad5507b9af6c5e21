"""What the absl command-line tools (``hrnet-train``, ``hrnet-eval``) share: flag parsing under
the error policy of ``hrnet_jax.errors``, and ``--help`` under console scripts.

absl's ``--help`` prints the ``__main__`` module's docstring and the flags defined in the file
named by ``sys.argv[0]``. A console script's ``__main__`` is a generated wrapper with neither,
so the entry point registers its own docstring and flags there. absl reports a bad flag as
``FATAL Flags parsing error`` (exit 1) and ml_collections an unknown ``--config.FIELD`` or a
missing config file as a traceback; here each is one ``PROG: error:`` line, exit 2.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys

from absl import app, flags

from hrnet_jax import errors

flags.DEFINE_bool('verbose', False, 'Tracebacks with error messages.')


def _load_config(argv: list[str]):
  """The config ``--config=FILE[:ARG]`` names, without overrides (None if it cannot load)."""
  import importlib.util

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
    path = arg[len('--config.'):].split('=', 1)[0].split('.')
    node = config
    for i, name in enumerate(path):
      fields = list(node.keys()) if hasattr(node, 'keys') else []
      if name not in fields:
        where = 'config' + ''.join(f'.{p}' for p in path[:i])
        close = difflib.get_close_matches(name, fields, n=3)
        hint = f'; did you mean {", ".join(f"--{where}.{c}" for c in close)}?' if close else (
            f'; {where} has {", ".join(sorted(fields))}' if fields else '')
        return f'--config.{".".join(path)}: {where} has no field {name!r}{hint}'
      node = node[name]
  return None


def parse_flags(prog: str, argv: list[str]) -> list[str]:
  """absl ``flags_parser``: parses ``argv`` and loads ``--config`` now, so that a bad flag, an
  unknown config field or a missing config file is one ``PROG: error:`` line and exit 2."""
  given = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
  if given and not os.path.isfile(given.partition(':')[0]):
    print(f'{prog}: error: --config={given}: no such file', file=sys.stderr)
    sys.exit(errors.EXIT_BAD_INPUT)
  try:
    rest = flags.FLAGS(argv)
    if 'config' in flags.FLAGS:
      flags.FLAGS.config  # noqa: B018  (loads the file and applies the overrides)
    return rest
  except Exception as e:  # flags.Error, and ml_collections' KeyError/AttributeError/IOError
    message = _config_override_problem(argv)
    if message is None:
      lines = [line.strip() for line in str(e).splitlines() if line.strip()]
      message = ' '.join(lines) or type(e).__name__
    if errors.verbose_requested(argv):
      import traceback
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
