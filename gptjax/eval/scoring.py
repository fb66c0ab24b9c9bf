"""Log-likelihoods of continuations: the one computation every evaluation here is made of.

    scorer = Scorer(cfg, params, valid_vocab_size=tokenizer.n_vocab, batch_size=16)
    scorer.score([(context_tokens, continuation_tokens), ...])  # -> [(logprob, is_greedy), ...]

A multiple-choice question is one (context, ending) pair per ending; the text of a document is
its rolling windows (`rolling_windows`). The pairs are sorted by length, batched, right-padded to
a few bucketed lengths and the batch to a fixed size, so a whole task compiles a handful of
programs. Right padding is invisible to a causal model: position t reads only positions <= t.

The conventions are lm-evaluation-harness's, so that the numbers can be compared with its `hf`
model's: the pair is tokenized as one text split at the context's length (`encode_pair`), a pair
too long for the model loses tokens from the left, and a document is scored in disjoint windows
of max_length tokens, the first conditioned on the end-of-text token.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gptjax.config import ModelConfig
from gptjax.model import GPT
from gptjax.sampling import mask_vocab

Pair = tuple[Sequence[int], Sequence[int]]  # (context tokens, continuation tokens)
# Padded lengths: powers of two and the midpoints between them (16, 24, 32, 48, 64, 96, ...), so
# that padding wastes at most a third of a batch and a task compiles O(log length) programs.
SMALLEST_BUCKET = 16


def bucket_length(n: int, max_length: int) -> int:
  """The padded length for a batch whose longest row has n tokens."""
  size = SMALLEST_BUCKET
  while size < n:
    size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
  return min(size, max_length)


def encode_pair(encode: Callable[[str], list[int]], context: str,
                continuation: str) -> tuple[list[int], list[int]]:
  """(context tokens, continuation tokens) of a non-empty context and its continuation.

  The two are tokenized as one text and split where the context's own tokens end, so the
  continuation's first token is the one the model would see after that context; spaces that end
  the context move to the continuation (' blue' is one GPT-2 token, ' ' + 'blue' two).
  """
  stripped = context.rstrip()
  continuation = context[len(stripped):] + continuation
  whole = encode(stripped + continuation)
  context_tokens = encode(stripped)
  return context_tokens, whole[len(context_tokens):]


def rolling_windows(tokens: Sequence[int], prefix_token: int,
                    max_length: int) -> list[tuple[list[int], list[int]]]:
  """A document's tokens as (context, continuation) pairs that predict each token exactly once.

  The first window predicts up to max_length tokens after prefix_token (end-of-text: documents
  start after one in training); each later one predicts the next max_length, with as many of the
  preceding tokens as context as the model has room for.
  """
  tokens = list(tokens)
  windows = []
  for start in range(0, len(tokens), max_length):
    end = min(start + max_length, len(tokens))
    context = [prefix_token] if start == 0 else tokens[end - max_length - 1:start]
    windows.append((context, tokens[start:end]))
  return windows


@functools.lru_cache(maxsize=16)
def _token_logprobs_fn(cfg: ModelConfig):
  def token_logprobs(params, inputs, targets, valid_vocab_size):
    """inputs, targets [B, T] -> log p(target | inputs up to it) [B, T] float32, and whether the
    target is the most likely token there [B, T]."""
    logits = mask_vocab(GPT(cfg).apply({'params': params}, inputs), valid_vocab_size)
    logprobs = jax.nn.log_softmax(logits.astype(jnp.float32))
    chosen = jnp.take_along_axis(logprobs, targets[..., None], axis=-1)[..., 0]
    return chosen, jnp.argmax(logits, axis=-1) == targets

  return jax.jit(token_logprobs)


class Scorer:
  """Scores (context, continuation) token pairs under one model.

  valid_vocab_size: the tokenizer's vocabulary; ids past it (a padded embedding's rows) are no
  text, so they take no probability mass. max_length: the longest input the model reads
  (default: block_size); a longer pair keeps its last max_length + 1 tokens.
  """
  def __init__(self, cfg: ModelConfig, params, *, valid_vocab_size: int, batch_size: int = 16,
               max_length: int | None = None):
    if batch_size < 1:
      raise ValueError(f'batch_size={batch_size} must be >= 1')
    self.cfg = cfg
    self.params = params
    self.valid_vocab_size = np.int32(valid_vocab_size)
    self.batch_size = batch_size
    self.max_length = cfg.block_size if max_length is None else max_length
    if cfg.position == 'learned' and self.max_length > cfg.block_size:
      raise ValueError(f'max_length={self.max_length} is past block_size={cfg.block_size}: '
                       'learned position embeddings exist only up to block_size')

  def score(self, pairs: Sequence[Pair],
            on_batch: Callable[[int], None] | None = None) -> list[tuple[float, bool]]:
    """-> (log-likelihood of the continuation given the context, whether greedy decoding from
    the context would produce it) per pair, in the order given. on_batch(n) is called after
    each batch with its number of pairs (a progress bar's update)."""
    rows = [self._row(context, continuation) for context, continuation in pairs]
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))  # longest first
    results: list[tuple[float, bool]] = [(0.0, False)] * len(rows)
    for first in range(0, len(order), self.batch_size):
      batch = order[first:first + self.batch_size]
      logprobs, greedy = self._run([rows[i] for i in batch])
      for row, i in enumerate(batch):
        tokens, n_scored = rows[i]
        scored = slice(len(tokens) - 1 - n_scored, len(tokens) - 1)  # the last n predictions
        results[i] = (float(logprobs[row,
                                     scored].sum(dtype=np.float64)), bool(greedy[row,
                                                                                 scored].all()))
      if on_batch is not None:
        on_batch(len(batch))
    return results

  def _row(self, context: Sequence[int], continuation: Sequence[int]) -> tuple[list[int], int]:
    """-> (the tokens the model reads, how many of the predictions at their end are scored)."""
    if not context or not continuation:
      raise ValueError('a scored pair needs a context and a continuation of at least one token '
                       f'each, got {len(context)} and {len(continuation)}')
    if len(continuation) > self.max_length:
      raise ValueError(f'a continuation of {len(continuation)} tokens is longer than '
                       f'max_length={self.max_length}: score it in windows (rolling_windows)')
    tokens = (list(context) + list(continuation))[-(self.max_length + 1):]
    return tokens, len(continuation)

  def _run(self, rows: list[tuple[list[int], int]]) -> tuple[np.ndarray, np.ndarray]:
    length = bucket_length(max(len(tokens) - 1 for tokens, _ in rows), self.max_length)
    inputs = np.zeros((self.batch_size, length), np.int32)
    targets = np.zeros((self.batch_size, length), np.int32)
    for row, (tokens, _) in enumerate(rows):
      inputs[row, :len(tokens) - 1] = tokens[:-1]
      targets[row, :len(tokens) - 1] = tokens[1:]
    logprobs, greedy = _token_logprobs_fn(self.cfg)(self.params, inputs, targets,
                                                    self.valid_vocab_size)
    return np.asarray(logprobs), np.asarray(greedy)
