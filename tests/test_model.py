"""GPT end to end: causality, cached decoding, the context bound, GQA == MHA, init, dropout,
remat, bf16 and the analysis entry point, over a matrix of architecture variants."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gptjax import config as config_lib
from gptjax.config import GATED_MLPS, ModelConfig
from gptjax.model import (GPT, KVCache, abstract_params, forward_with_intermediates, init_cache,
                          init_params, max_attention_logits, param_paths, with_layers_layout)
from conftest import TINY, VARIANTS
from reference import np_attention, np_block, np_embed, np_forward, np_norm

pytestmark = pytest.mark.usefixtures('fast_compiles')  # compiling is nearly all their time
variants = pytest.mark.parametrize('variant', VARIANTS)

B, T = 3, 16  # T == block_size of the tiny config
TOKENS = np.random.default_rng(1).integers(0, 61, (B, T)).astype(np.int32)  # vocab_size 61


@pytest.fixture
def cfg(tiny_config, variant):
  return tiny_config(**VARIANTS[variant])


def param_shapes(cfg):
  return abstract_params(cfg)


def embedded(cfg, params, tokens):
  """The token embeddings, wte(tokens) [B, T, C], the input the causality test differentiates."""
  return jnp.asarray(params['wte']['embedding'])[tokens]


def logits_given_embeddings(cfg, params, tokens, x):
  """The full forward with the token-embedding lookup's output replaced by x [B, T, C]."""
  def replace_wte_output(next_fun, args, kwargs, context):
    if context.module.name == 'wte' and context.method_name == '__call__':
      return x
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(replace_wte_output):
    return GPT(cfg).apply({'params': params}, tokens)


@functools.lru_cache(maxsize=None)
def _reference(cfg, randomize):
  """(params, logits [B, T, V], jacobian [T, B, T, C]) for TOKENS; one compile per variant.

  jacobian[t, b, s] is d<logits[b, t], r[b, t]> / d x[b, s] for a fixed random r [B, T, V]:
  how much the prediction at position t depends on the embedding at position s.
  """
  params = randomize(param_shapes(cfg))
  probe = np.random.default_rng(2).standard_normal((B, T, cfg.vocab_size)).astype(np.float32)

  @jax.jit
  def logits_and_jacobian(params, tokens):
    x = embedded(cfg, params, tokens)
    logits, vjp = jax.vjp(lambda x: logits_given_embeddings(cfg, params, tokens, x), x)
    one_position = jnp.eye(T)[:, None, :, None] * probe[None]  # [T, B, T, V]
    (jacobian,) = jax.vmap(vjp)(one_position)
    return logits, jacobian

  logits, jacobian = logits_and_jacobian(params, TOKENS)
  return params, np.asarray(logits), np.asarray(jacobian)


@pytest.fixture
def reference(randomize):
  return lambda cfg: _reference(cfg, randomize)


@functools.lru_cache(maxsize=None)
def decode_fn(cfg):
  """The cached call, jitted once per config: prefill and single steps reuse its compilations."""
  return jax.jit(
      lambda params, tokens, cache: GPT(cfg).apply({'params': params}, tokens, cache=cache))


@functools.lru_cache(maxsize=None)
def forward_fn(cfg, train=False):
  return jax.jit(lambda params, tokens: GPT(cfg).apply({'params': params}, tokens, train=train))


def assert_logits_close(actual, expected, what=''):
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape, what
  # These weights give logits up to ~30; two float32 orderings of the same sums differ by ~1e-5
  # there, while a wrong position, mask or cache slot moves them by O(1).
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=2e-5, err_msg=what)


# ---------------------------------------------------------------------------------------------
# The variant matrix


def test_variant_matrix_covers_every_value(tiny_config):
  configs = [tiny_config(**v) for v in VARIANTS.values()]
  covered = lambda field: {getattr(c, field) for c in configs}
  assert covered('norm_position') == set(config_lib.NORM_POSITIONS)
  assert covered('norm') == set(config_lib.NORMS)
  assert covered('position') == set(config_lib.POSITIONS)
  assert covered('rope_scaling') == set(config_lib.ROPE_SCALINGS)
  assert covered('n_kv_heads') >= {1, 2, 4}  # MQA, GQA, MHA with 4 heads
  assert covered('mlp') == set(config_lib.MLPS)
  assert covered('qk_norm') == set(config_lib.QK_NORMS)
  assert covered('scale_embeddings') == covered('norm_affine') == covered('parallel_block') == {
      False, True
  }
  assert {c.head_dim * c.n_heads == c.d_model for c in configs} == {False, True}
  assert covered('rotary_fraction') > {1.0}
  assert {c.layer_windows for c in configs} >= {(None, None), (3, 3), (3, None)}
  assert covered('rope_local_theta') > {None} and covered('attention_scale_dim') > {None}
  assert covered('attn_logit_softcap') > {None} and covered('final_logit_softcap') > {None}
  assert covered('attention_window') == {None, 3, 5}
  assert covered('tie_embeddings') == covered('use_bias') == {True, False}
  # Two policies here; every one is checked against no remat in test_every_remat_policy_...
  assert covered('remat') == {'none', 'save_qkv_attention_out', 'dots_saveable'}
  assert covered('vocab_pad_multiple') == {1, 64}
  assert covered('parametrization') == {'sp', 'mup'}
  assert len(set(configs)) == len(configs)


@variants
def test_forward_shapes_and_dtypes(cfg, reference):
  params, logits, _ = reference(cfg)
  assert logits.shape == (B, T, cfg.vocab_size) and logits.dtype == np.float32
  assert np.isfinite(logits).all()
  assert all(p.dtype == np.float32 for p in jax.tree.leaves(params))
  wte = params['wte']['embedding']
  assert wte.shape == (cfg.vocab_size, cfg.d_model)  # padding is never a parameter
  assert ('lm_head' in params) == (not cfg.tie_embeddings)
  assert ('wpe' in params) == (cfg.position == 'learned')
  assert ('norm_f' in params) == (cfg.norm_position != 'post' and cfg.norm_affine)


@variants
def test_forward_matches_numpy(cfg, reference):
  params, logits, _ = reference(cfg)
  expected = np_forward(cfg, params, TOKENS)
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


# ---------------------------------------------------------------------------------------------
# Causality


def assert_receptive_field(jacobian, reach):
  """jacobian [T, B, T, C]: position t depends on exactly the positions t - reach .. t."""
  depends = np.abs(jacobian).max(axis=-1)  # [T(query), B, T(input)]
  for t in range(T):
    for s in range(T):
      inside = t - reach <= s <= t
      if inside:
        assert np.all(depends[t, :, s] > 0), f'logits at {t} ignore the input at {s}'
      else:
        assert np.all(depends[t, :, s] == 0.0), (
            f'logits at {t} depend on the input at {s}: max |grad| {depends[t, :, s].max()}')


@variants
def test_causality(cfg, reference):
  """The gradient of position t's logits w.r.t. the embedding of any later position is exactly 0;
  with a window w, L layers reach back exactly L * (w - 1) positions (one global layer: all)."""
  _, _, jacobian = reference(cfg)
  windows = cfg.layer_windows
  reach = T if None in windows else sum(w - 1 for w in windows)
  assert_receptive_field(jacobian, reach)


@pytest.mark.parametrize('position, window', [('learned', 1), ('rope', 3), ('none', 5)])
def test_single_layer_window(tiny_config, reference, window, position):
  cfg = tiny_config(n_layers=1, attention_window=window, position=position)
  _, _, jacobian = reference(cfg)
  assert_receptive_field(jacobian, window - 1)


def test_causality_check_can_fail(tiny_config, reference):
  """The jacobian trick against a direct perturbation: moving the embedding at position 7
  changes the logits at 7 and after, and leaves those before bit-identical."""
  cfg = tiny_config(**VARIANTS['gpt2'])
  params, _, jacobian = reference(cfg)
  forward = jax.jit(lambda x: logits_given_embeddings(cfg, params, TOKENS, x))
  x = np.asarray(embedded(cfg, params, TOKENS))
  dx = np.zeros_like(x)
  dx[:, 7] = 1e-2 * np.random.default_rng(3).standard_normal(dx[:, 7].shape)
  changed = np.abs(forward(x + dx) - forward(x)).max(axis=(0, 2))  # [T]
  assert np.all(changed[:7] == 0.0) and np.all(changed[7:] > 1e-4)
  reach = np.abs(jacobian[:, :, 7]).max(axis=(1, 2))  # [T]: d logits[t] / d x[7]
  np.testing.assert_array_equal(reach > 0, changed > 0)


# ---------------------------------------------------------------------------------------------
# Cached decoding


@variants
@pytest.mark.parametrize('prompt_len', [1, 5])
def test_cached_decoding_matches_full_forward(cfg, reference, prompt_len):
  params, full, _ = reference(cfg)
  decode = decode_fn(cfg)
  cache = init_cache(cfg, B)  # max_len == block_size
  assert cache.max_len == T
  logits, cache = decode(params, TOKENS[:, :prompt_len], cache)
  assert_logits_close(logits, full[:, :prompt_len], 'prefill')
  for t in range(prompt_len, T):
    logits, cache = decode(params, TOKENS[:, t:t + 1], cache)
    assert_logits_close(logits[:, 0], full[:, t], f'step at position {t}')
  assert int(cache.index) == T
  assert isinstance(cache, KVCache) and len(cache.layers) == cfg.n_layers
  # Only kv heads are stored; a window layer keeps only its window's slots (a ring).
  slots = [T if w is None else min(w, T) for w in cfg.layer_windows]
  assert [layer.k.shape for layer in cache.layers] == [(B, cfg.n_kv_heads, s, cfg.head_dim)
                                                       for s in slots]


@variants
def test_left_padded_batch_matches_each_row_alone(cfg, reference):
  """Rows with prompts of 5, 2 and 1 tokens, left-padded into one batch, then decoded together.

  Row b alone is TOKENS[b, :n]; by causality (tested above) its logits are the full forward's
  logits at positions < n, so `full` serves as every row's unpadded reference.
  """
  params, full, _ = reference(cfg)
  decode = decode_fn(cfg)
  lengths = np.array([5, 2, 1])
  width = lengths.max()
  first_valid = width - lengths
  rng = np.random.default_rng(4)
  prompts = rng.integers(0, cfg.vocab_size, (B, width)).astype(np.int32)  # junk in the padding
  for b, n in enumerate(lengths):
    prompts[b, first_valid[b]:] = TOKENS[b, :n]
  cache = init_cache(cfg, B, first_valid=first_valid)
  logits, cache = decode(params, prompts, cache)
  for b, n in enumerate(lengths):
    assert_logits_close(logits[b, first_valid[b]:], full[b, :n], f'prefill of row {b}')
  for step in range(T - width):
    next_tokens = np.array([[TOKENS[b, n + step]] for b, n in enumerate(lengths)], np.int32)
    logits, cache = decode(params, next_tokens, cache)
    for b, n in enumerate(lengths):
      assert_logits_close(logits[b, 0], full[b, n + step], f'row {b} at position {n + step}')


# ---------------------------------------------------------------------------------------------
# The context bound


def test_learned_positions_stop_at_block_size(tiny_config, reference):
  cfg = tiny_config()
  params, _, _ = reference(cfg)
  assert init_cache(cfg, 1, max_len=T).max_len == T
  with pytest.raises(ValueError, match=r'block_size=16'):
    init_cache(cfg, 1, max_len=T + 1)
  with pytest.raises(ValueError, match=r'block_size=16'):
    GPT(cfg).apply({'params': params}, jnp.zeros((1, T + 1), jnp.int32))


def test_rope_cache_may_exceed_block_size(tiny_config, reference):
  cfg = tiny_config(**VARIANTS['llama'])
  params, _, _ = reference(cfg)
  length = T + 8
  tokens = np.random.default_rng(5).integers(0, cfg.vocab_size, (1, length)).astype(np.int32)
  full = forward_fn(cfg)(params, tokens)
  decode = decode_fn(cfg)
  cache = init_cache(cfg, 1, max_len=length)
  logits, cache = decode(params, tokens[:, :5], cache)
  steps = [logits]
  for t in range(5, length):
    logits, cache = decode(params, tokens[:, t:t + 1], cache)
    steps.append(logits)
  assert_logits_close(jnp.concatenate(steps, axis=1), full)


def test_decoding_past_the_cache_end_is_nan_not_silently_wrong(tiny_config, reference):
  """dynamic_update_slice would clamp the write index; the model must make that visible."""
  cfg = tiny_config(**VARIANTS['llama'])
  params, _, _ = reference(cfg)
  decode = decode_fn(cfg)
  tokens = np.ones((1, 4), np.int32)
  logits, cache = decode(params, tokens, init_cache(cfg, 1, max_len=4))
  assert np.isfinite(np.asarray(logits)).all()
  logits, _ = decode(params, tokens[:, :1], cache)
  assert np.isnan(np.asarray(logits)).all()


# ---------------------------------------------------------------------------------------------
# GQA with every kv head repeated is MHA


def repeat_kv_heads(cfg, params):
  """The MHA parameters equivalent to a GQA/MQA model: kv head j copied to the query heads of its
  group, j * G .. (j + 1) * G - 1, in the key and value kernels [C, K, D] (and biases [K, D])."""
  groups = cfg.n_heads // cfg.n_kv_heads

  def expand(w):  # [..., K, D] -> [..., H, D]
    return np.repeat(np.asarray(w), groups, axis=-2)

  mha = jax.tree.map(np.asarray, params)
  for name in params:
    if name.startswith('blocks_'):
      for kv in ('key', 'value'):
        mha[name]['attn'][kv] = {k: expand(w) for k, w in params[name]['attn'][kv].items()}
  return mha


@pytest.mark.parametrize('variant',
                         ['llama', 'post_layernorm_mqa', 'rope_gqa_qkvbias_vocabpad_qknorm'])
def test_gqa_equals_mha_with_repeated_kv_heads(cfg, reference):
  params, gqa_logits, _ = reference(cfg)
  mha_cfg = cfg.replace(n_kv_heads=cfg.n_heads)
  mha_params = repeat_kv_heads(cfg, params)
  assert jax.tree.map(np.shape, mha_params) == jax.tree.map(lambda s: s.shape,
                                                            param_shapes(mha_cfg))
  mha_logits = forward_fn(mha_cfg)(mha_params, TOKENS)
  assert_logits_close(mha_logits, gqa_logits)


# ---------------------------------------------------------------------------------------------
# Padded vocabulary


def test_vocab_padding_changes_nothing_but_speed(tiny_config, reference):
  cfg = tiny_config(**VARIANTS['untied_vocabpad_gelu_exact'])
  assert cfg.padded_vocab_size == 64
  params, padded_logits, _ = reference(cfg)
  unpadded = forward_fn(cfg.replace(vocab_pad_multiple=1))(params, TOKENS)
  assert_logits_close(unpadded, padded_logits)


@variants
def test_a_single_row_takes_the_matrix_vector_head_and_matches_numpy(cfg, reference):
  """One token of one row (a batch-1 decode step) multiplies the head the other way round
  (GPT.head): the same logits as NumPy's forward, and as that row inside a full sequence."""
  params, full, _ = reference(cfg)
  one = forward_fn(cfg)(params, TOKENS[:1, :1])
  assert one.shape == (1, 1, cfg.vocab_size)
  expected = np_forward(cfg, params, TOKENS[:1, :1])
  np.testing.assert_allclose(one, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
  assert_logits_close(one[:, 0], full[:1, 0])


# ---------------------------------------------------------------------------------------------
# Initialisation


@pytest.mark.parametrize('mlp', ['gelu', 'swiglu'])
def test_init_scheme(tiny_config, mlp):
  n_layers = 2
  cfg = tiny_config(d_model=128, n_layers=n_layers, vocab_size=128, block_size=64, mlp=mlp,
                    d_ff=256, tie_embeddings=False)
  params = init_params(cfg, jax.random.key(0))
  residual_std = 0.02 / np.sqrt(2 * n_layers)  # 0.01
  seen = set()

  def check(path, leaf):
    name = jax.tree_util.keystr(path)
    leaf = np.asarray(leaf)
    assert leaf.dtype == np.float32, name
    last = path[-1].key
    if last == 'scale':
      np.testing.assert_array_equal(leaf, 1.0, err_msg=name)
    elif last == 'bias':
      np.testing.assert_array_equal(leaf, 0.0, err_msg=name)
    else:
      parent = path[-2].key if len(path) > 1 else last
      expected = residual_std if parent in ('out', 'proj', 'down') else 0.02
      seen.add((parent, expected))
      # >= 8192 samples: the std's relative standard error is < 1%; 6% is ~8 of them.
      assert leaf.size >= 8192, name
      assert leaf.std() == pytest.approx(expected, rel=0.06), name
      assert abs(leaf.mean()) < 3 * expected / np.sqrt(leaf.size) + 1e-4, name

  jax.tree_util.tree_map_with_path(check, params)
  residual = {'gelu': {'out', 'proj'}, 'swiglu': {'out', 'down'}}[mlp]
  assert {p for p, s in seen if s == residual_std} == residual
  assert {'wte', 'wpe', 'lm_head', 'query', 'key', 'value'} <= {p for p, s in seen if s == 0.02}


# ---------------------------------------------------------------------------------------------
# Dropout

DROPOUT_RATES = ('embd_dropout', 'attn_dropout', 'resid_dropout')


def test_dropout_off_outside_training(tiny_config, reference):
  base = tiny_config()
  params, logits, _ = reference(base)
  with_rates = base.replace(**{rate: 0.5 for rate in DROPOUT_RATES})
  # train=False ignores the rates (and needs no rng) ...
  assert_logits_close(forward_fn(with_rates)(params, TOKENS), logits)
  # ... and train=True with zero rates is the same deterministic function.
  assert_logits_close(forward_fn(base, train=True)(params, TOKENS), logits)


@pytest.mark.parametrize('rate', DROPOUT_RATES)
def test_dropout_in_training(tiny_config, reference, rate):
  base = tiny_config()
  params, logits, _ = reference(base)
  cfg = base.replace(**{rate: 0.5})
  train = jax.jit(
      lambda rng: GPT(cfg).apply({'params': params}, TOKENS, train=True, rngs={'dropout': rng}))
  a, again, other = train(jax.random.key(0)), train(jax.random.key(0)), train(jax.random.key(1))
  np.testing.assert_array_equal(a, again)  # same rng, same masks
  assert np.abs(a - logits).max() > 1e-2  # this rate is wired in
  assert np.abs(a - other).max() > 1e-2


# ---------------------------------------------------------------------------------------------
# Remat


def loss_and_grads(cfg, params, rng):
  def loss_fn(params):
    logits = GPT(cfg).apply({'params': params}, TOKENS[:, :-1], train=True, rngs={'dropout': rng})
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(log_probs, TOKENS[:, 1:, None], axis=-1).mean()

  return jax.jit(jax.value_and_grad(loss_fn))(params)


def rematerialised_blocks(cfg, params):
  # .eqns of what make_jaxpr returns: a ClosedJaxpr to jax 0.10, a Jaxpr from 0.11 (whose .jaxpr
  # is a legacy alias of itself).
  jaxpr = jax.make_jaxpr(lambda p: GPT(cfg).apply({'params': p}, TOKENS))(params)
  return sum(eqn.primitive.name in ('checkpoint', 'remat2') for eqn in jaxpr.eqns)


@pytest.mark.slow  # in the full suite; out of the inner loop (-m "not slow")
def test_remat_same_loss_and_grads(tiny_config, randomize):
  # One layer is enough to check the rematerialised block, dropout rng included.
  cfg = tiny_config(**VARIANTS['llama'], n_layers=1, resid_dropout=0.1)
  remat_cfg = cfg.replace(remat=True)
  shapes = param_shapes(cfg)
  assert jax.tree.structure(shapes) == jax.tree.structure(param_shapes(remat_cfg))
  params = randomize(shapes)
  loss, grads = loss_and_grads(cfg, params, jax.random.key(7))
  remat_loss, remat_grads = loss_and_grads(remat_cfg, params, jax.random.key(7))
  assert np.isfinite(loss) and loss > 0
  np.testing.assert_allclose(remat_loss, loss, rtol=1e-6)
  for g, rg in zip(jax.tree.leaves(grads), jax.tree.leaves(remat_grads)):
    np.testing.assert_allclose(rg, g, rtol=1e-5, atol=1e-6)
  assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(grads))
  # ... and remat=True really checkpoints each block (equal numbers could mean it was ignored).
  assert rematerialised_blocks(remat_cfg, params) == remat_cfg.n_layers
  assert rematerialised_blocks(cfg, params) == 0


# ---------------------------------------------------------------------------------------------
# bfloat16 compute


@pytest.mark.parametrize('variant', ['llama'])
def test_bfloat16_compute(cfg, reference):
  params, f32_logits, _ = reference(cfg)
  bf16 = cfg.replace(dtype='bfloat16')
  bf16_params = abstract_params(bf16)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(bf16_params))
  logits = np.asarray(forward_fn(bf16)(params, TOKENS))
  assert logits.dtype == np.float32
  # bf16 keeps 8 significant bits (relative rounding 2^-9 ~ 0.2%). Each of the ~10 matmul/norm
  # stages rounds its inputs, so errors around 1% of the logit scale are expected (0.6-1% seen
  # for these variants); a wrong computation (a dropped mask, a missing norm) is off by O(100%).
  scale = np.abs(f32_logits).max()
  error = np.abs(logits - f32_logits).max()
  assert error < 0.03 * scale, (error, scale)
  assert error > 0  # the matmuls really ran in bf16
  # The predictions mostly agree (top-1 flips only where two logits are within rounding).
  assert (logits.argmax(-1) == f32_logits.argmax(-1)).mean() > 0.9
  # Cached decoding in bf16 stores a bf16 cache and agrees with the bf16 full forward.
  cache = init_cache(bf16, B)
  assert cache.layers[0].k.dtype == jnp.bfloat16
  prefill, _ = decode_fn(bf16)(params, TOKENS, cache)
  assert prefill.dtype == jnp.float32
  assert np.abs(np.asarray(prefill) - logits).max() < 0.02 * scale


# ---------------------------------------------------------------------------------------------
# forward_with_intermediates


@variants
def test_max_attention_logits_match_numpy(cfg, reference):
  """Each layer's largest visible logit before soft-capping, as NumPy computes it on the
  block's input."""
  params, _, _ = reference(cfg)
  ours = np.asarray(jax.jit(max_attention_logits, static_argnums=0)(cfg, params, TOKENS))
  x = np_embed(cfg, params, TOKENS)
  positions = np.broadcast_to(np.arange(T), (B, T))
  expected = []
  for i in range(cfg.n_layers):
    p = params[f'blocks_{i}']
    normed = cfg.norm_position in ('pre', 'sandwich')
    into = np_norm(cfg, p.get('attn_norm', {}), x) if normed else x
    expected.append(np_attention(p['attn'], into, positions, cfg, i)[2])
    x = np_block(cfg, p, x, positions, i)
  np.testing.assert_allclose(ours, expected, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize('variant', ['gpt2', 'post_nobias_remat_relu2', 'llama'])
def test_forward_with_intermediates(cfg, reference):
  params, ref_logits, _ = reference(cfg)
  run = jax.jit(functools.partial(forward_with_intermediates, cfg))
  logits, block_outputs, weights = run(params, TOKENS)
  L, H, C = cfg.n_layers, cfg.n_heads, cfg.d_model
  assert block_outputs.shape == (L, B, T, C)
  assert weights.shape == (L, B, H, T, T)
  assert_logits_close(logits, ref_logits)  # the explicit-softmax path
  np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-5)
  assert np.all(np.triu(np.asarray(weights), k=1) == 0.0)
  head = jax.jit(lambda p, x: GPT(cfg).apply({'params': p}, x, method=GPT.head))
  assert_logits_close(head(params, block_outputs[-1]), logits)  # the logit lens at the top
  assert not np.allclose(head(params, block_outputs[0]), logits, atol=1e-2)


# ---------------------------------------------------------------------------------------------
# The parameter tree: one spelling of names, shapes without compiling, logical axes


@pytest.mark.parametrize('variant', ['gpt2', 'llama', 'untied_vocabpad_gelu_exact'])
def test_param_paths_abstract_params_and_axes_describe_the_same_tree(cfg):
  from gptjax.layers import AXIS_NAMES
  from gptjax.model import param_axes, param_paths
  params = init_params(cfg, jax.random.key(0))
  paths = param_paths(params)
  shapes = param_paths(abstract_params(cfg))
  axes = param_axes(cfg)
  assert list(paths) == list(shapes) == list(axes)
  assert all('/' in p or p == 'lm_head' for p in paths)
  for path, leaf in paths.items():
    assert leaf.shape == shapes[path].shape and leaf.dtype == shapes[path].dtype, path
    assert len(axes[path]) == leaf.ndim, path
    assert set(axes[path]) <= {*AXIS_NAMES, None}, path
  h, kv, d, c = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_model
  assert axes['blocks_0/attn/query/kernel'] == ('embed', 'heads', 'head_dim')
  assert paths['blocks_0/attn/query/kernel'].shape == (c, h, d)
  assert axes['blocks_1/attn/value/kernel'] == ('embed', 'kv_heads', 'head_dim')
  assert paths['blocks_1/attn/value/kernel'].shape == (c, kv, d)
  assert axes['blocks_0/attn/out/kernel'] == ('heads', 'head_dim', 'embed')
  assert axes['wte/embedding'] == ('vocab', 'embed')
  mlp_in = 'gate' if cfg.mlp in GATED_MLPS else 'fc'
  assert axes[f'blocks_0/mlp/{mlp_in}/kernel'] == ('embed', 'mlp')


def test_logits_at_gives_those_positions_logits(tiny_config, randomize):
  cfg = tiny_config()
  params = randomize(init_params(cfg, jax.random.key(0)))
  tokens = jnp.arange(1, 13).reshape(2, 6) % cfg.vocab_size
  full = GPT(cfg).apply({'params': params}, tokens)
  at = jnp.array([[5, 0, 2], [1, 1, 4]])
  picked = GPT(cfg).apply({'params': params}, tokens, logits_at=at)
  np.testing.assert_array_equal(picked, jnp.take_along_axis(full, at[..., None], axis=1))
  cached, _ = GPT(cfg).apply({'params': params}, tokens, cache=init_cache(cfg, 2, 8), logits_at=at)
  np.testing.assert_allclose(cached, picked, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('policy', [
    pytest.param(p, marks=[] if p == 'full' else pytest.mark.slow)
    for p in config_lib.REMAT_POLICIES if p != 'none'
])
def test_every_remat_policy_gives_the_gradients_of_no_remat(policy):
  """Recomputation changes what is stored, never what is computed: the loss and every gradient
  equal the un-rematerialised model's (to float32 rounding: XLA may fuse the recomputed ops
  differently)."""
  cfg = ModelConfig(**TINY, position='rope', n_kv_heads=2, mlp='swiglu')
  params = init_params(cfg, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, cfg.vocab_size)

  def loss_and_grads(cfg):
    def loss(params):
      logits = GPT(cfg).apply({'params': params}, tokens[:, :-1])
      return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    return jax.jit(jax.value_and_grad(loss))(params)

  want_loss, want = loss_and_grads(cfg)
  got_loss, got = loss_and_grads(cfg.replace(remat=policy))
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-6)
  for path, g in param_paths(got).items():
    np.testing.assert_allclose(g, param_paths(want)[path], rtol=1e-5, atol=1e-7, err_msg=path)


def test_remat_accepts_the_first_releases_booleans_and_names_its_policies():
  assert ModelConfig(remat=True).remat == 'full' and ModelConfig(remat=False).remat == 'none'
  with pytest.raises(ValueError,
                     match="remat='dots' is not one of 'none', 'full', 'dots_saveable'"):
    ModelConfig(remat='dots')


@pytest.mark.parametrize('variant', [
    'gpt2',
    pytest.param('llama', marks=pytest.mark.slow),
    pytest.param('parallel_partial_rotary_yarn', marks=pytest.mark.slow),
    pytest.param('post_nobias_remat_relu2', marks=pytest.mark.slow)
])
def test_scanned_layers_equal_the_unrolled_model(tiny_config, variant):
  """One nn.scan over stacked parameters computes what the unrolled blocks do: logits, loss,
  gradients (stacked the same way) and cached decoding. (Equal to float32 rounding: XLA fuses a
  loop body differently from straight-line code.)"""
  cfg = tiny_config(**VARIANTS[variant], n_layers=3)
  scanned_cfg = cfg.replace(scan_layers=True)
  params = init_params(cfg, jax.random.key(0))
  stacked = with_layers_layout(params, cfg.n_layers, scanned=True)
  # The same seed draws the same weights in either layout.
  assert all(
      jax.tree.leaves(
          jax.tree.map(np.array_equal, init_params(scanned_cfg, jax.random.key(0)), stacked)))
  tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, cfg.vocab_size)

  def loss_and_grads(cfg, params):
    def loss(params):
      logits = GPT(cfg).apply({'params': params}, tokens[:, :-1])
      return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    return jax.jit(jax.value_and_grad(loss))(params)

  want_loss, want_grads = loss_and_grads(cfg, params)
  got_loss, got_grads = loss_and_grads(scanned_cfg, stacked)
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-6)
  want_stacked = param_paths(with_layers_layout(want_grads, cfg.n_layers, scanned=True))
  for path, g in param_paths(got_grads).items():
    np.testing.assert_allclose(g, want_stacked[path], rtol=1e-5, atol=1e-7, err_msg=path)

  # Prefill then one decode step, through the per-layer cache.
  def decode(cfg, params):
    cache = init_cache(cfg, 2, 12)
    logits, cache = GPT(cfg).apply({'params': params}, tokens[:, :6], cache=cache)
    step, _ = GPT(cfg).apply({'params': params}, tokens[:, 6:7], cache=cache)
    return np.concatenate([logits, step], axis=1)

  np.testing.assert_allclose(decode(scanned_cfg, stacked), decode(cfg, params), rtol=1e-5,
                             atol=1e-5)


def test_layers_layout_converts_params_and_optimizer_state_both_ways(tiny_config):
  cfg = tiny_config(n_layers=3)
  params = init_params(cfg, jax.random.key(0))
  state = {'params': params, 'opt_state': optax.adamw(1e-3).init(params)}
  stacked = with_layers_layout(state, cfg.n_layers, scanned=True)
  assert stacked['params']['blocks']['attn']['query']['kernel'].shape[0] == 3
  assert stacked['opt_state'][0].mu['blocks']['mlp']['fc']['kernel'].shape[0] == 3
  np.testing.assert_array_equal(stacked['params']['blocks']['mlp']['fc']['kernel'][1],
                                params['blocks_1']['mlp']['fc']['kernel'])
  back = with_layers_layout(stacked, cfg.n_layers, scanned=False)
  assert jax.tree.structure(back) == jax.tree.structure(state)
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, back, state)))
  assert with_layers_layout(state, cfg.n_layers, scanned=False) is not None  # already unrolled


def test_scan_layers_needs_every_layer_alike():
  with pytest.raises(
      ValueError, match="scan_layers=True runs one block for every layer, but "
      "window_pattern='local,global'"):
    ModelConfig(scan_layers=True, attention_window=4, window_pattern='local,global')
