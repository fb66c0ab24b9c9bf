"""One trainer per workdir: a second one is refused in one line naming the first's pid, and the
lock of a process killed with SIGKILL is free at once."""

import os
import re
import signal
import subprocess
import sys

import pytest

from gptjax import trainer, workdir_lock

HOLD = ('import sys, time\n'
        'from gptjax import workdir_lock\n'
        'with workdir_lock.hold(sys.argv[1]):\n'
        "  print('held', flush=True)\n"
        '  time.sleep(120)\n')


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
  with workdir_lock.hold(tmp_path / 'run'):
    with pytest.raises(workdir_lock.WorkdirInUse,
                       match=rf'run is in use by another training run \(pid {os.getpid()}\)'):
      with workdir_lock.hold(tmp_path / 'run'):
        pass
  with workdir_lock.hold(tmp_path / 'run'):  # released on the way out
    pass


def test_the_trainer_refuses_a_workdir_in_use_before_it_writes_anything(tmp_path):
  workdir = tmp_path / 'run'
  with workdir_lock.hold(workdir):
    with pytest.raises(workdir_lock.WorkdirInUse, match=f'pid {os.getpid()}'):
      trainer.train_and_evaluate(None, workdir)  # refused before the config is even read
  assert sorted(p.name for p in workdir.iterdir()) == [workdir_lock.LOCK_FILE]


def test_the_lock_of_a_killed_process_is_free_at_once(tmp_path):
  holder = subprocess.Popen([sys.executable, '-c', HOLD, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
  try:
    assert holder.stdout.readline() == 'held\n'
    with pytest.raises(workdir_lock.WorkdirInUse, match=rf'\(pid {holder.pid}\)'):
      with workdir_lock.hold(tmp_path):
        pass
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  with workdir_lock.hold(tmp_path):  # no stale lock after kill -9
    assert re.fullmatch(r'\d+\n', (tmp_path / workdir_lock.LOCK_FILE).read_text())


@pytest.mark.parametrize('case', ['file', 'under_a_file', 'read_only'])
def test_an_unusable_workdir_is_one_line_naming_it(tmp_path, case):
  (tmp_path / 'file').write_text('not a directory')
  workdir = {
      'file': tmp_path / 'file', 'under_a_file': tmp_path / 'file' / 'run',
      'read_only': tmp_path / 'locked'
  }[case]
  if case == 'read_only':
    workdir.mkdir()
    workdir.chmod(0o500)
    if os.access(workdir, os.W_OK):  # root writes anyway
      pytest.skip('this user can write into a read-only directory')
  expected = {
      'file': 'file is a file, not a directory', 'under_a_file': 'file is a file, not a directory',
      'read_only': 'Permission denied'
  }[case]
  try:
    with pytest.raises(workdir_lock.WorkdirUnusable,
                       match=rf'^cannot train in workdir {re.escape(str(workdir))}: .*{expected}'):
      trainer.train_and_evaluate(None, workdir)
  finally:
    if case == 'read_only':
      workdir.chmod(0o700)
