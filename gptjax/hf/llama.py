"""The Llama-shaped families: rotary, RMSNorm, gated MLP, q/k/v/o projections.

  llama    Llama 1-3 (Llama 3.1 / 3.2's 'llama3' rope scaling), biases by attention_bias
  mistral  Llama plus one sliding window in every layer
  qwen2    biases on q, k and v only; sliding windows from a layer on
  qwen3    QK-norm per head, head_dim of its own
  olmo2    QK-norm over the whole projection, norms on the sublayer outputs (no input norms)
"""

from __future__ import annotations

from typing import Any, Mapping

from gptjax.config import ROPE_SCALINGS, ModelConfig
from gptjax.hf.families import (HEAD, NO_EXTRAS, Family, Weight, exportable_windows, layer_types,
                                refuse, require, rope_fields, rope_parameters, single_window,
                                window_fields)

MLPS = {'silu': 'swiglu', 'swish': 'swiglu', 'gelu_pytorch_tanh': 'geglu', 'gelu_new': 'geglu'}
ACTIVATIONS = {'swiglu': 'silu', 'geglu': 'gelu_pytorch_tanh'}
BUFFERS = ('rotary_emb.inv_freq',)


def _biases(hf: Mapping[str, Any]) -> tuple[bool, bool]:
  """(qkv_bias, use_bias): Llama's attention_bias (q/k/v and o) with mlp_bias, Qwen2's q/k/v
  biases, none in Mistral; Qwen3 and OLMo 2 have attention_bias but no MLP bias."""
  kind = hf['model_type']
  if kind == 'qwen2':
    return True, False
  if kind == 'mistral':
    return False, False
  attention_bias = hf.get('attention_bias', False)
  mlp_bias = hf.get('mlp_bias', False) if kind == 'llama' else False
  if attention_bias != mlp_bias:
    # HF's attention_bias covers q/k/v and o_proj; our use_bias covers o_proj and the MLP.
    raise ValueError(f'{kind} config attention_bias={attention_bias} with mlp_bias={mlp_bias} '
                     'cannot be reproduced exactly by gptjax (use_bias sets the attention output '
                     'and MLP biases together)')
  return attention_bias, attention_bias


def _windows(hf: Mapping[str, Any]) -> dict[str, Any]:
  kind, n = hf['model_type'], hf['num_hidden_layers']
  if kind == 'mistral':
    window = hf.get('sliding_window', 4096)
    return window_fields(hf, ['sliding_attention'] * n, window)
  if kind in ('qwen2', 'qwen3') and hf.get('use_sliding_window', False):
    first_sliding = hf.get('max_window_layers', 28)  # Qwen2: layers from here on slide
    types = hf.get('layer_types') or [
        'sliding_attention' if i >= first_sliding else 'full_attention' for i in range(n)
    ]
    return window_fields(hf, types, hf.get('sliding_window'))
  return {'attention_window': None, 'window_pattern': None}


def config(hf: Mapping[str, Any]) -> ModelConfig:
  kind = hf['model_type']
  activation = require(hf, 'hidden_act', 'silu', tuple(MLPS),
                       'gated MLPs gate with SiLU (SwiGLU) or tanh GELU (GeGLU)')
  rope = rope_fields(hf)
  if rope['rotary_fraction'] != 1.0:
    raise refuse(hf, 'partial_rotary_factor', f'{kind} rotates whole heads')
  qkv_bias, use_bias = _biases(hf)
  d_model, n_heads = hf['hidden_size'], hf['num_attention_heads']
  extras = {
      'qwen3': dict(qk_norm='head'), 'olmo2': dict(qk_norm='projection', norm_position='output')
  }.get(kind, {})
  return ModelConfig(vocab_size=hf['vocab_size'], block_size=hf['max_position_embeddings'],
                     n_layers=hf['num_hidden_layers'], d_model=d_model, n_heads=n_heads,
                     n_kv_heads=hf.get('num_key_value_heads') or n_heads,
                     head_dim=hf.get('head_dim') or d_model // n_heads,
                     d_ff=hf['intermediate_size'], mlp=MLPS[activation],
                     norm='rmsnorm', norm_eps=hf.get('rms_norm_eps', 1e-6), position='rope', **rope,
                     **_windows(hf), tie_embeddings=hf.get('tie_word_embeddings', False),
                     use_bias=use_bias, qkv_bias=qkv_bias, embd_dropout=0.0, attn_dropout=hf.get(
                         'attention_dropout',
                         0.0), resid_dropout=0.0, init_std=hf.get('initializer_range',
                                                                  0.02), **extras)


def _norms(cfg: ModelConfig) -> list[tuple[str, str]]:
  """(ours, HF's) of a layer's norms: OLMo 2 names its output norms as Llama names its input
  ones, one sublayer later."""
  if cfg.norm_position == 'output':
    return [('attn_out_norm', 'post_attention_layernorm'),
            ('mlp_out_norm', 'post_feedforward_layernorm')]
  return [('attn_norm', 'input_layernorm'), ('mlp_norm', 'post_attention_layernorm')]


def weights(cfg: ModelConfig) -> list[Weight]:
  table = [
      Weight('embed_tokens.weight', ('wte/embedding',)),
      Weight('norm.weight', ('norm_f/scale',), in_axes=0)
  ]
  for i in range(cfg.n_layers):
    block, layer = f'blocks_{i}', f'layers.{i}'
    table += [
        Weight(f'{layer}.{theirs}.weight', (f'{block}/{ours}/scale',), in_axes=0)
        for ours, theirs in _norms(cfg)
    ]
    if cfg.qk_norm != 'none':
      table += [
          Weight(f'{layer}.self_attn.{name}.weight', (f'{block}/attn/{name}/scale',), in_axes=0)
          for name in ('q_norm', 'k_norm')
      ]
    projections = [('attn/query', 'self_attn.q_proj', 1, cfg.qkv_bias),
                   ('attn/key', 'self_attn.k_proj', 1, cfg.qkv_bias),
                   ('attn/value', 'self_attn.v_proj', 1, cfg.qkv_bias),
                   ('attn/out', 'self_attn.o_proj', 2, cfg.use_bias)]
    projections += [(f'mlp/{name}', f'mlp.{name}_proj', 1, cfg.use_bias)
                    for name in ('gate', 'up', 'down')]
    for ours, theirs, in_axes, has_bias in projections:
      table.append(
          Weight(f'{layer}.{theirs}.weight', (f'{block}/{ours}/kernel',), transpose=True,
                 in_axes=in_axes))
      if has_bias:
        table.append(Weight(f'{layer}.{theirs}.bias', (f'{block}/{ours}/bias',), in_axes=0))
  if not cfg.tie_embeddings:
    table.append(Weight(HEAD, ('lm_head',)))  # [vocab, d_model] on both sides
  return table


def _needs(kind: str):
  def needs(cfg: ModelConfig) -> dict[str, Any]:
    base = {
        **NO_EXTRAS, 'position': 'rope', 'norm': 'rmsnorm', 'mlp': tuple(ACTIVATIONS),
        'rope_scaling': ROPE_SCALINGS
    }
    return {
        # attention_bias also covers q/k/v: any qkv_bias with use_bias
        'llama': lambda: {**base, **({} if cfg.use_bias else {'qkv_bias': False})},
        'qwen2': lambda: {
            **base, 'use_bias': False, 'qkv_bias': True, 'head_dim': cfg.d_model // cfg.n_heads,
            'attention_window': cfg.attention_window, 'window_pattern': cfg.window_pattern,
            'layer_windows': exportable_windows(cfg)
        },
        'mistral': lambda: {  # Llama plus a sliding window in every layer
            **base, 'use_bias': False, 'qkv_bias': False, 'attention_window': cfg.attention_window
        },
        'qwen3': lambda: {
            **base, 'use_bias': False, 'qkv_bias': False, 'qk_norm': 'head', 'attention_window': cfg
            .attention_window, 'window_pattern': cfg.window_pattern,
            'layer_windows': exportable_windows(cfg)
        },
        'olmo2': lambda: {
            **base, 'use_bias': False, 'qkv_bias': False, 'qk_norm': 'projection',
            'norm_position': 'output'
        },
    }[kind]()

  return needs


def _fields(kind: str):
  def fields(cfg: ModelConfig) -> dict[str, Any]:
    # Llama-family models have no embedding/residual dropout: those rates are training-only and
    # do not change the exported model's outputs.
    hf = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
              num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
              num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.head_dim,
              max_position_embeddings=cfg.block_size, rms_norm_eps=cfg.norm_eps,
              hidden_act=ACTIVATIONS[cfg.mlp], rope_parameters=rope_parameters(cfg),
              attention_dropout=cfg.attn_dropout, initializer_range=cfg.init_std,
              tie_word_embeddings=cfg.tie_embeddings)
    if kind == 'llama':
      hf.update(attention_bias=cfg.use_bias, mlp_bias=cfg.use_bias)
    if kind in ('qwen3', 'olmo2'):
      hf.update(attention_bias=False)
    if kind == 'mistral':
      hf.update(sliding_window=cfg.attention_window)
    if kind in ('qwen2', 'qwen3'):
      window = single_window(cfg)
      hf.update(use_sliding_window=window is not None, sliding_window=window,
                layer_types=layer_types(cfg), max_window_layers=cfg.n_layers)
    return hf

  return fields


_ARCHITECTURES = {
    'llama': 'LlamaForCausalLM', 'mistral': 'MistralForCausalLM', 'qwen2': 'Qwen2ForCausalLM',
    'qwen3': 'Qwen3ForCausalLM', 'olmo2': 'Olmo2ForCausalLM'
}
FAMILIES = {
    kind: Family(config, weights, _needs(kind), _fields(kind), 'model.', architecture, BUFFERS)
    for kind, architecture in _ARCHITECTURES.items()
}
