"""What train.py and sample.py decide before any model exists: where a run goes without
--workdir, which run sample.py takes without a model flag, and flag errors in one line. (The
commands themselves run end to end in test_sample_cli.py.)"""

import os

import pytest
from absl import flags

from gptjax import cli, loading


@pytest.mark.parametrize(
    'config_arg, workdir',
    [
        ('configs/gpt124m.py', 'runs/gpt124m'),
        ('/abs/path/configs/small.py', 'runs/small'),
        ('configs/ablation.py:norm=rmsnorm,pos=rope', 'runs/ablation_norm-rmsnorm_pos-rope'),
        ('configs/ablation.py:attn=gqa2,lr=3e-4', 'runs/ablation_attn-gqa2_lr-3e-4'),
        ('configs/ablation.py:a/b c', 'runs/ablation_a_b_c'),  # never a path or a space
        ('configs/ablation.py:', 'runs/ablation'),
    ])
def test_default_workdir_is_the_config_stem_and_its_variant(config_arg, workdir):
  assert cli.default_workdir(config_arg) == os.path.join(*workdir.split('/'))


def _fake_checkpoint(run_dir, step: int, mtime: float) -> None:
  step_dir = run_dir / 'checkpoints' / str(step)
  step_dir.mkdir(parents=True)
  os.utime(step_dir, (mtime, mtime))


def test_latest_checkpoint_is_the_newest_step_of_any_run(tmp_path):
  assert loading.latest_checkpoint(tmp_path / 'runs') is None  # no runs directory at all
  (tmp_path / 'runs' / 'empty').mkdir(parents=True)
  assert loading.latest_checkpoint(tmp_path / 'runs') is None
  _fake_checkpoint(tmp_path / 'runs' / 'old', 900, mtime=1000)
  _fake_checkpoint(tmp_path / 'runs' / 'new', 5, mtime=2000)
  _fake_checkpoint(tmp_path / 'runs' / 'new', 10, mtime=3000)
  assert loading.latest_checkpoint(tmp_path / 'runs') == (tmp_path / 'runs' / 'new', 10)
  _fake_checkpoint(tmp_path / 'runs' / 'old', 1000, mtime=4000)  # the old run resumed
  assert loading.latest_checkpoint(tmp_path / 'runs') == (tmp_path / 'runs' / 'old', 1000)


def test_a_config_file_that_raised_is_reported_without_its_traceback():
  error = flags.IllegalFlagValueError(
      'flag --config=configs/ablation.py:norm=bogus: Error whilst parsing config file:\n\n'
      'Traceback (most recent call last):\n  File "configs/ablation.py", line 115, in f\n'
      "    raise ValueError(...)\nValueError: variant norm='bogus' is not one of a, b\n")
  assert cli.flag_error(error) == ("flag --config=configs/ablation.py:norm=bogus: variant "
                                   "norm='bogus' is not one of a, b")
  assert cli.flag_error(flags.IllegalFlagValueError('flag --x=1:\n  bad')) == 'flag --x=1: bad'
