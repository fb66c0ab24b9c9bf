"""Autoregressive sampling: logit processors, then one jitted `lax.while_loop` over the model.

    generate(cfg, params, [464, 3290], max_new_tokens=20, temperature=0.8, top_k=40)

A batch of prompts of different lengths is left-padded to a common length, so every row's last
prompt token sits in the same cache slot; the cache's per-row `first_valid` keeps the padding out
of attention and the positions right. The prompt but its last token is written into the KV cache
in one call (prefill), then a single jitted `lax.while_loop` feeds one token per step (first the
last prompt token, then each new one) until every row has produced its end-of-text token or
`max_new_tokens` is reached.

As in flax's lm1b sampler the model is a parameter (`model_fn`, default `gpt_forward`), so the
loop can be tested with a fake model whose next token is known. `on_token` streams: the loop
hands each step's tokens to the host (an ordered `jax.debug.callback`) as it goes.

Where the model comes from is gptjax.loading; turning text into a prompt and tokens back into
text is gptjax.text.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gptjax import parallel
from gptjax.config import ModelConfig, is_int, is_number
from gptjax.model import GPT, KVCache, init_cache
from gptjax.parallel import Layout
from gptjax.text import cut_after_eot

# Cache sizes are rounded up to a multiple of this so that nearby prompt lengths share one
# compilation of the decode loop.
CACHE_BUCKET = 64
# Cumulative probabilities are float32 sums: mass within this of top_p counts as reaching it, so a
# distribution that reaches p exactly keeps the same set whatever the rounding.
TOP_P_TOLERANCE = 1e-6

# model_fn(cfg, params, tokens [B, T], cache) -> (logits [B, T, V], cache) when given a KVCache,
# and logits [B, T, V] of a plain causal forward from slot 0 when cache is None.
ModelFn = Callable[[ModelConfig, Any, jax.Array, 'KVCache | None'], Any]
# on_token(tokens): tokens is a numpy int32 [B], the ids chosen at one decode step.
OnToken = Callable[[np.ndarray], None]
# stop(new_tokens): new_tokens is a numpy int32 [B, n], each row's tokens so far -> bool [B], the
# rows to end now (a stop sequence has appeared in them, say).
StopCheck = Callable[[np.ndarray], np.ndarray]
# How many tokens the loop chooses between two calls of a stop check: the host checks between
# jitted chunks of the loop, so a stopped row has up to this many tokens too many, which the
# caller cuts (at its stop sequence).
STOP_CHECK_EVERY = 16


def gpt_forward(cfg: ModelConfig, params, tokens: jax.Array, cache: KVCache | None = None):
  """The default model_fn: `GPT(cfg)` itself."""
  return GPT(cfg).apply({'params': params}, tokens, cache=cache)


# ---------------------------------------------------------------------------------------------
# Logit processors: pure functions of logits [..., V] that send excluded tokens to -inf.


def mask_vocab(logits: jax.Array, valid_vocab_size) -> jax.Array:
  """Ids >= valid_vocab_size (rows that exist only as padding, beyond the tokenizer) never win."""
  return jnp.where(jnp.arange(logits.shape[-1]) < valid_vocab_size, logits, -jnp.inf)


def apply_temperature(logits: jax.Array, temperature) -> jax.Array:
  return logits / temperature


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
  """Keeps the k largest logits (more only where several tie with the k-th)."""
  kth_largest = jax.lax.top_k(logits, k)[0][..., -1:]
  return jnp.where(logits < kth_largest, -jnp.inf, logits)


def top_p_filter(logits: jax.Array, p) -> jax.Array:
  """Nucleus: keeps the smallest set of most likely tokens whose probability mass reaches p.

  The most likely token is always kept; tokens tied with the last kept one are kept too.
  """
  sorted_logits = -jnp.sort(-logits, axis=-1)  # descending
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs  # mass of the tokens ranked above each one
  needed = (mass_before < p - TOP_P_TOLERANCE) | (p >= 1.0)
  n_keep = jnp.maximum(needed.sum(axis=-1, keepdims=True), 1)
  threshold = jnp.take_along_axis(sorted_logits, n_keep - 1, axis=-1)
  return jnp.where(logits < threshold, -jnp.inf, logits)


class SamplingKnobs(NamedTuple):
  """The sampling settings that are traced values, so changing them does not recompile."""
  temperature: jax.Array  # float32 scalar, > 0 (greedy is a static choice, not temperature 0)
  top_p: jax.Array  # float32 scalar in (0, 1]; read only when top_p filtering is on
  valid_vocab_size: jax.Array  # int32 scalar
  eot_token: jax.Array  # int32 scalar; -1: no end-of-text token


class Strategy(NamedTuple):
  """The sampling settings that change the compiled program."""
  greedy: bool
  top_k: int | None
  use_top_p: bool


def process_logits(logits: jax.Array, knobs: SamplingKnobs, strategy: Strategy) -> jax.Array:
  """vocab mask -> temperature -> top-k -> top-p: the distribution a sample is drawn from."""
  logits = mask_vocab(logits, knobs.valid_vocab_size)
  logits = apply_temperature(logits, knobs.temperature)
  if strategy.top_k is not None:
    logits = top_k_filter(logits, strategy.top_k)
  if strategy.use_top_p:
    logits = top_p_filter(logits, knobs.top_p)
  return logits


def choose_tokens(logits: jax.Array, key: jax.Array, knobs: SamplingKnobs,
                  strategy: Strategy) -> jax.Array:
  """Next-token logits [B, V] -> token ids [B] (argmax when greedy, else a sample)."""
  if strategy.greedy:
    return jnp.argmax(mask_vocab(logits, knobs.valid_vocab_size), axis=-1).astype(jnp.int32)
  return jax.random.categorical(key, process_logits(logits, knobs, strategy)).astype(jnp.int32)


# ---------------------------------------------------------------------------------------------
# The decode loop, shared by the cached and the uncached path. They differ only in `advance`:
# how the model state (a KV cache, or the whole token buffer) takes in one more token per row and
# yields the logits of the token after it.


class LoopState(NamedTuple):
  model_state: Any  # KVCache (cached path) or token buffer [B, S] (uncached path)
  token: jax.Array  # [B] the token to feed next: the last prompt token, then each choice
  step: jax.Array  # int32 scalar: the output column written next
  done: jax.Array  # bool [B]: the row has produced its end-of-text token (or was stopped)
  out: jax.Array  # int32 [B, max_new_tokens]


def initial_loop_state(model_state, last_prompt_token, eot_token, max_new_tokens: int) -> LoopState:
  batch = last_prompt_token.shape[0]
  return LoopState(model_state, jnp.asarray(last_prompt_token, jnp.int32), jnp.int32(0),
                   jnp.zeros((batch,), bool), jnp.full((batch, max_new_tokens), eot_token,
                                                       jnp.int32))


def decode_loop(advance, state: LoopState, key: jax.Array, knobs: SamplingKnobs, strategy: Strategy,
                until: jax.Array, on_token: OnToken | None = None) -> LoopState:
  """Chooses tokens into state.out up to column `until` (a traced int32, at most
  max_new_tokens = state.out.shape[1]) or until every row is done -> the state it ends in, from
  which a later call goes on.

  advance(model_state, token [B], step) -> (logits of the next token [B, V], model_state); step 0
  feeds each row's last prompt token, step s the token chosen at step s - 1. So the model is
  traced once, and the first choice is made by the same code as the others.
  A row that is done keeps emitting end-of-text (as padding) while the others go on. The rng of
  step s is fold_in(key, s), so where the loop pauses does not change the tokens. on_token, if
  given, is called on the host with each step's tokens as they are chosen (see generate).
  """
  def cond(state):
    return (state.step < until) & ~jnp.all(state.done)

  def body(state):
    logits, model_state = advance(state.model_state, state.token, state.step)
    token = choose_tokens(logits, jax.random.fold_in(key, state.step), knobs, strategy)
    token = jnp.where(state.done, knobs.eot_token, token)
    if on_token is not None:
      # ordered: the host sees the steps in the order the loop runs them.
      jax.debug.callback(ordered=True)(lambda t: on_token(np.asarray(t)), token)
    out = jax.lax.dynamic_update_slice(state.out, token[:, None], (0, state.step))
    return LoopState(model_state, token, state.step + 1, state.done | (token == knobs.eot_token),
                     out)

  return jax.lax.while_loop(cond, body, state)


# The jitted programs are built once per (config, model, static settings) and kept; jit's own
# cache then holds one compilation per input shape (batch, prompt/cache length, max_new_tokens).


@functools.lru_cache(maxsize=64)
def _prefill_fn(cfg: ModelConfig, model_fn: ModelFn, max_len: int, layout: Layout | None):
  def prefill(params, tokens, first_valid):
    """Left-padded prompts [B, P] -> a cache of max_len slots holding them (logits unused)."""
    with parallel.activations(layout):
      cache = init_cache(cfg, tokens.shape[0], max_len, first_valid=first_valid)
      return model_fn(cfg, params, tokens, cache)[1]

  return jax.jit(prefill)


@functools.lru_cache(maxsize=64)
def _cached_decode_fn(cfg: ModelConfig, model_fn: ModelFn, strategy: Strategy,
                      on_token: OnToken | None, layout: Layout | None):
  def decode(params, state, key, knobs, until):
    def advance(cache, token, step):
      logits, cache = model_fn(cfg, params, token[:, None], cache)
      return logits[:, -1], cache

    with parallel.activations(layout):
      return decode_loop(advance, state, key, knobs, strategy, until, on_token)

  return jax.jit(decode)


@functools.lru_cache(maxsize=64)
def _uncached_decode_fn(cfg: ModelConfig, model_fn: ModelFn, strategy: Strategy,
                        on_token: OnToken | None, layout: Layout | None):
  # Without a cache the model runs its plain full-sequence forward, whose positions are
  # arange(T) and whose mask is plain causal: it has no notion of left padding. So here the rows
  # are left-aligned instead (prompt at slot 0, padding on the right) in a fixed [B, S] buffer,
  # and each row reads its logits at its own last slot. Causality makes the padding after that
  # slot invisible, positions are right for every row, and one compilation serves all prompt
  # lengths. Every step re-runs the whole buffer: exactly the work the KV cache saves.
  def decode(params, state, lengths, key, knobs, until):
    rows = jnp.arange(lengths.shape[0])

    def advance(buffer, token, step):
      slot = lengths + step - 1  # step 0 rewrites the last prompt token in place
      buffer = buffer.at[rows, slot].set(token)
      return model_fn(cfg, params, buffer, None)[rows, slot], buffer  # [B, V]

    with parallel.activations(layout):
      return decode_loop(advance, state, key, knobs, strategy, until, on_token)

  return jax.jit(decode)


def _decode(decode, state: LoopState, max_new_tokens: int, stop: StopCheck | None,
            on_token: OnToken | None = None) -> np.ndarray:
  """Runs decode(state, until) -> state to max_new_tokens, or in chunks of STOP_CHECK_EVERY steps
  with the host's stop check between them -> out [B, max_new_tokens]. on_token: called on the
  host between the chunks with each step's tokens (where the loop cannot call it itself)."""
  every = max_new_tokens if stop is None and on_token is None else STOP_CHECK_EVERY
  for until in range(every, max_new_tokens + every, every):
    until = min(until, max_new_tokens)
    first = int(state.step)
    state = decode(state, jnp.int32(until))
    if on_token is not None:
      chosen = np.asarray(state.out)
      for step in range(first, int(state.step)):
        on_token(chosen[:, step])
    if until == max_new_tokens:
      break
    if stop is not None:
      stopped = np.asarray(stop(np.asarray(state.out)[:, :until]), bool)
      state = state._replace(done=state.done | stopped)
    if np.all(state.done):
      break
  return np.asarray(state.out)


# ---------------------------------------------------------------------------------------------
# generate: validation, padding and bucketing in Python, then the jitted programs above.


def _round_up(n: int, multiple: int) -> int:
  return multiple * ((n + multiple - 1) // multiple)


def _next_power_of_two(n: int) -> int:
  return 1 << (n - 1).bit_length()


def _is_int(x) -> bool:
  """config.is_int, and numpy integers too: token ids are often read out of an array."""
  return is_int(x) or isinstance(x, np.integer)


def _as_prompts(prompt_tokens, vocab_size: int) -> tuple[list[list[int]], bool]:
  """-> (list of prompts, whether a batch was given), every id checked against the vocabulary."""
  if isinstance(prompt_tokens, (np.ndarray, jax.Array)):
    prompt_tokens = np.asarray(prompt_tokens).tolist()
  if isinstance(prompt_tokens, (str, bytes)) or not isinstance(prompt_tokens, Sequence):
    raise ValueError('prompt_tokens must be a list of token ids or a list of such lists, '
                     f'got {type(prompt_tokens).__name__}')
  if not prompt_tokens:
    raise ValueError('prompt_tokens is empty: give at least one token (e.g. the eot token)')
  is_batch = not _is_int(prompt_tokens[0])
  prompts = list(prompt_tokens) if is_batch else [prompt_tokens]
  for row, prompt in enumerate(prompts):
    name = f'prompt_tokens[{row}]' if is_batch else 'prompt_tokens'
    if isinstance(prompt, np.ndarray):
      prompt = prompts[row] = prompt.tolist()
    if (isinstance(prompt, (str, bytes)) or not isinstance(prompt, Sequence)
        or not all(_is_int(t) for t in prompt)):
      raise ValueError(f'{name} must be a list of int token ids')
    if not prompt:
      raise ValueError(f'{name} is empty: give at least one token (e.g. the eot token)')
    bad = [t for t in prompt if not 0 <= t < vocab_size]
    if bad:
      raise ValueError(f'{name} holds token id {bad[0]}, outside [0, vocab_size={vocab_size})')
  return [[int(t) for t in p] for p in prompts], is_batch


def check_settings(cfg, max_new_tokens, temperature, top_k=None, top_p=None, eot_token=None,
                   valid_vocab_size=None, max_len=None, seed=0) -> None:
  """Every mistake in generate()'s settings as a ValueError, for a caller that must check before
  it shows anything (sample.py prints the prompt before the first token)."""
  if not _is_int(max_new_tokens) or max_new_tokens < 1:
    raise ValueError(f'max_new_tokens={max_new_tokens!r} must be an integer >= 1')
  if not is_number(temperature) or not (temperature >= 0 and np.isfinite(temperature)):
    raise ValueError(f'temperature={temperature!r} must be a finite number >= 0 (0: greedy)')
  if top_k is not None and (not _is_int(top_k) or top_k < 1):
    raise ValueError(f'top_k={top_k!r} must be None or an integer >= 1')
  if top_p is not None and (not is_number(top_p) or not 0 < top_p <= 1):
    raise ValueError(f'top_p={top_p!r} must be None or a number in (0, 1]')
  if valid_vocab_size is not None and (not _is_int(valid_vocab_size)
                                       or not 1 <= valid_vocab_size <= cfg.vocab_size):
    raise ValueError(f'valid_vocab_size={valid_vocab_size!r} must be an integer in '
                     f'[1, vocab_size={cfg.vocab_size}]')
  if eot_token is not None and (not _is_int(eot_token) or not 0 <= eot_token < cfg.vocab_size):
    raise ValueError(f'eot_token={eot_token!r} must be None or a token id in '
                     f'[0, vocab_size={cfg.vocab_size})')
  if max_len is not None and (not _is_int(max_len) or max_len < 1):
    raise ValueError(f'max_len={max_len!r} must be None or an integer >= 1')
  if max_len is not None and cfg.position == 'learned' and max_len > cfg.block_size:
    raise ValueError(f'max_len={max_len} is past block_size={cfg.block_size}: learned position '
                     'embeddings exist only up to block_size')
  if not _is_int(seed):
    raise ValueError(f'seed={seed!r} must be an integer')


def fit_prompt(cfg: ModelConfig, prompt: list[int], max_new_tokens: int, max_len: int | None = None,
               truncate: bool = False) -> tuple[list[int], str | None]:
  """(prompt, warning): the prompt, left-truncated if asked and need be, so that it fits.

  The model reads the prompt and every new token but the last: len(prompt) + max_new_tokens - 1
  positions. Their limit is max_len (the cache size) when given, else block_size for learned
  positions (there is no embedding past it); a model with other positions and no max_len reads
  any length. A prompt past the limit keeps only its last tokens when `truncate` (the warning
  says so) and is an error otherwise.
  """
  if max_len is not None:
    capacity, limit = max_len, f'max_len={max_len}'
  elif cfg.position == 'learned':
    capacity, limit = cfg.block_size, f'block_size={cfg.block_size} (learned positions)'
  else:
    return prompt, None
  needed = len(prompt) + max_new_tokens - 1
  if needed <= capacity:
    return prompt, None
  keep = capacity - max_new_tokens + 1
  if keep < 1:
    raise ValueError(f'max_new_tokens={max_new_tokens} does not fit {limit}: at most '
                     f'{capacity} new tokens after a 1-token prompt')
  too_long = (f'a prompt of {len(prompt)} tokens + max_new_tokens={max_new_tokens} needs '
              f'{needed} positions, past {limit}')
  if not truncate:
    raise ValueError(f'{too_long}; shorten the prompt or max_new_tokens, or truncate the prompt '
                     f'to its last {keep} tokens')
  return prompt[-keep:], f'{too_long}: keeping only its last {keep} tokens'


def _cache_size(cfg, needed: int, max_len: int | None) -> int:
  if max_len is not None:
    return max_len
  size = _round_up(needed, CACHE_BUCKET)
  return min(size, cfg.block_size) if cfg.position == 'learned' else size


def generate(cfg: ModelConfig, params, prompt_tokens, *, max_new_tokens: int,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             seed: int = 0, use_cache: bool = True, eot_token: int | None = None,
             max_len: int | None = None, valid_vocab_size: int | None = None,
             truncate_prompt: bool = False, model_fn: ModelFn = gpt_forward,
             on_token: OnToken | None = None, stop: StopCheck | None = None,
             layout: Layout | None = None):
  """Continues each prompt by up to max_new_tokens tokens.

  prompt_tokens: a list of ints (one prompt) or a list of lists (a batch; lengths may differ).
  Returns the new tokens: a list[int] for one prompt, a list of lists for a batch. A row that
  produces eot_token ends with it (rows stop independently; the loop stops when all have).

  temperature: 0 is greedy (argmax; top_k/top_p then change nothing). top_k: sample among the k
  most likely tokens. top_p: nucleus sampling. seed: the same seed gives the same tokens.
  use_cache: False re-runs the whole sequence every step (same tokens, much slower; it exists to
  measure what the KV cache buys). valid_vocab_size: ids at or above it are never produced (pass
  the tokenizer's n_vocab when the model's vocabulary has padding rows). max_len: the cache
  size (default: longest prompt + max_new_tokens, rounded up to a multiple of CACHE_BUCKET and
  capped at block_size for learned positions). truncate_prompt: when the prompt and the new tokens
  do not fit (block_size for learned positions, or max_len), keep only each prompt's last tokens
  instead of raising. model_fn: the model (see ModelFn); tests pass a fake one.
  on_token: called on the host with each step's tokens (numpy int32 [batch]) while the loop runs
  on device, for streaming; a row already done shows eot_token. Like model_fn it is part of the
  compiled program: pass the same function to reuse the compilation.
  stop: a host-side check (see StopCheck) run every STOP_CHECK_EVERY steps, for stop sequences
  that are text rather than one token: a row it ends keeps the tokens chosen up to the check,
  which may run past the stop sequence (cut them there).
  layout: the mesh and rules the params are placed by (gptjax.model.place_params), so that the
  cache and the activations are too: a tensor-parallel decoder keeps its heads' slots.
  """
  prompts, is_batch = _as_prompts(prompt_tokens, cfg.vocab_size)
  check_settings(cfg, max_new_tokens, temperature, top_k, top_p, eot_token, valid_vocab_size,
                 max_len, seed)
  prompts = [fit_prompt(cfg, p, max_new_tokens, max_len, truncate_prompt)[0] for p in prompts]

  greedy = temperature == 0
  strategy = Strategy(greedy=greedy,
                      top_k=None if greedy or top_k is None else min(top_k, cfg.vocab_size),
                      use_top_p=not greedy and top_p is not None and top_p < 1)
  knobs = SamplingKnobs(
      temperature=jnp.float32(1.0 if greedy else temperature),
      top_p=jnp.float32(1.0 if top_p is None else top_p),
      valid_vocab_size=jnp.int32(cfg.vocab_size if valid_vocab_size is None else valid_vocab_size),
      eot_token=jnp.int32(-1 if eot_token is None else eot_token))
  key = jax.random.key(seed)
  # JAX's ordered callbacks run on one device only: across several, the host streams the tokens
  # between chunks of the loop instead.
  host_on_token = on_token if layout is not None and layout.mesh.size > 1 else None
  on_token = None if host_on_token else on_token

  lengths = np.array([len(p) for p in prompts], np.int32)
  longest = int(lengths.max())
  cache_size = _cache_size(cfg, longest + max_new_tokens - 1, max_len)
  if use_cache:
    # Pad the prompt to a power of two where the cache has room, so prompts of nearby lengths
    # share one prefill compilation too; padding slots are masked out via first_valid.
    padded_len = min(_next_power_of_two(longest), cache_size - max_new_tokens + 1)
    tokens = np.zeros((len(prompts), padded_len), np.int32)
    for row, prompt in enumerate(prompts):
      tokens[row, padded_len - len(prompt):] = prompt
    first_valid = padded_len - lengths
    # The prompt but its last token is written in one call; the loop's first step feeds the last.
    if padded_len > 1:
      cache = _prefill_fn(cfg, model_fn, cache_size, layout)(params, tokens[:, :-1], first_valid)
    else:
      cache = init_cache(cfg, len(prompts), cache_size, first_valid=first_valid)
    state = initial_loop_state(cache, tokens[:, -1], knobs.eot_token, max_new_tokens)
    decode = functools.partial(_cached_decode_fn(cfg, model_fn, strategy, on_token, layout), params)
    out = _decode(lambda state, until: decode(state, key, knobs, until), state, max_new_tokens,
                  stop, host_on_token)
  else:
    buffer = np.zeros((len(prompts), cache_size), np.int32)
    for row, prompt in enumerate(prompts):
      buffer[row, :len(prompt)] = prompt
    rows = np.arange(len(prompts))
    state = initial_loop_state(buffer, buffer[rows, lengths - 1], knobs.eot_token, max_new_tokens)
    decode = functools.partial(_uncached_decode_fn(cfg, model_fn, strategy, on_token, layout),
                               params)
    out = _decode(lambda state, until: decode(state, lengths, key, knobs, until), state,
                  max_new_tokens, stop, host_on_token)
  if on_token is not None:
    jax.effects_barrier()  # every callback has run when generate returns

  rows = [cut_after_eot(row, eot_token) for row in out.tolist()]
  return rows if is_batch else rows[0]
