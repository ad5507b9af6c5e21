"""Multi-process start-up: ``jax.distributed.initialize()`` when the run spans several processes.

It is called when explicit coordinator flags are given, or the environment describes a
multi-process job: ``JAX_COORDINATOR_ADDRESS``, SLURM (``SLURM_NTASKS`` > 1), Open MPI
(``OMPI_COMM_WORLD_SIZE`` > 1) or a multi-host TPU slice on GKE (``TPU_WORKER_HOSTNAMES`` /
``TPU_PROCESS_ADDRESSES`` with several hosts, or ``MEGASCALE_COORDINATOR_ADDRESS``). On Cloud
TPU VM pods, where the host list comes from the metadata server, pass ``--distributed`` (JAX
then detects everything). JAX does all communication; nothing here opens sockets itself.
"""

from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger(__name__)


def _env_int(env, name: str) -> int:
  try:
    return int(env.get(name, '1'))
  except ValueError:
    return 1


def environment_wants_distributed(env=os.environ) -> bool:
  """True if the environment variables describe a job of several processes."""
  hosts = env.get('TPU_PROCESS_ADDRESSES') or env.get('TPU_WORKER_HOSTNAMES') or ''
  return bool(
    env.get('JAX_COORDINATOR_ADDRESS')
    or env.get('MEGASCALE_COORDINATOR_ADDRESS')
    or len([h for h in hosts.split(',') if h]) > 1
    or ('SLURM_JOB_ID' in env and _env_int(env, 'SLURM_NTASKS') > 1)
    or _env_int(env, 'OMPI_COMM_WORLD_SIZE') > 1
  )


def maybe_initialize(
  *,
  force: bool = False,
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> bool:
  """Calls ``jax.distributed.initialize`` if ``force``, if ``coordinator_address`` is given
  (then ``num_processes`` and ``process_id`` are required), or if
  ``environment_wants_distributed()``. Must run before anything touches the devices. Returns
  whether it initialized; ``ValueError`` for incomplete explicit flags."""
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise ValueError('--coordinator_address needs --num_processes and --process_id')
    jax.distributed.initialize(
      coordinator_address, num_processes=num_processes, process_id=process_id
    )
  elif force or environment_wants_distributed():
    jax.distributed.initialize()
  else:
    return False
  log.info(
    'jax.distributed: process %d of %d, %d local / %d global devices',
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  return True
