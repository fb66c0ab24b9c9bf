"""GPT-NeoX / Pythia: attention and MLP in parallel off two LayerNorms of the same input, rotary
on a fraction of each head (Pythia: 0.25), one fused query_key_value projection laid out head by
head ([H, q|k|v, D]), untied embed_out."""

from __future__ import annotations

from typing import Any, Mapping

from gptjax.config import ROPE_SCALINGS, ModelConfig
from gptjax.hf.families import (HEAD, NO_EXTRAS, Family, Weight, refuse, require, rope_fields,
                                rope_parameters)

MLPS = {'gelu': 'gelu_exact', 'gelu_new': 'gelu', 'gelu_pytorch_tanh': 'gelu'}
ACTIVATIONS = {'gelu_exact': 'gelu', 'gelu': 'gelu_new'}


def config(hf: Mapping[str, Any]) -> ModelConfig:
  activation = require(hf, 'hidden_act', 'gelu', tuple(MLPS),
                       "gptjax's MLPs have GELU in its tanh and erf forms")
  if not hf.get('attention_bias', True):
    raise refuse(
        hf, 'attention_bias', "use_bias sets the attention and MLP biases together, "
        "and GPT-NeoX's MLP always has them")
  # transformers 4.x wrote rotary_pct and rotary_emb_base; 5 keeps them in rope_parameters.
  rope = rope_fields(hf, theta_default=hf.get('rotary_emb_base', 10000.0),
                     fraction_default=hf.get('rotary_pct', 0.25))
  return ModelConfig(vocab_size=hf['vocab_size'], block_size=hf['max_position_embeddings'],
                     n_layers=hf['num_hidden_layers'], d_model=hf['hidden_size'],
                     n_heads=hf['num_attention_heads'], d_ff=hf['intermediate_size'],
                     mlp=MLPS[activation], norm='layernorm',
                     norm_eps=hf.get('layer_norm_eps',
                                     1e-5), parallel_block=hf.get('use_parallel_residual', True),
                     position='rope', **rope, tie_embeddings=hf.get('tie_word_embeddings', False),
                     use_bias=True, qkv_bias=True, attn_dropout=hf.get('attention_dropout', 0.0),
                     resid_dropout=hf.get('hidden_dropout',
                                          0.0), init_std=hf.get('initializer_range', 0.02))


def weights(cfg: ModelConfig) -> list[Weight]:
  table = [
      Weight('embed_in.weight', ('wte/embedding',)),
      Weight('final_layer_norm.weight', ('norm_f/scale',), in_axes=0),
      Weight('final_layer_norm.bias', ('norm_f/bias',), in_axes=0),
  ]
  for i in range(cfg.n_layers):
    block, layer = f'blocks_{i}', f'layers.{i}'
    qkv = tuple(f'{block}/attn/{name}' for name in ('query', 'key', 'value'))
    table += [
        Weight(f'{layer}.attention.query_key_value.weight', tuple(f'{p}/kernel' for p in qkv),
               transpose=True, per_head=True),
        Weight(f'{layer}.attention.query_key_value.bias', tuple(f'{p}/bias' for p in qkv),
               in_axes=0, per_head=True),
        Weight(f'{layer}.attention.dense.weight', (f'{block}/attn/out/kernel',), transpose=True,
               in_axes=2),
        Weight(f'{layer}.attention.dense.bias', (f'{block}/attn/out/bias',), in_axes=0),
    ]
    for ours, theirs in (('attn_norm', 'input_layernorm'), ('mlp_norm',
                                                            'post_attention_layernorm')):
      table += [
          Weight(f'{layer}.{theirs}.weight', (f'{block}/{ours}/scale',), in_axes=0),
          Weight(f'{layer}.{theirs}.bias', (f'{block}/{ours}/bias',), in_axes=0),
      ]
    for ours, theirs in (('fc', 'dense_h_to_4h'), ('proj', 'dense_4h_to_h')):
      table += [
          Weight(f'{layer}.mlp.{theirs}.weight', (f'{block}/mlp/{ours}/kernel',), transpose=True),
          Weight(f'{layer}.mlp.{theirs}.bias', (f'{block}/mlp/{ours}/bias',), in_axes=0),
      ]
  if not cfg.tie_embeddings:
    table.append(Weight(HEAD, ('lm_head',)))
  return table


def export_needs(cfg: ModelConfig) -> dict[str, Any]:
  return {
      **NO_EXTRAS, 'position': 'rope', 'norm': 'layernorm', 'mlp': tuple(ACTIVATIONS),
      'n_kv_heads': cfg.n_heads, 'head_dim': cfg.d_model // cfg.n_heads, 'use_bias': True,
      'parallel_block': cfg.parallel_block, 'rotary_fraction': cfg.rotary_fraction,
      'rope_scaling': ROPE_SCALINGS
  }


def export_fields(cfg: ModelConfig) -> dict[str, Any]:
  return dict(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
              num_attention_heads=cfg.n_heads, intermediate_size=cfg.d_ff,
              hidden_act=ACTIVATIONS[cfg.mlp], max_position_embeddings=cfg.block_size,
              layer_norm_eps=cfg.norm_eps, use_parallel_residual=cfg.parallel_block,
              rope_parameters=rope_parameters(cfg), attention_bias=True,
              attention_dropout=cfg.attn_dropout, hidden_dropout=cfg.resid_dropout,
              initializer_range=cfg.init_std, tie_word_embeddings=cfg.tie_embeddings)


FAMILIES = {
    'gpt_neox': Family(config, weights, export_needs, export_fields, 'gpt_neox.',
                       'GPTNeoXForCausalLM',
                       ('rotary_emb.inv_freq', '.attention.bias', '.attention.masked_bias'),
                       renamed=(('embed_out.weight', HEAD),)),
}
