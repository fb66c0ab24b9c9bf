"""Downstream evaluation with lm-evaluation-harness, on any model sample.py can load.

  python -m gptjax.eval --workdir=runs/small --tasks=hellaswag,arc_easy,lambada_openai --limit=200
  python -m gptjax.eval --hf=gpt2 --tasks=hellaswag                 # GPT-2 124M (needs a network)
  python -m gptjax.eval --workdir=runs/small --tasks=my_task --include_path=tasks/  # local YAML
  python -m gptjax.eval --workdir=runs/small --tasks=tasks/my_task.yaml

Prints lm-eval's table and writes its results as JSON into the run (<workdir>/evals/), or into
runs/evals/ for --hf and --config. Tasks are lm-eval's names, task YAML files, or the names of
tasks in --include_path directories. A task whose data is on the Hugging Face Hub is downloaded
on first use and cached by `datasets`; offline, the command says which task needs it.
"""

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from gptjax import cli

flags.DEFINE_string(
    'workdir', None, 'Training run to evaluate (its latest checkpoint; default: '
    'the newest checkpoint under runs/).')
flags.DEFINE_integer('step', None, 'With --workdir: the checkpoint step to evaluate.')
flags.DEFINE_string(
    'hf', None, 'Hugging Face model: a directory saved with save_pretrained, or a '
    'Hub name (needs a network).')
config_flags.DEFINE_config_file(
    'config', None, 'Config file: evaluate its model, randomly '
    'initialised (a chance-level baseline).', lock_config=True)
flags.DEFINE_list('tasks', None, 'lm-eval task names or task YAML files, comma-separated.')
flags.DEFINE_list('include_path', [], "Directories of task YAML files to add to lm-eval's tasks.")
flags.DEFINE_float('limit', None, 'Examples per task (a number >= 1), or a fraction (< 1) of each.')
flags.DEFINE_integer('num_fewshot', None, "Few-shot examples in each prompt (default: the task's).")
flags.DEFINE_integer('batch_size', 16, 'Rows per forward pass.')
flags.DEFINE_integer('max_length', None, 'Longest input in tokens (default: block_size).')
flags.DEFINE_integer('max_gen_toks', 256, 'Tokens generated per request where a task sets none.')
flags.DEFINE_integer('seed', 0, 'Seed of few-shot sampling and of sampled generation.')
flags.DEFINE_string(
    'mesh', None, 'With several devices: the mesh to run on, e.g. tensor=4 (default: the '
    "training run's config.sharding.mesh where it fits the devices, else data parallel).")
flags.DEFINE_string('output_dir', None, 'Where the results JSON goes (default: <workdir>/evals, '
                    'or runs/evals).')
flags.DEFINE_bool('log_samples', False, "Also write every example's requests and responses.")
FLAGS = flags.FLAGS


def check_flags() -> None:
  """Every mistake in the flags, before JAX or lm-eval is imported."""
  cli.config_flag()
  if not FLAGS.tasks:
    raise ValueError('--tasks is required: lm-eval task names or YAML files, comma-separated '
                     '(e.g. --tasks=hellaswag,arc_easy)')
  for name in ('batch_size', 'max_length', 'max_gen_toks', 'num_fewshot'):
    value, least = FLAGS[name].value, 0 if name == 'num_fewshot' else 1
    if value is not None and value < least:
      raise ValueError(f'--{name}={value} must be >= {least}')
  if FLAGS.limit is not None and not (0 < FLAGS.limit < 1
                                      or FLAGS.limit >= 1 and FLAGS.limit == int(FLAGS.limit)):
    raise ValueError(f'--limit={FLAGS.limit:g} must be a whole number of examples >= 1 or a '
                     'fraction in (0, 1)')
  for directory in FLAGS.include_path:
    if not os.path.isdir(directory):
      raise ValueError(f'--include_path={directory}: no such directory')


def task_names(tasks: list[str]) -> tuple[list[str], list[str]]:
  """(task names, directories to include): a YAML file stands for the task it defines."""
  import yaml

  names, directories = [], list(FLAGS.include_path)
  for task in tasks:
    if not task.endswith(('.yaml', '.yml')):
      names.append(task)
      continue
    try:
      with open(task) as f:
        spec = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
      raise ValueError(f'--tasks: cannot read {task}: {cli.one_line(e)}') from None
    if not isinstance(spec, dict) or not isinstance(spec.get('task'), str):
      raise ValueError(f'--tasks: {task} is not a task YAML (it has no `task: NAME` line)')
    names.append(spec['task'])
    directories.append(os.path.dirname(os.path.abspath(task)))
  return names, directories


def output_path(workdir) -> Path:
  """A new file per evaluation, in the run that was evaluated (or runs/evals)."""
  directory = FLAGS.output_dir
  if directory is None:
    directory = (os.path.join(workdir, 'evals') if workdir is not None else os.path.join(
        cli.RUNS_DIR, 'evals'))
  return Path(directory) / f'lm_eval_{time.strftime("%Y%m%d-%H%M%S")}.json'


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {" ".join(argv[1:])} (tasks go in --tasks=...)')
  signal.signal(signal.SIGINT, signal.SIG_DFL)  # nothing to save: Ctrl-C stops at once
  check_flags()
  names, directories = task_names(FLAGS.tasks)
  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    import lm_eval
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable, make_table

    from gptjax.eval.harness import GptjaxLM, load_tasks
  except ImportError as e:
    raise ValueError(f'{e}') from None
  from gptjax import loading

  # lm-eval's notes on task defaults and the Hub's retries would bury the table and the one-line
  # errors; what a user must know is raised. (The libraries set their levels when imported.)
  for name in ('lm_eval', 'huggingface_hub', 'datasets'):
    logging.getLogger(name).setLevel(logging.ERROR)
  # Nor would datasets' bars for building a task's splits from files the task already has.
  import datasets
  datasets.disable_progress_bars()
  task_manager = TaskManager(include_path=directories or None)
  load_tasks(task_manager, names)
  model = loading.load_named_or_newest('python -m gptjax.eval', cli.RUNS_DIR, FLAGS.workdir,
                                       FLAGS.step, FLAGS.hf, cli.config_flag())
  model = loading.on_devices(model, FLAGS.mesh)
  print(model.description, file=sys.stderr)
  lm = GptjaxLM(loaded=model, batch_size=FLAGS.batch_size, max_length=FLAGS.max_length,
                max_gen_toks=FLAGS.max_gen_toks, seed=FLAGS.seed)
  limit = None if FLAGS.limit is None else FLAGS.limit if FLAGS.limit < 1 else int(FLAGS.limit)
  results = lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=task_manager,
                                    num_fewshot=FLAGS.num_fewshot, limit=limit,
                                    log_samples=FLAGS.log_samples, random_seed=FLAGS.seed,
                                    numpy_random_seed=FLAGS.seed, fewshot_random_seed=FLAGS.seed)
  print(make_table(results))
  if 'groups' in results:
    print(make_table(results, 'groups'))
  path = output_path(model.workdir)
  path.parent.mkdir(parents=True, exist_ok=True)
  results['config']['model_source'] = model.description
  path.write_text(json.dumps(results, indent=2, default=handle_non_serializable) + '\n')
  print(f'results written to {path}', file=sys.stderr)


if __name__ == '__main__':
  cli.run(main)
