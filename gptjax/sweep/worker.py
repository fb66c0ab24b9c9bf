"""One run of a parallel sweep, in its own process: `python -m gptjax.sweep.worker CORES` with the
run as JSON on stdin ({'run': PlannedRun's fields, 'config': its config as JSON, 'run_dir': ...}).

CORES ('0,1') are this process's CPU cores, set before JAX starts so that XLA sizes its thread
pool to them. The run is trained, recorded and interrupted exactly as in a sequential sweep
(gptjax.sweep.run.train_one); the sweep's process reads what became of it from status.json.
"""

from __future__ import annotations

import json
import os
import signal
import sys


def _die_with_parent() -> None:
  """SIGTERM this process when the sweep's process dies (Linux): the run then saves a checkpoint
  and records itself interrupted instead of training on unwatched."""
  try:
    import ctypes
    libc = ctypes.CDLL('libc.so.6', use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


def main(argv: list[str]) -> int:
  cores = {int(core) for core in argv[1].split(',')}
  os.sched_setaffinity(0, cores)
  _die_with_parent()
  task = json.load(sys.stdin)

  from gptjax import cli  # after the affinity: JAX sizes its thread pool when it starts
  cli.STOP.install()
  import ml_collections

  from gptjax.sweep.plan import PlannedRun
  from gptjax.sweep.run import train_one

  config = ml_collections.ConfigDict(task['config'])
  run = PlannedRun(config=config, **task['run'])
  try:
    train_one(run, task['run_dir'])
  except cli.Interrupted as e:
    return cli.exit_code(e.signal_name)
  except KeyboardInterrupt as e:
    name = e.args[0] if e.args and e.args[0] in cli.STOP_SIGNALS else 'SIGINT'
    return cli.exit_code(name)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
