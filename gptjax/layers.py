"""The pieces of a transformer block: norms, rotary positions, attention, feed-forward.

Each variant is a small function or module selected by a config string (principle 3: variants are
data, not forks). Shapes: B batch, T query length, S key length, H query heads, K kv heads,
D head dim, C d_model.
"""

from __future__ import annotations

import functools
import logging
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from gptjax.config import ModelConfig

# ---------------------------------------------------------------------------------------------
# Norms: statistics in float32 whatever the compute dtype, because bf16 means/variances of
# activations with a large mean lose most of their precision.


class LayerNorm(nn.Module):
  eps: float
  use_bias: bool
  dtype: jnp.dtype
  param_dtype: jnp.dtype

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
    y = y * self.param('scale', nn.initializers.ones, (c,), self.param_dtype)
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (c,), self.param_dtype)
    return y.astype(self.dtype)


class RMSNorm(nn.Module):
  eps: float
  use_bias: bool  # unused: RMSNorm has no bias by definition (kept for one norm signature)
  dtype: jnp.dtype
  param_dtype: jnp.dtype

  @nn.compact
  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + self.eps)
    y = y * self.param('scale', nn.initializers.ones, (x.shape[-1],), self.param_dtype)
    return y.astype(self.dtype)


def make_norm(cfg: ModelConfig, name: str) -> nn.Module:
  norm_class = {'layernorm': LayerNorm, 'rmsnorm': RMSNorm}[cfg.norm]
  return norm_class(eps=cfg.norm_eps, use_bias=cfg.use_bias, dtype=cfg.compute_dtype,
                    param_dtype=cfg.params_dtype, name=name)


# ---------------------------------------------------------------------------------------------
# Rotary position embedding, in the "half-split" layout of GPT-NeoX and Hugging Face Llama:
# dimension i is paired with i + D/2 (not with its neighbour, as in the original RoFormer).


def rope_frequencies(head_dim: int, theta: float) -> jax.Array:
  return 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))  # [D/2]


def apply_rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """Rotates x [B, T, N, D] by the angles of its positions [B, T]; computed in float32."""
  angles = positions.astype(jnp.float32)[..., None] * rope_frequencies(x.shape[-1], theta)
  cos = jnp.cos(angles)[:, :, None, :]  # [B, T, 1, D/2]
  sin = jnp.sin(angles)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# Attention


class LayerCache(NamedTuple):
  """One layer's keys and values: [B, K, S, D]. Only the n_kv_heads heads are stored.

  Heads before slots: each decode step reads every head's keys as one contiguous [S, D] matrix,
  so the attention dots run on the cache in place (a [B, S, K, D] cache was transposed whole,
  every step).
  """
  k: jax.Array
  v: jax.Array


def resolve_attention_impl(cfg: ModelConfig) -> str:
  """'auto' picks cuDNN flash attention where it applies (GPU, half precision), else XLA.

  An explicit 'cudnn' where cuDNN cannot run falls back to 'xla' with a one-line notice rather
  than failing, so a GPU config still runs (slower, same numbers) on a laptop.
  """
  cudnn_possible = (jax.default_backend() == 'gpu'
                    and cfg.compute_dtype in (jnp.bfloat16, jnp.float16))
  if cfg.attention_impl == 'auto':
    return 'cudnn' if cudnn_possible else 'xla'
  if cfg.attention_impl == 'cudnn' and not cudnn_possible:
    _notice_cudnn_fallback(jax.default_backend(), cfg.dtype)
    return 'xla'
  return cfg.attention_impl


@functools.lru_cache(maxsize=None)
def _notice_cudnn_fallback(backend: str, dtype: str) -> None:
  """Once per (backend, dtype), not once per layer and trace."""
  logging.warning('attention_impl=cudnn needs a GPU and dtype bfloat16/float16 (have %s, %s); '
                  'using xla', backend, dtype)


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


def cached_attention(q, k, v, mask) -> jax.Array:
  """softmax(q k^T / sqrt(D)) v over a cache: q [B, T, H, D], k and v [B, K, S, D], boolean mask
  [B|1, 1, T, S] -> [B, T, H, D]. Each kv head serves its group of H / K query heads."""
  b, t, h, d = q.shape
  kv = k.shape[1]
  q = q.reshape(b, t, kv, h // kv, d).transpose(0, 2, 3, 1, 4)  # [B, K, G, T, D]
  logits = jnp.einsum('bkgtd,bksd->bkgts', q, k, preferred_element_type=jnp.float32)
  logits = logits / jnp.sqrt(jnp.float32(d))
  logits = jnp.where(mask[:, :, None], logits, jnp.finfo(jnp.float32).min)  # [B, 1, 1, T, S]
  probs = jax.nn.softmax(logits, axis=-1)
  y = jnp.einsum('bkgts,bksd->bkgtd', probs.astype(v.dtype), v)  # [B, K, G, T, D]
  return y.transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)


def attention_weights(q, k, mask) -> jax.Array:
  """Explicit softmax(q k^T / sqrt(D)) [B, H, T, S] in float32; used when the probabilities
  themselves are needed (attention dropout, attention maps)."""
  n_groups = q.shape[2] // k.shape[2]
  k = jnp.repeat(k, n_groups, axis=2)  # [B, S, H, D]
  logits = jnp.einsum('bthd,bshd->bhts', q, k, preferred_element_type=jnp.float32)
  logits = logits / jnp.sqrt(jnp.float32(q.shape[-1]))
  logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  return jax.nn.softmax(logits, axis=-1)


class Attention(nn.Module):
  """Masked multi-head self-attention with n_kv_heads key/value heads (MHA, GQA or MQA).

  With a cache (decoding), mask is the boolean [B|1, 1, T, S] of which slots each query sees;
  without one it is None and the sequence is causal (and windowed). need_weights (attention maps
  for analysis) applies to the full-sequence forward.
  """
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, positions, mask, cache: LayerCache | None = None,
               cache_index=None, *, train: bool = False, need_weights: bool = False):
    cfg = self.cfg
    b, t, _ = x.shape
    h, kv, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    std = cfg.init_std
    qkv = nn.Dense((h + 2 * kv) * d, use_bias=cfg.qkv_bias, dtype=cfg.compute_dtype,
                   param_dtype=cfg.params_dtype, kernel_init=nn.initializers.normal(std),
                   name='qkv')(x)
    q, k, v = jnp.split(qkv, [h * d, (h + kv) * d], axis=-1)
    q = q.reshape(b, t, h, d)  # [B, T, H, D]
    k = k.reshape(b, t, kv, d)  # [B, T, K, D]
    v = v.reshape(b, t, kv, d)
    if cfg.position == 'rope':
      q = apply_rope(q, positions, cfg.rope_theta)
      k = apply_rope(k, positions, cfg.rope_theta)

    use_dropout = train and cfg.attn_dropout > 0
    if cache is not None:  # write this chunk at cache_index, then attend over the whole cache
      def write(slots, new):  # new [B, T, K, D] -> slots [B, K, S, D]
        new = new.astype(slots.dtype).transpose(0, 2, 1, 3)
        return jax.lax.dynamic_update_slice(slots, new, (0, 0, cache_index, 0))
      cache = LayerCache(write(cache.k, k), write(cache.v, v))
      y = cached_attention(q, cache.k, cache.v, mask)
    elif need_weights or use_dropout:
      mask = attention_mask(jnp.arange(t), jnp.arange(t), cfg.attention_window)
      probs = attention_weights(q, k, mask)  # [B, H, T, S]
      self.sow('intermediates', 'attention_weights', probs)
      if use_dropout:
        probs = nn.Dropout(cfg.attn_dropout)(probs, deterministic=False)
      y = jnp.einsum('bhts,bshd->bthd', probs.astype(v.dtype),
                     jnp.repeat(v, h // kv, axis=2))
    else:  # full sequence: causal (+ window) flags, which cuDNN turns into skipped work
      window = None if cfg.attention_window is None else (cfg.attention_window - 1, 0)
      y = jax.nn.dot_product_attention(q, k, v, is_causal=True, local_window_size=window,
                                       implementation=resolve_attention_impl(cfg))
    y = y.reshape(b, t, h * d)
    out_std = std / jnp.sqrt(2.0 * cfg.n_layers)  # GPT-2: residual projections scaled by depth
    y = nn.Dense(cfg.d_model, use_bias=cfg.use_bias, dtype=cfg.compute_dtype,
                 param_dtype=cfg.params_dtype, kernel_init=nn.initializers.normal(out_std),
                 name='out')(y)
    return y, cache


# ---------------------------------------------------------------------------------------------
# Feed-forward


class MLP(nn.Module):
  """GELU (GPT-2: fc -> gelu -> proj) or SwiGLU (Llama: down(silu(gate(x)) * up(x)))."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg

    def dense(features, name, std=cfg.init_std):
      return nn.Dense(features, use_bias=cfg.use_bias, dtype=cfg.compute_dtype,
                      param_dtype=cfg.params_dtype, kernel_init=nn.initializers.normal(std),
                      name=name)

    out_std = cfg.init_std / jnp.sqrt(2.0 * cfg.n_layers)
    if cfg.mlp == 'gelu':
      hidden = jax.nn.gelu(dense(cfg.d_ff, 'fc')(x), approximate=True)  # GPT-2's tanh GELU
      return dense(cfg.d_model, 'proj', out_std)(hidden)
    hidden = jax.nn.silu(dense(cfg.d_ff, 'gate')(x)) * dense(cfg.d_ff, 'up')(x)
    return dense(cfg.d_model, 'down', out_std)(hidden)
