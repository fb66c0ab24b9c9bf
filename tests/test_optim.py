import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gptjax.config import ModelConfig, OptimConfig, optim_config_dict
from gptjax.model import GPT, abstract_params, init_params
from gptjax.optim import (accumulate_gradients, decay_mask, learning_rate_schedule, make_optimizer,
                          optimizer_metrics)

pytestmark = pytest.mark.usefixtures('fast_compiles')  # compiling is most of their time


def optim_config(**overrides):
  """`config.optim` as a config file builds it: the optimizer functions type it themselves."""
  return optim_config_dict(**overrides)


def tiny_cfg(**overrides):
  return ModelConfig(vocab_size=64, block_size=16, n_layers=1, d_model=32, n_heads=4, **overrides)


def leaf_name(path):
  return path[-1].key


# --- schedule -----------------------------------------------------------------------------------


@pytest.mark.parametrize('schedule', ['cosine', 'linear', 'constant'])
def test_schedule_values(schedule):
  lr = learning_rate_schedule(
      optim_config(lr=1.0, min_lr_ratio=0.1, warmup_steps=10, decay_steps=110, schedule=schedule))
  end = 1.0 if schedule == 'constant' else 0.1
  middle = 1.0 if schedule == 'constant' else 0.55  # halfway: cosine and linear agree
  assert lr(0) == pytest.approx(0.1)  # (0 + 1) / 10 of the peak: the first update is not wasted
  assert lr(4) == pytest.approx(0.5)
  assert lr(9) == pytest.approx(1.0)  # last warmup step is at the peak
  assert lr(10) == pytest.approx(1.0)  # decay starts from the peak
  assert lr(60) == pytest.approx(middle)
  assert lr(110) == pytest.approx(end)
  assert lr(10_000) == pytest.approx(end)  # stays at min lr after decay_steps


def test_wsd_holds_the_peak_then_decays_linearly_over_its_last_fraction():
  lr = learning_rate_schedule(
      optim_config(lr=1.0, min_lr_ratio=0.1, warmup_steps=10, decay_steps=110, schedule='wsd',
                   decay_fraction=0.2))
  # decay_start = 110 - round(0.2 * 110) = 88
  assert lr(0) == pytest.approx(0.1) and lr(9) == pytest.approx(1.0)  # warmup as every schedule
  assert lr(10) == lr(50) == lr(88) == pytest.approx(1.0)  # stable
  assert lr(99) == pytest.approx(1.0 - 0.9 * 11 / 22)
  assert lr(110) == pytest.approx(0.1) and lr(500) == pytest.approx(0.1)
  # A shorter run of the same schedule shares the stable phase up to its own decay start.
  short = learning_rate_schedule(
      optim_config(lr=1.0, warmup_steps=10, decay_steps=50, schedule='wsd', decay_fraction=0.2))
  assert [float(short(s)) for s in range(40)] == [float(lr(s)) for s in range(40)]
  with pytest.raises(ValueError, match=r'optim.decay_fraction=0 must be in \(0, 1\]'):
    OptimConfig(schedule='wsd', decay_fraction=0)
  with pytest.raises(
      ValueError, match='leaves a stable phase from step 8, before warmup ends at '
      'optim.warmup_steps=10'):
    OptimConfig(schedule='wsd', decay_fraction=0.2, warmup_steps=10, decay_steps=10)


def test_schedule_shapes_between_points():
  cosine = learning_rate_schedule(optim_config(lr=1.0, warmup_steps=0, decay_steps=100))
  linear = learning_rate_schedule(
      optim_config(lr=1.0, warmup_steps=0, decay_steps=100, schedule='linear'))
  assert cosine(25) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi / 4)))
  assert linear(25) == pytest.approx(1.0 - 0.9 * 0.25)
  steps = jnp.arange(101)
  assert np.all(np.diff(np.asarray(jax.vmap(cosine)(steps))) <= 0)  # monotone decay


def test_schedule_without_warmup_starts_at_peak():
  lr = learning_rate_schedule(optim_config(lr=3e-4, warmup_steps=0, decay_steps=50))
  assert lr(0) == pytest.approx(3e-4)
  assert lr(50) == pytest.approx(3e-5)


def test_schedule_decay_steps_default_to_total_steps():
  lr = learning_rate_schedule(optim_config(lr=1.0, warmup_steps=5), total_steps=25)
  assert lr(25) == pytest.approx(0.1)
  assert lr(15) == pytest.approx(0.55)
  with pytest.raises(ValueError, match='total_steps'):
    learning_rate_schedule(optim_config(warmup_steps=5))


def test_schedule_is_jittable_on_traced_step():
  lr = learning_rate_schedule(optim_config(lr=1.0, warmup_steps=10, decay_steps=110))
  assert jax.jit(lr)(jnp.int32(60)) == pytest.approx(0.55)


# --- weight-decay mask --------------------------------------------------------------------------


@pytest.mark.parametrize(
    'model_overrides',
    [
        dict(),  # GPT-2: tied, biases, LayerNorm, learned positions
        dict(tie_embeddings=False, use_bias=False, mlp='swiglu', norm='rmsnorm', position='rope'),
        dict(tie_embeddings=False, use_bias=True),
    ])
@pytest.mark.parametrize('decay_embeddings', [True, False])
def test_decay_mask_on_model_params(model_overrides, decay_embeddings):
  params = abstract_params(tiny_cfg(**model_overrides))
  mask = decay_mask(params, decay_embeddings)
  assert jax.tree.structure(mask) == jax.tree.structure(params)
  seen = set()
  for path, decayed in jax.tree_util.tree_flatten_with_path(mask)[0]:
    name = leaf_name(path)
    seen.add(name)
    expected = {
        'kernel': True, 'lm_head': True, 'bias': False, 'scale': False,
        'embedding': decay_embeddings
    }[name]
    assert decayed is expected, jax.tree_util.keystr(path)
  assert ('lm_head' in seen) == (not model_overrides.get('tie_embeddings', True))
  assert ('bias' in seen) == model_overrides.get('use_bias', True)


def test_decay_mask_goes_by_name_not_by_rank():
  # Kernels with head axes ([C, H, D], [H, D, C]) are matrices; a bias is a vector whatever its
  # shape ([H, D] here).
  params = {
      'attn': {
          'query': {'kernel': jnp.zeros((8, 2, 4)), 'bias': jnp.zeros((2, 4))},
          'out': {'kernel': jnp.zeros((2, 4, 8))}
      }, 'norm': {'scale': jnp.zeros(8)}, 'wte': {'embedding': jnp.zeros((5, 8))}
  }
  assert decay_mask(params, decay_embeddings=False) == {
      'attn': {'query': {'kernel': True, 'bias': False}, 'out': {'kernel': True}},
      'norm': {'scale': False}, 'wte': {'embedding': False}
  }


def test_decay_mask_refuses_a_parameter_it_has_no_rule_for():
  with pytest.raises(ValueError, match=r"'blocks_0/router/weights': .*embedding, kernel, lm_head"):
    decay_mask({'blocks_0': {'router': {'weights': jnp.zeros((4, 2))}}})


@pytest.mark.parametrize('decay_embeddings', [True, False])
def test_optimizer_decays_only_masked_params(decay_embeddings):
  shapes = abstract_params(tiny_cfg(tie_embeddings=False))
  params = jax.tree.map(lambda s: jnp.full(s.shape, 1.5, s.dtype), shapes)
  opt = make_optimizer(
      optim_config(lr=0.5, warmup_steps=0, decay_steps=10, weight_decay=0.1,
                   decay_embeddings=decay_embeddings))
  zero_grads = jax.tree.map(jnp.zeros_like, params)  # Adam's step is 0: only decay remains
  updates, _ = jax.jit(opt.update)(zero_grads, opt.init(params), params)
  mask = decay_mask(params, decay_embeddings)
  expected = jax.tree.map(lambda p, m: -0.5 * 0.1 * p if m else jnp.zeros_like(p), params, mask)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6), updates, expected)


# --- AdamW against NumPy ------------------------------------------------------------------------


def numpy_adamw(params, grads_per_step, mask, lrs, b1, b2, eps, wd, clip):
  """Textbook AdamW (Loshchilov & Hutter, as in PyTorch/optax), float64, on flat dicts."""
  params = {k: np.float64(v) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in params.items()}
  v = {k: np.zeros_like(p) for k, p in params.items()}
  for t, (grads, lr) in enumerate(zip(grads_per_step, lrs), start=1):
    grads = {k: np.float64(g) for k, g in grads.items()}
    norm = np.sqrt(sum(np.sum(g**2) for g in grads.values()))
    if clip and norm > clip:
      grads = {k: g * clip / norm for k, g in grads.items()}
    for k, g in grads.items():
      m[k] = b1 * m[k] + (1 - b1) * g
      v[k] = b2 * v[k] + (1 - b2) * g**2
      m_hat, v_hat = m[k] / (1 - b1**t), v[k] / (1 - b2**t)
      step = m_hat / (np.sqrt(v_hat) + eps) + (wd * params[k] if mask[k] else 0.0)
      params[k] = params[k] - lr * step
  return params


def test_adamw_matches_numpy_reference():
  rng = np.random.default_rng(0)
  shapes = {'wte': (6, 4), 'kernel': (4, 3), 'bias': (3,), 'scale': (4,)}
  params = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
  grads_per_step = [{k: (scale * rng.normal(size=s)).astype(np.float32)
                     for k, s in shapes.items()}
                    for scale in (5.0, 0.1, 2.0, 0.3)]  # steps 1 and 3 are clipped

  def tree(flat):
    return {
        'wte': {'embedding': flat['wte']},
        'dense': {'kernel': flat['kernel'], 'bias': flat['bias']}, 'norm': {'scale': flat['scale']}
    }

  config = optim_config(lr=1e-2, warmup_steps=2, decay_steps=3, schedule='linear', min_lr_ratio=0.5,
                        b1=0.8, b2=0.9, eps=1e-6, weight_decay=0.3, grad_clip=1.0,
                        decay_embeddings=False)
  lrs = [0.5e-2, 1e-2, 1e-2, 0.5e-2]  # warmup (s + 1) / 2, peak, then linear to 0.5 * lr at 3

  opt = make_optimizer(config)
  update = jax.jit(opt.update)
  p = jax.tree.map(jnp.asarray, tree(params))
  state = opt.init(p)
  for grads in grads_per_step:
    updates, state = update(jax.tree.map(jnp.asarray, tree(grads)), state, p)
    p = optax.apply_updates(p, updates)

  mask = {'wte': False, 'kernel': True, 'bias': False, 'scale': False}
  expected = numpy_adamw(params, grads_per_step, mask, lrs, b1=0.8, b2=0.9, eps=1e-6, wd=0.3,
                         clip=1.0)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-6), p,
               tree(expected))


def test_clipping_scales_to_global_norm():
  rng = np.random.default_rng(1)
  params = {'kernel': jnp.ones((3, 4)), 'bias': jnp.ones((5,))}  # names the decay mask knows
  raw = {k: jnp.asarray(rng.normal(size=v.shape), jnp.float32) for k, v in params.items()}
  big = jax.tree.map(lambda g: 10 * g / optax.tree.norm(raw), raw)  # norm 10: clipped to 1
  small = jax.tree.map(lambda g: 0.5 * g[::-1] / optax.tree.norm(raw), raw)  # norm 0.5: kept
  assert optax.tree.norm(big) == pytest.approx(10.0)

  def run(grad_clip, grads_sequence):
    opt = make_optimizer(
        optim_config(lr=0.1, warmup_steps=0, decay_steps=10, schedule='constant',
                     grad_clip=grad_clip))
    update, state, out = jax.jit(opt.update), opt.init(params), []
    for grads in grads_sequence:
      updates, state = update(grads, state, params)
      out.append(updates)
    return out

  clipped = run(1.0, [big, small])
  as_if_norm_one = run(None, [jax.tree.map(lambda g: g / 10, big), small])
  unclipped = run(None, [big, small])
  for got, want in zip(clipped, as_if_norm_one):  # equal up to float32 rounding of g * 1/norm
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-7), got, want)
  # Adam's first step is scale-free, so the second step is where clipping shows.
  assert not np.allclose(clipped[1]['kernel'], unclipped[1]['kernel'])
  for got, want in zip(run(0.0, [big, small]), unclipped):  # 0 disables clipping, like None
    jax.tree.map(np.testing.assert_array_equal, got, want)


# --- gradient accumulation ----------------------------------------------------------------------


def gpt_loss_fn(cfg):
  def loss_fn(params, batch, rng):
    del rng
    logits = GPT(cfg).apply({'params': params}, batch['tokens'][:, :-1])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['tokens'][:, 1:]).mean()
    return loss, {'loss': loss}

  return loss_fn


@pytest.fixture(scope='module')
def gpt_full_batch():
  """A tiny GPT, a batch of 8 sequences, and the loss and gradients of the whole batch."""
  cfg = tiny_cfg()
  params = init_params(cfg, jax.random.key(0))
  batch = {'tokens': jax.random.randint(jax.random.key(1), (8, 12), 0, cfg.vocab_size)}
  rng = jax.random.key(2)
  loss_fn = gpt_loss_fn(cfg)
  (loss, _), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params, batch, rng)
  return loss_fn, params, batch, rng, loss, grads


@pytest.mark.parametrize('n_micro', [1, 4])
def test_accumulated_gradients_equal_full_batch(gpt_full_batch, n_micro):
  loss_fn, params, batch, rng, want_loss, want_grads = gpt_full_batch
  accumulate = jax.jit(functools.partial(accumulate_gradients, loss_fn, n_micro=n_micro))
  loss, aux, grads = accumulate(params, batch, rng=rng)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  np.testing.assert_allclose(aux['loss'], want_loss, rtol=1e-5)

  # float32 summation order differs: the tolerance is relative to the leaf's scale, or for a leaf
  # whose gradient is zero up to rounding (a key bias: softmax ignores a shift of every score),
  # to a thousandth of the largest gradient.
  largest = max(float(np.abs(g).max()) for g in jax.tree.leaves(want_grads))

  def close(got, want):
    scale = max(float(np.abs(want).max()), 1e-3 * largest)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale)

  jax.tree.map(close, grads, want_grads)


def test_accumulate_folds_rng_per_micro_batch():
  def loss_fn(params, batch, rng):
    return (params * batch).sum(), jax.random.uniform(rng)

  rng = jax.random.key(3)
  _, aux, _ = accumulate_gradients(loss_fn, jnp.float32(1.0), jnp.ones((6,)), 3, rng)
  want = np.mean([jax.random.uniform(jax.random.fold_in(rng, i)) for i in range(3)])
  np.testing.assert_allclose(aux, want, rtol=1e-6)


def test_accumulate_rejects_bad_split():
  def loss_fn(params, batch, rng):
    return (params * batch).sum(), ()

  with pytest.raises(ValueError, match='not divisible by n_micro=4'):
    accumulate_gradients(loss_fn, jnp.float32(1.0), jnp.ones((6,)), 4, jax.random.key(0))
  with pytest.raises(ValueError, match='n_micro'):
    accumulate_gradients(loss_fn, jnp.float32(1.0), jnp.ones((6,)), 0, jax.random.key(0))
  with pytest.raises(ValueError, match='batch size'):
    accumulate_gradients(loss_fn, jnp.float32(1.0), {'a': jnp.ones((6,)), 'b': jnp.ones((4,))}, 2,
                         jax.random.key(0))


# --- metrics ------------------------------------------------------------------------------------


def test_optimizer_metrics():
  grads = {'a': jnp.full((4,), 2.0), 'b': jnp.zeros((3,), jnp.bfloat16)}  # norm 4
  updates = {'a': jnp.full((4,), 0.5), 'b': jnp.zeros((3,))}  # norm 1
  params = {'a': jnp.full((4,), 5.0), 'b': jnp.zeros((3,))}  # norm 10
  metrics = jax.jit(optimizer_metrics)(grads, updates, params)
  assert set(metrics) == {'grad_norm', 'update_norm', 'param_norm', 'update_param_ratio'}
  assert all(m.dtype == jnp.float32 and m.shape == () for m in metrics.values())
  np.testing.assert_allclose([metrics[k] for k in sorted(metrics)], [4.0, 10.0, 1.0, 0.1],
                             rtol=1e-6)


# --- config validation --------------------------------------------------------------------------


def test_default_config_is_nanogpt_recipe_and_valid():
  optim = OptimConfig.from_config(optim_config_dict())
  assert optim == OptimConfig()
  assert (optim.lr, optim.b1, optim.b2, optim.weight_decay, optim.grad_clip) == (6e-4, 0.9, 0.95,
                                                                                 0.1, 1.0)
  assert optim.schedule == 'cosine' and optim.decay_embeddings
  make_optimizer(optim, total_steps=600_000)
  make_optimizer(optim_config_dict(), total_steps=600_000)  # config.optim itself works too


@pytest.mark.parametrize('field, value', [
    ('lr', 0.0),
    ('lr', -1e-3),
    ('min_lr_ratio', 1.5),
    ('warmup_steps', -1),
    ('decay_steps', 0),
    ('b1', 1.0),
    ('b2', -0.1),
    ('eps', 0.0),
    ('weight_decay', -0.1),
    ('grad_clip', -1.0),
    ('grad_accum_steps', 0),
    ('decay_embeddings', 'yes'),
    ('schedule', 'cosin'),
])
def test_validation_names_the_field(field, value):
  config = OptimConfig().to_dict()  # a plain dict: ConfigDict would type-check first
  config[field] = value
  with pytest.raises(ValueError, match=f'optim.{field}='):
    make_optimizer(config, total_steps=100)


def test_bad_schedule_lists_allowed_values():
  with pytest.raises(ValueError, match="'cosine', 'linear', 'constant'"):
    learning_rate_schedule(optim_config(schedule='step', decay_steps=10))


def test_unknown_field_suggests_the_right_one():
  config = OptimConfig().to_dict()
  config['weight_decy'] = 0.1
  with pytest.raises(
      ValueError, match="unknown optim config field 'weight_decy'; did you mean "
      "'weight_decay'"):
    OptimConfig.from_config(config)


def test_decay_must_not_end_before_warmup():
  with pytest.raises(ValueError, match='decay_steps=5 must be >= optim.warmup_steps=10'):
    make_optimizer(optim_config(warmup_steps=10, decay_steps=5))
