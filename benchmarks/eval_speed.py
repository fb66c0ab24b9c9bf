"""Downstream-eval speed: the `gptjax` lm-eval model type against lm-eval's own `hf` model.

  python benchmarks/eval_speed.py               # about 15 minutes on 2 CPU cores
  python benchmarks/eval_speed.py --repeats=1 --questions=30 --documents=1   # quicker, noisier

The model is GPT-2 124M (configs/gpt124m.py) in float32 with random weights; the hf model runs
the same weights exported with to_hf (transformers' GPT2LMHeadModel, SDPA attention, torch on
every core). Both go through lm_eval.simple_evaluate on the same two local tasks, built from the
embedded corpus (the Python standard library's source) so that nothing is downloaded:
multiple choice (HellaSwag's shape: a context, four endings, the real one and three from
elsewhere) and rolling log-likelihood (documents longer than the context, as wikitext's). Before
timing, the script checks that both give the same per-example log-likelihoods. Each number is
the median over --repeats timed evaluations after one untimed one (gptjax's compiles there).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import format_table, lm_eval_parts, load_config, machine  # noqa: E402

from gptjax import data, hf, loading  # noqa: E402
from gptjax.config import ModelConfig  # noqa: E402
from gptjax.model import init_params  # noqa: E402
from gptjax.tokenizer import get_tokenizer, gpt2_for_transformers  # noqa: E402

CONTEXT_CHARS, ENDING_CHARS, DOCUMENT_CHARS = 240, 80, 5000


def corpus_text(n_chars: int) -> str:
  root, files = data.stdlib_files()
  text, rng = [], random.Random(0)
  for name in rng.sample(files, len(files)):
    text.append((root / name).read_text(encoding='utf-8', errors='replace'))
    if sum(map(len, text)) > n_chars:
      break
  return ''.join(text)


def write_tasks(directory: Path, questions: int, documents: int) -> None:
  """bench_mc and bench_rolling: lm-eval task YAML over JSONL written here."""
  text = corpus_text(questions * 2 * (CONTEXT_CHARS + ENDING_CHARS) + documents * DOCUMENT_CHARS)
  rng = random.Random(0)
  span = CONTEXT_CHARS + ENDING_CHARS
  rows = []
  for _ in range(questions):
    start = rng.randrange(len(text) - span)
    ctx, real = text[start:start + CONTEXT_CHARS], text[start + CONTEXT_CHARS:start + span]
    others = [text[s:s + ENDING_CHARS] for s in rng.sample(range(len(text) - ENDING_CHARS), 3)]
    label = rng.randrange(4)
    rows.append({'ctx': ctx, 'endings': others[:label] + [real] + others[label:], 'label': label})
  docs = [{'text': text[i * DOCUMENT_CHARS:(i + 1) * DOCUMENT_CHARS]} for i in range(documents)]
  for name, records, spec in [
      ('bench_mc', rows, 'output_type: multiple_choice\ndoc_to_text: "{{ctx}}"\n'
       'doc_to_choice: "{{endings}}"\ndoc_to_target: "{{label}}"\nmetric_list: [{metric: acc}]'),
      ('bench_rolling', docs, 'output_type: loglikelihood_rolling\ndoc_to_text: ""\n'
       'doc_to_target: "{{text}}"\nmetric_list: [{metric: bits_per_byte}]'),
  ]:
    with open(directory / f'{name}.jsonl', 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in records)
    (directory / f'{name}.yaml').write_text(
        f'task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n'
        f'    test: {directory / name}.jsonl\ntest_split: test\n{spec}\n')


def evaluate_results(lm, task_manager, tasks: list[str]) -> dict:
  """lm_eval.simple_evaluate's results of the tasks, every request's response kept."""
  import lm_eval
  return lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=task_manager, log_samples=True,
                                 bootstrap_iters=0, verbosity='ERROR')


def loglikelihoods(results: dict, task: str) -> list[float]:
  """Every request's log-likelihood, example by example (a multiple-choice example has one per
  ending, as (log-likelihood, is_greedy))."""
  return [
      r[0] if isinstance(r, tuple) else r for sample in results['samples'][task]
      for r in sample['filtered_resps']
  ]


def evaluate(lm, task_manager, task: str) -> tuple[float, list[float]]:
  """(seconds, every request's log-likelihood) of one lm-eval run of the task."""
  start = time.perf_counter()
  results = evaluate_results(lm, task_manager, [task])
  return time.perf_counter() - start, loglikelihoods(results, task)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=3, help='timed evaluations (median)')
  parser.add_argument('--batch_size', type=int, default=16, help='rows per forward, both models')
  parser.add_argument('--questions', type=int, default=60, help='multiple-choice questions')
  parser.add_argument('--documents', type=int, default=4, help='rolling-loglikelihood documents')
  args = parser.parse_args()
  get_model, TaskManager, GptjaxLM = lm_eval_parts()
  cfg = ModelConfig.from_config(load_config('gpt124m').model).replace(dtype='float32')
  params = init_params(cfg, jax.random.key(0))
  model = loading.LoadedModel(cfg, params, get_tokenizer('gpt2'), 'GPT-2 124M, random weights')
  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    hf.to_hf(cfg, params, tmp / 'hf')
    gpt2_for_transformers().save_pretrained(tmp / 'hf')
    (tmp / 'tasks').mkdir()
    write_tasks(tmp / 'tasks', args.questions, args.documents)
    task_manager = TaskManager(include_path=str(tmp / 'tasks'))
    ours = GptjaxLM(loaded=model, batch_size=args.batch_size)
    theirs = get_model('hf')(pretrained=str(tmp / 'hf'), dtype='float32', device='cpu',
                             batch_size=args.batch_size)
    rows = []
    for task, examples in [('bench_mc', args.questions), ('bench_rolling', args.documents)]:
      timings = {'gptjax': [], 'hf': []}
      first = {}
      for name, lm in [('gptjax', ours), ('hf', theirs)]:
        first[name] = evaluate(lm, task_manager, task)  # gptjax compiles here
      np.testing.assert_allclose(first['gptjax'][1], first['hf'][1], rtol=1e-4, atol=1e-3)
      for _ in range(args.repeats):  # interleaved: a slow spell of the machine hits both
        for name, lm in [('gptjax', ours), ('hf', theirs)]:
          timings[name].append(evaluate(lm, task_manager, task)[0])
      median = {name: float(np.median(t)) for name, t in timings.items()}
      rows.append([
          task, f'{examples} ({len(first["hf"][1])} requests)',
          f'{examples / median["gptjax"]:.2f}', f'{examples / median["hf"]:.2f}',
          f'{median["hf"] / median["gptjax"]:.2f}x', f'{first["gptjax"][0]:.1f} s'
      ])
  print(
      format_table([
          'task', 'examples', 'gptjax examples/s', 'hf examples/s', 'gptjax / hf',
          'gptjax first run (compiles)'
      ], rows, f'lm-eval on GPT-2 124M (float32), batch {args.batch_size}, median of '
                   f'{args.repeats}; {machine()}'))


if __name__ == '__main__':
  main()
