"""Parameter counts, FLOPs/token and MFU, checked against numbers computed by hand here.

The hand formula below is written from the architecture (what each layer must hold), not from
gptjax's code, so a wrong count in either place shows up as a disagreement.
"""

import re

import jax
import numpy as np
import pytest

from conftest import TINY, VARIANTS
from gptjax import flops
from gptjax.config import GATED_MLPS, ModelConfig
from gptjax.model import abstract_params

GPT2_SMALL = dict(vocab_size=50257, block_size=1024, n_layers=12, n_heads=12, d_model=768,
                  position='learned', norm='layernorm', mlp='gelu', use_bias=True,
                  norm_position='pre')


def hand_count(cfg: ModelConfig) -> int:
  """Parameters of a GPT, counted layer by layer from the architecture."""
  v, c, f, l = cfg.vocab_size, cfg.d_model, cfg.d_ff, cfg.n_layers
  d = cfg.head_dim  # d_model / n_heads unless set
  q_width, kv_width = cfg.n_heads * d, cfg.n_kv_heads * d
  b = int(cfg.use_bias)

  qkv = c * (q_width + 2 * kv_width) + int(cfg.qkv_bias) * (q_width + 2 * kv_width)
  out = q_width * c + b * c
  if cfg.mlp not in GATED_MLPS:  # fc [C, F], proj [F, C]
    mlp = c * f + b * f + f * c + b * c
  else:  # gate [C, F], up [C, F], down [F, C]
    mlp = 3 * c * f + b * (2 * f + c)
  norm = c + (b * c if cfg.norm == 'layernorm' else 0)  # RMSNorm has a scale only
  norm *= int(cfg.norm_affine)  # non-parametric norms hold nothing
  norms_per_block = 4 if cfg.norm_position == 'sandwich' else 2  # into and out of each sublayer
  qk_norm = {'none': 0, 'head': 2 * d, 'projection': q_width + kv_width}[cfg.qk_norm]
  per_block = qkv + out + mlp + norms_per_block * norm + qk_norm

  total = v * c + l * per_block
  total += cfg.block_size * c if cfg.position == 'learned' else 0
  total += norm if cfg.norm_position != 'post' else 0  # post-norm blocks end in a norm already
  total += 0 if cfg.tie_embeddings else v * c
  return total


# The shared variants plus the bias combinations only parameter counting cares about.
COUNTED = {
    **VARIANTS,
    'llama_dff48': dict(mlp='swiglu', d_ff=48, norm='rmsnorm', position='rope', use_bias=False,
                        tie_embeddings=False, n_kv_heads=2),
    'mqa_swiglu_bias': dict(n_kv_heads=1, mlp='swiglu'),
    'rmsnorm_bias_no_qkv_bias_no_positions': dict(norm='rmsnorm', qkv_bias=False, position='none'),
}


def zero_params(cfg: ModelConfig) -> dict:
  """Arrays of the shapes and dtypes init_params(cfg) gives, without compiling its init (seconds
  per config on 2 cores); counting needs no values."""
  return jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), abstract_params(cfg))


@pytest.fixture(scope='module', params=sorted(COUNTED))
def tiny(request):
  cfg = ModelConfig(**{**TINY, **COUNTED[request.param]})
  return cfg, zero_params(cfg)


# --------------------------------------------------------------------------------------------
# Parameter counts


def test_count_params_of_real_params_matches_hand_count(tiny):
  cfg, params = tiny
  assert flops.count_params(params) == hand_count(cfg)
  assert flops.count_params_for_config(cfg) == hand_count(cfg)


def test_count_params_on_plain_pytrees():
  tree = {'a': np.zeros((2, 3)), 'b': {'c': np.zeros(5), 'd': np.float32(1.0)}}
  assert flops.count_params(tree) == 12
  assert flops.count_params({}) == 0


@pytest.mark.parametrize(
    'changes, expected',
    [
        (dict(tie_embeddings=False, qkv_bias=False), 163_009_536),
        (dict(tie_embeddings=True, qkv_bias=False), 124_412_160),
        (dict(tie_embeddings=True, qkv_bias=True), 124_439_808),  # the real GPT-2 small
    ])
def test_gpt2_small_parameter_counts(changes, expected):
  cfg = ModelConfig(**GPT2_SMALL, **changes)
  assert flops.count_params_for_config(cfg) == expected
  assert hand_count(cfg) == expected


def test_gpt2_xl_counted_from_shapes():
  """1.5B parameters counted from shapes alone (nothing allocated); Hugging Face agrees."""
  xl = ModelConfig(**{**GPT2_SMALL, 'n_layers': 48, 'n_heads': 25, 'd_model': 1600})
  assert flops.count_params_for_config(xl) == 1_557_611_200


# --------------------------------------------------------------------------------------------
# FLOPs per token


def test_gpt2_small_flops_per_token_by_hand():
  cfg = ModelConfig(**GPT2_SMALL)
  n = 124_439_808 - 1024 * 768  # every parameter but the learned position table
  assert n == 123_653_376  # what nanoGPT's get_num_params() prints for GPT-2
  matmul = 6 * n  # 741,920,256
  attention = 12 * 12 * 12 * 64 * 1024  # 12 * L * H * Q * T = 113,246,208
  split = flops.flops_breakdown(cfg, seq_len=1024)
  assert split == {'matmul': matmul, 'attention': attention, 'total': matmul + attention}
  assert flops.flops_per_token(cfg) == 855_166_464  # T defaults to block_size
  assert flops.forward_flops_per_token(cfg) == pytest.approx(855_166_464 / 3)


def test_untied_counts_lm_head_not_input_embedding():
  """Exactly one V*C matrix is a matmul either way, so tying leaves FLOPs unchanged."""
  tied = ModelConfig(**GPT2_SMALL)
  untied = ModelConfig(**GPT2_SMALL, tie_embeddings=False)
  assert flops.matmul_params(untied) == flops.matmul_params(tied)
  assert flops.count_params_for_config(untied) > flops.count_params_for_config(tied)
  assert flops.flops_per_token(untied) == flops.flops_per_token(tied)


def test_rope_has_no_position_table_to_exclude():
  cfg = ModelConfig(**{**GPT2_SMALL, 'position': 'rope'})
  assert flops.matmul_params(cfg) == flops.count_params_for_config(cfg)


def test_breakdown_sums_to_total(tiny):
  cfg, _ = tiny
  for seq_len in (None, 1, 7):
    split = flops.flops_breakdown(cfg, seq_len)
    assert split['total'] == split['matmul'] + split['attention']
    assert flops.flops_per_token(cfg, seq_len) == split['total']
    assert split['matmul'] == 6 * flops.matmul_params(cfg)


def test_attention_term_uses_seq_len_and_query_heads():
  cfg = ModelConfig(**GPT2_SMALL)
  assert flops.flops_breakdown(cfg, 256)['attention'] == 12 * 12 * 12 * 64 * 256
  assert flops.flops_breakdown(cfg, 256)['matmul'] == flops.flops_breakdown(cfg)['matmul']
  gqa = cfg.replace(n_kv_heads=4)  # fewer kv heads: smaller qkv matmul, same attention term
  assert flops.flops_breakdown(gqa)['attention'] == flops.flops_breakdown(cfg)['attention']
  assert flops.flops_breakdown(gqa)['matmul'] < flops.flops_breakdown(cfg)['matmul']


def test_window_caps_attended_keys():
  cfg = ModelConfig(**GPT2_SMALL)
  windowed = cfg.replace(attention_window=128)
  assert flops.flops_breakdown(windowed)['attention'] == 12 * 12 * 12 * 64 * 128
  assert flops.flops_breakdown(windowed, 64)['attention'] == 12 * 12 * 12 * 64 * 64
  assert flops.flops_breakdown(windowed)['matmul'] == flops.flops_breakdown(cfg)['matmul']
  wide = cfg.replace(attention_window=4096)  # wider than the sequence: no effect
  assert flops.flops_per_token(wide) == flops.flops_per_token(cfg)
  # Gemma 2's alternation: half the layers see 128 keys, half all 1024.
  alternating = cfg.replace(attention_window=128, window_pattern='local,global')
  assert flops.flops_breakdown(alternating)['attention'] == 12 * 12 * 64 * (6 * 128 + 6 * 1024)


def test_bad_seq_len_is_a_clear_error():
  cfg = ModelConfig(**GPT2_SMALL)
  for bad in (0, -5, 2.5, True):
    with pytest.raises(ValueError, match='seq_len'):
      flops.flops_per_token(cfg, bad)
  with pytest.raises(ValueError, match='block_size'):
    flops.flops_per_token(cfg, 2048)  # learned positions end at block_size
  rope = cfg.replace(position='rope')
  assert flops.flops_breakdown(rope, 2048)['attention'] == 12 * 12 * 12 * 64 * 2048


# --------------------------------------------------------------------------------------------
# MFU


def test_mfu_arithmetic():
  cfg = ModelConfig(**GPT2_SMALL)
  # 855,166,464 FLOPs/token * 100k tokens/s = 85.5 TFLOP/s of an A100's 312 TFLOP/s bf16 peak.
  assert flops.mfu(100_000, cfg, 312e12) == pytest.approx(855_166_464 * 1e5 / 312e12)
  assert flops.mfu(100_000, cfg, 312e12) == pytest.approx(0.27409, abs=1e-5)
  assert flops.mfu(50_000, cfg, 312e12,
                   seq_len=256) == pytest.approx(flops.flops_per_token(cfg, 256) * 5e4 / 312e12)
  with pytest.raises(ValueError, match='peak_flops'):
    flops.mfu(100_000, cfg, 0)


# --------------------------------------------------------------------------------------------
# Parameter table


def test_param_table_rows_sum_to_count(tiny):
  cfg, params = tiny
  rows = flops.param_table(params)
  assert sum(row.count for row in rows) == flops.count_params(params)
  for row in rows:
    assert row.count == sum(int(np.prod(shape)) for _, shape in row.shapes)


def test_param_table_layout_of_gpt2():
  cfg = ModelConfig(**{**GPT2_SMALL, 'n_layers': 11}, tie_embeddings=False)
  params = abstract_params(cfg)
  names = [row.module for row in flops.param_table(params)]
  blocks = [f'blocks_{i}.{part}' for i in range(11) for part in ('attn', 'mlp', 'norms')]
  assert names == [
      'token embedding (wte)', 'position embedding (wpe)', *blocks, 'final norm (norm_f)',
      'LM head (lm_head)'
  ]  # blocks_10 after blocks_9
  rows = {row.module: row for row in flops.param_table(params)}
  assert rows['blocks_0.attn'].shapes == (('key.bias', (12, 64)), ('key.kernel', (768, 12, 64)),
                                          ('out.bias', (768,)), ('out.kernel', (12, 64, 768)),
                                          ('query.bias', (12, 64)), ('query.kernel', (768, 12, 64)),
                                          ('value.bias', (12, 64)), ('value.kernel', (768, 12, 64)))
  assert rows['blocks_3.norms'].count == 4 * 768
  assert rows['LM head (lm_head)'].shapes == (('', (50257, 768)),)


def test_format_param_table():
  cfg = ModelConfig(**GPT2_SMALL)
  params = abstract_params(cfg)
  plain = flops.format_param_table(params)
  assert re.search(r'^total\s+124,439,808$', plain, re.M)
  assert 'FLOPs' not in plain

  text = flops.format_param_table(params, cfg)
  assert re.search(r'^total\s+124,439,808$', text, re.M)
  non_embedding = 124_439_808 - 50257 * 768 - 1024 * 768
  assert re.search(rf'^non-embedding.*\s{non_embedding:,}$', text, re.M)
  assert '123,653,376' in text  # N of the 6N rule
  for number in ('741,920,256', '113,246,208', '855,166,464'):
    assert number in text
  # Aligned: every count column ends at the same character.
  count_ends = {
      m.end(1)
      for line in text.splitlines() if (m := re.match(r'^.*?\S {2,}([\d,]+|params)\b', line))
  }
  assert len(count_ends) == 1


def test_format_param_table_rejects_params_of_another_config():
  cfg = ModelConfig(**TINY)
  params = zero_params(cfg)
  with pytest.raises(ValueError, match='different config'):
    flops.format_param_table(params, cfg.replace(n_layers=3))
