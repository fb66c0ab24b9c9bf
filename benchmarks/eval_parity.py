"""Downstream-eval parity: what lm-eval reports for one model through the `gptjax` model type and
through its own `hf` model type, side by side.

  python benchmarks/eval_parity.py        # about 3 minutes on 2 CPU cores

The model is a GPT-2-shaped transformers model (4 layers, d_model 256, GPT-2's vocabulary and
tokenizer) with random weights, saved with save_pretrained: lm-eval's hf model reads that
directory, gptjax imports it (gptjax.hf.from_hf, as `python -m gptjax.eval --hf=DIR` does). The
tasks are benchmarks/eval_speed.py's local ones (multiple choice in HellaSwag's shape, rolling
log-likelihood), built from the embedded corpus. The table gives each metric from both and the
largest difference between their per-request log-likelihoods.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import format_table, lm_eval_parts, machine  # noqa: E402
from eval_speed import evaluate_results, loglikelihoods, write_tasks  # noqa: E402

from gptjax.tokenizer import gpt2_for_transformers  # noqa: E402

TASKS = ('bench_mc', 'bench_rolling')


def gpt2_shaped(directory: Path) -> None:
  """A random GPT-2-shaped transformers model and GPT-2's tokenizer, saved to directory."""
  import torch
  import transformers

  torch.manual_seed(0)
  config = transformers.GPT2Config(n_layer=4, n_embd=256, n_head=8, n_positions=512)
  transformers.GPT2LMHeadModel(config).save_pretrained(directory)
  gpt2_for_transformers().save_pretrained(directory)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--questions', type=int, default=200, help='multiple-choice questions')
  parser.add_argument('--documents', type=int, default=10, help='rolling-loglikelihood documents')
  args = parser.parse_args()
  get_model, TaskManager, GptjaxLM = lm_eval_parts()
  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    gpt2_shaped(tmp / 'model')
    (tmp / 'tasks').mkdir()
    write_tasks(tmp / 'tasks', args.questions, args.documents)
    task_manager = TaskManager(include_path=str(tmp / 'tasks'))
    models = {
        'gptjax': GptjaxLM(hf=str(tmp / 'model'), batch_size=16),
        'hf': get_model('hf')(pretrained=str(tmp / 'model'), dtype='float32', device='cpu',
                              batch_size=16),
    }
    results = {name: evaluate_results(lm, task_manager, list(TASKS)) for name, lm in models.items()}
  rows = []
  for task in TASKS:
    lls = {name: np.array(loglikelihoods(r, task)) for name, r in results.items()}
    gaps = np.abs(lls['gptjax'] - lls['hf'])
    gap = (f'{gaps.max():.1e} nats, {np.max(gaps / np.abs(lls["hf"])):.0e} relative '
           f'({len(gaps)} requests)')
    for key, ours in results['gptjax']['results'][task].items():
      metric, comma, _ = key.partition(',')
      if comma and not metric.endswith('_stderr'):
        rows.append(
            [task, metric, f'{ours:.6f}', f'{results["hf"]["results"][task][key]:.6f}', gap])
  print(
      format_table(['task', 'metric', 'gptjax', 'hf', 'largest |Δ log-likelihood| of a request'],
                   rows, f'lm-eval on a GPT-2-shaped model (4 layers, d_model 256, random weights, '
                   f'float32); {machine()}'))


if __name__ == '__main__':
  main()
