"""Masked self-attention with n_kv_heads key/value heads (MHA, GQA or MQA).

Projections keep heads as an axis: queries [C, H, D], keys and values [C, K, D], output
[H, D, C]. The full-sequence computation softmax(q k^T / sqrt(D)) v is a kernel chosen by name
from KERNELS; decoding over a KV cache has its own path (`cached_attention`), since it reads a
cache laid out for one new token at a time.
"""

from __future__ import annotations

import functools
import logging
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from gptjax import parallel
from gptjax.config import ModelConfig
from gptjax.layers.dense import dense, residual_std
from gptjax.layers.norms import make_qk_norm
from gptjax.layers.positions import POSITIONS
from gptjax.parametrization import attention_scale


class LayerCache(NamedTuple):
  """One layer's keys and values: [B, K, S, D]. Only the n_kv_heads heads are stored.

  Heads before slots: each decode step reads every head's keys as one contiguous [S, D] matrix,
  so the attention dots run on the cache in place (a [B, S, K, D] cache was transposed whole,
  every step).
  """
  k: jax.Array
  v: jax.Array


# ---------------------------------------------------------------------------------------------
# Masks and the explicit softmax


def attention_mask(query_slots: jax.Array, key_slots: jax.Array, window: int | None,
                   first_valid: jax.Array | None = None) -> jax.Array:
  """Boolean [B or 1, 1, T, S]: may the query at slot t see the key at slot s?

  Causal (s <= t), inside the sliding window (t - s < window), and not a left-padding slot
  (s >= first_valid[b]). A query always sees itself, so a fully padded row never has an empty
  softmax (which would be NaN).
  """
  t = query_slots[:, None]
  s = key_slots[None, :]
  visible = s <= t
  if window is not None:
    visible &= t - s < window
  visible = visible[None, None]  # [1, 1, T, S]
  if first_valid is not None:
    not_padding = key_slots[None, None, None, :] >= first_valid[:, None, None, None]
    visible &= not_padding | (t == s)[None, None]
  return visible


class Logits(NamedTuple):
  """How q.k becomes an attention logit: times scale (None: divided by sqrt(D), the standard),
  soft-capped to (-softcap, softcap) (Gemma 2; None: not), plus bias (ALiBi's [1, H, T, S])."""
  scale: float | None = None
  softcap: float | None = None
  bias: jax.Array | None = None


def finish_logits(logits: jax.Array, head_dim: int, how: Logits) -> jax.Array:
  """q.k logits [..., T, S] float32 -> the attention logits `how` describes."""
  if how.scale is None:
    logits = logits / jnp.sqrt(jnp.float32(head_dim))
  else:
    logits = logits * jnp.float32(how.scale)
  if how.softcap is not None:
    logits = jnp.float32(how.softcap) * jnp.tanh(logits / jnp.float32(how.softcap))
  if how.bias is not None:
    logits = logits + how.bias
  return logits


def attention_logits(q, k, how: Logits) -> jax.Array:
  """The attention logits [B, H, T, S] in float32 from q [B, T, H, D] and k [B, S, K, D]; each
  kv head serves its group of H / K query heads."""
  k = jnp.repeat(k, q.shape[2] // k.shape[2], axis=2)  # [B, S, H, D]
  logits = jnp.einsum('bthd,bshd->bhts', q, k, preferred_element_type=jnp.float32)
  return finish_logits(logits, q.shape[-1], how)


def max_visible_logit(q, k, window: int | None, how: Logits) -> jax.Array:
  """The largest attention logit any query gives a key it sees, before soft-capping: what
  QK-norm and soft-capping exist to keep from growing (q [B, T, H, D], k [B, T, K, D])."""
  logits = attention_logits(q, k, how._replace(softcap=None))
  t = q.shape[1]
  visible = attention_mask(jnp.arange(t), jnp.arange(t), window)
  return jnp.max(jnp.where(visible, logits, -jnp.inf))


def attention_weights(q, k, mask, how: Logits = Logits()) -> jax.Array:
  """Explicit softmax of the attention logits [B, H, T, S] in float32 (see attention_logits)."""
  logits = jnp.where(mask, attention_logits(q, k, how), jnp.finfo(jnp.float32).min)
  return jax.nn.softmax(logits, axis=-1)


# ---------------------------------------------------------------------------------------------
# Full-sequence kernels: (q [B, T, H, D], k and v [B, T, K, D], window, probs_hook, how) ->
# [B, T, H, D]. probs_hook sees (and may change) the probabilities [B, H, T, S] before they weight
# the values; only a kernel that materialises them can take one. how: the Logits (scale: see
# gptjax.parametrization); only the explicit kernel can soft-cap.

ProbsHook = Callable[[jax.Array], jax.Array]


def explicit_kernel(q, k, v, window: int | None, probs_hook: ProbsHook | None = None,
                    how: Logits = Logits()):
  """The probabilities as an array: attention maps for analysis, attention dropout and
  soft-capping need it; also the plain reference the fused kernels are tested against."""
  t, s = q.shape[1], k.shape[1]
  probs = attention_weights(q, k, attention_mask(jnp.arange(t), jnp.arange(s), window), how)
  if probs_hook is not None:
    probs = probs_hook(probs)
  v = jnp.repeat(v, q.shape[2] // v.shape[2], axis=2)  # [B, S, H, D]
  return jnp.einsum('bhts,bshd->bthd', probs.astype(v.dtype), v)


def fused_kernel(q, k, v, window: int | None, probs_hook: ProbsHook | None = None,
                 how: Logits = Logits(), *, implementation: str):
  """jax.nn.dot_product_attention: native GQA, and causal/window flags that cuDNN turns into
  skipped blocks of work. It never materialises the probabilities, and has no soft-cap."""
  if probs_hook is not None or how.softcap is not None:
    raise ValueError(f'the {implementation} attention kernel neither exposes the attention '
                     'probabilities nor soft-caps the logits; use the explicit kernel')
  local_window = None if window is None else (window - 1, 0)
  return jax.nn.dot_product_attention(q, k, v, how.bias, scale=how.scale, is_causal=True,
                                      local_window_size=local_window, implementation=implementation)


# Query blocks of the blocked kernel. A sequence of at most two blocks goes through XLA's fused
# kernel in one piece.
QUERY_BLOCK = 256


def blocked_kernel(q, k, v, window: int | None, probs_hook: ProbsHook | None = None,
                   how: Logits = Logits(), *, block: int = QUERY_BLOCK):
  """Causal attention a block of queries at a time, each over only the keys it can see (up to
  its last query, from its window's start): about half the work of the full [T, T] product at
  a long context, in pieces that stay in a CPU's caches, where XLA:CPU's fused kernel computes
  and stores every logit. GPT-2 124M's forward over 9 x 1024 tokens on a 2-core CPU: 13.6 s
  instead of 17.0 s. The same numbers as the explicit kernel, row by row.
  """
  t = q.shape[1]
  if probs_hook is not None or how.softcap is not None:
    raise ValueError('the blocked attention kernel neither exposes the attention probabilities '
                     'nor soft-caps the logits; use the explicit kernel')
  if t <= 2 * block:
    return fused_kernel(q, k, v, window, how=how, implementation='xla')
  outputs = []
  for start in range(0, t, block):
    end = min(start + block, t)
    first = 0 if window is None else max(0, start - window + 1)  # the block's earliest key
    bias = None if how.bias is None else how.bias[..., start:end, first:end]
    mask = attention_mask(jnp.arange(start, end), jnp.arange(first, end), window)
    probs = attention_weights(q[:, start:end], k[:, first:end], mask, how._replace(bias=bias))
    values = jnp.repeat(v[:, first:end], q.shape[2] // v.shape[2], axis=2)  # [B, S, H, D]
    outputs.append(jnp.einsum('bhts,bshd->bthd', probs.astype(v.dtype), values))
  return jnp.concatenate(outputs, axis=1)


KERNELS = {
    'xla': functools.partial(fused_kernel, implementation='xla'),
    'blocked': blocked_kernel,
    'cudnn': functools.partial(fused_kernel, implementation='cudnn'),
    'explicit': explicit_kernel,
}


def resolve_attention_impl(cfg: ModelConfig) -> str:
  """The KERNELS entry cfg.attention_impl stands for on this machine.

  'auto' picks cuDNN flash attention where it applies (GPU, half precision), else XLA. An
  explicit 'cudnn' where cuDNN cannot run falls back to 'xla' with a one-line notice rather
  than failing, so a GPU config still runs (slower, same numbers) on a laptop.
  A soft-capped model takes the explicit kernel, since no fused one can cap (also with a notice
  where a fused one was asked for or would have been chosen).
  """
  cudnn_possible = (jax.default_backend() == 'gpu'
                    and cfg.compute_dtype in (jnp.bfloat16, jnp.float16))
  impl = cfg.attention_impl
  if impl == 'auto':
    impl = 'cudnn' if cudnn_possible else 'xla'
  if impl == 'cudnn' and not cudnn_possible:
    _notice_fallback(f'attention_impl=cudnn needs a GPU and dtype bfloat16/float16 (have '
                     f'{jax.default_backend()}, {cfg.dtype}); using xla')
    impl = 'xla'
  if impl != 'explicit' and cfg.attn_logit_softcap is not None:
    _notice_fallback(f'attn_logit_softcap: the {impl} attention kernel cannot soft-cap the '
                     'logits; using the explicit kernel (slower, more memory)')
    impl = 'explicit'
  return impl


@functools.lru_cache(maxsize=None)
def _notice_fallback(message: str) -> None:
  """Once per message, not once per layer and trace."""
  logging.warning('%s', message)


# ---------------------------------------------------------------------------------------------
# Decoding over a cache


def cached_attention(q, k, v, mask, how: Logits = Logits()) -> jax.Array:
  """softmax(logits) v over a cache: q [B, T, H, D], k and v [B, K, S, D], boolean mask
  [B|1, 1, T, S] -> [B, T, H, D]. Each kv head serves its group of H / K query heads."""
  b, t, h, d = q.shape
  kv = k.shape[1]
  q = q.reshape(b, t, kv, h // kv, d).transpose(0, 2, 3, 1, 4)  # [B, K, G, T, D]
  logits = jnp.einsum('bkgtd,bksd->bkgts', q, k, preferred_element_type=jnp.float32)
  if how.bias is not None:  # [1, H, T, S] -> [1, K, G, T, S], the layout of these logits
    how = how._replace(bias=how.bias.reshape(1, kv, h // kv, *how.bias.shape[-2:]))
  logits = finish_logits(logits, d, how)
  logits = jnp.where(mask[:, :, None], logits, jnp.finfo(jnp.float32).min)  # [B, 1, 1, T, S]
  probs = jax.nn.softmax(logits, axis=-1)
  y = jnp.einsum('bkgts,bksd->bkgtd', probs.astype(v.dtype), v)  # [B, K, G, T, D]
  return y.transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)


def write_cache(cache: LayerCache, k, v, index) -> LayerCache:
  """Writes a chunk's k, v [B, T, K, D] into the cache [B, K, S, D] at slot `index`."""
  def write(slots, new):
    new = new.astype(slots.dtype).transpose(0, 2, 1, 3)
    return jax.lax.dynamic_update_slice(slots, new, (0, 0, index, 0))

  return LayerCache(write(cache.k, k), write(cache.v, v))


def ring_slots(index, ring: int) -> jax.Array:
  """The slot each position of a ring of `ring` slots holds before `index` is written: the
  latest s < index with s = position mod ring; negative where nothing was written yet."""
  position = jnp.arange(ring)
  return index - 1 - jnp.mod(index - 1 - position, ring)


def write_ring(cache: LayerCache, k, v, index) -> LayerCache:
  """Writes a chunk's k, v [B, T, K, D] into the ring cache [B, K, R, D], slot s at s mod R; of
  a chunk longer than the ring, only its last R tokens (the others are out of every window)."""
  ring, t = cache.k.shape[2], k.shape[1]
  keep = min(t, ring)
  where = jnp.mod(index + t - keep + jnp.arange(keep), ring)

  def write(slots, new):
    new = new[:, t - keep:].astype(slots.dtype).transpose(0, 2, 1, 3)  # [B, K, keep, D]
    return slots.at[:, :, where].set(new, unique_indices=True)

  return LayerCache(write(cache.k, k), write(cache.v, v))


def attend_to_cache(q, k, v, cache: LayerCache, index, first_valid, window: int | None, how: Logits,
                    bias_of=None) -> tuple[jax.Array, LayerCache]:
  """A chunk's queries q [B, T, H, D] over the cache and the chunk's own k, v [B, T, K, D]:
  (output [B, T, H, D], the cache with the chunk written). A global layer's cache holds every
  slot; a window layer's is a ring (see gptjax.model.KVCache), read together with the chunk and
  written after. bias_of(query_slots, key_slots) -> [1, H, T, S] adds a position bias."""
  t = q.shape[1]
  query_slots = index + jnp.arange(t)
  if window is None:
    cache = write_cache(cache, k, v, index)
    keys, values, key_slots = cache.k, cache.v, jnp.arange(cache.k.shape[2])
    mask = attention_mask(query_slots, key_slots, None, first_valid)
  else:
    chunk = lambda x: x.astype(cache.k.dtype).transpose(0, 2, 1, 3)  # [B, K, T, D]
    keys = jnp.concatenate([cache.k, chunk(k)], axis=2)
    values = jnp.concatenate([cache.v, chunk(v)], axis=2)
    key_slots = jnp.concatenate([ring_slots(index, cache.k.shape[2]), query_slots])
    mask = attention_mask(query_slots, key_slots, window, first_valid) & (key_slots >= 0)
    cache = write_ring(cache, k, v, index)
  if bias_of is not None:
    how = how._replace(bias=bias_of(query_slots, key_slots))
  return cached_attention(q, keys, values, mask, how), cache


# ---------------------------------------------------------------------------------------------
# The module


class Attention(nn.Module):
  """x [B, T, C] -> ([B, T, C], the updated LayerCache or None): the attention of block `layer`
  (which picks its window and rotary table when they vary by layer).

  With a cache (decoding), first_valid [B] is each row's first real slot (see KVCache); without
  one the sequence is causal (and windowed). train enables attention dropout; need_weights sows
  the probabilities [B, H, T, S] as 'attention_weights' and the largest raw logit as 'max_logit'
  (the full-sequence forward only). Both need the explicit kernel, so they select it.
  """
  cfg: ModelConfig
  train: bool = False
  need_weights: bool = False
  layer: int = 0

  @nn.compact
  def __call__(self, x, positions, first_valid=None, cache: LayerCache | None = None,
               cache_index=None):
    cfg = self.cfg
    q, k, v = self._project(x, positions)  # [B, T, H|K, D]
    t = x.shape[1]
    window = cfg.layer_windows[self.layer]
    bias = POSITIONS[cfg.position].bias
    bias_of = None if bias is None else functools.partial(bias, cfg)
    how = Logits(attention_scale(cfg), cfg.attn_logit_softcap)
    if cache is not None:
      y, cache = attend_to_cache(q, k, v, cache, cache_index, first_valid, window, how, bias_of)
      # [B, K, S, D]: a tensor-parallel decoder keeps each device's kv heads' slots.
      cache = LayerCache(*(parallel.constrain(c, ('batch', 'kv_heads', 'sequence', 'head_dim'))
                           for c in cache))
    else:
      if bias_of is not None:
        how = how._replace(bias=bias_of(jnp.arange(t), jnp.arange(t)))
      if self.need_weights:
        self.sow('intermediates', 'max_logit', max_visible_logit(q, k, window, how))
      y = self._kernel()(q, k, v, window, self._probs_hook(), how)
    y = checkpoint_name(y, 'attention_out')  # [B, T, H, D], for model.remat's named policies
    out = dense(cfg, 'out', cfg.d_model, ('heads', 'head_dim', 'embed'), std=residual_std(cfg),
                n_contract=2)
    return out(y), cache

  def _project(self, x, positions):
    """q [B, T, H, D], k and v [B, T, K, D]: projected, QK-normed, rotated."""
    cfg = self.cfg
    h, kv, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    q = dense(cfg, 'query', (h, d), ('embed', 'heads', 'head_dim'), use_bias=cfg.qkv_bias)(x)
    k = dense(cfg, 'key', (kv, d), ('embed', 'kv_heads', 'head_dim'), use_bias=cfg.qkv_bias)(x)
    v = dense(cfg, 'value', (kv, d), ('embed', 'kv_heads', 'head_dim'), use_bias=cfg.qkv_bias)(x)
    if cfg.qk_norm != 'none':  # before rotary, so the cache holds normalised, rotated keys
      q = make_qk_norm(cfg, 'q_norm', 'heads')(q)
      k = make_qk_norm(cfg, 'k_norm', 'kv_heads')(k)
    rotate = POSITIONS[cfg.position].rotate
    if rotate is not None:
      q, k = rotate(q, positions, cfg, self.layer), rotate(k, positions, cfg, self.layer)
    return checkpoint_name(q, 'query'), checkpoint_name(k, 'key'), checkpoint_name(v, 'value')

  def _dropout(self) -> bool:
    return self.train and self.cfg.attn_dropout > 0

  def _kernel(self):
    explicit = self.need_weights or self._dropout()
    return KERNELS['explicit' if explicit else resolve_attention_impl(self.cfg)]

  def _probs_hook(self) -> ProbsHook | None:
    if not (self.need_weights or self._dropout()):
      return None

    def hook(probs):
      self.sow('intermediates', 'attention_weights', probs)
      if self._dropout():
        probs = nn.Dropout(self.cfg.attn_dropout)(probs, deterministic=False)
      return probs

    return hook
