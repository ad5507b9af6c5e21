"""hrnet-export's and hrnet-predict's console behaviour that needs no export (issue 23, items 9
to 11): the install hint of a missing ONNX dependency is the README's working command, the
progress line counts seconds on a terminal, the libraries' log noise is off unless
``--verbose``, and the descriptions say what each command does. The exports themselves (their
printed timings and bound, no onnx_ir warnings) are checked in tests/export/test_export.py.
"""

import io
import logging
import os
import time

import pytest

from hrnet_jax.cli import export, policy, predict
from hrnet_jax.errors import EnvironmentFailure

README = open(os.path.join(os.path.dirname(__file__), '..', '..', 'README.md')).read()


def test_missing_jax2onnx_names_the_working_install_command(monkeypatch, tmp_path, capsys):
  real = export.importlib.util.find_spec
  monkeypatch.setattr(
    export.importlib.util, 'find_spec', lambda name: None if name == 'jax2onnx' else real(name)
  )
  with pytest.raises(EnvironmentFailure) as info:
    export.check_installed('onnx')
  # Before issue 23: pip install "hrnet-jax[export]", which does not install jax2onnx.
  assert 'pip install --no-deps jax2onnx==0.17.1' in str(info.value)
  assert export.ONNX_INSTALL.split(' && ')[1] in README.replace('\n', ' ')
  export.check_installed('stablehlo')  # the base install
  # The CLI says it before any work (the checkpoint is not even read), exit 1.
  assert export.main(['--checkpoint', str(tmp_path), '--format', 'onnx', 'x.onnx']) == 1
  err = capsys.readouterr().err.strip()
  assert err.startswith('hrnet-export: error: --format onnx needs jax2onnx') and '\n' not in err


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_progress_counts_seconds_on_a_terminal_and_is_one_line_otherwise():
  tty = _Terminal()
  with export.progress('exporting m', stream=tty):
    time.sleep(1.3)
  assert tty.getvalue().startswith('hrnet-export: exporting m ...\rhrnet-export: exporting m')
  assert tty.getvalue().endswith(' s\n') and tty.getvalue().count('\n') == 1
  pipe = io.StringIO()
  with export.progress('exporting m', stream=pipe):
    pass
  assert pipe.getvalue() == 'hrnet-export: exporting m ...\n'


def test_library_noise_is_off_unless_verbose(monkeypatch):
  serde = logging.getLogger('onnx_ir.serde')
  monkeypatch.setattr(serde, 'filters', [])
  monkeypatch.delenv('TF_CPP_MIN_LOG_LEVEL', raising=False)
  record = serde.makeRecord(
    serde.name, logging.WARNING, __file__, 1, 'The value type for shape [4] is not known.', (), None
  )
  policy.quiet_libraries(True)
  assert 'TF_CPP_MIN_LOG_LEVEL' not in os.environ and serde.filter(record)
  policy.quiet_libraries(False)
  assert os.environ['TF_CPP_MIN_LOG_LEVEL'] == '2' and not serde.filter(record)
  other = serde.makeRecord(serde.name, logging.WARNING, __file__, 1, 'real problem', (), None)
  assert serde.filter(other)
  monkeypatch.setenv('TF_CPP_MIN_LOG_LEVEL', '0')  # a user's explicit setting wins
  policy.quiet_libraries(False)
  assert os.environ['TF_CPP_MIN_LOG_LEVEL'] == '0' and len(serde.filters) == 1


def test_descriptions_say_what_each_command_does():
  text = predict.build_parser().description
  assert all(word in text for word in ('classify', 'segment', 'pose')), text
  assert 'ONNX' in export.build_parser().description
  for parser in (predict.build_parser(), export.build_parser()):
    assert {'--checkpoint', '--step', '--verbose'} <= set(parser._option_string_actions)
