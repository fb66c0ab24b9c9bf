# The sweep's command line. Its --help is absl's usage, which prints this module's __doc__: the
# package's, so that the commands, the config file's interface and the workdir are all shown.
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

import gptjax.sweep
from gptjax import cli
from gptjax.config import load_config_module
from gptjax.sweep.grid import GridSweep
from gptjax.sweep.plan import load_sweep_module, sweep_variants
from gptjax.sweep.report import report
from gptjax.sweep.run import run_sweep

__doc__ = gptjax.sweep.__doc__


def _command(argv: Sequence[str]) -> str:
  return ' '.join(['python -m gptjax.sweep', *argv[1:]])


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {" ".join(argv[1:])} (flags are --name=value)')
  flags_ = flags.FLAGS
  if flags_.workdir is None:
    sys.exit('error: --workdir is required, e.g. --workdir=runs/ablation')
  absl_logging.set_verbosity(absl_logging.WARNING)
  if flags_.report_only:
    report(flags_.workdir)
    print(f'report: {Path(flags_.workdir) / "results.md"}')
    return
  if flags_.config is None:
    sys.exit('error: --config is required, e.g. --config=configs/ablation.py')
  path = config_flags.get_config_filename(flags_['config'])
  if ':' in path:
    sys.exit('error: name the variants with --sweep or --variant, not after the config file')
  module = load_config_module(path)
  named = hasattr(module, 'SWEEPS')  # a sweep config: its variants are the arms
  tune = flags_.tune
  if named and tune is None and not flags_.variant:
    tune = getattr(module, 'TUNE', {}).get(flags_.sweep)  # the named sweep's own tuning
  grid = None
  if flags_.grid or flags_.zip or flags_.ladder or tune or flags_.seeds is not None:
    arms = None  # a plain config file: the axes make every run
    if named:
      arms = flags_.variant or sweep_variants(load_sweep_module(path), flags_.sweep)
    elif flags_.variant or flags_['sweep'].present:
      sys.exit(f'error: {path} declares no SWEEPS: its runs come from --grid/--zip/--ladder/--tune '
               'alone; drop --sweep and --variant')
    grid = GridSweep(path, flags_.grid or (), flags_.zip or (), flags_.seeds, tune, arms,
                     flags_.ladder or (), flags_.tokens_per_param)
  statuses = run_sweep(path, flags_.workdir, flags_.sweep, flags_.variant,
                       config_flags.get_override_values(flags_['config']),
                       command=_command(sys.argv), grid=grid, parallel=flags_.parallel)
  done = sum(s['status'] == 'done' for s in statuses)
  print(f'{done}/{len(statuses)} runs done; report: {Path(flags_.workdir) / "results.md"}')


def _define_flags():
  config_flags.DEFINE_config_file(
      'config', None, 'Sweep config file (e.g. configs/ablation.py); '
      '--config.KEY=VALUE overrides apply to every run.', lock_config=True)
  flags.DEFINE_string('workdir', None, 'Directory of the sweep: one subdirectory per run.')
  flags.DEFINE_string('sweep', 'default', "Name of a grid in the config file's SWEEPS.")
  flags.DEFINE_multi_string(
      'variant', None, 'Run these variants instead of a named sweep '
      '(repeat the flag), e.g. --variant=mlp=swiglu,seed=0.')
  flags.DEFINE_multi_string(
      'grid', None, 'A config field and its values, KEY=V1,V2,...; the sweep runs the product '
      'of all --grid axes (any config file, any field), e.g. --grid=model.norm=layernorm,rmsnorm.')
  flags.DEFINE_multi_string(
      'zip', None, 'Like --grid, but the --zip axes advance together (equal lengths), e.g. '
      '--zip=model.d_model=64,128 --zip=model.n_heads=2,4.')
  flags.DEFINE_multi_string(
      'ladder', None, "A scaling ladder: axes that advance together as --zip's, one model size "
      'per rung, e.g. --ladder=model.d_model=64,128,256 --ladder=model.n_heads=2,4,8; each rung '
      'trains on --tokens_per_param tokens per parameter, and the report fits L(C) = a*C^-b + e '
      'per arm and gives its compute multiplier against the first arm.')
  flags.DEFINE_float('tokens_per_param', 20.0,
                     'With --ladder: training tokens per (matmul) parameter at every rung.')
  flags.DEFINE_string(
      'tune', None, 'KEY=LO:HI:N: train every arm at N log-spaced values of a numeric field and '
      'report each arm at its own best, e.g. --tune=optim.lr=1e-3:3e-2:5.')
  flags.DEFINE_integer('seeds', None, 'With --grid/--zip/--tune: run every arm with seeds 0..N-1.')
  flags.DEFINE_integer(
      'parallel', 1, 'Train this many runs at once, each in its own process on its own share of '
      "the CPU cores (each run's output goes to its train.log).", lower_bound=1)
  flags.DEFINE_bool('report_only', False, 'Only rebuild the report from the run directories.')


if __name__ == '__main__':
  _define_flags()
  cli.run(main)
