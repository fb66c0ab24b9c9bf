"""Does the train step fit in memory? XLA's memory analysis of the compiled step, held against
what the device has free before the run's state is allocated; and the search for the number of
micro-batches that fits, for `optim.grad_accum_steps='auto'` and for the advice given when a
fixed setting does not fit.

"Free" is, on an accelerator, its allocator's limit less what is in use; on a CPU, the host's
available RAM (capped by a container's cgroup limit) shared by its devices.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

AUTO = 'auto'
# Settings this module picks (auto, or the advice) leave this share of the free memory unused:
# the eval step, the checkpointer's host copies and the allocator's fragmentation are not in the
# analysis. A setting the user chose is refused only when it certainly does not fit.
HEADROOM = 0.9
GiB = 2**30


class DoesNotFit(ValueError):
  """A step needs more memory than the device has free."""


@dataclasses.dataclass(frozen=True)
class Fitted:
  """A compiled step and the settings it was compiled with."""
  compiled: Any
  grad_accum_steps: int
  remat: bool
  needed: int | None  # bytes per device; None where the backend gives no analysis
  free: int | None = None  # bytes free per device when it was fitted; None: unknown
  free_what: str = 'memory'


def needed_bytes(compiled) -> int | None:
  """Bytes one device holds while the step runs: its arguments and outputs (less the donated
  buffers the two share) and XLA's temporaries (activations, gradients, the logits)."""
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  return (stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
          + stats.temp_size_in_bytes + stats.generated_code_size_in_bytes)


def host_available_bytes(meminfo: str = '/proc/meminfo',
                         cgroup: str = '/sys/fs/cgroup') -> int | None:
  """RAM a new allocation can get: MemAvailable, capped by a cgroup v2 limit less the anonymous
  memory already charged to it (its page cache is reclaimable). None where neither is readable."""
  available = None
  try:
    for line in Path(meminfo).read_text().splitlines():
      if line.startswith('MemAvailable:'):
        available = int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  try:
    limit = Path(cgroup, 'memory.max').read_text().strip()
    if limit != 'max':
      stat = dict(line.split() for line in Path(cgroup, 'memory.stat').read_text().splitlines())
      room = max(int(limit) - int(stat['anon']), 0)
      available = room if available is None else min(available, room)
  except (OSError, ValueError, KeyError):
    pass
  return available


def free_bytes() -> tuple[int | None, str]:
  """(bytes free per device, what that memory is); None where it cannot be told. With several
  processes, the least of theirs: all of them must pick the same settings."""
  device = jax.local_devices()[0]
  stats = device.memory_stats() or {}
  free, what = None, 'memory'
  if 'bytes_limit' in stats:
    free, what = stats['bytes_limit'] - stats.get('bytes_in_use', 0), f'{device.device_kind} memory'
  elif device.platform == 'cpu':
    host = host_available_bytes()
    n = jax.local_device_count()
    free = None if host is None else host // n
    what = 'host RAM' if n == 1 else f'host RAM (1/{n} per device)'
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    everyone = multihost_utils.process_allgather(np.int64(-1 if free is None else free))
    free = None if (everyone < 0).any() else int(everyone.min())
  return free, what


def grad_accum_choices(batch_size: int, n_devices: int) -> list[int]:
  """Micro-batch counts that cut the batch into equal micro-batches, each spread evenly over
  the devices, fewest first."""
  return [
      k for k in range(1, batch_size + 1)
      if batch_size % k == 0 and (batch_size // k) % n_devices == 0
  ]


class _Compiler:
  """compile_step(grad_accum_steps, remat) -> compiled, each setting compiled at most once."""
  def __init__(self, compile_step: Callable[[int, bool], Any], free: int | None, what: str):
    self.compile_step, self.free, self.what, self.done = compile_step, free, what, {}

  def __call__(self, k: int, remat: bool) -> Fitted:
    if (k, remat) not in self.done:
      compiled = self.compile_step(k, remat)
      self.done[k, remat] = Fitted(compiled, k, remat, needed_bytes(compiled), self.free, self.what)
    return self.done[k, remat]


def fewest_that_fit(compiler: Callable[[int, Any], Any], choices: list[int], remat, budget: float):
  """The first of `choices` whose step fits in `budget`, by bisection: the memory a step needs
  falls as its micro-batches shrink. compiler(grad_accum_steps, remat) -> an object with
  `.needed` bytes (a Fitted here, gptjax.plan's StepCost), or None when none fits."""
  lo, hi, best = 0, len(choices) - 1, None
  while lo <= hi:
    mid = (lo + hi) // 2
    fitted = compiler(choices[mid], remat)
    if fitted.needed <= budget:
      best, hi = fitted, mid - 1
    else:
      lo = mid + 1
  return best


def _gib(n: float) -> str:
  return f'{n / GiB:.1f} GiB'


def fit_step(compile_step: Callable[[int, bool], Any], *, grad_accum_steps: int | str, remat: bool,
             batch_size: int, n_devices: int, free: tuple[int | None, str] | None = None,
             say: Callable[[str], None] = lambda message: None) -> Fitted:
  """The compiled step (training's, or evaluation's), with grad_accum_steps resolved when it is
  'auto'.

  compile_step(grad_accum_steps, remat) -> a compiled step. When the step cannot fit, DoesNotFit
  names the settings that would: more micro-batches first (the same FLOPs), then model.remat
  (a third more compute). `free`: (bytes, what) instead of asking the devices. `say` gets a
  line before each search, which compiles the step several times.
  """
  free_now, what = free_bytes() if free is None else free
  compiler = _Compiler(compile_step, free_now, what)
  choices = grad_accum_choices(batch_size, n_devices)
  auto = grad_accum_steps == AUTO
  if auto:
    first = compiler(choices[0], remat)
    if free_now is None or first.needed is None:  # nothing to fit against: the fastest setting
      return first
    if first.needed > HEADROOM * free_now:
      say(f'optim.grad_accum_steps=auto: {_gib(first.needed)} without accumulation, '
          f'{_gib(free_now)} of {what} free; compiling to find the fewest micro-batches that fit')
    fitted = fewest_that_fit(compiler, choices, remat, HEADROOM * free_now)
    if fitted is not None:
      return fitted
    first = compiler(choices[-1], remat)  # the smallest micro-batch, which the message names
  else:
    first = compiler(grad_accum_steps, remat)
    if free_now is None or first.needed is None or first.needed <= free_now:
      return first
    say(f'the step needs {_gib(first.needed)}, {_gib(free_now)} of {what} is free; compiling '
        'other settings to find what fits')
  settings = f'optim.grad_accum_steps={first.grad_accum_steps}' + (' and model.remat=True'
                                                                   if remat else '')
  raise DoesNotFit(f'the step needs {_gib(first.needed)} per device with {settings}, and '
                   f'{_gib(free_now)} of {what} is free: '
                   f'{_advice(compiler, choices, first, batch_size, HEADROOM * free_now, auto)}')


def _advice(compiler: _Compiler, choices: list[int], first: Fitted, batch_size: int, budget: float,
            auto: bool) -> str:
  """What to set instead of `first`'s settings, found by compiling the alternatives."""
  options = [(first.remat, [k for k in choices if k > first.grad_accum_steps])]
  if not first.remat:
    options.append((True, choices))
  for remat, ks in options:
    fitted = fewest_that_fit(compiler, ks, remat, budget)
    if fitted is None:
      continue
    if auto:  # auto finds the micro-batches by itself once remat is on
      return f'set model.remat=True (then auto picks {fitted.grad_accum_steps} micro-batches)'
    setting = f'optim.grad_accum_steps={fitted.grad_accum_steps}'
    if remat and not first.remat:
      setting = f'model.remat=True and {setting}'
    return (f'set {setting} (micro-batches of {batch_size // fitted.grad_accum_steps} sequences, '
            f'{_gib(fitted.needed)}), or optim.grad_accum_steps=auto to pick the fewest that fit')
  smallest = compiler(choices[-1], True)
  return (f'even micro-batches of {batch_size // choices[-1]} sequences with model.remat=True need '
          f'{_gib(smallest.needed)}: shorten train.seq_len, shard the state with '
          'sharding.mesh.fsdp=-1 over more devices, or train a smaller model')
