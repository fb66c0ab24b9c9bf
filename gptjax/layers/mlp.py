"""Feed-forward sublayers: the hidden width F is cfg.d_ff, kernels [C, F] and [F, C]."""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from gptjax.config import GATED_MLPS, ModelConfig
from gptjax.layers.dense import dense, residual_std

# Each cfg.mlp, as its nonlinearity: of the hidden layer, or of a gated MLP's gate (GATED_MLPS).
MLPS = {
    'gelu': partial(jax.nn.gelu, approximate=True),  # GPT-2's tanh approximation
    'gelu_exact': partial(jax.nn.gelu, approximate=False),  # erf: nanoGPT's nn.GELU()
    'relu2': lambda h: jnp.square(jax.nn.relu(h)),  # Primer, modded-nanogpt
    'swiglu': jax.nn.silu,  # Llama
    'geglu': partial(jax.nn.gelu, approximate=True),  # Gemma's gelu_pytorch_tanh
}


def plain_mlp(cfg: ModelConfig, x: jax.Array) -> jax.Array:
  """GPT-2: proj(act(fc(x)))."""
  hidden = MLPS[cfg.mlp](dense(cfg, 'fc', cfg.d_ff, ('embed', 'mlp'))(x))
  return dense(cfg, 'proj', cfg.d_model, ('mlp', 'embed'), std=residual_std(cfg))(hidden)


def gated_mlp(cfg: ModelConfig, x: jax.Array) -> jax.Array:
  """Shazeer's GLU variants (Llama's SwiGLU, Gemma's GeGLU): down(act(gate(x)) * up(x))."""
  gate = dense(cfg, 'gate', cfg.d_ff, ('embed', 'mlp'))(x)
  up = dense(cfg, 'up', cfg.d_ff, ('embed', 'mlp'))(x)
  return dense(cfg, 'down', cfg.d_model, ('mlp', 'embed'),
               std=residual_std(cfg))(MLPS[cfg.mlp](gate) * up)


class MLP(nn.Module):
  """[B, T, C] -> [B, T, C]: a gated MLP for cfg.mlp in GATED_MLPS, else a plain one."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    return (gated_mlp if self.cfg.mlp in GATED_MLPS else plain_mlp)(self.cfg, x)
