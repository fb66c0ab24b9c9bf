"""Placing arrays on many devices and hosts by name, with jax.sharding.

The devices form one mesh with four named axes (config.sharding.mesh): data, fsdp, tensor and
expert. Parameters and the key activations carry logical axis names (gptjax.config.AXIS_NAMES,
set by the dense helper), and one rules table (config.sharding.rules) says which mesh axes each
name is split over. From those alone follow data parallelism (the batch over data), FSDP (the
weights' embed axis over fsdp, the batch too), hybrid sharded data parallelism (data x fsdp) and
Megatron-style tensor parallelism (heads and the MLP's hidden width over tensor). XLA inserts the
collectives; the model code never mentions a device.

A dimension that the mesh axes of its rule do not divide (a vocabulary of 50257 rows, 2 kv heads
on 4 tensor devices) is left whole on them rather than refused: the same rules serve every model.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import math
from typing import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gptjax.config import MESH_AXES, ShardingConfig

# The mesh's axes in device order: consecutive devices (those of one host first) vary the last
# axis first, so tensor parallelism, which talks at every layer, stays on a host's fast links and
# the data/fsdp axes span hosts.
DEVICE_ORDER = ('data', 'fsdp', 'expert', 'tensor')


def initialize_distributed(coordinator_address: str | None, num_processes: int | None,
                           process_id: int | None) -> None:
  """Joins a multi-process run; a no-op for a single process. coordinator_address 'auto': JAX's
  cluster auto-detection (a SLURM job step, mpirun, a TPU pod) supplies all three.

  Must run before anything touches a JAX backend (even `jax.devices()`). On CPU the processes
  talk through gloo collectives (JAX's default CPU collectives once jax.distributed is up), so a
  multi-process run can be tested on one machine; on GPU/TPU JAX picks the native transport.
  """
  if not coordinator_address:
    return
  if coordinator_address == 'auto':
    if num_processes is not None or process_id is not None:
      raise ValueError('coordinator_address=auto finds num_processes and process_id itself: '
                       'drop them, or give the coordinator as HOST:PORT')
    try:  # SLURM, Open MPI, TPU pods, Kubernetes (JAX's cluster detection) say who is who
      jax.distributed.initialize()
    except ValueError as e:
      raise ValueError(
          f'coordinator_address=auto: no cluster detected ({e}); on a cluster '
          'JAX does not detect, give HOST:PORT, num_processes and process_id') from None
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


def resolve_mesh_sizes(sizes: Mapping[str, int], n_devices: int) -> dict[str, int]:
  """config.sharding.mesh's sizes with its -1 ("the rest") worked out for n_devices."""
  sizes = {axis: sizes.get(axis, 1) for axis in MESH_AXES}
  fixed = math.prod(size for size in sizes.values() if size != -1)
  said = ' x '.join(f'{axis}={size}' for axis, size in sizes.items() if size != 1)
  rest = [axis for axis, size in sizes.items() if size == -1]
  if rest:
    if n_devices % fixed:
      raise ValueError(f'sharding.mesh {said}: the fixed axes take {fixed} devices, which does '
                       f'not divide the {n_devices} there are')
    sizes[rest[0]] = n_devices // fixed
  elif fixed != n_devices:
    raise ValueError(f'sharding.mesh {said or "of size 1"} takes {fixed} devices, but there are '
                     f'{n_devices} (set one axis to -1 for all the rest)')
  return sizes


def make_mesh(sizes: Mapping[str, int] | None = None, devices: Sequence | None = None) -> Mesh:
  """The mesh of `devices` (default: all of every process) with config.sharding.mesh's sizes
  (default: data parallelism over all of them)."""
  devices = sorted(jax.devices() if devices is None else devices, key=lambda d:
                   (d.process_index, d.id))
  sizes = resolve_mesh_sizes(ShardingConfig().mesh if sizes is None else sizes, len(devices))
  per_process = len(devices) // len({d.process_index for d in devices})
  if per_process % sizes['tensor']:
    raise ValueError(f'sharding.mesh.tensor={sizes["tensor"]} does not divide the '
                     f'{per_process} devices of a host: tensor parallelism stays within one host '
                     '(span hosts with data or fsdp)')
  grid = np.asarray(devices, dtype=object).reshape([sizes[axis] for axis in DEVICE_ORDER])
  return Mesh(grid, DEVICE_ORDER)


@dataclasses.dataclass(frozen=True)
class Layout:
  """A mesh and the rules that place logical axes on it: everything needed to shard an array
  by the names of its axes. Hashable, so that jitted functions can be cached per layout."""
  mesh: Mesh
  rules: tuple[tuple[str, tuple[str, ...]], ...]

  @classmethod
  def of(cls, mesh: Mesh, config: ShardingConfig | None = None) -> 'Layout':
    rules = (config or ShardingConfig()).rule_axes()
    return cls(mesh, tuple(rules.items()))

  def spec(self, names: Sequence[str | None], shape: Sequence[int] | None = None) -> P:
    """The PartitionSpec of an array whose axes have these logical names.

    A mesh axis splits one dimension of an array at most (the first whose rule names it: the
    activations' batch takes fsdp, so their embed axis stays whole), axes of size 1 are left
    out, and where `shape` is given a dimension keeps only the leading mesh axes of its rule
    that divide it evenly.
    """
    rules, used, parts = dict(self.rules), set(), []
    for dim, name in enumerate(names):
      axes = [a for a in rules.get(name, ()) if a not in used and self.mesh.shape[a] > 1]
      if shape is not None:
        while axes and shape[dim] % math.prod(self.mesh.shape[a] for a in axes):
          axes.pop()
      used.update(axes)
      parts.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    while parts and parts[-1] is None:
      parts.pop()
    return P(*parts)

  def sharding(self, names: Sequence[str | None], shape: Sequence[int] | None = None):
    return NamedSharding(self.mesh, self.spec(names, shape))

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def batch_shards(self) -> int:
    """How many ways the batch is split: the product of its rule's mesh axes."""
    return math.prod(self.mesh.shape[a] for a in dict(self.rules).get('batch', ()))


# The layout under which a sharded step is being traced (see `activations`); None: no
# constraints, XLA propagates the inputs' shardings as it sees fit.
_ACTIVE: contextvars.ContextVar[Layout | None] = contextvars.ContextVar('layout', default=None)


@contextlib.contextmanager
def activations(layout: Layout | None):
  """While tracing under it, `constrain` places activations by the layout's rules. Entered
  inside the function being jitted, so that the constraint is part of what is traced."""
  token = _ACTIVE.set(layout)
  try:
    yield
  finally:
    _ACTIVE.reset(token)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """x, constrained to the sharding its axes' logical names get under the active layout."""
  layout = _ACTIVE.get()
  if layout is None or layout.mesh.size == 1:
    return x
  return jax.lax.with_sharding_constraint(x, layout.sharding(names, x.shape))


def state_shardings(abstract_state, layout: Layout, param_names: Mapping[str, tuple]):
  """A NamedSharding for every leaf of a (params / optimizer) state pytree.

  param_names: {param path: logical axis names} (gptjax.model.param_axes). A leaf whose path ends
  in a parameter's path and has its rank (the parameter, Adam's moments of it) is placed by those
  names; any other leaf (step counters, a factored optimizer's statistics) is replicated.
  """
  from gptjax.model import param_path

  def leaf_sharding(key_path, leaf):
    parts = param_path(key_path).split('/')
    for start in range(len(parts)):
      names = param_names.get('/'.join(parts[start:]))
      if names is not None and len(names) == len(leaf.shape):
        return layout.sharding(names, leaf.shape)
    return layout.replicated

  return jax.tree_util.tree_map_with_path(leaf_sharding, abstract_state)


def batch_sharding(layout: Layout, ndim: int = 2) -> NamedSharding:
  """Token batches [B, T, ...]: rows split by the batch rule, the rest whole."""
  return layout.sharding(('batch',) + (None,) * (ndim - 1))


def global_batch(local_arrays, layout: Layout):
  """This process's rows of a batch (numpy) -> one global jax.Array split by the batch rule."""
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(batch_sharding(layout, x.ndim), x),
      local_arrays)


def check_batch_divides(global_batch_size: int, layout: Layout) -> None:
  n = layout.batch_shards
  what = (f'{n} devices it is split across' if n == layout.mesh.size else
          f'{n} ways it is split (sharding.rules.batch over sharding.mesh)')
  if global_batch_size % n:
    raise ValueError(f'train.batch_size={global_batch_size} must be divisible by the {what}')
  if n % jax.process_count():
    raise ValueError(f'the batch is split {n} ways, which must be a multiple of the '
                     f'{jax.process_count()} processes (each reads its own rows): split it over '
                     'the axes that span hosts (sharding.rules.batch)')
