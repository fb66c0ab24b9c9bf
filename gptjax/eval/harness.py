"""The `gptjax` model type of lm-evaluation-harness (EleutherAI's `lm-eval`).

    import lm_eval, gptjax.eval.harness                   # importing registers 'gptjax'
    lm_eval.simple_evaluate(model='gptjax', model_args='workdir=runs/small', tasks=['hellaswag'])

The model comes from the three sources sample.py knows (model_args `workdir=` with `step=`, `hf=`
or `config=`), or, in-process, as a LoadedModel (`GptjaxLM(loaded=...)`). Log-likelihoods are
gptjax.eval.scoring's padded, length-bucketed batches; generation is gptjax.sampling's KV-cache
loop, with the task's stop sequences checked between chunks of it.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from tqdm.auto import tqdm

try:
  from lm_eval.api.model import TemplateLM
  from lm_eval.api.registry import register_model
  from lm_eval.models.utils import (handle_stop_sequences, normalize_gen_kwargs,
                                    postprocess_generated_text)
except ImportError:
  raise ImportError('lm-evaluation-harness is not installed: pip install -e ".[eval]"') from None

from gptjax import cli, loading, sampling
from gptjax.config import load_config_file
from gptjax.eval.scoring import Scorer, rolling_windows
from gptjax.tokenizer import HFTokenizer

DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's own default for generation tasks


def _positive_int(name: str, value) -> int:
  """value as an int >= 1; lm-eval's model_args strings arrive as strings or numbers."""
  if isinstance(value, bool) or not str(value).isdigit() or int(value) < 1:
    raise ValueError(f'{name}={value!r} must be an integer >= 1')
  return int(value)


def load(workdir=None, step=None, hf=None, config=None) -> loading.LoadedModel:
  """The model that lm-eval's model_args name; config may be a config file's path
  ('configs/tiny.py' or 'configs/ablation.py:norm=rmsnorm')."""
  if isinstance(config, str):
    path, _, arg = config.partition(':')
    config = load_config_file(path, arg or None)
  return loading.load_model(workdir=workdir, step=None if step is None else int(step), hf=hf,
                            config=config)


OFFLINE_HINT = ('run it once with a network (datasets keeps a copy), or use a local task: a YAML '
                'file over local data, given as --tasks=PATH.yaml or found with --include_path')


def load_tasks(task_manager, names: list[str]) -> None:
  """Loads each task once, so that a wrong name or data that cannot be had is one line naming
  the task, before the model is loaded."""
  for name in names:
    try:
      task_manager.load([name])
    except KeyError:
      close = difflib.get_close_matches(name, task_manager.all_tasks, n=3)
      hint = f'; did you mean {", ".join(close)}?' if close else ''
      raise ValueError(
          f'unknown lm-eval task {name!r} (`lm-eval ls tasks` lists them; a local '
          f'one is a task YAML file, or a name in an --include_path directory){hint}') from None
    except ConnectionError as e:
      raise ValueError(f'task {name} needs its data from the Hugging Face Hub, which cannot be '
                       f'reached ({cli.one_line(e)}): {OFFLINE_HINT}') from None
    except FileNotFoundError as e:
      raise ValueError(f'task {name}: its data is missing ({cli.one_line(e)})') from None


@register_model('gptjax')
class GptjaxLM(TemplateLM):
  """A gptjax model behind lm-eval's LM interface.

  batch_size: rows per forward (log-likelihoods) or per decode loop (generation).
  max_length: the longest input read (default: the model's block_size). max_gen_toks: tokens
  generated per request when its task does not say. progress: show progress bars (off for the
  training loop's evals, whose bars would cut through the trainer's). mesh: with several
  devices, the mesh to run on ('tensor=4'; see loading.on_devices). device / max_batch_size:
  taken for lm-eval's sake and unused (JAX places the model on its devices).
  """
  def __init__(self, workdir=None, step=None, hf=None, config=None, *,
               loaded: loading.LoadedModel | None = None, batch_size=DEFAULT_BATCH_SIZE,
               max_length=None, max_gen_toks=DEFAULT_MAX_GEN_TOKS, seed=0, progress=True, mesh=None,
               device=None, max_batch_size=None):
    super().__init__()
    if loaded is None:
      loaded = loading.on_devices(load(workdir, step, hf, config), mesh)
    self.loaded = loaded
    self.cfg, self.params, self.tokenizer = loaded.cfg, loaded.params, loaded.tokenizer
    if str(batch_size).startswith('auto'):
      raise ValueError(f'batch_size={batch_size}: give a number (the rows per forward pass)')
    self.batch_size = _positive_int('batch_size', batch_size)
    self._max_length = (self.cfg.block_size if max_length is None else _positive_int(
        'max_length', max_length))
    self._max_gen_toks = _positive_int('max_gen_toks', max_gen_toks)
    self.seed = int(seed)
    self.progress = progress
    if self.tokenizer.eot_token is None:
      raise ValueError(f'the {self.tokenizer.name} tokenizer has no end-of-text token, which '
                       'lm-eval conditions empty contexts on')
    self.scorer = Scorer(self.cfg, self.params, valid_vocab_size=self.tokenizer.n_vocab,
                         batch_size=self.batch_size, max_length=self._max_length,
                         layout=loaded.layout)

  # -- what lm-eval asks of a model

  @property
  def eot_token_id(self) -> int:
    return self.tokenizer.eot_token

  @property
  def prefix_token_id(self) -> int:
    """The token an empty context and a document's first window are conditioned on: BOS where
    the tokenizer has one (as lm-eval's hf model does), else end-of-text."""
    bos = getattr(self.tokenizer, 'bos_token', None)
    return self.eot_token_id if bos is None else bos

  @property
  def max_length(self) -> int:
    return self._max_length

  @property
  def max_gen_toks(self) -> int:
    return self._max_gen_toks

  @property
  def tokenizer_name(self) -> str:
    return self.tokenizer.name

  def get_model_info(self) -> dict[str, Any]:
    return {'model_source': self.loaded.description}

  def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
    if isinstance(self.tokenizer, HFTokenizer):
      # As the hf model: the tokenizer's own special tokens (Llama's BOS) unless told otherwise,
      # and none added to a text that already starts with BOS.
      if add_special_tokens is None:
        bos = self.tokenizer.bos_token
        add_special_tokens = bos is None or not string.startswith(self.tok_decode([bos]))
      return self.tokenizer.encode(string, add_special_tokens=add_special_tokens)
    return self.tokenizer.encode(string)

  def tok_decode(self, tokens: list[int]) -> str:
    return self.tokenizer.decode(tokens)

  def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False,
                            **kwargs) -> list[tuple[float, bool]]:
    """requests: ((context, continuation) strings or None, context tokens, continuation tokens)."""
    pairs = [(context, continuation) for _, context, continuation in requests]
    results = self._score(pairs, 'loglikelihood', disable_tqdm)
    for (request, _, _), result in zip(requests, results):
      if request is not None:
        self.cache_hook.add_partial('loglikelihood', request, result)
    return results

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    """Each text's log-likelihood, scored in disjoint windows of max_length tokens."""
    windows, owners = [], []
    for index, request in enumerate(requests):
      (text,) = request.args
      text_windows = rolling_windows(self.tok_encode(text), self.prefix_token_id, self.max_length)
      windows += text_windows
      owners += [index] * len(text_windows)
    totals = [0.0] * len(requests)
    for owner, (logprob, _) in zip(owners,
                                   self._score(windows, 'loglikelihood_rolling', disable_tqdm)):
      totals[owner] += logprob
    for request, total in zip(requests, totals):
      self.cache_hook.add_partial('loglikelihood_rolling', request.args, total)
    return totals

  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    """Greedy (or, where the task asks, sampled) continuations, each cut before the first of its
    stop sequences; requests with the same generation settings run as batches."""
    groups: dict[str, list[int]] = {}
    for index, request in enumerate(requests):
      groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(index)
    results = [''] * len(requests)
    with tqdm(total=len(requests), desc='generate_until', disable=disable_tqdm
              or not self.progress) as progress:
      for indices in groups.values():
        contexts = [requests[i].args[0] for i in indices]
        for index, text in zip(indices,
                               self._generate(contexts, requests[indices[0]].args[1], progress)):
          results[index] = text
          self.cache_hook.add_partial('generate_until', requests[index].args, text)
    return results

  # -- how

  def _score(self, pairs, what: str, disable_tqdm: bool) -> list[tuple[float, bool]]:
    with tqdm(total=len(pairs), desc=what, disable=disable_tqdm or not self.progress) as progress:
      return self.scorer.score(pairs, on_batch=progress.update)

  def _generate(self, contexts: list[str], gen_kwargs: dict, progress) -> list[str]:
    settings = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)
    until = handle_stop_sequences(settings.pop('until', None),
                                  eos=self.tok_decode([self.eot_token_id]) or None)
    max_new_tokens = settings.pop('max_gen_toks')
    if max_new_tokens >= self.max_length:
      raise ValueError(f'max_gen_toks={max_new_tokens} leaves no room for a context in '
                       f'max_length={self.max_length}')
    sample = dict(
        temperature=float(settings.get('temperature', 0.0)) if settings.get('do_sample') else 0.0,
        top_k=settings.get('top_k'), top_p=settings.get('top_p'))

    def stopped(new_tokens):
      return [any(stop in self.tok_decode(row) for stop in until if stop) for row in new_tokens]

    prompts = [
        self.tok_encode(context)[-(self.max_length - max_new_tokens):] or [self.prefix_token_id]
        for context in contexts
    ]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    texts = [''] * len(prompts)
    for first in range(0, len(order), self.batch_size):
      batch = order[first:first + self.batch_size]
      # Every batch as many rows (repeating the first) so that one decode loop compiles.
      rows = [prompts[i] for i in batch] + [prompts[batch[0]]] * (self.batch_size - len(batch))
      new_tokens = sampling.generate(self.cfg, self.params, rows, max_new_tokens=max_new_tokens,
                                     eot_token=self.eot_token_id, seed=self.seed,
                                     valid_vocab_size=self.tokenizer.n_vocab, stop=stopped,
                                     layout=self.loaded.layout, **sample)
      for i, tokens in zip(batch, new_tokens):
        texts[i] = postprocess_generated_text(self.tok_decode(tokens), until, None)
      progress.update(len(batch))
    return texts
