"""Shared by the entry points: user mistakes end in one readable line and a non-zero exit code,
never a traceback (a traceback means a bug in gptjax); and where a run lives when no --workdir
is given. Imports no JAX, so that --help and flag mistakes answer at once."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from absl import app, flags

from gptjax.files import directory_name

# Raised for bad input anywhere (config validation, data, checkpoints, prompts).
USER_ERRORS = (ValueError, FileNotFoundError)
INTERRUPTED_EXIT_CODE = 130  # the shell's convention for "stopped by Ctrl-C"
# train.py's runs go here unless --workdir says otherwise; sample.py looks here for the newest.
RUNS_DIR = 'runs'
# config_flags' words before the traceback of a config file whose get_config raised.
CONFIG_FILE_RAISED = 'Error whilst parsing config file:'


class Interrupted(RuntimeError):
  """A long job stopped on request after saving its work; the message says how to resume."""


def one_line(error: BaseException) -> str:
  """ml_collections reports a misspelled override as AttributeError(KeyError('msg')); unwrap."""
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]
  message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
  return ' '.join(message.split())


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a mistake in the flags (unknown flag, bad value) as one
  ValueError line; absl's own parser prints two lines and exits before run() could word it."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    raise ValueError(f'{flag_error(e)} (--helpshort lists the flags)') from None


def flag_error(error: flags.Error) -> str:
  """One line for a flag error. config_flags puts the whole traceback of a config file that
  raised (a bad variant string, say) into its message: the user needs only the last line, the
  exception itself, and not its type's name."""
  head, raised, trace = str(error).partition(CONFIG_FILE_RAISED)
  if raised and trace.strip():
    return ' '.join((head + trace.strip().splitlines()[-1].split(': ', 1)[-1]).split())
  return one_line(error)


def config_flag(name: str = 'config'):
  """The ConfigDict a config_flags flag holds, or None when it was not given.

  A config file that could not be read does not fail the flag parsing: config_flags hands out a
  stand-in that raises a several-line OSError on first use. This says it now, in one line.
  """
  config = flags.FLAGS[name].value
  if config is None:
    return None
  try:
    config.keys()
  except OSError as e:
    filename = flags.FLAGS[name].config_filename
    path = filename.partition(':')[0]
    problem = ('no such file' if not os.path.exists(path) else
               'not a file' if not os.path.isfile(path) else one_line(e.__cause__ or e))
    raise ValueError(f'--{name}={filename}: cannot load it: {problem}') from None
  return config


def default_workdir(config_arg: str) -> str:
  """Where a run of --config=PATH[:VARIANT] goes when no --workdir is given: runs/<PATH's stem>,
  with the variant string appended as a plain directory name (files.directory_name), so each
  variant has its own run:
  'configs/ablation.py:norm=rmsnorm,pos=rope' -> 'runs/ablation_norm-rmsnorm_pos-rope'.
  Rerunning the same --config resumes that run; --config.FIELD=VALUE overrides do not change the
  name (a run refuses a checkpoint of another model, so such a run needs its own --workdir)."""
  path, _, variant = config_arg.partition(':')
  name = Path(path).stem
  if variant:
    name += '_' + directory_name(variant)
  return os.path.join(RUNS_DIR, name)


def run(main) -> None:
  """app.run(main), with user errors (including bad flags and --config overrides) as one line."""
  try:
    app.run(main, flags_parser=parse_flags)
  except Interrupted as e:
    print(f'stopped: {one_line(e)}', file=sys.stderr)
    sys.exit(INTERRUPTED_EXIT_CODE)
  except KeyboardInterrupt:  # before the work loop started (or a second Ctrl-C): nothing to save
    print('stopped: interrupted before anything was saved', file=sys.stderr)
    sys.exit(INTERRUPTED_EXIT_CODE)
  except USER_ERRORS as e:
    sys.exit(f'error: {one_line(e)}')
  except AttributeError as e:
    if not (e.args and isinstance(e.args[0], KeyError)):  # a real bug: keep the traceback
      raise
    sys.exit(f'error: bad config override: {one_line(e)}')
