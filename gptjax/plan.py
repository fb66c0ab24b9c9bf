"""`python train.py --config=... --mode=plan`: what one training step costs each device, found by
compiling the step without running it (no data read, no state allocated).

Per device: the bytes of the parameters and the optimizer state (their shards under the run's
sharding rules), of the batch, and of XLA's temporaries (activations, gradients, logits: the
compiled step's memory analysis); the step's FLOPs as XLA counts them beside gptjax's formula
(6N + 12LHQT per token); whether the step fits a device of --device_memory_gb (default: what this
machine's device has free); the largest micro-batch (fewest optim.grad_accum_steps) that fits;
and what each model.remat policy would need.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gptjax import flops, memory, parallel, trainer
from gptjax.config import REMAT_POLICIES, TrainConfig
from gptjax.optim import make_optimizer
from gptjax.tables import format_bytes, text_table


@dataclasses.dataclass(frozen=True)
class StepCost:
  """One compiled setting of the step, per device."""
  grad_accum_steps: int
  remat: str
  params: int  # bytes of this device's parameter shards
  opt_state: int  # ... and optimizer state shards
  batch: int  # bytes of this device's rows of the batch (inputs and targets)
  temporaries: int  # XLA's scratch: activations, gradients, logits
  needed: int  # at the step's peak: arguments + outputs - donated + temporaries + code
  # XLA's count for this device's program; None where it gives none. XLA counts the body of a
  # loop once, so this is one micro-batch's and one layer's in a scanned model (see compiled_flops).
  flops: float | None


def shard_bytes(abstract) -> int:
  """Bytes one device holds of a pytree of sharded jax.ShapeDtypeStruct."""
  return sum(
      math.prod(x.sharding.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
      for x in jax.tree.leaves(abstract))


def planned_run(config: ml_collections.ConfigDict) -> trainer.Run:
  """The run a config describes, checked, without its data: the plan compiles, never reads."""
  layout = trainer.make_layout(config)
  cfg = trainer.check_config(config, layout)
  seq_len = TrainConfig.from_config(config.train).seq_len or cfg.block_size
  empty = np.zeros((0,), np.uint16)
  return trainer.Run(cfg, config, layout, seq_len, empty, empty, 1.0)


def abstract_batch(run: trainer.Run) -> dict:
  sharding = parallel.batch_sharding(run.layout)
  shape = (run.train.batch_size, run.seq_len)
  return {
      name: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=sharding)
      for name in ('inputs', 'targets')
  }


class Planner:
  """Compiles the run's step for (grad_accum_steps, remat policy) settings, each once."""
  def __init__(self, run: trainer.Run, say: Callable[[str], None] = lambda line: None):
    self.run, self.say, self.done = run, say, {}
    self.batch = abstract_batch(run)

  def cost(self, grad_accum_steps: int, remat: str, scan_layers: bool | None = None) -> StepCost:
    scan_layers = self.run.cfg.scan_layers if scan_layers is None else scan_layers
    key = (grad_accum_steps, remat, scan_layers)
    if key not in self.done:
      scanned = ', scanned layers' if scan_layers else ''
      self.say(f'compiling the step: {grad_accum_steps} micro-batch(es), model.remat={remat}'
               f'{scanned}')
      cfg = self.run.cfg.replace(remat=remat, scan_layers=scan_layers)
      run = dataclasses.replace(self.run, cfg=cfg)
      optimizer = make_optimizer(run.optim, run.train.steps, run.cfg)
      abstract, shardings = trainer.abstract_state(run, optimizer)
      step = trainer.make_train_step(run, optimizer, shardings, grad_accum_steps=grad_accum_steps)
      compiled = step.lower(abstract, self.batch).compile()
      stats = compiled.memory_analysis()
      costs = compiled.cost_analysis()
      costs = costs[0] if isinstance(costs, (list, tuple)) else costs
      self.done[key] = StepCost(grad_accum_steps, remat, shard_bytes(abstract['params']),
                                shard_bytes(abstract['opt_state']), shard_bytes(self.batch),
                                0 if stats is None else stats.temp_size_in_bytes,
                                memory.needed_bytes(compiled) or 0, (costs or {}).get('flops'))
    return self.done[key]


def compiled_flops(planner: Planner, cost: StepCost) -> float | None:
  """XLA's FLOPs for a whole step on one device. XLA counts a loop's body once, so the step is
  compiled with the layers unrolled (the same program unless model.scan_layers), and its count
  is multiplied by the micro-batches (the optimizer's update, counted once, is a rounding
  error beside them)."""
  unrolled = planner.cost(cost.grad_accum_steps, cost.remat, scan_layers=False)
  return None if unrolled.flops is None else unrolled.flops * cost.grad_accum_steps


def formula_flops_per_device(run: trainer.Run) -> float:
  """gptjax's count (flops.flops_per_token) for one step, shared by the devices."""
  tokens = run.train.batch_size * run.seq_len
  return flops.flops_per_token(run.cfg, run.seq_len) * tokens / run.mesh.size


def largest_micro_batch(planner: Planner, remat: str, budget: float) -> StepCost | None:
  """The fewest micro-batches whose step fits in `budget` bytes, or None."""
  run = planner.run
  choices = memory.grad_accum_choices(run.train.batch_size, run.layout.batch_shards)
  return memory.fewest_that_fit(planner.cost, choices, remat, budget)


def plan(config: ml_collections.ConfigDict, device_memory_gb: float | None = None,
         say: Callable[[str], None] = print) -> str:
  """The plan's report (see the module docstring); `say` gets a line before each compilation."""
  if device_memory_gb is not None and not device_memory_gb > 0:
    raise ValueError(f'--device_memory_gb={device_memory_gb} must be > 0')
  run = planned_run(config)
  planner = Planner(run, say)
  if device_memory_gb is not None:
    budget, what = device_memory_gb * memory.GiB, f'a {device_memory_gb:g} GiB device'
  else:
    free, free_what = memory.free_bytes()
    budget, what = (None, None) if free is None else (free, f'{free_what} free here')
  accum = run.optim.grad_accum_steps
  accum = 1 if accum == memory.AUTO else accum
  cost = planner.cost(accum, run.cfg.remat)
  return _report(run, planner, cost, budget, what)


def _report(run: trainer.Run, planner: Planner, cost: StepCost, budget: float | None,
            what: str | None) -> str:
  mesh = ', '.join(f'{a} {n}' for a, n in run.mesh.shape.items() if n > 1) or 'one device'
  micro = run.train.batch_size // cost.grad_accum_steps
  devices = f'{run.mesh.size} {jax.devices()[0].platform} device(s) ({mesh})'
  lines = [
      f'plan: {flops.count_params_for_config(run.cfg):,} parameters, batch '
      f'{run.train.batch_size} x {run.seq_len} tokens in {cost.grad_accum_steps} '
      f'micro-batch(es) of {micro}, model.remat={cost.remat}, on {devices}', ''
  ]
  rows = [('parameters', format_bytes(cost.params)),
          ('optimizer state', format_bytes(cost.opt_state)), ('batch', format_bytes(cost.batch)),
          ('activations and temporaries', format_bytes(cost.temporaries)),
          ('step at its peak', format_bytes(cost.needed))]
  lines.append(text_table(('per device', 'bytes'), rows))
  formula, compiled = formula_flops_per_device(run), compiled_flops(planner, cost)
  if compiled:
    lines.append(f'\nFLOPs per step per device: {compiled:.4g} compiled (XLA), {formula:.4g} by '
                 f'the formula (6N + 12LHQT per token): {compiled / formula:.2f}x')
  if budget is None:
    lines.append('\nfree device memory unknown here: give --device_memory_gb to check the fit')
    return '\n'.join(lines)
  fits = 'fits' if cost.needed <= memory.HEADROOM * budget else 'does NOT fit'
  lines.append(f'\n{fits} {what} ({format_bytes(budget)}; the trainer keeps '
               f'{1 - memory.HEADROOM:.0%} spare)')
  best = largest_micro_batch(planner, cost.remat, memory.HEADROOM * budget)
  if best is None:
    lines.append(f'no micro-batch fits with model.remat={cost.remat}')
  else:
    lines.append(f'largest micro-batch that fits: optim.grad_accum_steps={best.grad_accum_steps} '
                 f'({run.train.batch_size // best.grad_accum_steps} sequences, '
                 f'{format_bytes(best.needed)})')
  remat_rows = []
  for policy in REMAT_POLICIES:
    c = planner.cost(cost.grad_accum_steps, policy)
    remat_rows.append((policy, format_bytes(c.temporaries), format_bytes(c.needed),
                       'yes' if c.needed <= memory.HEADROOM * budget else 'no'))
  lines += [
      '', f'model.remat policies at {cost.grad_accum_steps} micro-batch(es):',
      text_table(('model.remat', 'temporaries', 'step at its peak', 'fits'), remat_rows)
  ]
  if jax.devices()[0].platform == 'cpu':
    lines.append('(XLA:CPU drops the barriers that keep remat from being undone, so on a CPU the '
                 'policies need about the same memory; on GPU and TPU they differ)')
  return '\n'.join(lines)
