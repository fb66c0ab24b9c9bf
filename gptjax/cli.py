"""Shared by the entry points: user mistakes end in one readable line and a non-zero exit code,
never a traceback (a traceback means a bug in gptjax); and where a run lives when no --workdir
is given. Imports no JAX, so that --help and flag mistakes answer at once."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

from absl import app, flags

from gptjax.files import directory_name

# Raised for bad input anywhere (config validation, data, checkpoints, prompts).
USER_ERRORS = (ValueError, FileNotFoundError)
STOP_SIGNALS = ('SIGINT', 'SIGTERM')


def exit_code(signal_name: str) -> int:
  """The shell's convention for a process stopped by a signal: 130 for Ctrl-C, 143 for SIGTERM."""
  return 128 + signal.Signals[signal_name]


# train.py's runs go here unless --workdir says otherwise; sample.py looks here for the newest.
RUNS_DIR = 'runs'
# config_flags' words before the traceback of a config file whose get_config raised.
CONFIG_FILE_RAISED = 'Error whilst parsing config file:'


class Interrupted(RuntimeError):
  """A long job stopped on request after saving its work; the message says how to resume."""
  def __init__(self, message: str, signal_name: str = 'SIGINT'):
    super().__init__(message)
    self.signal_name = signal_name


class StopSignals:
  """Ctrl-C and SIGTERM as a request that a long job checks at its safe points.

  Python's default turns SIGINT into a KeyboardInterrupt wherever the interpreter is; inside a
  garbage-collection callback (JAX registers one) the exception is printed and ignored, and a
  run interrupted during its start-up trained to the end. Here the first signal is always
  recorded (`signal_name`), and is raised as KeyboardInterrupt too unless the job has `defer`red
  it to its next safe point (a training step's end: the state is never caught half-donated).
  The first signal restores the previous handlers, so a second Ctrl-C kills at once.
  """
  def __init__(self):
    self.signal_name: str | None = None
    self.deferred = False
    self._previous = {}

  @property
  def installed(self) -> bool:
    return bool(self._previous)

  def install(self) -> None:
    """Entry points call this first, before JAX is imported, and a job again when it starts:
    a library may have put its own handler in since (jax.distributed's preemption notifier
    takes SIGTERM). A signal already recorded is kept."""
    for name in STOP_SIGNALS:
      sig = signal.Signals[name]
      previous = signal.signal(sig, self._handle)
      if previous != self._handle:
        self._previous.setdefault(sig, previous)

  def uninstall(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def _handle(self, signum, frame):
    self.signal_name = signal.Signals(signum).name
    self.uninstall()
    if not self.deferred:
      raise KeyboardInterrupt(self.signal_name)
    # A step can take minutes (a large model on a CPU): say at once that the signal was heard.
    sys.stderr.write(f'\n{self.signal_name}: stopping after the step under way, with a '
                     'checkpoint; signal again to stop at once (losing the steps since the '
                     'last checkpoint)\n')
    sys.stderr.flush()

  @contextlib.contextmanager
  def watching(self):
    """For a job: installs the handlers unless an entry point did (keeping a signal that already
    arrived), and removes what it installed on the way out."""
    owner = not self.installed and self.signal_name is None
    if self.signal_name is None:  # else the job stops at its first check: leave Ctrl-C lethal
      self.install()
    try:
      yield self
    finally:
      if owner:
        self.uninstall()
        self.signal_name = None

  @contextlib.contextmanager
  def deferring(self):
    """Signals only set `signal_name` inside: the job looks at it between steps."""
    previous, self.deferred = self.deferred, True
    try:
      yield self
    finally:
      self.deferred = previous


STOP = StopSignals()


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
  except KeyError as e:  # an override through a section the config does not have
    raise ValueError(_override_error(argv, e)) from None
  except AttributeError as e:  # an override of a field the config does not have, or a bad file
    if _overridden(argv, one_line(e).split()[0].strip('\'"') if one_line(e) else ''):
      raise ValueError(_override_error(argv, e)) from None
    raise ValueError(_config_file_error(argv, e)) from None
  except Exception as e:  # config_flags executing a config file that raised (a NameError, say)
    raise ValueError(_config_file_error(argv, e)) from None


# Fields of the first release that moved: an override of the old name says where to.
MOVED = {'sharding.fsdp': 'sharding.mesh.fsdp=-1 (with sharding.mesh.data=1) shards the state'}


def _overridden(argv: list[str], key: str) -> bool:
  """Whether `key` is a dotted part of a --config.A.B=V override on the command line."""
  return any(key in a.partition('=')[0].split('.')[1:] for a in argv if a.startswith('--config.'))


def _override_error(argv: list[str], error: KeyError | AttributeError) -> str:
  """--config.modle.n_layers=2: ml_collections raises KeyError("'modle'\nDid you mean..."); an
  unknown last part (--config.optim.lrr=1) an AttributeError."""
  message = one_line(error)
  key = message.split()[0].strip('\'"') if message else ''
  given = [a for a in argv if a.startswith('--') and '.' in a.partition('=')[0]]
  flag = next((a for a in given if key in a.partition('=')[0].split('.')), ' '.join(given))
  hint = message[len(key) + 2:].strip() or 'check the spelling of each dotted part'
  moved = MOVED.get(flag.partition('=')[0].removeprefix('--config.'))
  if moved:
    hint = f'it is now {moved}'
  return f'{flag}: the config has no section or field {key!r}; {hint}'


def _config_file_error(argv: list[str], error: Exception) -> str:
  """A config file that does not run, or defines no get_config, in one line naming it."""
  flag = next((a for a in argv if a.startswith('--config=')), '--config')
  if isinstance(error, SyntaxError):
    problem = f'syntax error at line {error.lineno}: {error.msg}'
  elif isinstance(error, AttributeError) and 'get_config' in str(error):
    problem = 'it defines no get_config()'
  else:
    problem = f'{type(error).__name__}: {one_line(error)}'
  return f'{flag}: cannot load it: {problem}'


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
    sys.exit(exit_code(e.signal_name))
  except KeyboardInterrupt as e:  # before the work loop started, or a second Ctrl-C: nothing saved
    name = e.args[0] if e.args and e.args[0] in STOP_SIGNALS else 'SIGINT'
    print(f'stopped: {name} before anything was saved', file=sys.stderr)
    sys.exit(exit_code(name))
  except USER_ERRORS as e:
    sys.exit(f'error: {one_line(e)}')
  except OSError as e:  # the machine's, not gptjax's: a full disk, a permission, a lost mount
    where = f': {e.filename}' if e.filename else ''
    sys.exit(f'error: {e.strerror or one_line(e)}{where} (errno {e.errno})')
  except AttributeError as e:
    if not (e.args and isinstance(e.args[0], KeyError)):  # a real bug: keep the traceback
      raise
    sys.exit(f'error: bad config override: {one_line(e)}')
