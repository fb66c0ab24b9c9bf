"""XLA:CPU flags against gptjax's train step, side by side in one process, with nanoGPT's step.

  python benchmarks/xla_flags.py                    # both shapes, every flag below (~10 min)
  python benchmarks/xla_flags.py --shape=quickstart

The first row is the step as it was before issue 13 (the residual stream's gradient recomputed
by XLA, see gptjax/layers/residual.py). XLA reads XLA_FLAGS once per process, but the same
options can be given to one compilation (`jax.jit(...).lower(...).compile(compiler_options=...)`):
each row below is the train step compiled with its options, and the rows take turns in every
repetition, so that a slow minute of a shared machine falls on all of them alike (separate
processes on this VM differ by up to 2x from one minute to the next). Every row must give the
same first losses as the first, within float32 rounding, before it is timed. README's "Training
speed on CPU" quotes the table.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
from unittest import mock

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import format_table, machine  # noqa: E402
from nanogpt_peer import NanoGPTTrainer  # noqa: E402
from shapes import SHAPES, Shape  # noqa: E402
from gptjax import model  # noqa: E402
from train import (
    LOSS_TOLERANCE,
    GptjaxTrainer,
    interleaved_medians,
    random_batch,  # noqa: E402
    train_config)  # noqa: E402

YNN = 'xla_cpu_experimental_ynn_fusion_type'


def ynn(*kinds: str) -> dict:
  """The YNNPACK fusion option as a compilation takes it (enum names, comma-separated)."""
  return {YNN: ','.join(f'LIBRARY_FUSION_TYPE_{kind.upper()}' for kind in kinds)}


# (row label, compiler options). The first row is gptjax before issue 13: jaxlib's defaults and
# the residual stream's gradient recomputed by XLA (layers/residual.py; BEFORE marks it).
BEFORE = 'before: jaxlib defaults, residual gradient not stored'
VARIANTS = [
    (BEFORE, ynn('individual_dot')),
    ('jaxlib defaults (YNNPACK: individual_dot)', ynn('individual_dot')),
    ('gptjax default: YNNPACK fusion dot', ynn('dot')),
    ('YNNPACK fusion dot,reduce', ynn('dot', 'reduce')),
    ('YNNPACK fusion dot,eltwise,reduce', ynn('dot', 'eltwise', 'reduce')),
    ('YNNPACK off (XNNPACK / Eigen dots)', {YNN: ''}),
    ('dot + xla_cpu_use_xnnpack=false', {**ynn('dot'), 'xla_cpu_use_xnnpack': False}),
    ('dot + xla_cpu_use_onednn', {**ynn('dot'), 'xla_cpu_use_onednn': True}),
    ('dot + concurrency-optimized scheduler off',
     {**ynn('dot'), 'xla_cpu_enable_concurrency_optimized_scheduler': False}),
    ('dot + xla_cpu_prefer_vector_width=512', {**ynn('dot'), 'xla_cpu_prefer_vector_width': 512}),
    ('dot + xla_cpu_enable_fast_math', {**ynn('dot'), 'xla_cpu_enable_fast_math': True}),
]
PEER = "nanoGPT's step (torch eager)"


def variant_trainers(shape: Shape) -> dict:
  """Row label -> a trainer whose step is compiled with that row's options."""
  trainers = {}
  for label, options in VARIANTS:
    ours = GptjaxTrainer(train_config(shape.model, shape.batch_size, steps=1000))
    ours.set_batch(random_batch(ours.run.cfg, shape.batch_size))
    with contextlib.ExitStack() as stack:
      if label == BEFORE:  # traced (at lower) with store_gradient as the identity
        stack.enter_context(mock.patch.object(model, 'store_gradient', lambda x: x))
      lowered = ours.step_fn.lower(ours.state, ours.batch)
    ours.step_fn = lowered.compile(compiler_options=options)
    trainers[label] = ours
  if importlib.util.find_spec('torch') is not None:  # a Python with no torch: no peer column
    peer = NanoGPTTrainer(ours.run.cfg, jax.device_get(ours.state['params']), ours.run.config.optim)
    peer.set_batch(random_batch(ours.run.cfg, shape.batch_size))
    trainers[PEER] = peer
  return trainers


def shape_rows(shape: Shape, repeats: int, steps: int) -> list[tuple]:
  trainers = variant_trainers(shape)
  losses = {label: (t.steps(1), t.steps(1)) for label, t in trainers.items()}
  first = losses[VARIANTS[0][0]]
  for label, pair in losses.items():
    if any(abs(a - b) > LOSS_TOLERANCE * abs(b) for a, b in zip(pair, first)):
      raise AssertionError(f'{label}: losses {pair} differ from {first}')
  seconds = interleaved_medians(trainers, steps, repeats)
  base = seconds[VARIANTS[0][0]]
  tokens = shape.batch_size * shape.model['block_size']
  return [(shape.what, label, f'{tokens / s:,.0f}', f'{1000 * s:,.0f}', f'{base / s:.2f}x',
           f'{seconds[PEER] / s:.2f}x' if PEER in seconds else 'n/a')
          for label, s in seconds.items()]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--shape', choices=sorted(SHAPES), action='append',
                      help='a shape to measure (repeatable; default: all)')
  parser.add_argument('--repeats', type=int, default=5, help='timed repetitions (median)')
  args = parser.parse_args()
  rows = []
  for name in args.shape or SHAPES:
    shape = SHAPES[name]
    steps = max(1, 4000 // (shape.batch_size * shape.model['block_size']))  # ~0.5 s or 1 step
    rows += shape_rows(shape, args.repeats, steps)
  print(
      format_table(
          ('shape', 'train step compiled with', 'tokens/s', 'ms/step', 'vs before', 'vs nanoGPT'),
          rows, title=(f'XLA:CPU options, float32 ({machine()}). Medians of {args.repeats} '
                       'repetitions, the rows taking turns in each')))


if __name__ == '__main__':
  main()
