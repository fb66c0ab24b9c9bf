"""How a token learns where it is: a learned table added to the embeddings, rotary embeddings
applied to queries and keys, ALiBi's distance penalty on the attention logits, or nothing at all
(the causal mask alone leaks order)."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gptjax.config import ModelConfig
from gptjax.layers.dense import Embed, normal_init


def learned_table(cfg: ModelConfig) -> nn.Module:
  """GPT-2's wpe: one learned vector per position, up to block_size (so no further)."""
  return Embed(cfg.block_size, cfg.d_model,
               embedding_init=normal_init(cfg.init_std, (None, 'embed')), dtype=cfg.compute_dtype,
               param_dtype=cfg.params_dtype, name='wpe')


# ---------------------------------------------------------------------------------------------
# Rotary position embedding (Su et al.), in the "half-split" layout of GPT-NeoX and Hugging Face
# Llama: dimension i is paired with i + R/2 (not with its neighbour, as in the original RoFormer),
# over the first R = rotary_dims dimensions of a head; the rest pass through.


def rope_frequencies(rotary_dims: int, theta: float) -> jax.Array:
  return 1.0 / (theta**(jnp.arange(0, rotary_dims, 2, dtype=jnp.float32) / rotary_dims))  # [R/2]


def _llama3_scaling(inv_freq: np.ndarray, cfg: ModelConfig) -> np.ndarray:
  """Llama 3.1: long wavelengths (beyond original / low_freq_factor) divided by the factor,
  short ones (below original / high_freq_factor) kept, a smooth blend in between."""
  original = cfg.rope_original_block_size or cfg.block_size
  factor, low, high = cfg.rope_scaling_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
  wavelength = 2 * math.pi / inv_freq
  scaled = np.where(wavelength > original / low, inv_freq / factor, inv_freq)
  smooth = (original / wavelength - low) / (high - low)
  blended = (1 - smooth) * scaled / factor + smooth * scaled
  medium = (wavelength >= original / high) & (wavelength <= original / low)
  return np.where(medium, blended, scaled)


def _yarn_scaling(inv_freq: np.ndarray, cfg: ModelConfig) -> np.ndarray:
  """YaRN (Peng et al.): frequencies that turn more than beta_fast times over the original
  context are kept, fewer than beta_slow times interpolated (divided by the factor), a linear
  ramp between, over dimension indices rounded outwards (HF's truncate=True)."""
  dims, theta, factor = cfg.rotary_dims, cfg.rope_theta, cfg.rope_scaling_factor
  original = cfg.rope_original_block_size or cfg.block_size

  def dimension_of(rotations: float) -> float:  # the dimension turning `rotations` times
    return dims * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

  low = max(math.floor(dimension_of(cfg.rope_beta_fast)), 0)
  high = min(math.ceil(dimension_of(cfg.rope_beta_slow)), dims - 1)
  ramp = np.clip((np.arange(dims // 2) - low) / ((high - low) if high != low else 1e-3), 0, 1)
  keep = 1 - ramp
  return inv_freq / factor * (1 - keep) + inv_freq * keep


def yarn_attention_factor(cfg: ModelConfig) -> float:
  """YaRN's temperature: cos and sin (so q.k by its square) scaled by 0.1 ln(factor) + 1."""
  factor = cfg.rope_scaling_factor
  return 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0


# Each cfg.rope_scaling: (inverse frequencies [R/2] float64, cfg) -> (scaled ones, the factor cos
# and sin are multiplied by).
ROPE_SCALINGS = {
    'none': lambda inv_freq, cfg: (inv_freq, 1.0),
    'linear': lambda inv_freq, cfg: (inv_freq / cfg.rope_scaling_factor, 1.0),  # positions / f
    'llama3': lambda inv_freq, cfg: (_llama3_scaling(inv_freq, cfg), 1.0),
    'yarn': lambda inv_freq, cfg: (_yarn_scaling(inv_freq, cfg), yarn_attention_factor(cfg)),
}


def rotary_table(cfg: ModelConfig, layer: int) -> tuple[np.ndarray, float]:
  """(inverse frequencies [R/2] float32, the factor cos and sin are multiplied by) of a layer:
  its theta (rope_local_theta in window layers) and rope_scaling."""
  theta, dims = cfg.layer_rope_theta(layer), cfg.rotary_dims
  inv_freq = 1.0 / theta**(np.arange(0, dims, 2, dtype=np.float64) / dims)
  inv_freq, factor = ROPE_SCALINGS[cfg.layer_rope_scaling(layer)](inv_freq, cfg)
  return inv_freq.astype(np.float32), factor


def rotate(x: jax.Array, positions: jax.Array, inv_freq, factor: float = 1.0) -> jax.Array:
  """Rotates the first 2 * len(inv_freq) dimensions of x [B, T, N, D] by the angles of its
  positions [B, T] (x factor, YaRN's); computed in float32, the rest of D passes through."""
  dims = 2 * inv_freq.shape[-1]
  angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)
  cos = jnp.cos(angles)[:, :, None, :]  # [B, T, 1, R/2]
  sin = jnp.sin(angles)[:, :, None, :]
  if factor != 1.0:
    cos, sin = cos * jnp.float32(factor), sin * jnp.float32(factor)
  x32 = x.astype(jnp.float32)
  x1, x2 = jnp.split(x32[..., :dims], 2, axis=-1)
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, x32[..., dims:]], axis=-1)
  return rotated.astype(x.dtype)


def apply_rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """Plain rotary over the whole head of x [B, T, N, D] with base theta."""
  return rotate(x, positions, rope_frequencies(x.shape[-1], theta))


def rotary(x: jax.Array, positions: jax.Array, cfg: ModelConfig, layer: int) -> jax.Array:
  return rotate(x, positions, *rotary_table(cfg, layer))


# ---------------------------------------------------------------------------------------------
# ALiBi (Press et al., "Train Short, Test Long"): no position vectors; head h's attention logit
# of a key s positions back is lowered by slope_h * s.


def alibi_slopes(n_heads: int) -> np.ndarray:
  """The paper's geometric slopes, 2^(-8/n), 2^(-16/n), ...; for a head count that is not a
  power of two, those of the power of two below, then every other slope of the one above."""
  def geometric(n: int) -> np.ndarray:
    return 2.0**(-8.0 * np.arange(1, n + 1) / n)

  below = 2**math.floor(math.log2(n_heads))
  extra = geometric(2 * below)[0::2][:n_heads - below]
  return np.concatenate([geometric(below), extra])


def alibi_bias(cfg: ModelConfig, query_slots: jax.Array, key_slots: jax.Array) -> jax.Array:
  """float32 [1, H, T, S]: -slope_h * (t - s). Slots, not positions: a left-padded row's slot
  distances are its position distances."""
  distance = (query_slots[:, None] - key_slots[None, :]).astype(jnp.float32)  # [T, S]
  slopes = jnp.asarray(alibi_slopes(cfg.n_heads), jnp.float32)
  return -slopes[None, :, None, None] * distance[None, None]


class Position(NamedTuple):
  """A position scheme: what it adds to the token embeddings, what it does to queries/keys, what
  it adds to the attention logits."""
  embedding: Callable[[ModelConfig], nn.Module] | None = None  # positions [B, T] -> [B, T, C]
  rotate: Callable[[jax.Array, jax.Array, ModelConfig, int], jax.Array] | None = None  # q or k
  bias: Callable[[ModelConfig, jax.Array, jax.Array], jax.Array] | None = None  # [1, H, T, S]


POSITIONS = {
    'learned': Position(embedding=learned_table),
    'rope': Position(rotate=rotary),
    'none': Position(),
    'alibi': Position(bias=alibi_bias),
}
