"""GPT-2 (GPT2LMHeadModel): learned positions, LayerNorm with biases, a tanh or erf GELU MLP."""

from __future__ import annotations

from typing import Any, Mapping

from gptjax.config import ModelConfig
from gptjax.hf.families import HEAD, NO_EXTRAS, Family, Weight, require

# transformers' 'gelu' is the exact (erf) GELU; 'gelu_new' and 'gelu_pytorch_tanh' are both the
# tanh approximation.
MLPS = {'gelu_new': 'gelu', 'gelu_pytorch_tanh': 'gelu', 'gelu': 'gelu_exact'}
ACTIVATIONS = {'gelu': 'gelu_new', 'gelu_exact': 'gelu'}


def config(hf: Mapping[str, Any]) -> ModelConfig:
  activation = require(hf, 'activation_function', 'gelu_new', tuple(MLPS),
                       "gptjax's MLPs have GELU in its tanh and erf forms")
  require(hf, 'scale_attn_weights', True, (True,), 'attention logits are scaled by 1/sqrt(D)')
  require(hf, 'scale_attn_by_inverse_layer_idx', False, (False,), 'no per-layer attention scaling')
  require(hf, 'add_cross_attention', False, (False,), 'decoder-only, no cross-attention')
  # reorder_and_upcast_attn is accepted: it only moves the 1/sqrt(D) scale and upcasts to
  # float32 for fp16 training, and gptjax's attention softmax is always float32.
  d_model = hf['n_embd']
  return ModelConfig(vocab_size=hf['vocab_size'], block_size=hf['n_positions'],
                     n_layers=hf['n_layer'], d_model=d_model, n_heads=hf['n_head'],
                     d_ff=hf.get('n_inner') or 4 * d_model, mlp=MLPS[activation], norm='layernorm',
                     norm_position='pre', norm_eps=hf.get('layer_norm_epsilon', 1e-5),
                     position='learned', tie_embeddings=hf.get('tie_word_embeddings',
                                                               True), use_bias=True, qkv_bias=True,
                     embd_dropout=hf.get('embd_pdrop', 0.1), attn_dropout=hf.get('attn_pdrop', 0.1),
                     resid_dropout=hf.get('resid_pdrop',
                                          0.1), init_std=hf.get('initializer_range', 0.02))


def weights(cfg: ModelConfig) -> list[Weight]:
  # GPT-2's Conv1D stores [in, out] like our kernels; c_attn is q|k|v along its output axis.
  table = [
      Weight('wte.weight', ('wte/embedding',)),
      Weight('wpe.weight', ('wpe/embedding',)),
      Weight('ln_f.weight', ('norm_f/scale',), in_axes=0),
      Weight('ln_f.bias', ('norm_f/bias',), in_axes=0)
  ]
  for i in range(cfg.n_layers):
    block, h = f'blocks_{i}', f'h.{i}'
    qkv = tuple(f'{block}/attn/{name}' for name in ('query', 'key', 'value'))
    table += [
        Weight(f'{h}.attn.c_attn.weight', tuple(f'{p}/kernel' for p in qkv)),
        Weight(f'{h}.attn.c_attn.bias', tuple(f'{p}/bias' for p in qkv), in_axes=0),
        Weight(f'{h}.attn.c_proj.weight', (f'{block}/attn/out/kernel',), in_axes=2)
    ]
    for ours, theirs in (('attn_norm/scale', 'ln_1.weight'), ('attn_norm/bias', 'ln_1.bias'),
                         ('attn/out/bias', 'attn.c_proj.bias'), ('mlp_norm/scale', 'ln_2.weight'),
                         ('mlp_norm/bias', 'ln_2.bias'), ('mlp/fc/bias', 'mlp.c_fc.bias'),
                         ('mlp/proj/bias', 'mlp.c_proj.bias')):
      table.append(Weight(f'{h}.{theirs}', (f'{block}/{ours}',), in_axes=0))
    table += [
        Weight(f'{h}.mlp.c_fc.weight', (f'{block}/mlp/fc/kernel',)),
        Weight(f'{h}.mlp.c_proj.weight', (f'{block}/mlp/proj/kernel',))
    ]
  if not cfg.tie_embeddings:
    table.append(Weight(HEAD, ('lm_head',)))
  return table


def export_needs(cfg: ModelConfig) -> dict[str, Any]:
  # Every bias exists in GPT-2; the ones cfg lacks are written as zeros.
  return {
      **NO_EXTRAS, 'position': 'learned', 'norm': 'layernorm', 'mlp': tuple(ACTIVATIONS),
      'n_kv_heads': cfg.n_heads, 'head_dim': cfg.d_model // cfg.n_heads
  }


def export_fields(cfg: ModelConfig) -> dict[str, Any]:
  eot = 50256 if cfg.vocab_size > 50256 else None  # GPT-2's <|endoftext|>, if it exists
  return dict(vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.d_model,
              n_layer=cfg.n_layers, n_head=cfg.n_heads,
              n_inner=None if cfg.d_ff == 4 * cfg.d_model else cfg.d_ff,
              activation_function=ACTIVATIONS[cfg.mlp], layer_norm_epsilon=cfg.norm_eps,
              embd_pdrop=cfg.embd_dropout, attn_pdrop=cfg.attn_dropout,
              resid_pdrop=cfg.resid_dropout, initializer_range=cfg.init_std,
              tie_word_embeddings=cfg.tie_embeddings, bos_token_id=eot, eos_token_id=eot)


FAMILIES = {
    'gpt2': Family(config, weights, export_needs, export_fields, 'transformer.', 'GPT2LMHeadModel',
                   ('.attn.bias', '.attn.masked_bias')),  # causal-mask buffers of old checkpoints
}
