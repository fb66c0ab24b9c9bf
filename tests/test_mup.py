"""μP (gptjax.parametrization) against what the paper prescribes, written out independently:
SP at the base width, the init scales, AdamW with lr / m on the hidden matrices (plain optax
per group as the reference), and the coordinate check of Tensor Programs V."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gptjax import hf, parametrization
from gptjax.config import ModelConfig, OptimConfig
from gptjax.model import GPT, init_params, param_paths
from gptjax.optim import make_optimizer

pytestmark = pytest.mark.usefixtures('fast_compiles')

TOKENS = np.random.default_rng(0).integers(0, 61, (2, 16)).astype(np.int32)
OPTIM = OptimConfig(lr=1e-2, warmup_steps=0, schedule='constant', weight_decay=0.1, grad_clip=0.0,
                    decay_steps=1)


def mup(**fields) -> ModelConfig:
  return ModelConfig(
      **{
          'vocab_size': 61, 'block_size': 16, 'n_layers': 2, 'd_model': 32, 'n_heads': 4,
          'parametrization': 'mup', 'mup_base_width': 8, **fields
      })


def loss_fn(cfg, tokens=TOKENS):
  def loss(params):
    logits = GPT(cfg).apply({'params': params}, tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

  return loss


def train(cfg, optimizer, params, steps, tokens=TOKENS):
  """`steps` optimizer updates on one batch; returns the params after them."""
  state = optimizer.init(params)
  grad = jax.jit(jax.grad(loss_fn(cfg, tokens)))
  for _ in range(steps):
    updates, state = optimizer.update(grad(params), state, params)
    params = optax.apply_updates(params, updates)
  return params


def test_mup_at_its_base_width_is_sp():
  cfg_mup = mup(mlp='swiglu', tie_embeddings=False, mup_base_width=32)
  cfg_sp = cfg_mup.replace(parametrization='sp')
  key = jax.random.key(3)
  params = init_params(cfg_mup, key)
  jax.tree.map(np.testing.assert_array_equal, params, init_params(cfg_sp, key))
  logits = lambda cfg, p: GPT(cfg).apply({'params': p}, TOKENS)
  np.testing.assert_allclose(logits(cfg_mup, params), logits(cfg_sp, params), rtol=1e-6, atol=1e-6)
  trained_mup = train(cfg_mup, make_optimizer(OPTIM, model=cfg_mup), params, 2)
  trained_sp = train(cfg_sp, make_optimizer(OPTIM, model=cfg_sp), params, 2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), trained_mup,
               trained_sp)


def test_mup_init_scales_hidden_matrices_by_one_over_root_width_and_nothing_else():
  n_layers, m = 2, 4
  params = param_paths(
      init_params(mup(d_model=256, n_heads=4, mup_base_width=64, tie_embeddings=False),
                  jax.random.key(0)))
  hidden = 0.02 / np.sqrt(m)
  for path, value in params.items():
    name = path.rsplit('/', 1)[-1]
    if name in ('bias', 'scale'):
      continue
    parent = path.split('/')[-2] if name == 'kernel' else name
    expected = {
        'embedding': 0.02, 'lm_head': 0.02, 'out': hidden / np.sqrt(2 * n_layers),
        'proj': hidden / np.sqrt(2 * n_layers)
    }.get(parent, hidden)
    assert np.std(np.asarray(value)) == pytest.approx(expected, rel=0.05), path


def test_mup_optimizer_is_adamw_with_lr_over_m_for_hidden_matrices_only():
  """The reference: two plain optax.adamw, at lr / m for the Dense kernels and at lr for the
  rest (embeddings, the untied head, biases, norm gains), each on its own parameters."""
  cfg = mup(tie_embeddings=False)  # m = 32 / 8 = 4
  params = init_params(cfg, jax.random.key(1))
  ours = train(cfg, make_optimizer(OPTIM, model=cfg), params, 3)

  is_kernel = lambda p: jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == 'kernel', p
                                                         )
  decayed = lambda p: jax.tree_util.tree_map_with_path(
      lambda path, _: path[-1].key in ('kernel', 'lm_head', 'embedding'), p)

  def group_optimizer(lr, in_group):
    mask = lambda p: jax.tree.map(lambda a, b: a and b, in_group(p), decayed(p))
    adamw = optax.adamw(lr, b1=OPTIM.b1, b2=OPTIM.b2, eps=OPTIM.eps,
                        weight_decay=OPTIM.weight_decay, mask=mask)
    return optax.masked(adamw, in_group)

  not_kernel = lambda p: jax.tree.map(lambda k: not k, is_kernel(p))
  reference = optax.chain(group_optimizer(OPTIM.lr / 4, is_kernel),
                          group_optimizer(OPTIM.lr, not_kernel))
  expected = train(cfg, reference, params, 3)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), ours, expected)
  # Adam's first step moves every weight by its learning rate (m / sqrt(v) = sign(g)).
  one_step = train(cfg, make_optimizer(OPTIM, model=cfg), params, 1)
  moved = param_paths(jax.tree.map(lambda a, b: np.abs(a - b).mean(), one_step, params))
  assert moved['blocks_0/mlp/fc/kernel'] == pytest.approx(OPTIM.lr / 4, rel=0.02)
  assert moved['lm_head'] == pytest.approx(OPTIM.lr, rel=0.02)


WIDTHS = (64, 128, 256, 512)


def activation_changes(parametrization: str, width: int, steps: int = 4) -> np.ndarray:
  """The coordinate check: mean |x_t - x_0| of each block's output and of the logits after
  `steps` Adam updates at one learning rate, for a model of d_model `width` (base width 64)."""
  cfg = ModelConfig(vocab_size=128, block_size=32, n_layers=2, d_model=width, n_heads=4,
                    parametrization=parametrization, mup_base_width=WIDTHS[0])
  tokens = np.random.default_rng(0).integers(0, 128, (8, 33)).astype(np.int32)
  params = init_params(cfg, jax.random.key(0))
  optimizer = make_optimizer(dataclasses.replace(OPTIM, weight_decay=0.0), model=cfg)

  def activations(p):
    logits, state = GPT(cfg).apply({'params': p}, tokens[:, :-1], mutable=['intermediates'])
    blocks = [state['intermediates'][f'blocks_{i}']['output'][0] for i in range(cfg.n_layers)]
    return [*blocks, logits]

  grad = jax.grad(loss_fn(cfg, tokens))

  def step(carry, _):
    params, state = carry
    updates, state = optimizer.update(grad(params), state, params)
    return (optax.apply_updates(params, updates), state), None

  @jax.jit
  def changes(params):
    before = activations(params)
    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), length=steps)
    return jnp.stack([jnp.abs(a - b).mean() for a, b in zip(activations(params), before)])

  return np.asarray(changes(params))


@pytest.mark.slow
def test_coordinate_check_activations_stay_flat_under_mup_and_grow_with_width_under_sp():
  sp = np.stack([activation_changes('sp', w) for w in WIDTHS])  # [widths, blocks + logits]
  mu = np.stack([activation_changes('mup', w) for w in WIDTHS])
  np.testing.assert_allclose(sp[0], mu[0], rtol=1e-4)  # the base width: the same model
  # SP: at 8x the width each layer's update moves its output several times as far, and more
  # with every doubling (the measured growth is 5-80x); μP: within a factor 2 at every width.
  assert (sp[-1] / sp[0] > 4).all(), sp
  assert (np.diff(sp, axis=0) > 0).all(), sp
  ratios = mu / mu[0]
  assert ((ratios > 0.4) & (ratios < 2)).all(), mu


def test_mup_attention_is_one_over_head_dim_and_sps_at_the_base_head_dim():
  # 4 heads at d_model 32, base width 8: the base has 4 heads of 2, m = 4.
  assert parametrization.attention_scale(mup()) == pytest.approx(np.sqrt(2) / 8)
  assert parametrization.attention_scale(mup(d_model=64)) == pytest.approx(np.sqrt(2) / 16)
  # Widened by adding heads of 8: the base's head_dim is 8 too, and the scale is SP's.
  for n_heads in (4, 8):
    cfg = mup(d_model=8 * n_heads, n_heads=n_heads, mup_base_head_dim=8)
    assert parametrization.attention_scale(cfg) == pytest.approx(1 / np.sqrt(8))
  with pytest.raises(ValueError, match='mup_base_head_dim=0 must be a positive integer'):
    mup(mup_base_head_dim=0)


def test_mup_needs_a_base_width_and_a_positive_one():
  with pytest.raises(ValueError, match='parametrization=mup needs mup_base_width'):
    ModelConfig(parametrization='mup')
  with pytest.raises(ValueError, match='mup_base_width=0 must be a positive integer'):
    mup(mup_base_width=0)
  with pytest.raises(ValueError, match="parametrization='mu' is not one of 'sp', 'mup'"):
    ModelConfig(parametrization='mu')
  assert ModelConfig(mup_base_width=64).parametrization == 'sp'  # ignored under SP: sweepable


def test_hugging_face_export_refuses_a_mup_model(tmp_path):
  cfg = mup()
  with pytest.raises(ValueError, match="parametrization='sp' \\(have 'mup'\\)"):
    hf.to_hf(cfg, init_params(cfg, jax.random.key(0)), tmp_path)
