"""Placing arrays on many devices and hosts with jax.sharding.

One mesh axis, 'data', spans every device of every process. The batch is split along it (data
parallelism). Parameters and optimizer state are either replicated on every device, or, with
FSDP, each array is split along its largest dimension that the device count divides, and XLA
inserts the all-gathers and reduce-scatters the jitted step needs. The model code never changes.
"""

from __future__ import annotations

import logging

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def initialize_distributed(coordinator_address: str | None, num_processes: int | None,
                           process_id: int | None) -> None:
  """Joins a multi-process run; a no-op for a single process.

  Must run before anything touches a JAX backend (even `jax.devices()`). On CPU the processes
  talk through gloo collectives (JAX's default CPU collectives once jax.distributed is up), so a
  multi-process run can be tested on one machine; on GPU/TPU JAX picks the native transport.
  """
  if not coordinator_address:
    return
  if num_processes is None or process_id is None:
    raise ValueError(f'coordinator_address={coordinator_address} needs num_processes and '
                     'process_id too')
  if not 0 <= process_id < num_processes:
    raise ValueError(f'process_id={process_id} must be in 0..{num_processes - 1} '
                     f'(num_processes={num_processes})')
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)
  logging.info('process %d of %d, %d local / %d global devices', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _fsdp_spec(shape: tuple[int, ...], n_devices: int) -> P:
  """Shard the largest dimension that splits evenly; small or indivisible arrays stay whole."""
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % n_devices == 0 and shape[dim] >= n_devices:
      spec = [None] * len(shape)
      spec[dim] = DATA_AXIS
      return P(*spec)
  return P()


def state_shardings(abstract_state, mesh: Mesh, fsdp: bool):
  """A NamedSharding for every leaf of a (params / optimizer) state pytree.

  `mesh` may be a jax.sharding.AbstractMesh: the shardings depend only on its shape.
  """
  n = mesh.size

  def leaf_sharding(x):
    if not fsdp or n == 1 or not getattr(x, 'shape', ()):
      return replicated(mesh)
    return NamedSharding(mesh, _fsdp_spec(tuple(x.shape), n))

  return jax.tree.map(leaf_sharding, abstract_state)


def global_batch(local_arrays, mesh: Mesh):
  """This process's rows of a batch (numpy) -> one global jax.Array sharded over 'data'."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_arrays)


def check_batch_divides(global_batch_size: int, mesh: Mesh) -> None:
  n = mesh.size
  if global_batch_size % n:
    raise ValueError(f'train.batch_size={global_batch_size} must be divisible by the '
                     f'{n} devices it is split across')
  if global_batch_size % jax.process_count():
    raise ValueError(f'train.batch_size={global_batch_size} must be divisible by the '
                     f'{jax.process_count()} processes')
