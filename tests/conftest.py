"""Shared fixtures and constants: a tiny config and its variants, O(1) random weights, tiny
Hugging Face models built locally, no network, fast compiles, and one XLA compilation cache for
the whole session, this process and every entry point the tests run in a subprocess. Test
modules import the constants (`from conftest import TINY`); pytest puts this directory on
sys.path."""

import importlib.util
import os
import shutil
import socket

import jax
import numpy as np
import pytest
from pathlib import Path

from gptjax.config import ModelConfig

# What the tests use beyond gptjax's own dependencies (the test extra). A test that needs one
# skips where it is missing (pytest.importorskip), but only where GPTJAX_TESTS_WITHOUT names it
# (comma-separated; .ci/run's Python 3.12 environment has no torch): anywhere else a missing one
# stops the session, so that an incomplete install never passes as skipped tests.
TEST_EXTRAS = ('torch', 'transformers', 'tokenizers', 'datasets', 'lm_eval', 'accelerate')


def pytest_sessionstart(session):
  allowed = {name.strip() for name in os.environ.get('GPTJAX_TESTS_WITHOUT', '').split(',')}
  missing = [name for name in TEST_EXTRAS if name not in allowed and not _installed(name)]
  if missing:
    raise pytest.UsageError(
        f'{", ".join(missing)} not installed: pip install -e ".[test]", or run with '
        f'GPTJAX_TESTS_WITHOUT={",".join(missing)} to skip the tests that need them')


def _installed(module: str) -> bool:
  return importlib.util.find_spec(module) is not None


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
                                         attention_window=3, remat='save_qkv_attention_out'),
    'untied_vocabpad_gelu_exact': dict(tie_embeddings=False, vocab_pad_multiple=64,
                                       mlp='gelu_exact'),
    'post_nobias_remat_relu2': dict(norm_position='post', use_bias=False, remat='dots_saveable',
                                    mlp='relu2'),
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

# Tiny Hugging Face models of every supported family (test_hf's parity cases, also decoded by
# test_sampling): name -> (model_type, config fields).
HF_VOCAB = 300

HF_GPT2 = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=HF_VOCAB, n_positions=32,
               bos_token_id=HF_VOCAB - 1, eos_token_id=HF_VOCAB - 1)
# GQA (4 query heads sharing 2 kv heads) and a non-default rope theta.
HF_LLAMA = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=96, vocab_size=HF_VOCAB, max_position_embeddings=64,
                rope_parameters={'rope_type': 'default',
                                 'rope_theta': 500000.0}, bos_token_id=1, eos_token_id=2)
# Pythia's layout: parallel attention and MLP, rotary on a quarter of each head.
HF_NEOX = dict(
    num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=96,
    vocab_size=HF_VOCAB, max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
    rope_parameters={'rope_type': 'default', 'rope_theta': 10000.0, 'partial_rotary_factor': 0.25})
HF_CASES = {  # name: (model_type, config overrides)
    'gpt2': ('gpt2', HF_GPT2),
    'gpt2-untied': ('gpt2', {**HF_GPT2, 'tie_word_embeddings': False}),
    'gpt2-variants': ('gpt2', {**HF_GPT2, 'activation_function': 'gelu_pytorch_tanh', 'n_inner': 96,
                               'layer_norm_epsilon': 1e-3, 'reorder_and_upcast_attn': True}),
    'gpt2-erf-gelu': ('gpt2', {**HF_GPT2, 'activation_function': 'gelu'}),  # nanoGPT's nn.GELU()
    'llama': ('llama', {**HF_LLAMA, 'tie_word_embeddings': True}),
    'llama-geglu': ('llama', {**HF_LLAMA, 'hidden_act': 'gelu_pytorch_tanh'}),  # Gemma's MLP
    'llama-untied': ('llama', HF_LLAMA),
    'llama-biases': ('llama', {**HF_LLAMA, 'attention_bias': True, 'mlp_bias': True}),
    'mistral-window': ('mistral', {**HF_LLAMA, 'sliding_window': 5}),
    'qwen2': ('qwen2', {**HF_LLAMA, 'tie_word_embeddings': True}),
    # The families, each with what makes it itself at a size where it matters: the
    # windows (5) and the original contexts of the rope scalings (8) are shorter than TOKENS.
    'qwen3': ('qwen3', {**HF_LLAMA, 'head_dim': 24, 'tie_word_embeddings': True}),  # 4 x 24 != 64
    'qwen3-windows': ('qwen3', {**HF_LLAMA, 'head_dim': 16, 'use_sliding_window': True,
                                'sliding_window': 5, 'max_window_layers': 1}),
    'qwen2-yarn': ('qwen2', {**HF_LLAMA, 'rope_parameters': {
        'rope_type': 'yarn', 'rope_theta': 10000.0, 'factor': 4.0,
        'original_max_position_embeddings': 8}}),
    'llama3.2': ('llama', {**HF_LLAMA, 'tie_word_embeddings': True, 'rope_parameters': {
        'rope_type': 'llama3', 'rope_theta': 500000.0, 'factor': 32.0, 'low_freq_factor': 1.0,
        'high_freq_factor': 4.0, 'original_max_position_embeddings': 8}}),
    'gemma2': ('gemma2', {**HF_LLAMA, 'num_hidden_layers': 3, 'head_dim': 24, 'sliding_window': 5,
                          'query_pre_attn_scalar': 20, 'attn_logit_softcapping': 5.0,
                          'final_logit_softcapping': 8.0, 'pad_token_id': 0}),
    'gpt-neox': ('gpt_neox', {**HF_NEOX, 'tie_word_embeddings': False}),
    'gpt-neox-sequential': ('gpt_neox', {**HF_NEOX, 'use_parallel_residual': False,
                                         'hidden_act': 'gelu_new', 'rope_parameters': {
                                             'rope_type': 'default', 'rope_theta': 1000.0,
                                             'partial_rotary_factor': 0.5}}),
    'olmo2': ('olmo2', {**HF_LLAMA, 'rms_norm_eps': 1e-6}),
}

REPO = Path(__file__).resolve().parents[1]


def subprocess_env(n_devices: int | None = None) -> dict:
  """The environment of an entry point or probe run in a subprocess: JAX on the CPU, this
  repository importable and, where given, n_devices host devices (XLA's other flags kept)."""
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get('PYTHONPATH')])]))
  if n_devices is not None:
    flags = [
        f for f in env.get('XLA_FLAGS', '').split()
        if not f.startswith('--xla_force_host_platform_device_count')
    ]
    env['XLA_FLAGS'] = ' '.join([*flags, f'--xla_force_host_platform_device_count={n_devices}'])
  return env


def once_per_session(tmp_path_factory, name: str, make) -> Path:
  """A directory that make(directory) fills once per test session, however many xdist workers
  need it: the first to get here runs it, the others wait on a lock and reuse it (xdist's own
  recipe; a module-scoped fixture would run once per worker that runs one of its tests)."""
  from filelock import FileLock
  base = tmp_path_factory.getbasetemp()
  root = base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base  # the session's own
  directory = root / name
  with FileLock(str(root / f'{name}.lock')):
    if not (directory / '.done').exists():
      shutil.rmtree(directory, ignore_errors=True)
      directory.mkdir()
      make(directory)
      (directory / '.done').touch()
  return directory


def assert_user_error(result, *fragments):
  """A command's user error (a finished subprocess.run with text output): exit != 0, one line
  on stderr that starts with 'error: ' and holds each fragment, no traceback."""
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
  for fragment in fragments:
    assert fragment in lines[0], lines[0]


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


def hf_tokenizer():
  """A tiny byte-level BPE (290 tokens, BOS 0 and EOS 1) that opens every text with BOS, as
  Llama's tokenizer does: what a saved non-GPT-2 model directory carries, built without a
  network."""
  tokenizers = pytest.importorskip('tokenizers')
  transformers = pytest.importorskip('transformers')
  backend = tokenizers.Tokenizer(tokenizers.models.BPE())
  backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  backend.decoder = tokenizers.decoders.ByteLevel()
  backend.train_from_iterator(['the quick brown fox jumps over the lazy dog. ' * 8],
                              tokenizers.trainers.BpeTrainer(
                                  vocab_size=290, special_tokens=['<s>', '</s>'],
                                  initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
  backend.post_processor = tokenizers.processors.TemplateProcessing(single='<s> $A',
                                                                    special_tokens=[('<s>', 0)])
  return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token='<s>',
                                              eos_token='</s>')


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
