"""What every benchmark shares: timing by medians, a description of the machine, one table.

Rules the scripts follow: everything compared is measured in the same run, side by side; each
number is the median of several repetitions (after warm-up runs that compile, fill caches and
grow the allocator); and before anything is timed, the script asserts that the paths it compares
compute the same thing.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import numpy as np

from gptjax import plan, trainer
from gptjax.config import ModelConfig, load_config_file
from gptjax.optim import make_optimizer
from gptjax.tables import markdown_table

CONFIGS = Path(__file__).resolve().parents[1] / 'configs'


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
  """Median wall-clock seconds of fn() over `repeats` calls, after `warmup` untimed calls.
  fn must return only when its work is done (block_until_ready, .item(), host lists)."""
  for _ in range(warmup):
    fn()
  timings = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    timings.append(time.perf_counter() - start)
  return statistics.median(timings)


def cpu_name() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def machine() -> str:
  """One line: the CPU (and accelerator, if JAX sees one) and the library versions."""
  parts = [f'{cpu_name()}, {os.cpu_count()} cores']
  device = jax.devices()[0]
  if device.platform != 'cpu':
    parts.append(f'{jax.device_count()} x {device.device_kind}')
  versions = [f'jax {jax.__version__}']
  for name in ('torch', 'transformers'):
    try:
      versions.append(f'{name} {__import__(name).__version__}')
    except ImportError:
      pass
  return f'{"; ".join(parts)}; {", ".join(versions)}'


def load_config(name: str):
  """configs/<name>.py's get_config(), as train.py would build it."""
  return load_config_file(CONFIGS / f'{name}.py')


def torch_threads() -> int:
  """Threads for the PyTorch peer: every core, as XLA uses every core."""
  return os.cpu_count() or 1


def lm_eval_parts():
  """(lm-eval's get_model, its TaskManager, gptjax's GptjaxLM) for the eval benchmarks, with
  datasets offline (their tasks are local files; set before lm-eval imports datasets), torch on
  torch_threads() and lm-eval's notes kept off the tables."""
  os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
  import logging

  import torch
  from lm_eval.api.registry import get_model
  from lm_eval.tasks import TaskManager

  from gptjax.eval.harness import GptjaxLM

  torch.set_num_threads(torch_threads())
  logging.getLogger('lm_eval').setLevel(logging.ERROR)
  return get_model, TaskManager, GptjaxLM


def transformers_gpt2(cfg, params):
  """The peer: gptjax's GPT-2 weights exported (gptjax.hf.to_hf) and loaded as a transformers
  GPT2LMHeadModel with SDPA attention, torch using every core."""
  import torch
  from transformers import GPT2LMHeadModel

  from gptjax.hf import to_hf

  torch.set_num_threads(torch_threads())
  with tempfile.TemporaryDirectory() as directory:
    to_hf(cfg, params, directory)
    return GPT2LMHeadModel.from_pretrained(directory, attn_implementation='sdpa')


def format_table(header: Sequence[str], rows: Sequence[Sequence], title: str = '') -> str:
  """The benchmark's Markdown table (what README shows), under its title line if it has one."""
  table = markdown_table(header, rows)
  return f'{title}\n\n{table}' if title else table


def make_run(config) -> trainer.Run:
  """trainer.Run without a corpus: the benchmark feeds its own batch."""
  cfg = ModelConfig.from_config(config.model)
  empty = np.zeros((0,), np.uint16)
  return trainer.Run(cfg, config, trainer.make_layout(config), cfg.block_size, empty, empty, 1.0)


def compile_seconds(config) -> float:
  """Seconds from nothing to a compiled train step of `config` (trace, lower, XLA compile),
  without allocating the state: what a run waits before its first step."""
  run = make_run(config)
  optimizer = make_optimizer(config.optim, config.train.steps, run.cfg)
  start = time.perf_counter()
  abstract, shardings = trainer.abstract_state(run, optimizer)
  step_fn = trainer.make_train_step(run, optimizer, shardings)
  step_fn.lower(abstract, plan.abstract_batch(run)).compile()
  return time.perf_counter() - start
