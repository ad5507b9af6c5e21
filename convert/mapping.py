"""What the classification (``hrnet_jax.convert.classify``) and dense (``hrnet_jax.convert.dense``)
converters and ``hrnet_jax.convert.api`` share: the source file's names of the keys, the strict
check of a mapping, the cast of each tensor into its Flax leaf, the ``source`` record of
``config.json`` and the result of a conversion.

The check is the library's one (``hrnet_jax.pretrained.state.check_keys`` against the target
arch), keyed by the source file's own names, so a ``CheckpointMismatchError`` lists the keys as
the file spells them.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Iterable, Mapping

import numpy as np

from hrnet_jax.convert import layouts
from hrnet_jax.convert.layouts import official
from hrnet_jax.convert.sources import Source
from hrnet_jax.pretrained import checkpoint, state


@dataclasses.dataclass
class ConversionResult:
  """A written conversion: the folder, the arch and source layout, and its ``config.json``."""

  out_dir: pathlib.Path
  arch: str
  format: str
  num_tensors: int
  config: dict


def source_name(key: str, original: Mapping[str, str], fmt: str) -> str:
  """The official ``key`` as the source file spells it: its own name when it holds the key
  (``original``: official key -> source key), else the name layout ``fmt`` gives it."""
  return original.get(key) or layouts.from_official_key(key, fmt)


def check_mapping(
  what: str | os.PathLike,
  arch: str,
  expected: Mapping[str, tuple[str, tuple[int, ...]]],
  found: Mapping[str, np.ndarray],
  *,
  allow_unexpected: Iterable[str] = (),
) -> None:
  """Raises ``CheckpointMismatchError`` naming ``what`` unless ``found`` (source key -> tensor)
  holds every key of ``expected`` (Flax path -> (source key, Flax shape)) in its PyTorch shape,
  and nothing else but ``allow_unexpected``; then ``CheckpointIntegrityError`` naming every
  tensor that cannot be a weight: not floating point (every HRNet parameter and statistic is),
  or a BatchNorm running variance below zero. NaN / inf are ``refuse_non_finite``'s to judge
  (``--allow-non-finite``)."""
  shapes = {k: official.torch_shape(p, shape) for p, (k, shape) in expected.items()}
  state.check_keys(
    str(what),
    shapes,
    {k: v.shape for k, v in found.items()},
    allow_unexpected=allow_unexpected,
    against=arch,
  )
  not_float = sorted(
    f'{k}: {found[k].dtype}'
    for k, _ in expected.values()
    if not np.issubdtype(found[k].dtype, np.floating)
  )
  negative_var = sorted(
    k
    for p, (k, _) in expected.items()
    if p.endswith('.var') and np.issubdtype(found[k].dtype, np.floating) and (found[k] < 0).any()
  )
  if not_float or negative_var:
    raise checkpoint.CheckpointIntegrityError(
      '\n'.join(
        [
          f'{what}: {len(not_float) + len(negative_var)} tensor(s) cannot be {arch} weights; '
          'nothing was written.'
        ]
        + state.format_key_report('not floating point', not_float)
        + state.format_key_report('negative BatchNorm running variance', negative_var)
      )
    )


def flax_array(flax_path: str, value: np.ndarray, dtype) -> np.ndarray:
  """A source tensor (PyTorch layout) as the Flax leaf ``flax_path``: one copy at most (transpose
  and cast together), none for a BN vector already in ``dtype``."""
  return np.asarray(official.torch_to_flax(flax_path, value), dtype=dtype, order='C')


def source_record(source: Source, fmt: str, **details) -> dict:
  """``config.json``'s ``source``: the file, its sha256, its layout and container, and
  ``details`` (a dense conversion's ``backbone_only``, ``dropped``, ``initialized``)."""
  return {
    'file': source.path.name,
    'sha256': source.sha256(),
    'format': fmt,
    'container': source.container,
    'hub_id': source.hub_id,
    'training_checkpoint': source.training_checkpoint,
    **details,
  }
