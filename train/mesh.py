"""The device mesh and the shardings of the batch and the train state.

One mesh over all devices of all processes, axes ``('data', 'fsdp')``. The batch is split over
both axes, so every device holds ``batch_size / device_count`` examples. Under ``jax.jit`` the
BatchNorm statistics are then computed over the whole global batch (the compiler inserts the
cross-device reductions). With ``fsdp == 1`` parameters and optimizer state are replicated; with
``fsdp > 1`` each leaf is split over the ``fsdp`` devices along its largest dimension divisible by
``fsdp`` (leaves without one stay replicated).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA, FSDP = 'data', 'fsdp'
BATCH_AXES = (DATA, FSDP)


def create_mesh(fsdp: int = 1, devices: list | None = None) -> Mesh:
  """A ``(device_count / fsdp, fsdp)`` mesh named ``('data', 'fsdp')`` over ``devices`` (default:
  ``jax.devices()``, every device of every process). ``ValueError`` if fsdp does not divide."""
  devices = jax.devices() if devices is None else devices
  if fsdp < 1 or len(devices) % fsdp:
    raise ValueError(f'config.mesh.fsdp={fsdp} must divide the number of devices ({len(devices)})')
  return jax.make_mesh(
    (len(devices) // fsdp, fsdp),
    BATCH_AXES,
    axis_types=(AxisType.Auto, AxisType.Auto),
    devices=devices,
  )


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every device of the mesh."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def leaf_sharding(mesh: Mesh, shape: tuple[int, ...]) -> NamedSharding:
  """Replicated, or split over 'fsdp' on the largest dimension that ``mesh.shape['fsdp']``
  divides (first such dimension on ties)."""
  n = mesh.shape[FSDP]
  dims = [d for d in range(len(shape)) if n > 1 and shape[d] % n == 0]
  if not dims:
    return replicated(mesh)
  d = max(dims, key=lambda i: (shape[i], -i))
  return NamedSharding(mesh, P(*([None] * d + [FSDP])))


def state_shardings(mesh: Mesh, tree: Any) -> Any:
  """``leaf_sharding`` for every array leaf of ``tree`` (arrays or ``ShapeDtypeStruct``s)."""
  return jax.tree.map(lambda x: leaf_sharding(mesh, np.shape(x)), tree)


def put_replicated_or_sharded(tree: Any, shardings: Any) -> Any:
  """Places host values that are identical on every process at ``shardings`` (global arrays).

  Works with several processes, where ``jax.device_put`` of a host array to non-addressable
  devices is not an option: each process fills only its own devices.
  """

  def put(x, sharding):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

  return jax.tree.map(put, tree, shardings)


def global_batch(local: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Host-local batch (this process's rows, in process order) -> global arrays at ``sharding``,
  with no gather through the host."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
