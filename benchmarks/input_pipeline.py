"""The training loop's wall time per step against the step's own time: is the input pipeline
hidden behind the step?

  python benchmarks/input_pipeline.py                 # configs/small.py, about a minute

Three ways of running the same compiled train step of configs/small.py (its corpus, batch 16
of 128 bytes), taking turns, each the median of repetitions of STEPS steps:
  step alone       the step on one batch already on the device: the time the loop cannot beat;
  loop, prefetch   the trainer's batches (train.prefetch=2: gathered from the memmapped corpus
                   and put on the device by a background thread while the step runs);
  loop, in-loop    train.prefetch=0: each batch gathered and transferred between steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import format_table, load_config, machine  # noqa: E402

from gptjax import trainer  # noqa: E402
from gptjax.optim import make_optimizer  # noqa: E402

STEPS = 20


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='small', help='a config in configs/')
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  config = load_config(args.config)
  run = trainer.setup(config)
  optimizer = make_optimizer(run.optim, run.train.steps, run.cfg)
  abstract, shardings = trainer.abstract_state(run, optimizer)
  step_fn = trainer.make_train_step(run, optimizer, shardings)
  state = trainer.initial_state(run, optimizer, shardings, abstract)
  fixed = trainer._train_batch(run, 0)

  def step_alone(state):
    for _ in range(STEPS):
      state, metrics = step_fn(state, fixed)
    jax.block_until_ready(metrics)
    return state

  def loop(prefetch: int):
    looped = dataclasses.replace(run, config=config.copy_and_resolve_references())
    looped.config.train.prefetch = prefetch

    def run_loop(state):
      with trainer._batches(looped, range(STEPS)) as batches:
        for _, batch in batches:
          state, metrics = step_fn(state, batch)
      jax.block_until_ready(metrics)
      return state

    return run_loop

  ways = {'step alone': step_alone, 'loop, prefetch': loop(2), 'loop, in-loop': loop(0)}
  times = {name: [] for name in ways}
  for _ in range(args.repeats + 1):  # the first round compiles and warms up
    for name, way in ways.items():
      start = time.perf_counter()
      state = way(state)
      times[name].append((time.perf_counter() - start) / STEPS)
  alone = statistics.median(times['step alone'][1:])
  rows = []
  for name in ways:
    ms = statistics.median(times[name][1:]) * 1000
    rows.append((name, f'{ms:.2f}', f'{ms / (alone * 1000):.3f}x'))
  print(
      format_table(('run', 'ms/step', 'vs step alone'), rows,
                   title=f'{args.config}: batch {run.train.batch_size} x {run.seq_len}, '
                   f'median of {args.repeats} x {STEPS} steps; {machine()}'))


if __name__ == '__main__':
  main()
