"""python train.py --mode=plan: the step's memory and FLOPs per device, before any step runs."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_user_error, subprocess_env
from gptjax import memory, plan
from gptjax.config import load_config_file
from gptjax.tables import format_bytes

REPO = Path(__file__).resolve().parents[1]

# Big enough that the step's activations (about 250 MiB) dwarf the allocator's noise.
CONFIG = """
from gptjax.config import base_config


def get_config():
  config = base_config(vocab_size=257, n_layers={n_layers}, d_model={width}, n_heads=4,
                       block_size={width})
  config.data.tokenizer = 'bytes'
  config.train.batch_size = {batch_size}
  config.optim.warmup_steps = 10
  return config
"""


def config_file(tmp_path, n_layers=4, batch_size=8, width=256) -> Path:
  """width: d_model and the context both."""
  path = tmp_path / 'config.py'
  path.write_text(CONFIG.format(n_layers=n_layers, batch_size=batch_size, width=width))
  return path


@pytest.mark.slow
def test_planned_temporaries_are_what_the_step_takes_from_the_host(tmp_path):
  """The plan's activations and temporaries (XLA's memory analysis) against the peak resident
  memory a fresh CPU process gains while it runs that step for the first time, state and batch
  already allocated. The first step also pays one-time costs (thread pools, the runtime's
  buffers: 30-80 MiB measured). A second step shows its temporaries again only where the
  allocator returned the first one's pages (often: it then matched within 0.1%); where it kept
  them, the resident set already counts them and the step shows nothing. Measured for this
  config: 259.3 MiB planned; first steps took 292-337 MiB, second steps 259.4 MiB or ~2 MiB."""
  command = [sys.executable, str(REPO / 'tests' / 'plan_probe.py'), str(config_file(tmp_path))]
  result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-4000:]
  probe = json.loads(result.stdout.strip().splitlines()[-1])
  assert probe['temporaries'] > 200 * 2**20
  (first_step, second_step), planned = probe['growth'], probe['temporaries']
  assert 0.95 * planned <= first_step <= 1.05 * planned + 128 * 2**20, probe
  if second_step > planned / 2:  # the allocator gave the first step's memory back: all new pages
    assert second_step == pytest.approx(planned, rel=0.05), probe


@pytest.mark.slow
def test_plan_command_reports_the_fit_and_the_largest_micro_batch_that_fits(tmp_path):
  """train.py --mode=plan on a 0.25 GiB device: the step at its batch of 64 does not fit, and the
  micro-batch it names is the largest that does (the next larger one does not); compiled FLOPs
  agree with the formula; nothing is written."""
  path = config_file(tmp_path, n_layers=2, batch_size=64, width=128)
  result = subprocess.run([
      sys.executable,
      str(REPO / 'train.py'), f'--config={path}', '--mode=plan', '--device_memory_gb=0.25'
  ], env=subprocess_env(), cwd=tmp_path, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  out = result.stdout
  assert 'does NOT fit a 0.25 GiB device' in out, out
  k = int(re.search(r'largest micro-batch that fits: optim.grad_accum_steps=(\d+)', out).group(1))
  ratio = float(re.search(r'by the formula \(6N \+ 12LHQT per token\): ([\d.]+)x', out).group(1))
  assert 0.95 < ratio < 1.1, out
  for policy in ('none', 'full', 'dots_saveable', 'save_qkv_attention_out'):
    assert re.search(rf'^{policy} +[\d.,]+ [MG]iB +[\d.,]+ [MG]iB +no$', out, re.M), out
  assert not (tmp_path / 'runs').exists()

  planner = plan.Planner(plan.planned_run(load_config_file(path)))
  budget = memory.HEADROOM * 0.25 * 2**30
  assert planner.cost(k, 'none').needed <= budget < planner.cost(k // 2, 'none').needed
  temporaries = format_bytes(planner.cost(1, 'none').temporaries)
  assert f'activations and temporaries  {temporaries}' in out


def test_plan_flags_are_checked_before_anything_compiles(tmp_path):
  with pytest.raises(ValueError, match='device_memory_gb=0 must be > 0'):
    plan.plan(load_config_file(config_file(tmp_path)), device_memory_gb=0)


@pytest.mark.slow
def test_device_memory_without_plan_mode_is_a_one_line_error(tmp_path):
  result = subprocess.run([
      sys.executable,
      str(REPO / 'train.py'), f'--config={config_file(tmp_path)}', '--device_memory_gb=8'
  ], env=subprocess_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120)
  assert_user_error(result, '--device_memory_gb is for --mode=plan')
