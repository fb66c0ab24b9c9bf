"""The layers against plain NumPy formulas written from the papers, not from gptjax."""

import logging
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax import layers
from gptjax.config import GATED_MLPS
from gptjax.layers import MLP, Attention, LayerNorm, RMSNorm
from gptjax.model import GPT, abstract_params
from gptjax.config import ModelConfig
from reference import (hf_rope_table, np_alibi_slopes, np_attention, np_layernorm, np_mlp,
                       np_rmsnorm, np_rope, np_visible)

RNG = np.random.default_rng(0)
pytestmark = pytest.mark.usefixtures('fast_compiles')  # compiling is most of their time


def normal(*shape, scale=1.0):
  return (scale * RNG.standard_normal(shape)).astype(np.float32)


def gpt_logits(cfg, params, tokens):
  """The whole model's forward, jitted: run eagerly, op by op, it compiles each op on its own
  and takes seconds longer."""
  return jax.jit(lambda params, tokens: GPT(cfg).apply({'params': params}, tokens))(params, tokens)


# ---------------------------------------------------------------------------------------------
# Norms


@pytest.mark.parametrize('use_bias', [True, False])
def test_layernorm_matches_numpy(use_bias):
  c, eps = 48, 1e-5
  x = 3.0 + normal(2, 5, c, scale=2.0)  # a non-zero mean, as in the residual stream
  norm = LayerNorm(eps=eps, use_bias=use_bias, dtype=jnp.float32, param_dtype=jnp.float32)
  assert set(norm.init(jax.random.key(0),
                       x)['params']) == ({'scale', 'bias'} if use_bias else {'scale'})
  params = {'scale': 1.0 + normal(c, scale=0.3)}
  bias = normal(c, scale=0.5) if use_bias else np.zeros(c, np.float32)
  if use_bias:
    params['bias'] = bias
  y = norm.apply({'params': params}, x)
  assert y.dtype == jnp.float32
  np.testing.assert_allclose(y, np_layernorm(x, params['scale'], bias, eps), rtol=1e-5, atol=1e-5)


def test_layernorm_eps_is_used():
  x = np.array([[1e-3, -1e-3]], np.float32)  # variance 1e-6: eps=1e-2 dominates it
  norm = LayerNorm(eps=1e-2, use_bias=False, dtype=jnp.float32, param_dtype=jnp.float32)
  y = norm.apply({'params': {'scale': np.ones(2, np.float32)}}, x)
  np.testing.assert_allclose(y, np_layernorm(x, 1.0, 0.0, 1e-2), rtol=1e-5)


def test_rmsnorm_matches_numpy_and_has_no_bias():
  c, eps = 48, 1e-6
  x = 1.0 + normal(2, 5, c, scale=2.0)
  norm = RMSNorm(eps=eps, use_bias=True, dtype=jnp.float32, param_dtype=jnp.float32)
  assert set(norm.init(jax.random.key(0), x)['params']) == {'scale'}
  scale = 1.0 + normal(c, scale=0.3)
  y = norm.apply({'params': {'scale': scale}}, x)
  np.testing.assert_allclose(y, np_rmsnorm(x, scale, eps), rtol=1e-5, atol=1e-5)
  # Unlike LayerNorm it does not subtract the mean.
  assert not np.allclose(y, np_layernorm(x, scale, 0.0, eps), atol=1e-2)


@pytest.mark.parametrize('norm_class', [LayerNorm, RMSNorm])
def test_norm_statistics_in_float32_under_bfloat16(norm_class):
  # Activations with a large mean: bf16 statistics would lose the deviations entirely.
  c = 64
  x = jnp.asarray(100.0 + normal(3, c), jnp.bfloat16)
  norm = norm_class(eps=1e-5, use_bias=False, dtype=jnp.bfloat16, param_dtype=jnp.float32)
  params = {'scale': np.ones(c, np.float32)}
  y = norm.apply({'params': params}, x)
  assert y.dtype == jnp.bfloat16
  x64 = np.asarray(x.astype(jnp.float32))
  ref = (np_layernorm(x64, 1.0, 0.0, 1e-5) if norm_class is LayerNorm else np_rmsnorm(
      x64, 1.0, 1e-5))
  # Only the final cast to bf16 rounds: relative error 2^-8 of values of order one (or 1 for
  # RMSNorm of a constant-ish vector).
  np.testing.assert_allclose(np.asarray(y.astype(jnp.float32)), ref, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize('norm, expected', [('layernorm', LayerNorm), ('rmsnorm', RMSNorm)])
def test_make_norm(tiny_config, norm, expected):
  module = layers.make_norm(tiny_config(norm=norm, norm_eps=1e-3, dtype='bfloat16'), 'n')
  assert type(module) is expected
  assert (module.eps, module.dtype, module.param_dtype) == (1e-3, jnp.bfloat16, jnp.float32)


# ---------------------------------------------------------------------------------------------
# Rotary positions


@pytest.mark.parametrize('theta', [10000.0, 500000.0, 10.0])
def test_rope_matches_numpy(theta):
  x = normal(2, 7, 3, 16)
  positions = np.array([[0, 1, 2, 3, 4, 5, 6], [3, 4, 5, 6, 40, 41, 63]])  # offset rows too
  y = layers.apply_rope(jnp.asarray(x), jnp.asarray(positions), theta)
  assert y.shape == x.shape and y.dtype == jnp.float32
  np.testing.assert_allclose(y, np_rope(x, positions, theta), rtol=1e-5, atol=2e-5)


def test_rope_frequencies():
  np.testing.assert_allclose(layers.rope_frequencies(8, 10000.0), [1.0, 0.1, 0.01, 0.001],
                             rtol=1e-6)


def test_rope_is_a_rotation():
  x = normal(1, 9, 2, 32)
  positions = jnp.arange(9)[None] * 7
  y = np.asarray(layers.apply_rope(jnp.asarray(x), positions, 10000.0))
  np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)
  np.testing.assert_array_equal(y[:, 0], x[:, 0])  # position 0: angle 0, the identity
  assert not np.allclose(y[:, 1:], x[:, 1:], atol=1e-3)


def test_rope_dot_product_depends_only_on_relative_position():
  q, k = normal(1, 1, 1, 16), normal(1, 1, 1, 16)

  def score(m, n):
    rq = layers.apply_rope(jnp.asarray(q), jnp.array([[m]]), 10000.0)
    rk = layers.apply_rope(jnp.asarray(k), jnp.array([[n]]), 10000.0)
    return float(jnp.sum(rq * rk))

  for m, n in [(5, 2), (9, 9), (3, 7)]:
    for shift in (1, 13, 100):
      assert score(m + shift, n + shift) == pytest.approx(score(m, n), abs=1e-4)
  assert abs(score(5, 2) - score(5, 3)) > 1e-3  # ... and does depend on it


def test_rope_keeps_dtype_and_computes_in_float32():
  x = jnp.asarray(normal(1, 4, 2, 16), jnp.bfloat16)
  positions = jnp.arange(4)[None] + 1000
  y = layers.apply_rope(x, positions, 10000.0)
  assert y.dtype == jnp.bfloat16
  ref = np_rope(np.asarray(x.astype(jnp.float32)), np.asarray(positions), 10000.0)
  np.testing.assert_allclose(np.asarray(y.astype(jnp.float32)), ref, rtol=1e-2, atol=2e-2)


# Llama 3.1 (factor 8 over 8192, head 128, theta 500k), Qwen-style YaRN (factor 4 over 32768),
# Gemma 3's global layers (linear 8), and NeoX-style partial rotary under each.
ROPE_SCALINGS = {
    'llama3': dict(rope_scaling='llama3', rope_scaling_factor=8.0, rope_original_block_size=8192,
                   rope_theta=500000.0),
    'yarn': dict(rope_scaling='yarn', rope_scaling_factor=4.0, rope_original_block_size=32768,
                 rope_theta=1000000.0),
    'yarn_betas': dict(rope_scaling='yarn', rope_scaling_factor=16.0, rope_original_block_size=4096,
                       rope_beta_fast=16.0, rope_beta_slow=2.0),
    'linear': dict(rope_scaling='linear', rope_scaling_factor=8.0, rope_theta=1000000.0),
}


@pytest.mark.parametrize('name', sorted(ROPE_SCALINGS))
@pytest.mark.parametrize('fraction', [1.0, 0.25])
def test_scaled_rotary_tables_equal_transformers(name, fraction):
  """Frequencies and YaRN's attention factor against transformers' own rope init functions."""
  cfg = ModelConfig(d_model=2048, n_heads=16, block_size=131072, position='rope',
                    rotary_fraction=fraction, **ROPE_SCALINGS[name])
  inv_freq, factor = layers.positions.rotary_table(cfg, 0)
  expected, expected_factor = hf_rope_table(cfg, cfg.rope_theta, cfg.rope_scaling)
  assert inv_freq.shape == (cfg.rotary_dims // 2,)
  np.testing.assert_allclose(inv_freq, expected, rtol=2e-6)
  assert factor == pytest.approx(expected_factor, rel=1e-7)
  plain, _ = layers.positions.rotary_table(cfg.replace(rope_scaling='none'), 0)
  assert not np.allclose(inv_freq, plain)  # the scaling does change something


def test_local_layers_take_their_own_theta_and_no_scaling():
  cfg = ModelConfig(n_layers=4, d_model=64, n_heads=4, position='rope', attention_window=8,
                    window_pattern='local,local,local,global', rope_local_theta=10000.0,
                    rope_theta=1000000.0, rope_scaling='linear', rope_scaling_factor=8.0)
  local, factor = layers.positions.rotary_table(cfg, 2)
  np.testing.assert_allclose(local, 1.0 / 10000.0**(np.arange(0, 16, 2) / 16), rtol=1e-6)
  global_, _ = layers.positions.rotary_table(cfg, 3)
  np.testing.assert_allclose(global_, 1.0 / 1e6**(np.arange(0, 16, 2) / 16) / 8, rtol=1e-6)
  assert factor == 1.0


def test_partial_rotary_passes_the_rest_through_and_matches_numpy():
  x = normal(2, 5, 3, 16)
  positions = np.array([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]])
  inv_freq = layers.positions.rope_frequencies(4, 10000.0)
  y = np.asarray(layers.positions.rotate(jnp.asarray(x), jnp.asarray(positions), inv_freq))
  np.testing.assert_array_equal(y[..., 4:], x[..., 4:])
  ref = np_rope(x, positions, inv_freq=np.asarray(inv_freq, np.float64))
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=2e-5)


# ---------------------------------------------------------------------------------------------
# ALiBi


@pytest.mark.parametrize('n_heads', [1, 2, 3, 4, 6, 8, 12, 16, 20])
def test_alibi_slopes_are_blooms(n_heads):
  np.testing.assert_allclose(layers.positions.alibi_slopes(n_heads), np_alibi_slopes(n_heads),
                             rtol=1e-12)


def test_alibi_bias_penalises_distance_per_head():
  cfg = ModelConfig(d_model=32, n_heads=4, position='alibi')
  bias = np.asarray(layers.positions.alibi_bias(cfg, jnp.arange(2, 5), jnp.arange(5)))
  assert bias.shape == (1, 4, 3, 5)
  slopes = np_alibi_slopes(4)  # 1/4, 1/16, 1/64, 1/256
  np.testing.assert_allclose(bias[0, :, 0, 0], -2 * slopes, rtol=1e-6)  # query slot 2, key 0
  np.testing.assert_array_equal(bias[0, :, 1, 3], 0.0)  # the query's own slot


# ---------------------------------------------------------------------------------------------
# Attention

ATTENTION_CASES = {
    'mha_learned': dict(),
    'gqa_rope': dict(n_kv_heads=2, position='rope'),
    'mqa_rope_window3_nobias': dict(n_kv_heads=1, position='rope', attention_window=3,
                                    use_bias=False),
    'gqa_window1_qkvbias': dict(n_kv_heads=2, attention_window=1, use_bias=False, qkv_bias=True),
    'mha_rope_window5': dict(position='rope', attention_window=5, rope_theta=100.0),
    'mup': dict(parametrization='mup', mup_base_width=8),
    'mup_base_head_dim': dict(parametrization='mup', mup_base_width=8, mup_base_head_dim=4),
}


@pytest.mark.parametrize('overrides', ATTENTION_CASES.values(), ids=ATTENTION_CASES.keys())
def test_attention_matches_numpy(tiny_config, randomize, overrides):
  cfg = tiny_config(block_size=12, **overrides)
  b, t = 2, 12
  x = normal(b, t, cfg.d_model)
  positions = np.broadcast_to(np.arange(t), (b, t))
  module = Attention(cfg)
  shapes = nn.meta.unbox(jax.eval_shape(module.init, jax.random.key(0), x, positions)['params'])
  assert all(('bias' in shapes[name]) == cfg.qkv_bias for name in ('query', 'key', 'value'))
  assert ('bias' in shapes['out']) == cfg.use_bias
  c, h, kv, d = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
  assert shapes['query']['kernel'].shape == (c, h, d)  # heads are an axis of their own
  assert shapes['key']['kernel'].shape == shapes['value']['kernel'].shape == (c, kv, d)
  assert shapes['out']['kernel'].shape == (h, d, c)
  params = randomize(shapes)

  @jax.jit
  def explicit(params, x):
    (y, _), state = Attention(cfg, need_weights=True).apply({'params': params}, x, positions,
                                                            mutable=['intermediates'])
    return y, state['intermediates']['attention_weights'][0]

  fused = jax.jit(lambda params, x: module.apply({'params': params}, x, positions)[0])

  y_ref, w_ref, _ = np_attention(params, x, positions, cfg)
  y_explicit, weights = explicit(params, x)
  y_fused = fused(params, x)
  np.testing.assert_allclose(y_explicit, y_ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(y_fused, y_ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(y_fused, y_explicit, rtol=1e-5, atol=1e-6)

  weights = np.asarray(weights)
  assert weights.shape == (b, cfg.n_heads, t, t) and weights.dtype == np.float32
  np.testing.assert_allclose(weights, w_ref, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
  hidden = ~np_visible(t, t, cfg.attention_window)  # above the diagonal, or outside the window
  assert np.all(weights[..., hidden] == 0.0)
  assert np.all(weights[..., ~hidden] > 0.0)


def test_attention_mask_with_left_padding():
  first_valid = jnp.array([0, 2, 5])
  window = 3
  mask = np.asarray(layers.attention_mask(jnp.arange(4, 7), jnp.arange(8), window, first_valid))
  assert mask.shape == (3, 1, 3, 8)
  t = np.arange(4, 7)[:, None]
  s = np.arange(8)[None, :]
  for row, fv in enumerate([0, 2, 5]):
    expected = (s <= t) & (t - s < window) & ((s >= fv) | (s == t))
    np.testing.assert_array_equal(mask[row, 0], expected)
  assert mask[2, 0, 0].tolist() == [False] * 4 + [True] + [False] * 3  # a padding slot sees itself
  no_padding = np.asarray(layers.attention_mask(jnp.arange(4), jnp.arange(4), None))
  np.testing.assert_array_equal(no_padding, np.tril(np.ones((4, 4), bool))[None, None])


def test_resolve_attention_impl(tiny_config):
  f32 = tiny_config()
  assert layers.resolve_attention_impl(f32.replace(attention_impl='xla')) == 'xla'
  if jax.default_backend() != 'gpu':
    assert layers.resolve_attention_impl(tiny_config(dtype='bfloat16')) == 'xla'
  assert layers.resolve_attention_impl(f32) == 'xla'  # cuDNN flash attention needs half precision


@pytest.mark.skipif(jax.default_backend() == 'gpu', reason='cuDNN runs there: no fallback')
def test_a_cudnn_model_runs_on_xla_here_with_one_notice(tiny_config, randomize, caplog):
  """A GPU config on a CPU: same logits as attention_impl='xla', and one warning line for the
  whole model (not one per layer)."""
  layers.attention._notice_fallback.cache_clear()
  cudnn = tiny_config(attention_impl='cudnn', n_layers=3)
  params = randomize(abstract_params(cudnn))
  tokens = jax.random.randint(jax.random.key(1), (2, 7), 0, cudnn.vocab_size)
  with caplog.at_level(logging.WARNING):
    logits = gpt_logits(cudnn, params, tokens)
    gpt_logits(cudnn, params, tokens[:, :5])  # another trace: no second notice
  expected = gpt_logits(cudnn.replace(attention_impl='xla'), params, tokens)
  np.testing.assert_array_equal(logits, expected)
  notices = [r for r in caplog.records if 'attention_impl=cudnn' in r.getMessage()]
  assert len(notices) == 1 and 'using xla' in notices[0].getMessage()


@pytest.mark.skipif(jax.default_backend() == 'gpu', reason='its notice differs there')
def test_soft_capped_attention_takes_the_explicit_kernel_with_one_notice(
    tiny_config, randomize, caplog):
  """No fused kernel can cap: a soft-capped model asking for one runs the explicit kernel, says
  so once, and computes what the explicit kernel computes (and what NumPy does)."""
  layers.attention._notice_fallback.cache_clear()
  capped = tiny_config(attention_impl='xla', attn_logit_softcap=2.0, n_layers=3)
  params = randomize(abstract_params(capped))
  tokens = jax.random.randint(jax.random.key(1), (2, 7), 0, capped.vocab_size)
  with caplog.at_level(logging.WARNING):
    logits = gpt_logits(capped, params, tokens)
  np.testing.assert_array_equal(
      logits, gpt_logits(capped.replace(attention_impl='explicit'), params, tokens))
  notices = [r.getMessage() for r in caplog.records if 'soft-cap' in r.getMessage()]
  assert len(notices) == 1 and 'explicit kernel' in notices[0]
  uncapped = gpt_logits(capped.replace(attn_logit_softcap=None), params, tokens)
  assert np.abs(logits - uncapped).max() > 1e-2  # a cap of 2 binds at these weights
  with pytest.raises(ValueError, match='soft-caps'):
    q = k = v = jnp.zeros((1, 3, 2, 4))
    layers.KERNELS['xla'](q, k, v, None, None, layers.attention.Logits(softcap=2.0))


def test_qk_norm_over_the_projection_has_one_gain_per_element(tiny_config):
  cfg = tiny_config(qk_norm='projection', n_kv_heads=2, position='rope')
  attn = abstract_params(cfg)['blocks_0']['attn']
  assert attn['q_norm']['scale'].shape == (4, 8) and attn['k_norm']['scale'].shape == (2, 8)
  assert abstract_params(
      cfg.replace(qk_norm='head'))['blocks_0']['attn']['q_norm']['scale'].shape == (8,)


def test_non_parametric_norms_hold_nothing(tiny_config):
  for norm in ('layernorm', 'rmsnorm'):
    cfg = tiny_config(norm=norm, norm_affine=False, norm_position='sandwich')
    params = abstract_params(cfg)
    assert 'norm_f' not in params
    assert not any('norm' in name for name in params['blocks_0'])
  x = normal(2, 3, 8, scale=3.0)
  y = LayerNorm(1e-5, True, jnp.float32, jnp.float32, affine=False).apply({}, x)
  np.testing.assert_allclose(y, np_layernorm(x, 1.0, 0.0, 1e-5), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Feed-forward


@pytest.mark.parametrize('mlp', ['gelu', 'gelu_exact', 'relu2', 'swiglu', 'geglu'])
@pytest.mark.parametrize('use_bias', [True, False])
def test_mlp_matches_numpy(tiny_config, randomize, mlp, use_bias):
  cfg = tiny_config(mlp=mlp, use_bias=use_bias, d_ff=48)
  x = normal(2, 5, cfg.d_model, scale=2.0)
  shapes = nn.meta.unbox(jax.eval_shape(MLP(cfg).init, jax.random.key(0), x)['params'])
  names = {'gate', 'up', 'down'} if mlp in GATED_MLPS else {'fc', 'proj'}
  assert set(shapes) == names
  assert all(('bias' in shapes[n]) == use_bias for n in names)
  p = randomize(shapes)
  y = MLP(cfg).apply({'params': p}, x)
  assert y.shape == x.shape
  np.testing.assert_allclose(y, np_mlp(p, x, mlp), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Registries and the dense layer


def test_every_config_string_has_a_registry_entry_and_back():
  """A variant is a table entry plus its config string: neither may exist without the other."""
  from gptjax import config
  assert set(layers.NORMS) == set(config.NORMS)
  assert set(layers.POSITIONS) == set(config.POSITIONS)
  assert set(layers.MLPS) == set(config.MLPS)
  assert set(layers.positions.ROPE_SCALINGS) == set(config.ROPE_SCALINGS)
  assert set(layers.KERNELS) == set(config.ATTENTION_IMPLS) - {'auto'}


def test_explicit_kernel_model_equals_xla_and_fused_kernels_refuse_a_probs_hook(
    tiny_config, randomize):
  cfg = tiny_config(n_kv_heads=2, attention_window=5, attention_impl='explicit')
  params = randomize(abstract_params(cfg))
  tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, cfg.vocab_size)
  explicit = gpt_logits(cfg, params, tokens)
  xla = gpt_logits(cfg.replace(attention_impl='xla'), params, tokens)
  np.testing.assert_allclose(explicit, xla, rtol=1e-5, atol=1e-5)
  q = k = v = jnp.zeros((1, 3, 2, 4))
  with pytest.raises(ValueError, match='explicit kernel'):
    layers.KERNELS['xla'](q, k, v, None, lambda probs: probs)


def test_dense_contracts_several_axes_like_the_flattened_matrix(randomize):
  """[B, T, H, D] @ [H, D, C] is the [B, T, H*D] @ [H*D, C] matmul of the papers."""
  x = normal(2, 3, 4, 5)
  layer = layers.Dense(features=(6,), axes=('heads', 'head_dim', 'embed'), std=0.02, use_bias=True,
                       dtype=jnp.float32, param_dtype=jnp.float32, n_contract=2)
  params = randomize(nn.meta.unbox(jax.eval_shape(layer.init, jax.random.key(0), x)['params']))
  assert params['kernel'].shape == (4, 5, 6) and params['bias'].shape == (6,)
  y = layer.apply({'params': params}, x)
  expected = x.reshape(2, 3, 20) @ params['kernel'].reshape(20, 6) + params['bias']
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  wrong = layer.clone(axes=('heads', 'embed'))
  with pytest.raises(ValueError, match='axis names'):
    wrong.init(jax.random.key(0), x)


# ---------------------------------------------------------------------------------------------
# The residual stream's gradient (layers/residual.py)


def test_store_gradient_is_the_identity_and_keeps_the_gradient():
  x, w = normal(3, 4, 5), normal(5)

  def loss(x, store):
    h = store(x)
    return jnp.sum(jnp.sin(h) * w + h * h)

  stored = layers.store_gradient
  assert np.array_equal(jax.jit(stored)(x), x)
  np.testing.assert_array_equal(
      jax.jit(jax.grad(lambda x: loss(x, stored)))(x),
      jax.jit(jax.grad(lambda x: loss(x, lambda h: h)))(x))


def widest_fusion(hlo_text: str) -> int:
  """The most operands any fusion of an optimized HLO module reads."""
  return max(
      len(re.findall(r'%[\w.\-]+',
                     line.split(' fusion(', 1)[1].split(')', 1)[0]))
      for line in hlo_text.splitlines() if ' fusion(' in line)


@pytest.mark.slow  # in the full suite; out of the inner loop (-m "not slow")
def test_the_backward_does_not_recompute_the_residual_gradient_of_every_later_layer(tiny_config):
  """Without store_gradient, XLA:CPU fuses the residual stream's gradient chain into every
  consumer: the widest backward fusion then reads ~10 more arrays per layer (50 / 91 / 173 at
  2 / 4 / 8 layers of this config) and the backward's cost grows with the square of the depth."""
  def widest(n_layers):
    cfg = tiny_config(n_layers=n_layers)
    params = abstract_params(cfg)
    tokens = jnp.zeros((2, cfg.block_size), jnp.int32)
    grad = jax.grad(lambda params: GPT(cfg).apply({'params': params}, tokens).mean())
    return widest_fusion(jax.jit(grad).lower(params).compile().as_text())

  assert widest(8) <= widest(2)


@pytest.mark.parametrize('window, kv_heads, bias', [(None, 4, False), (5, 2, False),
                                                    (None, 1, True), (11, 4, True)])
def test_blocked_kernel_equals_the_explicit_kernel_block_by_block(window, kv_heads, bias):
  """Blocks of 4 queries over 19 (5 blocks, the last short): each sees only the keys it may, with
  windows, GQA/MQA and a bias (ALiBi's) sliced to match."""
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.standard_normal((2, 19, 4, 8)), jnp.float32)
  k, v = (jnp.asarray(rng.standard_normal((2, 19, kv_heads, 8)), jnp.float32) for _ in range(2))
  how = layers.attention.Logits(
      bias=jnp.asarray(rng.standard_normal((1, 4, 19, 19)), jnp.float32) if bias else None)
  expected = layers.attention.explicit_kernel(q, k, v, window, how=how)
  blocked = layers.attention.blocked_kernel(q, k, v, window, how=how, block=4)
  np.testing.assert_allclose(blocked, expected, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='explicit kernel'):
    layers.attention.blocked_kernel(q, k, v, None, how=how._replace(softcap=2.0), block=4)
