"""Normalisation layers. Statistics are computed in float32 whatever the compute dtype: bf16
means and variances of activations with a large mean lose most of their precision."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gptjax.config import ModelConfig


def _gain(module: nn.Module, name: str, init, c: int) -> jax.Array:
  return module.param(name, nn.with_logical_partitioning(init, (module.axis,)), (c,),
                      module.param_dtype)


class LayerNorm(nn.Module):
  """(x - mean) / sqrt(var + eps) * scale (+ bias), as in Ba et al. and GPT-2."""
  eps: float
  use_bias: bool
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  axis: str = 'embed'  # the logical name of the normalised (last) axis

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
    y = y * _gain(self, 'scale', nn.initializers.ones, c)
    if self.use_bias:
      y = y + _gain(self, 'bias', nn.initializers.zeros, c)
    return y.astype(self.dtype)


class RMSNorm(nn.Module):
  """x / sqrt(mean(x^2) + eps) * scale (Zhang & Sennrich; Llama): no mean, no bias."""
  eps: float
  use_bias: bool  # unused: RMSNorm has no bias by definition (kept for one norm signature)
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  axis: str = 'embed'  # the logical name of the normalised (last) axis

  @nn.compact
  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + self.eps)
    y = y * _gain(self, 'scale', nn.initializers.ones, x.shape[-1])
    return y.astype(self.dtype)


NORMS = {'layernorm': LayerNorm, 'rmsnorm': RMSNorm}


def make_norm(cfg: ModelConfig, name: str | None) -> nn.Module:
  return NORMS[cfg.norm](eps=cfg.norm_eps, use_bias=cfg.use_bias, dtype=cfg.compute_dtype,
                         param_dtype=cfg.params_dtype, name=name)


def make_qk_norm(cfg: ModelConfig, name: str) -> nn.Module:
  """QK-norm: an RMSNorm over each head's D with one scale [D] shared by the heads, whatever
  cfg.norm is (as in Qwen3, Gemma 3 and OLMo 2, which all use RMSNorm for it)."""
  return RMSNorm(eps=cfg.norm_eps, use_bias=False, dtype=cfg.compute_dtype,
                 param_dtype=cfg.params_dtype, axis='head_dim', name=name)
