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

from gptjax import parallel
from gptjax.config import ModelConfig
from gptjax.model import GPT, init_cache
from gptjax.parallel import Layout
from gptjax.sampling import mask_vocab

Pair = tuple[Sequence[int], Sequence[int]]  # (context tokens, continuation tokens)
# Padded lengths: powers of two and the midpoints between them (16, 24, 32, 48, 64, 96, ...), so
# that padding wastes at most a third of a batch and a task compiles O(log length) programs.
SMALLEST_BUCKET = 16


def _bucket_count(n: int, most: int) -> int:
  """Rows padded to a power of two (at most `most`, the batch size): few compilations."""
  return max(n, min(1 << (n - 1).bit_length(), most))


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


def scoring_config(cfg: ModelConfig) -> ModelConfig:
  """The model as scoring runs it: on a CPU with the automatic kernel, long inputs take the
  blocked attention kernel (rolling windows fill the whole context; XLA:CPU's fused kernel would
  compute and store every [T, T] logit)."""
  if cfg.attention_impl == 'auto' and jax.default_backend() == 'cpu' and (cfg.attn_logit_softcap
                                                                          is None):
    return cfg.replace(attention_impl='blocked')
  return cfg


def _logprobs(logits, targets, valid_vocab_size):
  """logits [..., V], targets [...] -> (log p(target) float32, whether it is the argmax)."""
  logits = mask_vocab(logits.astype(jnp.float32), valid_vocab_size)
  top = jnp.max(logits, axis=-1)
  log_normalizer = top + jnp.log(jnp.sum(jnp.exp(logits - top[..., None]), axis=-1))
  chosen = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return chosen - log_normalizer, chosen >= top


@functools.lru_cache(maxsize=16)
def _token_logprobs_fn(cfg: ModelConfig, layout: Layout | None):
  def token_logprobs(params, inputs, positions, targets, valid_vocab_size):
    """inputs [B, T]; positions, targets [B, K] -> log p(target | inputs up to its position)
    [B, K] float32, and whether the target is the most likely token there [B, K]. Only the
    scored positions go through the LM head (and its log-sum-exp): for a multiple-choice
    ending, a fraction of the sequence."""
    with parallel.activations(layout):
      logits = GPT(scoring_config(cfg)).apply({'params': params}, inputs, logits_at=positions)
    return _logprobs(logits, targets, valid_vocab_size)

  return jax.jit(token_logprobs)


@functools.lru_cache(maxsize=16)
def _shared_context_logprobs_fn(cfg: ModelConfig, layout: Layout | None):
  def shared_context_logprobs(params, contexts, first_valid, owners, endings, targets,
                              valid_vocab_size):
    """Several continuations of one context, the context run once: contexts [G, P] left-padded
    (first_valid [G]); ending row r continues context owners[r]; endings [R, E] are its tokens
    but the last, right-padded, and targets [R, E + 1] all of them -> log p and is-argmax of
    each target [R, E + 1]. The contexts go into a KV cache, which each ending row then reads
    as its own: a question's four endings cost one context, not four."""
    with parallel.activations(layout):
      return _shared_context_logprobs(cfg, params, contexts, first_valid, owners, endings, targets,
                                      valid_vocab_size)

  return jax.jit(shared_context_logprobs)


def _shared_context_logprobs(cfg, params, contexts, first_valid, owners, endings, targets,
                             valid_vocab_size):
  model = GPT(scoring_config(cfg))
  g, p = contexts.shape
  cache = init_cache(cfg, g, p + endings.shape[1], first_valid)
  last, cache = model.apply({'params': params}, contexts, cache=cache, logits_at=jnp.full(
      (g, 1), p - 1))  # predicts each first token
  cache = cache.replace(layers=jax.tree.map(lambda a: a[owners], cache.layers),
                        first_valid=cache.first_valid[owners])
  rest, _ = model.apply({'params': params}, endings, cache=cache)
  logits = jnp.concatenate([last[owners], rest], axis=1)  # [R, E + 1, V]
  return _logprobs(logits, targets, valid_vocab_size)


class Scorer:
  """Scores (context, continuation) token pairs under one model.

  valid_vocab_size: the tokenizer's vocabulary; ids past it (a padded embedding's rows) are no
  text, so they take no probability mass. max_length: the longest input the model reads
  (default: block_size); a longer pair keeps its last max_length + 1 tokens. layout: where the
  params are placed (loading.on_devices), whose rules place the activations too.
  """
  def __init__(self, cfg: ModelConfig, params, *, valid_vocab_size: int, batch_size: int = 16,
               max_length: int | None = None, layout: Layout | None = None):
    if batch_size < 1:
      raise ValueError(f'batch_size={batch_size} must be >= 1')
    self.cfg = cfg
    self.params = params
    self.layout = layout
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
    each batch with its number of pairs (a progress bar's update).

    Pairs that share their context (a multiple-choice question's endings) run the context once;
    the others are scored whole, in length-sorted batches."""
    results: list[tuple[float, bool]] = [(0.0, False)] * len(pairs)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (context, continuation) in enumerate(pairs):
      self._row(context, continuation)  # every pair checked before any is run
      groups.setdefault(tuple(context), []).append(i)
    shared, single = [], []
    for context, members in groups.items():
      longest = max(len(pairs[i][1]) for i in members)
      fits = len(context) + longest - 1 <= self.max_length  # nothing is truncated
      (shared if len(members) > 1 and fits else single).append(members)
    self._score_whole(pairs, [i for members in single for i in members], results, on_batch)
    self._score_shared(pairs, shared, results, on_batch)
    return results

  def _score_whole(self, pairs, indices: list[int], results: list, on_batch) -> None:
    rows = {i: self._row(*pairs[i]) for i in indices}
    order = sorted(indices, key=lambda i: -len(rows[i][0]))  # longest first
    for first in range(0, len(order), self.batch_size):
      batch = order[first:first + self.batch_size]
      logprobs, greedy = self._run([rows[i] for i in batch])
      for row, i in enumerate(batch):
        n_scored = rows[i][1]
        results[i] = (float(logprobs[row, :n_scored].sum(dtype=np.float64)),
                      bool(greedy[row, :n_scored].all()))
      if on_batch is not None:
        on_batch(len(batch))

  def _score_shared(self, pairs, groups: list[list[int]], results: list, on_batch) -> None:
    """Groups of pair indices with one context each, batched up to batch_size continuations and
    as long as the longest context and the longest ending (but its last token) fit the model
    together: the batch's contexts are padded to the one, its endings to the other."""
    groups = sorted(groups, key=lambda members: -len(pairs[members[0]][0]))
    batch: list[list[int]] = []
    for members in groups + [None]:
      if batch and (members is None or not self._fits(pairs, batch + [members])):
        indices = [i for group in batch for i in group]
        logprobs, greedy = self._run_shared(pairs, batch)
        for row, i in enumerate(indices):
          n = len(pairs[i][1])
          results[i] = (float(logprobs[row, :n].sum(dtype=np.float64)), bool(greedy[row, :n].all()))
        if on_batch is not None:
          on_batch(len(indices))
        batch = []
      if members is not None:
        batch.append(members)

  def _fits(self, pairs, groups: list[list[int]]) -> bool:
    rows = sum(map(len, groups))
    longest_context = max(len(pairs[members[0]][0]) for members in groups)
    longest_ending = max(len(pairs[i][1]) for members in groups for i in members) - 1
    return rows <= self.batch_size and longest_context + longest_ending <= self.max_length

  def _run_shared(self, pairs, groups: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    contexts = [list(pairs[members[0]][0]) for members in groups]
    endings = [list(pairs[i][1]) for members in groups for i in members]
    longest_context, longest_ending = max(map(len, contexts)), max(map(len, endings)) - 1
    # Padded to buckets (few compilations) where the cache has room, else to the lengths.
    length = bucket_length(longest_context, self.max_length)
    ending_length = bucket_length(max(longest_ending, 1), self.max_length)
    if length + ending_length > self.max_length:
      length = longest_context
      ending_length = max(min(ending_length, self.max_length - length), longest_ending, 1)
    n_groups, n_rows = _bucket_count(len(contexts),
                                     self.batch_size), _bucket_count(len(endings), self.batch_size)
    context_tokens = np.zeros((n_groups, length), np.int32)
    first_valid = np.full((n_groups,), length - 1, np.int32)  # a padding group sees one slot
    for g, context in enumerate(contexts):
      context_tokens[g, length - len(context):] = context
      first_valid[g] = length - len(context)
    owners = np.zeros((n_rows,), np.int32)
    ending_inputs = np.zeros((n_rows, ending_length), np.int32)
    targets = np.zeros((n_rows, ending_length + 1), np.int32)
    row = 0
    for g, members in enumerate(groups):
      for i in members:
        ending = pairs[i][1]
        owners[row] = g
        ending_inputs[row, :len(ending) - 1] = ending[:-1]
        targets[row, :len(ending)] = ending
        row += 1
    logprobs, greedy = _shared_context_logprobs_fn(self.cfg,
                                                   self.layout)(self.params, context_tokens,
                                                                first_valid, owners, ending_inputs,
                                                                targets, self.valid_vocab_size)
    return np.asarray(logprobs), np.asarray(greedy)

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
    """-> log-probabilities and greedy flags [rows, K] of each row's scored tokens, first."""
    # Input length and scored positions padded to a bucket: few compilations. The rows are not
    # padded: only a call's last batch can be short, one more compilation at most.
    n_rows = len(rows)
    length = bucket_length(max(len(tokens) - 1 for tokens, _ in rows), self.max_length)
    n_scored = bucket_length(max(n for _, n in rows), length)
    inputs = np.zeros((n_rows, length), np.int32)
    positions = np.zeros((n_rows, n_scored), np.int32)
    targets = np.zeros((n_rows, n_scored), np.int32)
    for row, (tokens, n) in enumerate(rows):
      inputs[row, :len(tokens) - 1] = tokens[:-1]
      # The last n inputs predict the continuation: positions len - 1 - n .. len - 2.
      positions[row, :n] = np.arange(len(tokens) - 1 - n, len(tokens) - 1)
      targets[row, :n] = tokens[-n:]
    logprobs, greedy = _token_logprobs_fn(self.cfg, self.layout)(self.params, inputs, positions,
                                                                 targets, self.valid_vocab_size)
    return np.asarray(logprobs), np.asarray(greedy)
