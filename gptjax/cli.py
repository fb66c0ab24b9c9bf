"""Shared by the entry points: user mistakes end in one readable line and a non-zero exit code,
never a traceback; a traceback means a bug in gptjax."""

from __future__ import annotations

import sys

from absl import app, flags

# Raised for bad input anywhere (config validation, data, checkpoints, prompts).
USER_ERRORS = (ValueError, FileNotFoundError)
INTERRUPTED_EXIT_CODE = 130  # the shell's convention for "stopped by Ctrl-C"


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
    raise ValueError(f'{one_line(e)} (--helpshort lists the flags)') from None


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
