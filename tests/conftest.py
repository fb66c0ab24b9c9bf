"""Shared fixtures and constants: a tiny config and its variants, O(1) random weights, tiny
Hugging Face models built locally, no network, fast compiles, and one XLA compilation cache for
the whole session, this process and every entry point the tests run in a subprocess. Test
modules import the constants (`from conftest import TINY`); pytest puts this directory on
sys.path."""

import socket

import jax
import numpy as np
import pytest

from gptjax.config import ModelConfig

# Small enough that every compile takes about a second on a 2-core CPU; 61 is prime, so no
# shape coincides with another by accident (vocab_pad_multiple=64 really pads).
TINY = dict(vocab_size=61, d_model=32, n_heads=4, n_layers=2, block_size=16)

# Every value of every knob appears at least once; the first two are GPT-2 and Llama in small.
VARIANTS = {
    'gpt2': dict(),  # pre-norm, LayerNorm, learned, MHA, GELU, tied, biases
    'llama': dict(norm='rmsnorm', position='rope', n_kv_heads=2, mlp='swiglu', tie_embeddings=False,
                  use_bias=False),
    'post_layernorm_mqa': dict(norm_position='post', n_kv_heads=1),
    'post_rmsnorm_rope_window_qknorm': dict(norm_position='post', norm='rmsnorm', position='rope',
                                            attention_window=3, qk_norm='head'),
    # μP at 4x its base width: attention scale, logit multiplier (with α) and init differ from SP.
    'nopos_gqa_window_mup_geglu': dict(position='none', n_kv_heads=2, attention_window=3,
                                       parametrization='mup', mup_base_width=8,
                                       mup_output_multiplier=2.5, mlp='geglu'),
    'rope_mqa_swiglu_window_remat': dict(position='rope', n_kv_heads=1, mlp='swiglu',
                                         attention_window=3, remat=True),
    'untied_vocabpad_gelu_exact': dict(tie_embeddings=False, vocab_pad_multiple=64,
                                       mlp='gelu_exact'),
    'post_nobias_remat_relu2': dict(norm_position='post', use_bias=False, remat=True, mlp='relu2'),
    'nopos_rmsnorm_swiglu_untied': dict(position='none', norm='rmsnorm', mlp='swiglu',
                                        tie_embeddings=False),
    'rope_gqa_qkvbias_vocabpad_qknorm': dict(position='rope', n_kv_heads=2, use_bias=False,
                                             qkv_bias=True, vocab_pad_multiple=64, qk_norm='head'),
    'learned_window_gqa_swiglu_embscale': dict(attention_window=3, n_kv_heads=2, mlp='swiglu',
                                               scale_embeddings=True),
    # Gemma 2 / 3 in small: sandwich norms, soft-capping (caps that bind at these logits), wide
    # heads with their own scale, alternating windows with a local theta, linear rope scaling.
    'sandwich_softcap_headdim_localtheta': dict(
        norm_position='sandwich', norm='rmsnorm', mlp='geglu', scale_embeddings=True,
        position='rope', n_kv_heads=2, head_dim=12, attention_scale_dim=10, attn_logit_softcap=4.0,
        final_logit_softcap=6.0, attention_window=3, window_pattern='local,global',
        rope_local_theta=100.0, rope_scaling='linear', rope_scaling_factor=2.0),
    # GPT-NeoX / Pythia: parallel block, partial rotary; YaRN on top.
    'parallel_partial_rotary_yarn': dict(parallel_block=True, position='rope', rotary_fraction=0.5,
                                         mlp='gelu_exact', tie_embeddings=False,
                                         rope_scaling='yarn', rope_scaling_factor=4.0,
                                         rope_original_block_size=4),
    # OLMo 2: norms on the sublayer outputs, QK-norm over the projection; Llama 3.1 rope scaling.
    'output_norm_qkproj_llama3': dict(norm_position='output', norm='rmsnorm', qk_norm='projection',
                                      position='rope', n_kv_heads=2, mlp='swiglu', use_bias=False,
                                      rope_scaling='llama3', rope_scaling_factor=8.0,
                                      rope_original_block_size=8),
    # ALiBi with a head count that is not a power of two, non-parametric norms, GQA, window 5.
    'alibi_6heads_nonparametric': dict(position='alibi', n_heads=6, n_kv_heads=3, head_dim=4,
                                       norm_affine=False, attention_window=5),
}


@pytest.fixture
def no_network(monkeypatch):
  """Any socket connection fails, as on a machine without a network: code that would download
  must say so in one line, and code that needs no network must not try."""
  def refuse(*args, **kwargs):
    raise OSError('network disabled in tests')

  monkeypatch.setattr(socket.socket, 'connect', refuse)
  monkeypatch.setattr(socket.socket, 'connect_ex', refuse)
  monkeypatch.setattr(socket, 'create_connection', refuse)


def hf_model(model_type: str, perturb: float = 0.3, seed: int = 0, **fields):
  """A tiny transformers causal LM of `model_type` ('gpt2', 'llama', ...) built locally from a
  config (no network), every parameter, norm scales and biases included, moved by
  N(0, perturb^2): logits far from ties, and a mapping that swaps, transposes or drops a tensor
  cannot hide behind ones and zeros. perturb=0 keeps transformers' own initialisation, whose
  predictions are nearly uniform."""
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  config = transformers.AutoConfig.for_model(model_type, **fields)
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(config)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(perturb * torch.randn_like(p))
  return model.eval()


@pytest.fixture
def tiny_config():
  """tiny_config(**overrides) -> ModelConfig."""
  return lambda **overrides: ModelConfig(**{**TINY, **overrides})


def random_params(params, seed=0):
  """Same tree and shapes, O(1)-scaled random values (numpy float32).

  The 0.02-std initialisation makes attention nearly uniform and every position's logits nearly
  equal, so a test comparing two computations could pass with a wrong position or a wrong mask;
  these weights give peaked attention and logits of order one. Kernels are N(0, 1/fan_in), norm
  scales 1 + N(0, 0.2^2), biases N(0, 0.2^2), embeddings and the LM head N(0, 1).
  """
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    normal = rng.standard_normal(leaf.shape)
    if name == 'scale':
      value = 1.0 + 0.2 * normal
    elif name == 'bias':
      value = 0.2 * normal
    elif name == 'kernel':  # the attention output [H, D, C] sums over two axes
      fan_in = np.prod(leaf.shape[:-1]) if path[-2:-1] and path[-2].key == 'out' else leaf.shape[0]
      value = normal / np.sqrt(fan_in)
    else:
      value = normal
    return value.astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, params)


@pytest.fixture(scope='session')
def randomize():
  """randomize(params, seed=0) -> the same tree filled with O(1) random weights."""
  return random_params


@pytest.fixture(scope='module')
def fast_compiles():
  """For modules whose time is nearly all compilation (`pytestmark =
  pytest.mark.usefixtures('fast_compiles')`): the flag only turns down LLVM's code generation
  effort (XLA's graph passes still run), which halves compile time on CPU; it changes how fast
  the tiny programs run, not what they compute."""
  previous = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', previous)


@pytest.fixture(scope='session', autouse=True)
def fast_subprocess_compiles():
  """train.py, sample.py and the other entry points run in subprocesses under fast_compiles' flag
  too: a tiny training run there takes 8 s instead of 10.5. Every run a subprocess result is
  compared with ran under the same flag, or is compared within a tolerance far above rounding."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv('JAX_DISABLE_MOST_OPTIMIZATIONS', 'true')
    yield


@pytest.fixture(scope='session', autouse=True)
def xla_cache(tmp_path_factory):
  """XLA's persistent compilation cache, one for the session: a program that takes a while to
  compile (a train step, an eval step) is compiled once and loaded by every later test and every
  train.py or sample.py subprocess that builds it again. This process writes only those: its
  in-memory caches already catch a test's repeated small programs, and writing each of them cost
  more than it saved (test_model, test_layers and test_analysis took 5% longer). A subprocess
  starts with empty in-memory caches, so it writes everything. Compile options are part of the
  key, so a program compiled under fast_compiles is never loaded without it."""
  from jax.experimental.compilation_cache import compilation_cache

  directory = str(tmp_path_factory.mktemp('xla_cache'))
  settings = {
      'jax_compilation_cache_dir': directory, 'jax_persistent_cache_min_compile_time_secs': 0.5
  }
  previous = {name: getattr(jax.config, name) for name in settings}
  for name, value in settings.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()  # collecting the tests may have compiled without the cache
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv('JAX_COMPILATION_CACHE_DIR', directory)
    patch.setenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
    yield
  for name, value in previous.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()
