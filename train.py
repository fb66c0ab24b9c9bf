"""Train a gptjax model (or, with --mode=eval, evaluate one).

  python train.py --config=configs/small.py                  # into runs/small
  python train.py --config=configs/ablation.py:norm=rmsnorm  # into runs/ablation_norm-rmsnorm
  python train.py --config=configs/small.py --workdir=runs/kv2 --config.model.n_kv_heads=2

Without --workdir a run goes to runs/<config file stem>, plus its variant string if any (see
gptjax.cli.default_workdir), and the first line printed says where. Rerunning the same command
resumes from the workdir's latest checkpoint. Ctrl-C (or SIGTERM) saves a checkpoint first.
Multi-host: start one process per host with --coordinator_address, --num_processes and
--process_id (or --coordinator_address=auto under SLURM, mpirun or on a TPU pod).
"""

import sys

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from gptjax import cli

config_flags.DEFINE_config_file('config', None, 'Training config file (configs/*.py).',
                                lock_config=True)
flags.DEFINE_string(
    'workdir', None, 'Directory for checkpoints and logs (default: '
    'runs/<config file stem>[_<variant>]).')
flags.DEFINE_enum(
    'mode', 'train', ['train', 'eval', 'plan'],
    'train; eval: report loss, perplexity and bits-per-byte on the val split without taking a '
    'step; plan: compile the step and report its memory and FLOPs per device (nothing runs).')
flags.DEFINE_float(
    'device_memory_gb', None, 'With --mode=plan: the memory of one device to plan for, in GiB '
    "(default: what this machine's device has free).")
flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0 (multi-host runs); auto: detected '
    'from the cluster (SLURM, mpirun, TPU pods), with no --num_processes/--process_id.')
flags.DEFINE_integer('num_processes', None, 'Number of processes (multi-host runs).')
flags.DEFINE_integer('process_id', None, 'Index of this process (multi-host runs).')
FLAGS = flags.FLAGS


def main(argv):
  cli.STOP.install()  # before JAX: a Ctrl-C at any moment stops the run (cli.StopSignals)
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {" ".join(argv[1:])} (flags are --name=value)')
  config = cli.config_flag()
  if config is None:
    sys.exit('error: --config is required, e.g. --config=configs/small.py')
  workdir = FLAGS.workdir
  if FLAGS.device_memory_gb is not None and FLAGS.mode != 'plan':
    raise ValueError('--device_memory_gb is for --mode=plan')
  if FLAGS.mode == 'plan':
    from gptjax import plan
    print(plan.plan(config, FLAGS.device_memory_gb, say=lambda line: print(line, flush=True)))
    return
  if workdir is None:
    workdir = cli.default_workdir(config_flags.get_config_filename(FLAGS['config']))
    print(f'workdir: {workdir} (the default for this config; --workdir=DIR picks another)',
          flush=True)
  absl_logging.set_verbosity(absl_logging.WARNING)  # keep JAX's backend probing off the screen
  # Imported after flag parsing so that --help and flag errors answer without loading JAX.
  from gptjax import parallel, trainer

  parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  try:
    if FLAGS.mode == 'eval':
      result = trainer.evaluate(config, workdir)
      print(' '.join(f'{k} {v:.4f}' for k, v in result.items()))
    else:
      result = trainer.train_and_evaluate(config, workdir)
      print('done: ' + ' '.join(f'{k} {v:.4g}'
                                for k, v in result.items() if k in ('step', 'loss', 'val_loss')))
  except trainer.TrainingDiverged as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  cli.run(main)
