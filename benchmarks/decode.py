"""Decoding speed: gptjax's KV-cache loop against no cache and against transformers' generate.

  python benchmarks/decode.py               # about 10 minutes on 2 CPU cores
  python benchmarks/decode.py --repeats=1   # quicker, noisier

The model is GPT-2 124M (configs/gpt124m.py) in float32 with random weights; the prompt is 16
tokens, greedy decoding. Rows: gptjax with the cache (prefill, then one jitted while_loop), the
same strategy without a cache (the whole sequence re-run every step, at several lengths: the
gap grows with the text), and `transformers` GPT2LMHeadModel.generate (SDPA attention, its own
KV cache) on the same weights, at batch 1 and 16. Before timing, the script checks that all of
them produce the same tokens. Batch-1 decoding reads every weight once per token, so its speed
limit is memory bandwidth: the last column is the weight bytes streamed per second as a fraction
of this machine's measured read bandwidth (benchmarks/machine.py).
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    format_table, load_config, machine, median_seconds, transformers_gpt2)
from machine import read_bandwidth  # noqa: E402

from gptjax.config import ModelConfig  # noqa: E402
from gptjax.flops import count_params  # noqa: E402
from gptjax.model import init_params  # noqa: E402
from gptjax.sampling import generate  # noqa: E402

PROMPT_TOKENS = 16
NEW_TOKENS = 128
GPT2_VOCAB = 50257


def gpt124m_float32() -> ModelConfig:
  return ModelConfig.from_config(load_config('gpt124m').model).replace(dtype='float32')


class Gptjax:
  def __init__(self, cfg: ModelConfig, params, use_cache: bool):
    self.cfg, self.params, self.use_cache = cfg, params, use_cache

  def generate(self, prompts: np.ndarray, new_tokens: int) -> np.ndarray:
    out = generate(self.cfg, self.params, prompts.tolist(), max_new_tokens=new_tokens,
                   temperature=0, use_cache=self.use_cache, valid_vocab_size=GPT2_VOCAB)
    return np.asarray(out)


class Transformers:
  """GPT2LMHeadModel.generate, greedy, with its KV cache, never stopping early."""
  def __init__(self, cfg: ModelConfig, params):
    import torch

    self.model = transformers_gpt2(cfg, params)
    self.model.eval()
    self.model.generation_config.eos_token_id = None  # random weights: generate every token
    self.model.generation_config.pad_token_id = 0
    self.torch = torch

  def generate(self, prompts: np.ndarray, new_tokens: int) -> np.ndarray:
    inputs = self.torch.from_numpy(prompts.astype(np.int64))
    with self.torch.inference_mode():
      out = self.model.generate(inputs, attention_mask=self.torch.ones_like(inputs),
                                max_new_tokens=new_tokens, do_sample=False, use_cache=True)
    return out[:, prompts.shape[1]:].numpy()


def check_same_tokens(reference: np.ndarray, name: str, tokens: np.ndarray) -> None:
  if not np.array_equal(reference, tokens):
    row, col = np.argwhere(reference != tokens)[0]
    raise AssertionError(f'{name} differs from gptjax with cache at row {row}, token {col}: '
                         f'{tokens[row, col]} vs {reference[row, col]}')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repeats', type=int, default=3, help='timed repetitions (median)')
  parser.add_argument('--batch', type=int, default=16, help='the batched rows')
  parser.add_argument('--uncached_lengths', default='32,128',
                      help='new-token counts at which to time decoding without a cache')
  args = parser.parse_args()

  cfg = gpt124m_float32()
  params = jax.device_get(init_params(cfg, jax.random.key(0)))
  weight_bytes = count_params(params) * 4
  prompts = np.random.default_rng(0).integers(0, GPT2_VOCAB, (args.batch, PROMPT_TOKENS))
  one = prompts[:1]
  cached, uncached, peer = Gptjax(cfg, params, True), Gptjax(cfg, params,
                                                             False), Transformers(cfg, params)

  # Same tokens first: the cached loop is the reference for the others.
  reference = cached.generate(prompts, NEW_TOKENS)
  check_same_tokens(reference[:1], 'gptjax batch 1', cached.generate(one, NEW_TOKENS))
  check_same_tokens(reference[:1], 'gptjax without cache', uncached.generate(one, NEW_TOKENS))
  check_same_tokens(reference[:1], 'transformers', peer.generate(one, NEW_TOKENS))
  check_same_tokens(reference, 'transformers batched', peer.generate(prompts, NEW_TOKENS))
  print(f'same {NEW_TOKENS} greedy tokens from gptjax (cache, no cache, batch 1 and '
        f'{args.batch}) and transformers')

  bandwidth, bandwidth_source = read_bandwidth()

  def measure(impl, rows: np.ndarray, new_tokens: int) -> float:
    seconds = median_seconds(lambda: impl.generate(rows, new_tokens), repeats=args.repeats)
    return rows.shape[0] * new_tokens / seconds

  # (name, new tokens, batch) -> tokens/s
  speeds = {}
  for n in sorted({NEW_TOKENS, *map(int, args.uncached_lengths.split(','))}):
    speeds[('gptjax, KV cache', n, 1)] = measure(cached, one, n)
    speeds[('gptjax, no cache', n, 1)] = measure(uncached, one, n)
  speeds[('transformers generate', NEW_TOKENS, 1)] = measure(peer, one, NEW_TOKENS)
  speeds[('gptjax, KV cache', NEW_TOKENS, args.batch)] = measure(cached, prompts, NEW_TOKENS)
  speeds[('transformers generate', NEW_TOKENS, args.batch)] = measure(peer, prompts, NEW_TOKENS)

  rows = []
  for (name, n, batch), speed in speeds.items():
    ours = speeds[('gptjax, KV cache', n, batch)]
    rows.append((name, n, batch, f'{speed:,.1f}', f'{speed / ours:.2f}x',
                 f'{100 * weight_bytes * speed / bandwidth:.0f}%' if batch == 1 else '—'))
  print(
      format_table(
          ('decoding (greedy)', 'new tokens', 'batch', 'tokens/s', 'vs gptjax cache',
           'of memory bandwidth'), rows,
          title=(f'Decoding, GPT-2 124M float32, prompt {PROMPT_TOKENS} tokens ({machine()}); '
                 f'tokens/s counts every row; batch 1 reads the {weight_bytes / 1e6:,.0f} MB of '
                 f'weights once per token, against the measured {bandwidth / 1e9:,.1f} GB/s '
                 f'({bandwidth_source}); medians of {args.repeats}')))


if __name__ == '__main__':
  main()
