"""Downstream evals inside the training loop: `config.evals`, each at its own cadence.

    config.evals.choices = eval_config_dict(type='multiple_choice', path='data/hs.jsonl', every=200)
    config.evals.text = eval_config_dict(type='loglikelihood', path='data/held_out.txt', limit=50)
    config.evals.arc = eval_config_dict(type='lm_eval', task='arc_easy', limit=500)

multiple_choice reads HellaSwag-form JSONL ({"ctx": ..., "endings": [...], "label": i}) and
reports acc and acc_norm as lm-evaluation-harness defines them (each ending scored after a space;
acc_norm divides its log-likelihood by its length in characters); loglikelihood reports the bits
per byte of a text file or of the {"text"} documents of a JSONL, scored in windows of block_size;
lm_eval runs one lm-eval task through the `gptjax` model type. They log as `<name>/<metric>`.

The data is read (and an lm-eval task loaded) before training starts, so that a missing file is
one line then and not an error an hour in. At an eval's step the trainer snapshots the params
(every process takes part: a sharded model is gathered) and process 0 runs the eval on a
background thread while the training steps go on: no process waits for it.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import queue
import threading
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gptjax.config import EvalConfig, ModelConfig
from gptjax.eval.scoring import Scorer, encode_pair, rolling_windows
from gptjax.tokenizer import Tokenizer

Metrics = dict[str, float]


def read_jsonl(path: str, what: str) -> list[dict]:
  rows = []
  try:
    with open(path, encoding='utf-8') as f:
      for number, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError:
          raise ValueError(f'{what}: {path} line {number} is not JSON: {line[:60]!r}') from None
  except OSError as e:
    raise ValueError(f'{what}: cannot read {path}: {e.strerror}') from None
  return rows


class MultipleChoice:
  """HellaSwag-form questions: which ending does the model find most likely after the context?"""
  def __init__(self, name: str, spec: EvalConfig, tokenizer: Tokenizer):
    what = f'evals.{name}.path'
    self.questions = []  # ([ending tokens], context tokens, label, [ending lengths in characters])
    for number, row in enumerate(read_jsonl(spec.path, what)[:spec.limit], 1):
      if not (isinstance(row, dict) and isinstance(row.get('ctx'), str)
              and isinstance(row.get('endings'), list) and row['endings']
              and all(isinstance(e, str) for e in row['endings'])
              and str(row.get('label')).isdigit() and int(row['label']) < len(row['endings'])):
        raise ValueError(f'{what}: {spec.path} line {number} is not a question of the form '
                         '{"ctx": "...", "endings": ["...", ...], "label": INDEX}')
      if not row['ctx']:
        raise ValueError(f'{what}: {spec.path} line {number} has an empty ctx')
      pairs = [encode_pair(tokenizer.encode, row['ctx'], ' ' + e) for e in row['endings']]
      self.questions.append(
          ([p[1] for p in pairs], pairs[0][0], int(row['label']), [len(e) for e in row['endings']]))
    if not self.questions:
      raise ValueError(f'{what}: {spec.path} holds no questions')

  def __call__(self, scorer: Scorer) -> Metrics:
    pairs = [(context, ending) for endings, context, _, _ in self.questions for ending in endings]
    scores = iter(logprob for logprob, _ in scorer.score(pairs))
    correct = correct_norm = 0
    for endings, _, label, lengths in self.questions:
      logprobs = np.array([next(scores) for _ in endings])
      correct += int(np.argmax(logprobs)) == label
      correct_norm += int(np.argmax(logprobs / np.array(lengths, float))) == label
    n = len(self.questions)
    return {'acc': correct / n, 'acc_norm': correct_norm / n}


class Loglikelihood:
  """Bits per byte of held-out text: each document in windows of the model's context."""
  def __init__(self, name: str, spec: EvalConfig, tokenizer: Tokenizer):
    what = f'evals.{name}.path'
    if spec.path.endswith('.jsonl'):
      rows = read_jsonl(spec.path, what)
      if not all(isinstance(r, dict) and isinstance(r.get('text'), str) for r in rows):
        raise ValueError(f'{what}: every line of {spec.path} must be {{"text": "..."}}')
      texts = [r['text'] for r in rows]
    else:
      try:
        texts = [Path(spec.path).read_text(encoding='utf-8')]
      except OSError as e:
        raise ValueError(f'{what}: cannot read {spec.path}: {e.strerror}') from None
      except UnicodeDecodeError:
        raise ValueError(f'{what}: {spec.path} is not UTF-8 text') from None
    texts = [t for t in texts if t][:spec.limit]
    if not texts:
      raise ValueError(f'{what}: {spec.path} holds no text')
    self.documents = [tokenizer.encode(t) for t in texts]
    self.n_bytes = sum(len(t.encode('utf-8')) for t in texts)
    self.prefix = tokenizer.eot_token

  def __call__(self, scorer: Scorer) -> Metrics:
    windows = [
        w for doc in self.documents for w in rolling_windows(doc, self.prefix, scorer.max_length)
    ]
    nats = -sum(logprob for logprob, _ in scorer.score(windows))
    return {'bpb': nats / math.log(2) / self.n_bytes}


class LmEvalTask:
  """One lm-evaluation-harness task through the `gptjax` model type."""
  def __init__(self, name: str, spec: EvalConfig, tokenizer: Tokenizer):
    try:
      from lm_eval.tasks import TaskManager

      from gptjax.eval.harness import load_tasks
    except ImportError as e:
      raise ValueError(f'evals.{name}: type lm_eval needs lm-evaluation-harness: {e}') from None
    task, include = spec.task, None
    if task.endswith(('.yaml', '.yml')):
      import yaml
      include = str(Path(task).resolve().parent)
      try:
        task = yaml.safe_load(Path(spec.task).read_text())['task']
      except (OSError, TypeError, KeyError, yaml.YAMLError):
        raise ValueError(f'evals.{name}.task={spec.task!r}: not a readable task YAML') from None
    self.task_manager = TaskManager(include_path=include)
    load_tasks(self.task_manager, [task])
    self.task, self.limit, self.tokenizer = task, spec.limit, tokenizer

  def __call__(self, scorer: Scorer) -> Metrics:
    import lm_eval

    from gptjax.eval.harness import GptjaxLM
    from gptjax.loading import LoadedModel
    loaded = LoadedModel(scorer.cfg, scorer.params, self.tokenizer, 'training')
    lm = GptjaxLM(loaded=loaded, batch_size=scorer.batch_size, max_length=scorer.max_length,
                  progress=False)
    results = lm_eval.simple_evaluate(model=lm, tasks=[self.task], limit=self.limit,
                                      task_manager=self.task_manager, bootstrap_iters=0,
                                      verbosity='ERROR')
    metrics = {}
    for key, value in results['results'][self.task].items():
      # 'acc,none': a metric under lm-eval's default filter (the others: alias, sample_len)
      metric, comma, _ = key.partition(',')
      if comma and isinstance(value, (int, float)) and not metric.endswith('_stderr'):
        metrics[metric] = float(value)
    return metrics


EVALS = {'multiple_choice': MultipleChoice, 'loglikelihood': Loglikelihood, 'lm_eval': LmEvalTask}


def check_evals(evals) -> dict[str, EvalConfig]:
  """config.evals as typed entries, every field checked and every data file there (not read
  yet: a sweep checks each run's config before the first starts)."""
  specs = {}
  for name, entry in (evals or {}).items():
    if not hasattr(entry, 'items'):
      raise ValueError(f'evals.{name} must be an eval (eval_config_dict(type=..., ...)), got '
                       f'{entry!r}')
    spec = specs[name] = EvalConfig.named(name, entry)
    if spec.type != 'lm_eval' and not Path(spec.path).is_file():
      raise ValueError(f'evals.{name}.path={spec.path!r}: no such file')
  return specs


class InLoopEvals:
  """The config's evals for one training run: which are due at a step, and their results as
  they come back from the background thread."""
  def __init__(self, evals, cfg: ModelConfig, tokenizer: Tokenizer, eval_every: int, enabled: bool):
    specs = check_evals(evals)
    self.cfg = cfg
    self.enabled = enabled
    self.every = {name: spec.every or eval_every for name, spec in specs.items()}
    self.batch_size = {name: spec.batch_size for name, spec in specs.items()}
    # Read on every process: a bad file stops all of them alike, before anything compiles.
    self.evals: dict[str, Callable[[Scorer], Metrics]] = {
        name: EVALS[spec.type](name, spec, tokenizer)
        for name, spec in specs.items()
    }
    self.valid_vocab_size = tokenizer.n_vocab
    self._pending: list[tuple[int, concurrent.futures.Future]] = []
    self._queue: queue.Queue = queue.Queue()
    # A daemon: an interrupted run exits without waiting for an eval that is still running.
    self._worker = threading.Thread(target=self._work, name='evals', daemon=True)

  def due(self, step: int, last_step: int) -> list[str]:
    return [name for name, every in self.every.items() if step % every == 0 or step == last_step]

  def start(self, step: int, params, names: list[str]) -> None:
    """Snapshots params (on every process) and, on process 0, queues the evals `names` on them."""
    if not names:
      return
    snapshot = _snapshot(params)
    if self.enabled:
      future = concurrent.futures.Future()
      self._pending.append((step, future))
      if not self._worker.is_alive():
        self._worker.start()
      self._queue.put((future, snapshot, names))

  def _work(self) -> None:
    while True:
      future, params, names = self._queue.get()
      if future.set_running_or_notify_cancel():
        try:
          future.set_result(self._run(params, names))
        except BaseException as e:  # noqa: BLE001 (handed to the main thread by finished())
          future.set_exception(e)

  def _run(self, params, names: list[str]) -> Metrics:
    metrics = {}
    for name in names:
      scorer = Scorer(self.cfg, params, valid_vocab_size=self.valid_vocab_size,
                      batch_size=self.batch_size[name])
      for metric, value in self.evals[name](scorer).items():
        metrics[f'{name}/{metric}'] = value
    return metrics

  def finished(self, wait: bool = False) -> list[tuple[int, Metrics]]:
    """(step, metrics) of every queued eval that has finished (with wait: of all of them)."""
    done = []
    for step, future in list(self._pending):
      if wait or future.done():
        self._pending.remove((step, future))
        try:
          done.append((step, future.result()))
        except Exception as e:  # noqa: BLE001 (a failed eval is reported, not a crash mid-run)
          raise ValueError(f'the evals at step {step} failed: {type(e).__name__}: {e}') from e
    return done

  def abandon(self) -> list[int]:
    """Stops waiting (the run is being interrupted): the steps whose evals are dropped."""
    steps = [step for step, future in self._pending if not future.done()]
    for _, future in self._pending:
      future.cancel()
    self._pending.clear()
    return steps


def _snapshot(params) -> Any:
  """A copy of the params that the next (donating) train step leaves alone: on device in one
  process; gathered whole onto every process's host when several share the model."""
  if jax.process_count() == 1:
    return jax.tree.map(jnp.copy, params)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(params, tiled=True)
