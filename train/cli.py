"""absl help for console-script entry points.

absl's ``--help`` prints the ``__main__`` module's docstring and the flags defined in the file
named by ``sys.argv[0]``. A console script's ``__main__`` is a generated wrapper with neither,
so the entry point registers its own docstring and flags there.
"""

from __future__ import annotations

import sys

from absl import app, flags


def run(main, doc: str, flag_names: list[str]) -> None:
  """``app.run(main)``, with ``doc`` as the usage text and ``flag_names`` listed by ``--help``."""
  sys.modules['__main__'].__doc__ = doc
  for name in flag_names:
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])
  app.run(main)
