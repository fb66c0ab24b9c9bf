"""How a token learns where it is: a learned table added to the embeddings, rotary embeddings
applied to queries and keys, or nothing at all (the causal mask alone leaks order)."""

from __future__ import annotations

from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from gptjax.config import ModelConfig
from gptjax.layers.dense import normal_init


def learned_table(cfg: ModelConfig) -> nn.Module:
  """GPT-2's wpe: one learned vector per position, up to block_size (so no further)."""
  return nn.Embed(cfg.block_size, cfg.d_model,
                  embedding_init=normal_init(cfg.init_std, (None, 'embed')),
                  dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype, name='wpe')


# Rotary position embedding (Su et al.), in the "half-split" layout of GPT-NeoX and Hugging Face
# Llama: dimension i is paired with i + D/2 (not with its neighbour, as in the original RoFormer).


def rope_frequencies(head_dim: int, theta: float) -> jax.Array:
  return 1.0 / (theta**(jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))  # [D/2]


def apply_rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """Rotates x [B, T, N, D] by the angles of its positions [B, T]; computed in float32."""
  angles = positions.astype(jnp.float32)[..., None] * rope_frequencies(x.shape[-1], theta)
  cos = jnp.cos(angles)[:, :, None, :]  # [B, T, 1, D/2]
  sin = jnp.sin(angles)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x.dtype)


def rotary(x: jax.Array, positions: jax.Array, cfg: ModelConfig) -> jax.Array:
  return apply_rope(x, positions, cfg.rope_theta)


class Position(NamedTuple):
  """A position scheme: what it adds to the token embeddings, what it does to queries/keys."""
  embedding: Callable[[ModelConfig], nn.Module] | None = None  # positions [B, T] -> [B, T, C]
  rotate: Callable[[jax.Array, jax.Array, ModelConfig], jax.Array] | None = None  # q or k


POSITIONS = {
    'learned': Position(embedding=learned_table),
    'rope': Position(rotate=rotary),
    'none': Position(),
}
