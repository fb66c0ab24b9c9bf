"""Feed-forward sublayers: the hidden width F is cfg.d_ff, kernels [C, F] and [F, C]."""

from __future__ import annotations

import flax.linen as nn
import jax

from gptjax.config import ModelConfig
from gptjax.layers.dense import dense, residual_std


def gelu_mlp(cfg: ModelConfig, x: jax.Array) -> jax.Array:
  """GPT-2: proj(gelu(fc(x))), with GPT-2's tanh approximation of GELU."""
  hidden = jax.nn.gelu(dense(cfg, 'fc', cfg.d_ff, ('embed', 'mlp'))(x), approximate=True)
  return dense(cfg, 'proj', cfg.d_model, ('mlp', 'embed'), std=residual_std(cfg))(hidden)


def swiglu_mlp(cfg: ModelConfig, x: jax.Array) -> jax.Array:
  """Llama (Shazeer's GLU variants): down(silu(gate(x)) * up(x))."""
  gate = dense(cfg, 'gate', cfg.d_ff, ('embed', 'mlp'))(x)
  up = dense(cfg, 'up', cfg.d_ff, ('embed', 'mlp'))(x)
  return dense(cfg, 'down', cfg.d_model, ('mlp', 'embed'),
               std=residual_std(cfg))(jax.nn.silu(gate) * up)


MLPS = {'gelu': gelu_mlp, 'swiglu': swiglu_mlp}


class MLP(nn.Module):
  """[B, T, C] -> [B, T, C] through MLPS[cfg.mlp]."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    return MLPS[self.cfg.mlp](self.cfg, x)
