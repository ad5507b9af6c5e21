"""The model state by dotted path, and the one strict key check every loader and converter uses.

A path names a Flax ``Param`` / ``BatchStat`` leaf as the official module tree does
(``'stage2.0.branches.0.0.conv1.kernel'``). ``check_keys`` compares the keys and shapes a model
expects with those a checkpoint holds and raises one ``CheckpointMismatchError`` listing every
missing, unexpected and mis-shaped key; ``assign_arrays`` loads only after that check passed, so
a state is loaded whole or not at all.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx

from hrnet_jax import errors
from hrnet_jax.errors import BadInputError

REPORT_LIMIT = 20  # keys listed per category in error messages (``verbose`` lists all)


def path_str(path: tuple) -> str:
  """``('stage2', 0, 'branches', 0, 0, 'conv1', 'kernel')`` -> ``'stage2.0.branches.0.0.conv1.kernel'``."""
  return '.'.join(str(p) for p in path)


def format_key_report(title: str, items: list[str], verbose: bool | None = None) -> list[str]:
  """``'  title (N):'`` and the first ``REPORT_LIMIT`` items (all when ``verbose``; default:
  ``HRNET_JAX_VERBOSE``, which the CLIs' ``--verbose`` sets)."""
  if not items:
    return []
  if verbose is None:
    verbose = errors.verbose_requested(argv=())
  shown = items if verbose else items[:REPORT_LIMIT]
  lines = [f'  {title} ({len(items)}):'] + [f'    {k}' for k in shown]
  if len(shown) < len(items):
    lines.append(f'    ... {len(items) - len(shown)} more (--verbose lists all)')
  return lines


class CheckpointMismatchError(BadInputError):
  """A state that does not fit the model (exit 2); ``missing`` / ``unexpected`` / ``mismatched``
  list every problem, and the message says that nothing was loaded (or, with ``against``, the
  converter's target arch, that nothing was written)."""

  def __init__(
    self,
    what: str,
    missing: Iterable[str] = (),
    unexpected: Iterable[str] = (),
    mismatched: Iterable[str] = (),
    *,
    against: str | None = None,
  ):
    self.missing = sorted(missing)
    self.unexpected = sorted(unexpected)
    self.mismatched = sorted(mismatched)
    counts = (
      f'{len(self.missing)} missing, {len(self.unexpected)} unexpected, '
      f'{len(self.mismatched)} mis-shaped'
    )
    if against is None:
      lines = [f'{what}: state does not match the model ({counts}); nothing was loaded.']
    else:
      lines = [f'{what}: does not match {against} ({counts} keys); nothing was written.']
    for title, keys in (
      ('missing', self.missing),
      ('unexpected', self.unexpected),
      ('mis-shaped', self.mismatched),
    ):
      lines += format_key_report(title, keys)
    super().__init__('\n'.join(lines))


def check_keys(
  what: str,
  expected: Mapping[str, Sequence[int]],
  found: Mapping[str, Sequence[int]],
  *,
  allow_missing: Iterable[str] = (),
  allow_unexpected: Iterable[str] = (),
  against: str | None = None,
) -> None:
  """Raises ``CheckpointMismatchError`` (naming ``what``) unless ``found`` has every key of
  ``expected`` with the same shape, and nothing else.

  Args:
    expected: key -> shape the model needs; found: key -> shape the checkpoint holds (the same
      naming on both sides, e.g. Flax paths or the source file's keys).
    allow_missing: key prefixes that may be absent (they keep their initialisation).
    allow_unexpected: keys of ``found`` that are dropped on purpose.
    against: the target named in the message and in each mis-shaped line (default: the model).
  """
  allow_missing, allow_unexpected = tuple(allow_missing), set(allow_unexpected)
  missing = [k for k in expected if k not in found and not k.startswith(allow_missing)]
  unexpected = [k for k in found if k not in expected and k not in allow_unexpected]
  mismatched = [
    f'{k}: checkpoint {tuple(found[k])} vs {against or "model"} {tuple(shape)}'
    for k, shape in expected.items()
    if k in found and tuple(found[k]) != tuple(shape)
  ]
  if missing or unexpected or mismatched:
    raise CheckpointMismatchError(what, missing, unexpected, mismatched, against=against)


def model_variables(model: nnx.Module) -> dict[str, nnx.Variable]:
  """Every Param / BatchStat of ``model`` by dotted path (``'stage2.0.branches.0.0.conv1.kernel'``)."""
  return {path_str(path): var for path, var in nnx.to_flat_state(nnx.state(model))}


def abstract_arrays(build: Callable[[nnx.Rngs], nnx.Module]) -> dict[str, jax.ShapeDtypeStruct]:
  """Shape and dtype of every Param / BatchStat of the model ``build(rngs)`` returns, by dotted
  path, without allocating or drawing its weights.

  The rng key is traced, so every initializer only traces its draw; everything that does not
  depend on it (the rng counter, BatchNorm ones and zeros) is computed eagerly, because a traced
  counter makes ``nnx.eval_shape`` quadratic: ``Variable.set_value`` reads the new count's
  ``sharding``, whose error message on a tracer scans every equation traced so far
  (docs/benchmarks.md, "Compile time").
  """

  def leaves(key):
    with jax.ensure_compile_time_eval():
      model = build(nnx.Rngs(key))
    return {k: v.get_value() for k, v in model_variables(model).items()}

  return jax.eval_shape(leaves, jax.random.key(0))


def model_arrays(model: nnx.Module) -> dict[str, np.ndarray]:
  """The model state as host arrays, by dotted path."""
  return {k: np.asarray(v.get_value()) for k, v in model_variables(model).items()}


def assign_arrays(
  model: nnx.Module, arrays: dict[str, Any], *, what: str, allow_missing: Iterable[str] = ()
) -> list[str]:
  """Loads ``arrays`` (dotted path -> array in Flax layout) into ``model``, all or nothing.

  Model leaves starting with an ``allow_missing`` prefix may be absent from ``arrays`` and keep
  their init (e.g. a new classifier). Values are cast to each leaf's dtype and placed where its
  init value lives (device, sharding). Returns the model paths left at init. Raises
  ``CheckpointMismatchError`` naming ``what``.
  """
  variables = model_variables(model)
  check_keys(
    what,
    {k: v.get_value().shape for k, v in variables.items()},
    {k: np.shape(a) for k, a in arrays.items()},
    allow_missing=allow_missing,
  )
  for k, v in variables.items():
    if k in arrays:
      # Onto the device (and sharding) the variable's init value lives on: a NumPy value would
      # be copied to the device again by every jitted call (docs/benchmarks.md, "GPU bf16").
      init = v.get_value()
      value = np.asarray(arrays[k]).astype(init.dtype)
      v.set_value(
        jax.device_put(value, init.sharding)
        if isinstance(init, jax.Array)
        else jax.device_put(value)
      )
  return [k for k in variables if k not in arrays]
