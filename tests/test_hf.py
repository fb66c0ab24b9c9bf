"""gptjax.hf against Hugging Face transformers (PyTorch), a reference we did not write.

Every HF model here is built locally from a tiny config (no network) and has all of its
parameters perturbed, norm scales and biases included, so that a mapping which swaps, transposes
or drops a tensor cannot hide behind ones and zeros.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

from conftest import HF_CASES as CASES  # noqa: E402
from conftest import HF_VOCAB as VOCAB  # noqa: E402
from conftest import HF_GPT2, HF_LLAMA, HF_NEOX  # noqa: E402
from conftest import hf_model as tiny_hf_model  # noqa: E402
from gptjax import hf  # noqa: E402
from gptjax.config import ModelConfig  # noqa: E402
from gptjax.model import GPT, init_params  # noqa: E402

TOKENS = np.random.RandomState(0).randint(0, VOCAB, (2, 24))  # 24 > the windows of the cases
TOL = 1e-4


@pytest.fixture(autouse=True)
def _offline(no_network):
  """Every test here runs without a network."""


def hf_model(name: str, seed: int = 0):
  model_type, overrides = CASES[name]
  return tiny_hf_model(model_type, perturb=0.1, seed=seed, **overrides)


def hf_logits(model) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(TOKENS)).logits.numpy()


def our_logits(cfg, params) -> np.ndarray:
  return np.asarray(GPT(cfg).apply({'params': params}, jnp.asarray(TOKENS)))


def shapes(cfg):
  return jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))


def assert_same_params(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize('name', CASES)
def test_imported_logits_equal_hf(name):
  model = hf_model(name)
  cfg, params = hf.from_hf(model)
  reference = hf_logits(model)
  assert np.abs(reference).max() > 1.0  # not a degenerate model
  np.testing.assert_allclose(our_logits(cfg, params), reference, rtol=0, atol=TOL)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  assert jax.tree.structure(params) == jax.tree.structure(shapes(cfg))


def test_import_reads_the_architecture():
  cfg, _ = hf.from_hf(hf_model('llama'))
  assert (cfg.n_heads, cfg.n_kv_heads, cfg.rope_theta, cfg.tie_embeddings) == (4, 2, 500000.0, True)
  assert (cfg.position, cfg.norm, cfg.mlp, cfg.use_bias, cfg.d_ff) == ('rope', 'rmsnorm', 'swiglu',
                                                                       False, 96)
  cfg, _ = hf.from_hf(hf_model('qwen2'))
  assert (cfg.use_bias, cfg.qkv_bias) == (False, True)
  cfg, params = hf.from_hf(hf_model('mistral-window'))
  assert cfg.attention_window == 5
  # The window really changes the logits at length 24, so the parity above checked its meaning.
  unwindowed = our_logits(cfg.replace(attention_window=None), params)
  assert np.abs(unwindowed - hf_logits(hf_model('mistral-window'))).max() > 1e-2
  cfg, _ = hf.from_hf(hf_model('gpt2'))
  assert (cfg.embd_dropout, cfg.attn_dropout, cfg.resid_dropout) == (0.1, 0.1, 0.1)
  assert cfg.mlp == 'gelu'
  cfg, params = hf.from_hf(hf_model('gpt2-erf-gelu'))
  assert cfg.mlp == 'gelu_exact'
  # The two GELUs differ by several times the parity tolerance: the parity above checked which.
  tanh_logits = our_logits(cfg.replace(mlp='gelu'), params)
  assert np.abs(tanh_logits - hf_logits(hf_model('gpt2-erf-gelu'))).max() > 5 * TOL
  assert hf.from_hf(hf_model('llama-geglu'))[0].mlp == 'geglu'


# What makes each new family itself, and a change of it that moves the logits by far more than
# the parity tolerance: so the parity above checked that the field was read, and read right.
FAMILY_FEATURES = {
    'qwen3': (dict(qk_norm='head', head_dim=24), dict(qk_norm='none')),
    'qwen3-windows': (dict(attention_window=5,
                           window_pattern='global,local'), dict(window_pattern=None)),
    'qwen2-yarn': (dict(rope_scaling='yarn', rope_scaling_factor=4.0,
                        rope_original_block_size=8), dict(rope_scaling='none')),
    'llama3.2': (dict(rope_scaling='llama3', rope_scaling_factor=32.0,
                      tie_embeddings=True), dict(rope_scaling='linear')),
    'gemma2': (dict(norm_position='sandwich', scale_embeddings=True, mlp='geglu',
                    attention_window=5, window_pattern='local,global', attention_scale_dim=20,
                    attn_logit_softcap=5.0, final_logit_softcap=8.0),
               dict(attn_logit_softcap=None, final_logit_softcap=None)),
    'gpt-neox': (dict(parallel_block=True, rotary_fraction=0.25, mlp='gelu_exact',
                      use_bias=True), dict(rotary_fraction=0.5)),
    'gpt-neox-sequential': (dict(parallel_block=False, rotary_fraction=0.5,
                                 mlp='gelu'), dict(parallel_block=True)),
    'olmo2': (dict(qk_norm='projection', norm_position='output'), dict(qk_norm='head')),
}


@pytest.mark.parametrize('name', FAMILY_FEATURES)
def test_each_family_is_read_as_what_it_is(name):
  features, change = FAMILY_FEATURES[name]
  model = hf_model(name)
  cfg, params = hf.from_hf(model)
  assert {k: getattr(cfg, k) for k in features} == features
  changed = cfg.replace(**change)
  if changed.qk_norm == 'head' and cfg.qk_norm == 'projection':  # one gain per head dim instead
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x[0] if 'q_norm' in str(path) or 'k_norm' in str(path) else x, params)
  assert np.abs(our_logits(changed, params) - hf_logits(model)).max() > 10 * TOL


@pytest.mark.parametrize('name', CASES)
def test_export_round_trip(name, tmp_path):
  model = hf_model(name)
  cfg, params = hf.from_hf(model)
  out = hf.to_hf(cfg, params, tmp_path / 'export')
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  assert type(reloaded) is type(model)
  np.testing.assert_allclose(hf_logits(reloaded), hf_logits(model), rtol=0, atol=TOL)
  cfg_back, params_back = hf.from_hf(out)
  assert cfg_back == cfg
  assert_same_params(params_back, params)


def test_export_stores_tied_embeddings_once(tmp_path):
  from safetensors.numpy import load_file
  for name, has_head in (('gpt2', False), ('gpt2-untied', True), ('llama', False)):
    out = hf.to_hf(*hf.from_hf(hf_model(name)), tmp_path / name)
    assert ('lm_head.weight' in load_file(os.path.join(out, 'model.safetensors'))) == has_head
    with open(os.path.join(out, 'config.json')) as f:
      assert json.load(f)['architectures'] == [type(hf_model(name)).__name__]


@pytest.mark.parametrize(
    'cfg',
    [
        # GPT-2 shapes without some biases: the missing ones are exported as exact zeros.
        ModelConfig(vocab_size=VOCAB, block_size=32, n_layers=2, d_model=64, n_heads=4, d_ff=96,
                    use_bias=False, tie_embeddings=False),
        ModelConfig(vocab_size=VOCAB, block_size=32, n_layers=2, d_model=64, n_heads=4,
                    qkv_bias=False),
        # Llama with output/MLP biases but none on q/k/v (zero q/k/v biases under attention_bias).
        ModelConfig(vocab_size=VOCAB, block_size=64, n_layers=2, d_model=64, n_heads=4,
                    n_kv_heads=1, mlp='swiglu', norm='rmsnorm', position='rope', rope_theta=1234.0,
                    use_bias=True, qkv_bias=False),
        ModelConfig(vocab_size=VOCAB, block_size=64, n_layers=2, d_model=64, n_heads=4,
                    mlp='swiglu', norm='rmsnorm', position='rope', use_bias=False,
                    qkv_bias=True),  # -> qwen2
        ModelConfig(vocab_size=VOCAB, block_size=64, n_layers=2, d_model=64, n_heads=4,
                    n_kv_heads=2, mlp='swiglu', norm='rmsnorm', position='rope', use_bias=False,
                    attention_window=7),  # -> mistral
        ModelConfig(vocab_size=VOCAB, block_size=64, n_layers=2, d_model=64, n_heads=4,
                    n_kv_heads=2, head_dim=12, mlp='swiglu', norm='rmsnorm', position='rope',
                    use_bias=False, qk_norm='head', attention_window=6,
                    window_pattern='local,global'),  # -> qwen3
        ModelConfig(vocab_size=VOCAB, block_size=64, n_layers=3, d_model=64, n_heads=4,
                    n_kv_heads=1, head_dim=8, mlp='geglu', norm='rmsnorm', position='rope',
                    use_bias=False, norm_position='sandwich', scale_embeddings=True,
                    attn_logit_softcap=3.0, final_logit_softcap=4.0, attention_window=4,
                    window_pattern='local,local,global', rope_scaling='linear',
                    rope_scaling_factor=2.0),  # -> gemma2
        ModelConfig(vocab_size=VOCAB, block_size=64, n_layers=2, d_model=64, n_heads=4,
                    position='rope', parallel_block=True, rotary_fraction=0.25,
                    tie_embeddings=False),  # -> gpt_neox
        ModelConfig(vocab_size=VOCAB, block_size=64, n_layers=2, d_model=64, n_heads=4,
                    n_kv_heads=2, mlp='swiglu', norm='rmsnorm', position='rope', use_bias=False,
                    qk_norm='projection', norm_position='output', rope_scaling='yarn',
                    rope_scaling_factor=4.0, rope_original_block_size=8),  # -> olmo2
    ],
    ids=[
        'gpt2-no-bias', 'gpt2-no-qkv-bias', 'llama-no-qkv-bias', 'qwen2', 'mistral', 'qwen3',
        'gemma2', 'gpt_neox', 'olmo2'
    ])
def test_export_of_native_configs_matches_our_logits(cfg, tmp_path, randomize, request):
  params = randomize(shapes(cfg))
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(hf.to_hf(cfg, params, tmp_path))
  expected_type = request.node.callspec.id.split('-')[0]
  assert reloaded.config.model_type == {'gpt2': 'gpt2',
                                        'llama': 'llama'}.get(expected_type, expected_type)
  np.testing.assert_allclose(hf_logits(reloaded.eval()), our_logits(cfg, params), rtol=0, atol=TOL)


@pytest.mark.parametrize('name', ['gpt2', 'llama-untied'])
def test_import_from_save_pretrained_directory(name, tmp_path):
  model = hf_model(name)
  model.save_pretrained(tmp_path / 'plain')
  model.save_pretrained(tmp_path / 'sharded', max_shard_size='50KB')
  assert (tmp_path / 'sharded' / 'model.safetensors.index.json').exists()
  cfg, params = hf.from_hf(model)
  for directory in ('plain', 'sharded'):
    cfg_dir, params_dir = hf.from_hf(tmp_path / directory)
    assert cfg_dir == cfg
    assert_same_params(params_dir, params)


def test_import_bfloat16_checkpoint(tmp_path):
  model = hf_model('llama')
  model.to(torch.bfloat16).save_pretrained(tmp_path)
  cfg, params = hf.from_hf(str(tmp_path))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  np.testing.assert_array_equal(np.asarray(params['norm_f']['scale']),
                                model.model.norm.weight.detach().float().numpy())


def test_import_hub_style_and_pytorch_bin_checkpoints(tmp_path):
  """Checkpoints saved from the base model (no 'transformer.' prefix) that carry the causal-mask
  buffers of old GPT-2 code, as the Hub's gpt2 does; and the legacy pytorch_model.bin."""
  from safetensors.numpy import save_file
  model = hf_model('gpt2')
  cfg, params = hf.from_hf(model)
  state = {
      k.removeprefix('transformer.'): v.numpy()
      for k, v in model.state_dict().items() if k != 'lm_head.weight'
  }
  state.update({f'h.{i}.attn.bias': np.tril(np.ones((1, 1, 32, 32), np.float32)) for i in range(2)})
  model.config.save_pretrained(tmp_path / 'hub')
  save_file(state, str(tmp_path / 'hub' / 'model.safetensors'))
  model.config.save_pretrained(tmp_path / 'bin')
  torch.save(model.state_dict(), tmp_path / 'bin' / 'pytorch_model.bin')
  for directory in ('hub', 'bin'):
    cfg_dir, params_dir = hf.from_hf(tmp_path / directory)
    assert cfg_dir == cfg
    assert_same_params(params_dir, params)


def test_gpt124m_has_exactly_gpt2_small_parameter_count():
  with torch.device('meta'):  # shapes only: nothing allocated or initialised
    reference = transformers.GPT2LMHeadModel(transformers.GPT2Config())
  n_reference = sum(p.numel() for p in reference.parameters())
  cfg = ModelConfig(vocab_size=50257, block_size=1024, n_layers=12, d_model=768, n_heads=12,
                    tie_embeddings=True)
  assert sum(x.size for x in jax.tree.leaves(shapes(cfg))) == n_reference == 124_439_808


# ---------------------------------------------------------------------------------------------
# What cannot be reproduced exactly is refused, naming the field.


def write_config(directory, model_type, **fields):
  """A save_pretrained directory with a config and no weights: config checks come first."""
  directory.mkdir()
  base = {'gpt2': HF_GPT2, 'gpt_neox': HF_NEOX}.get(model_type, HF_LLAMA)
  transformers.AutoConfig.for_model(model_type, **{**base, **fields}).save_pretrained(directory)
  return directory


@pytest.mark.parametrize('model_type, fields, named', [
    ('gpt2', dict(scale_attn_by_inverse_layer_idx=True), 'scale_attn_by_inverse_layer_idx'),
    ('gpt2', dict(scale_attn_weights=False), 'scale_attn_weights'),
    ('gpt2', dict(activation_function='relu'), 'activation_function'),
    ('gpt2', dict(add_cross_attention=True), 'add_cross_attention'),
    ('llama', dict(rope_parameters={'rope_type': 'dynamic', 'factor': 2.0}), 'dynamic'),
    ('llama',
     dict(rope_parameters={
         'rope_type': 'longrope', 'short_factor': [1.0] * 8, 'long_factor': [2.0] * 8
     }), 'longrope'),
    ('qwen2',
     dict(
         rope_parameters={
             'rope_type': 'yarn', 'factor': 4.0, 'attention_factor': 1.5,
             'original_max_position_embeddings': 16
         }), 'attention_factor'),
    ('llama', dict(rope_parameters={'rope_type': 'default', 'partial_rotary_factor': 0.5}),
     'partial_rotary_factor'),
    ('llama', dict(attention_bias=True), 'mlp_bias'),
    ('llama', dict(hidden_act='gelu'), 'hidden_act'),
    ('qwen3', dict(attention_bias=True), 'mlp_bias'),
    ('olmo2', dict(attention_bias=True), 'mlp_bias'),
    ('gemma2', dict(hidden_activation='gelu'), 'hidden_activation'),
    ('gemma2', dict(use_bidirectional_attention=True), 'use_bidirectional_attention'),
    ('gemma2', dict(attention_bias=True), 'attention_bias'),
    ('gpt_neox', dict(attention_bias=False), 'attention_bias'),
    ('gpt_neox', dict(hidden_act='relu'), 'hidden_act'),
])
def test_rejects_hf_configs_it_cannot_reproduce(model_type, fields, named, tmp_path):
  with pytest.raises(ValueError, match=named):
    hf.from_hf(write_config(tmp_path / 'model', model_type, **fields))


def test_rejects_unsupported_model_type_and_flag_on_model_objects(tmp_path):
  directory = tmp_path / 'bloom'
  directory.mkdir()
  (directory / 'config.json').write_text(json.dumps({'model_type': 'bloom'}))
  with pytest.raises(ValueError, match="model_type='bloom'"):
    hf.from_hf(directory)
  config = transformers.GPT2Config(**HF_GPT2, scale_attn_by_inverse_layer_idx=True)
  with pytest.raises(ValueError, match='scale_attn_by_inverse_layer_idx'):
    hf.from_hf(transformers.GPT2LMHeadModel(config))
  with pytest.raises(TypeError):
    hf.from_hf(42)


def test_rejects_weights_that_disagree_with_their_config(tmp_path):
  model = hf_model('gpt2')
  model.save_pretrained(tmp_path)
  config = json.loads((tmp_path / 'config.json').read_text())
  (tmp_path / 'config.json').write_text(json.dumps({**config, 'n_inner': 128}))
  with pytest.raises(ValueError, match='blocks_0/mlp/fc/bias'):
    hf.from_hf(tmp_path)
  (tmp_path / 'config.json').write_text(json.dumps({**config, 'tie_word_embeddings': False}))
  with pytest.raises(ValueError, match='lm_head.weight'):
    hf.from_hf(tmp_path)


@pytest.mark.parametrize(
    'changes, named',
    [
        (dict(norm_position='post'), 'norm_position'),
        (dict(position='none'), 'position'),
        (dict(position='alibi'), 'needs position='),  # no family has ALiBi
        (dict(norm_position='sandwich', mlp='geglu', position='rope', norm='rmsnorm',
              use_bias=False), 'gemma2 needs scale_embeddings=True'),
        (dict(parallel_block=True, position='rope', n_kv_heads=4), 'gpt_neox needs n_kv_heads=8'),
        (dict(position='rope', norm='rmsnorm', mlp='swiglu', use_bias=False, attention_window=4,
              window_pattern='4,8'), 'one sliding window size'),
        (dict(attention_window=16), 'attention_window'),
        (dict(n_kv_heads=4), 'n_kv_heads'),
        (dict(mlp='swiglu', norm='rmsnorm', position='rope',
              norm_position='post'), 'norm_position'),
        (dict(mlp='relu2'), r"gpt2 needs mlp in \('gelu', 'gelu_exact'\)"),
        (dict(qk_norm='head'), "gpt2 needs qk_norm='none'"),  # no GPT-2 or Llama model has it
        (dict(scale_embeddings=True), 'scale_embeddings'),
    ])
def test_export_rejects_configs_no_hf_family_reproduces(changes, named, tmp_path):
  cfg = ModelConfig(vocab_size=VOCAB, block_size=32, n_layers=2, d_model=64, n_heads=8, **changes)
  with pytest.raises(ValueError, match=named):
    hf.to_hf(cfg, {}, tmp_path)
  assert not any(tmp_path.iterdir())


def test_export_rejects_params_of_another_config(tmp_path, randomize):
  small = ModelConfig(vocab_size=VOCAB, block_size=32, n_layers=2, d_model=64, n_heads=4,
                      mlp='swiglu', norm='rmsnorm', position='rope', use_bias=False)
  params = randomize(shapes(small))
  with pytest.raises(ValueError, match='blocks_0/attn/key/kernel'):
    hf.to_hf(small.replace(n_kv_heads=2), params, tmp_path)
  with pytest.raises(ValueError, match='blocks_2'):
    hf.to_hf(small.replace(n_layers=3), params, tmp_path)


def test_hub_name_without_network_says_so(monkeypatch, tmp_path):
  import huggingface_hub.constants
  monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path))  # empty cache
  with pytest.raises(OSError, match='network') as error:
    hf.from_hf('gpt2')
  assert '\n' not in str(error.value)


@pytest.mark.slow
def test_importing_gptjax_hf_needs_neither_torch_nor_transformers():
  code = ('import sys, gptjax.hf; print(sorted(m for m in '
          "('torch', 'transformers', 'huggingface_hub') if m in sys.modules))")
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert out.stdout.strip() == '[]'


def test_a_scanned_model_exports_layer_by_layer(tmp_path):
  """Imported, stacked into the scanned layout (as a fine-tuning run with model.scan_layers
  does) and exported again: the same Hugging Face model, logits and all."""
  from gptjax.model import with_layers_layout
  model = hf_model('llama')
  cfg, params = hf.from_hf(model)
  scanned = cfg.replace(scan_layers=True)
  stacked = with_layers_layout(params, cfg.n_layers, scanned=True)
  np.testing.assert_allclose(our_logits(scanned, stacked), hf_logits(model), rtol=0, atol=TOL)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(
      hf.to_hf(scanned, stacked, tmp_path / 'export')).eval()
  np.testing.assert_allclose(hf_logits(reloaded), hf_logits(model), rtol=0, atol=TOL)
