"""Run by tests/test_plan.py in a fresh process (a clean resident set): the plan of a config's
step beside what running that step takes from the host, as JSON.

  python tests/plan_probe.py CONFIG_FILE

Before each of two steps the kernel's record of the process's peak resident memory is reset
(/proc/self/clear_refs); a step's growth is its peak less the resident memory before it.
"""

import json
import sys

import jax
import numpy as np

from gptjax import plan, trainer
from gptjax.config import load_config_file
from gptjax.optim import make_optimizer


def resident(field: str) -> int:
  for line in open('/proc/self/status'):
    if line.startswith(field):
      return int(line.split()[1]) * 1024
  raise KeyError(field)


def main(config_file: str):
  run = plan.planned_run(load_config_file(config_file))
  planner = plan.Planner(run)
  cost = planner.cost(1, run.cfg.remat)
  optimizer = make_optimizer(run.optim, run.train.steps, run.cfg)
  abstract, shardings = trainer.abstract_state(run, optimizer)
  step = trainer.make_train_step(run, optimizer, shardings, grad_accum_steps=1)
  step = step.lower(abstract, planner.batch).compile()
  state = trainer.initial_state(run, optimizer, shardings, abstract)
  batch = {
      name: jax.device_put(np.zeros(x.shape, np.int32), x.sharding)
      for name, x in planner.batch.items()
  }
  growth = []
  for _ in range(2):
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')  # resets VmHWM to the current resident set
    before = resident('VmRSS:')
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    growth.append(resident('VmHWM:') - before)
  print(json.dumps({'growth': growth, 'temporaries': cost.temporaries}))


if __name__ == '__main__':
  main(sys.argv[1])
