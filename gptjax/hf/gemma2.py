"""Gemma 2: sandwich norms (each sublayer normed on the way in and out), GeGLU, embeddings
scaled by sqrt(d_model), soft-capped attention and output logits, sliding-window and global
layers alternating from layer 0, its own attention scale (query_pre_attn_scalar). Gemma stores
its RMSNorm gains as gain - 1."""

from __future__ import annotations

from typing import Any, Mapping

from gptjax.config import ROPE_SCALINGS, ModelConfig
from gptjax.hf.families import (HEAD, NO_EXTRAS, Family, Weight, exportable_windows, integral,
                                layer_types, refuse, require, rope_fields, rope_parameters,
                                single_window, window_fields)

MLPS = {'gelu_pytorch_tanh': 'geglu', 'gelu_new': 'geglu'}
_NORMS = (('attn_norm', 'input_layernorm'), ('attn_out_norm', 'post_attention_layernorm'),
          ('mlp_norm', 'pre_feedforward_layernorm'), ('mlp_out_norm', 'post_feedforward_layernorm'))


def _softcap(hf: Mapping[str, Any], field: str, default: float) -> float | None:
  cap = hf.get(field, default)
  if cap is not None and not (isinstance(cap, (int, float)) and cap > 0):
    raise refuse(hf, field, 'a cap > 0 or None')
  return None if cap is None else float(cap)


def config(hf: Mapping[str, Any]) -> ModelConfig:
  activation = require(hf, 'hidden_activation', 'gelu_pytorch_tanh', tuple(MLPS),
                       "Gemma's GeGLU gates with the tanh GELU")
  require(hf, 'attention_bias', False, (False,), 'no attention biases')
  require(hf, 'use_bidirectional_attention', None, (None, False), 'causal attention')
  rope = rope_fields(hf)
  if rope['rotary_fraction'] != 1.0:
    raise refuse(hf, 'partial_rotary_factor', 'gemma2 rotates whole heads')
  d_model, n_heads, n = hf['hidden_size'], hf['num_attention_heads'], hf['num_hidden_layers']
  head_dim = hf.get('head_dim') or d_model // n_heads
  scale_dim = integral(hf, 'query_pre_attn_scalar', hf.get('query_pre_attn_scalar', 256))
  types = hf.get('layer_types') or [
      'sliding_attention' if (i + 1) % 2 else 'full_attention' for i in range(n)
  ]
  return ModelConfig(
      vocab_size=hf['vocab_size'], block_size=hf['max_position_embeddings'], n_layers=n,
      d_model=d_model, n_heads=n_heads, n_kv_heads=hf.get('num_key_value_heads') or n_heads,
      head_dim=head_dim, d_ff=hf['intermediate_size'], mlp=MLPS[activation], norm='rmsnorm',
      norm_position='sandwich', norm_eps=hf.get('rms_norm_eps', 1e-6), scale_embeddings=True,
      position='rope', **rope, **window_fields(hf, types, hf.get('sliding_window', 4096)),
      attn_logit_softcap=_softcap(hf, 'attn_logit_softcapping',
                                  50.0), final_logit_softcap=_softcap(hf, 'final_logit_softcapping',
                                                                      30.0),
      attention_scale_dim=None if scale_dim == head_dim else scale_dim,
      tie_embeddings=hf.get('tie_word_embeddings', True), use_bias=False, qkv_bias=False,
      attn_dropout=hf.get('attention_dropout', 0.0), init_std=hf.get('initializer_range', 0.02))


def weights(cfg: ModelConfig) -> list[Weight]:
  table = [
      Weight('embed_tokens.weight', ('wte/embedding',)),
      Weight('norm.weight', ('norm_f/scale',), in_axes=0, offset=1.0)
  ]
  for i in range(cfg.n_layers):
    block, layer = f'blocks_{i}', f'layers.{i}'
    table += [
        Weight(f'{layer}.{theirs}.weight', (f'{block}/{ours}/scale',), in_axes=0, offset=1.0)
        for ours, theirs in _NORMS
    ]
    projections = [('attn/query', 'self_attn.q_proj', 1), ('attn/key', 'self_attn.k_proj', 1),
                   ('attn/value', 'self_attn.v_proj', 1), ('attn/out', 'self_attn.o_proj', 2)]
    projections += [(f'mlp/{name}', f'mlp.{name}_proj', 1) for name in ('gate', 'up', 'down')]
    table += [
        Weight(f'{layer}.{theirs}.weight', (f'{block}/{ours}/kernel',), transpose=True,
               in_axes=in_axes) for ours, theirs, in_axes in projections
    ]
  if not cfg.tie_embeddings:
    table.append(Weight(HEAD, ('lm_head',)))
  return table


def export_needs(cfg: ModelConfig) -> dict[str, Any]:
  return {
      **NO_EXTRAS, 'position': 'rope', 'norm': 'rmsnorm', 'mlp': 'geglu',
      'norm_position': 'sandwich', 'scale_embeddings': True, 'use_bias': False, 'qkv_bias': False,
      'attention_window': cfg.attention_window, 'window_pattern': cfg.window_pattern,
      'attention_scale_dim': cfg.attention_scale_dim, 'attn_logit_softcap': cfg.attn_logit_softcap,
      'final_logit_softcap': cfg.final_logit_softcap, 'layer_windows': exportable_windows(cfg),
      'rope_scaling': ROPE_SCALINGS
  }


def export_fields(cfg: ModelConfig) -> dict[str, Any]:
  return dict(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
              num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
              num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.head_dim,
              max_position_embeddings=cfg.block_size, rms_norm_eps=cfg.norm_eps,
              hidden_activation='gelu_pytorch_tanh', rope_parameters=rope_parameters(cfg),
              attention_bias=False, attention_dropout=cfg.attn_dropout,
              query_pre_attn_scalar=cfg.attention_scale_dim or cfg.head_dim,
              sliding_window=single_window(cfg), layer_types=layer_types(cfg),
              attn_logit_softcapping=cfg.attn_logit_softcap,
              final_logit_softcapping=cfg.final_logit_softcap, initializer_range=cfg.init_std,
              tie_word_embeddings=cfg.tie_embeddings)


FAMILIES = {
    'gemma2': Family(config, weights, export_needs, export_fields, 'model.', 'Gemma2ForCausalLM',
                     ('rotary_emb.inv_freq',)),
}
