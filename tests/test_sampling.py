"""Sampling: logit processors, the decode loop driven by fake models, and cache parity on tiny
real models; the prompt fitted to the context; gptjax.text's prompts and streams; loading a
Hugging Face model with its own tokenizer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import HF_CASES, TINY, VARIANTS, hf_model, hf_tokenizer
from gptjax import loading, sampling
from gptjax import config as config_lib
from gptjax.config import ModelConfig
from gptjax.model import abstract_params
from gptjax.text import REPLACEMENT_CHAR, TextStream, continuation, encode_prompt

pytestmark = pytest.mark.usefixtures('fast_compiles')  # compiling is most of their time

# ---------------------------------------------------------------------------------------------
# Fake models (module level, so the sampler's compile cache sees the same function every time).

FAKE_CFG = ModelConfig(vocab_size=16, block_size=64, n_layers=1, d_model=8, n_heads=1)
EOT = 10


def _with_cache(logits, tokens, cache):
  if cache is None:
    return logits
  return logits, cache.replace(index=cache.index + tokens.shape[1])


def successor_model(cfg, params, tokens, cache=None):
  """Next token is always (last + 1) % V."""
  logits = 10.0 * jax.nn.one_hot((tokens + 1) % cfg.vocab_size, cfg.vocab_size)
  return _with_cache(logits, tokens, cache)


def uniform_model(cfg, params, tokens, cache=None):
  logits = jnp.zeros(tokens.shape + (cfg.vocab_size,))
  return _with_cache(logits, tokens, cache)


FAVOURITE_ORDER = jnp.array([3, 7, 1, 12, 5, 0, 2, 4, 6, 8, 9, 10, 11, 13, 14, 15])


def ranked_model(cfg, params, tokens, cache=None):
  """Same logits every step: token FAVOURITE_ORDER[i] is the i-th most likely."""
  logits = jnp.zeros(cfg.vocab_size).at[FAVOURITE_ORDER].set(-jnp.arange(cfg.vocab_size) * 0.5)
  return _with_cache(jnp.broadcast_to(logits, tokens.shape + (cfg.vocab_size,)), tokens, cache)


VALID_VOCAB = 12


def loud_padding_model(cfg, params, tokens, cache=None):
  """Gives the ids past VALID_VOCAB (padding rows) huge logits."""
  logits = jnp.where(jnp.arange(cfg.vocab_size) >= VALID_VOCAB, 1e4, 0.0)
  return _with_cache(jnp.broadcast_to(logits, tokens.shape + (cfg.vocab_size,)), tokens, cache)


TRACES = []


def tracing_successor_model(cfg, params, tokens, cache=None):
  TRACES.append(tokens.shape)  # runs once per trace, never inside the compiled loop
  return successor_model(cfg, params, tokens, cache)


CALLS = []


def calling_successor_model(cfg, params, tokens, cache=None):
  jax.debug.callback(lambda: CALLS.append(1))  # runs on every execution
  return successor_model(cfg, params, tokens, cache)


def fake_generate(prompt, model_fn=successor_model, cfg=FAKE_CFG, **kwargs):
  kwargs.setdefault('max_new_tokens', 6)
  kwargs.setdefault('temperature', 0.0)
  return sampling.generate(cfg, {}, prompt, model_fn=model_fn, **kwargs)


# ---------------------------------------------------------------------------------------------
# The loop, on fake models


@pytest.mark.parametrize('use_cache', [True, False])
def test_greedy_follows_the_fake_rule(use_cache):
  assert fake_generate([3], use_cache=use_cache) == [4, 5, 6, 7, 8, 9]
  assert fake_generate([1, 2, 13], max_new_tokens=4, use_cache=use_cache) == [14, 15, 0, 1]
  assert fake_generate([[5]], max_new_tokens=1, use_cache=use_cache) == [[6]]


@pytest.mark.parametrize('use_cache', [True, False])
def test_rows_stop_at_eot_independently(use_cache):
  prompts = [[8], [0, 1, 2], [4, 11, 12]]
  out = fake_generate(prompts, max_new_tokens=10, eot_token=EOT, use_cache=use_cache)
  assert out == [
      [9, 10],  # stops early and stops growing
      [3, 4, 5, 6, 7, 8, 9, 10],  # goes on to its own eot
      [13, 14, 15, 0, 1, 2, 3, 4, 5, 6]
  ]  # never reaches eot: max_new_tokens
  assert fake_generate([11], max_new_tokens=3, eot_token=EOT, use_cache=use_cache) == [12, 13, 14]


def test_loop_ends_when_every_row_is_done():
  CALLS.clear()
  out = fake_generate([[0, 8], [6, 7]], model_fn=calling_successor_model, max_new_tokens=50,
                      eot_token=EOT)
  assert out == [[9, 10], [8, 9, 10]]
  assert len(CALLS) == 4  # prefill, then three single-token steps; not 50


def test_one_compilation_per_bucket_and_static_settings():
  def run(prompts, use_cache, **kwargs):
    return fake_generate(prompts, model_fn=tracing_successor_model, max_new_tokens=5,
                         use_cache=use_cache, **kwargs)

  for use_cache in (True, False):
    run([[1, 2, 3, 4, 5], [1]], use_cache, temperature=0.5, top_p=0.9)
    traces = len(TRACES)
    run([[1, 2, 3, 4, 5, 6, 7], [2, 3]], use_cache, temperature=0.7, top_p=0.5, seed=3)
    run([[9] * 6, [1] * 8], use_cache, temperature=1.3, top_p=0.99, eot_token=EOT,
        valid_vocab_size=14)
    assert len(TRACES) == traces, 'prompt length, temperature, top_p, eot or seed retraced'


def test_padded_vocab_ids_are_never_produced():
  prompts = [[1], [2, 3], [4]]
  assert all(t >= VALID_VOCAB for row in fake_generate(prompts, model_fn=loud_padding_model)
             for t in row)  # without the mask the padding wins
  for use_cache in (True, False):
    for temperature in (0.0, 1.0, 1e4):
      out = fake_generate(prompts, model_fn=loud_padding_model, max_new_tokens=20,
                          temperature=temperature, valid_vocab_size=VALID_VOCAB,
                          use_cache=use_cache)
      assert all(0 <= t < VALID_VOCAB for row in out for t in row)


def test_same_seed_same_samples_other_seed_different():
  def sample(seed, use_cache=True):
    return fake_generate([[1], [2, 3]], model_fn=uniform_model, max_new_tokens=24, seed=seed,
                         temperature=1.0, use_cache=use_cache)

  first = sample(0)
  assert sample(0) == first
  assert sample(0, use_cache=False) == first  # same rng stream either way
  assert sample(1) != first
  assert first[0] != first[1]  # rows draw independent samples


def test_top_k_and_top_p_sample_only_from_the_kept_tokens():
  def sampled(**kwargs):
    out = fake_generate([[0]] * 8, model_fn=ranked_model, max_new_tokens=32, temperature=1.0,
                        **kwargs)
    return {t for row in out for t in row}

  top = [int(t) for t in FAVOURITE_ORDER]
  assert sampled(top_k=3) == set(top[:3])
  # logits 0, -0.5, -1, ...: the top two hold 0.62 of the mass, the top three 0.77
  assert sampled(top_p=0.6) == set(top[:2])
  assert sampled(top_p=0.7) == set(top[:3])


# ---------------------------------------------------------------------------------------------
# Logit processors


def test_top_p_keeps_the_smallest_set_reaching_p():
  logits = jnp.log(jnp.array([[0.15, 0.5, 0.05, 0.3]]))  # ranks: 1, 3, 0, 2

  def kept(p):
    return np.flatnonzero(np.isfinite(np.asarray(sampling.top_p_filter(logits, p)[0]))).tolist()

  assert kept(0.8) == [1, 3]  # 0.5 + 0.3 reaches 0.8 exactly
  assert kept(0.81) == [0, 1, 3]
  assert kept(0.5) == [1]
  assert kept(0.01) == [1]  # the top token always stays
  assert kept(0.96) == [0, 1, 2, 3]
  assert kept(1.0) == [0, 1, 2, 3]


def test_top_p_works_per_row():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]]))
  kept = np.isfinite(np.asarray(sampling.top_p_filter(logits, 0.8)))
  assert kept.tolist() == [[True, True, False, False], [False, False, True, True]]


def test_top_k_temperature_and_vocab_mask():
  logits = jnp.array([[1.0, 4.0, 3.0, 2.0]])
  assert np.isfinite(sampling.top_k_filter(logits, 2)).tolist() == [[False, True, True, False]]
  np.testing.assert_allclose(sampling.apply_temperature(logits, 2.0), logits / 2)
  masked = sampling.mask_vocab(logits, 3)
  assert masked[0, :3].tolist() == [1.0, 4.0, 3.0] and masked[0, 3] == -jnp.inf


def test_processors_compose_mask_temperature_top_k_top_p():
  logits = jnp.log(jnp.array([[0.4, 0.3, 0.2, 0.1, 0.0001]])) + 7.0
  knobs = sampling.SamplingKnobs(temperature=jnp.float32(0.5), top_p=jnp.float32(0.7),
                                 valid_vocab_size=jnp.int32(4), eot_token=jnp.int32(-1))
  # At temperature 0.5 the probabilities become ~[0.53, 0.3, 0.13, 0.03]: top-p 0.7 keeps 2.
  out = sampling.process_logits(logits, knobs, sampling.Strategy(False, top_k=3, use_top_p=True))
  np.testing.assert_allclose(out[0, :2], logits[0, :2] / 0.5, rtol=1e-6)
  assert np.isinf(out[0, 2:]).all()
  # Without top-p, top-k 3 keeps 3; the masked padding id stays out even with top_k=5.
  assert np.isfinite(
      sampling.process_logits(logits, knobs, sampling.Strategy(
          False, top_k=3, use_top_p=False))).tolist() == [[True, True, True, False, False]]
  assert np.isfinite(
      sampling.process_logits(logits, knobs, sampling.Strategy(
          False, top_k=5, use_top_p=False))).tolist() == [[True, True, True, True, False]]


# ---------------------------------------------------------------------------------------------
# Tiny real models: the cached loop must choose exactly what full forwards choose.

# Shared variants that together cover every value of every knob, with their layer counts: two
# have a second layer, whose cache is filled from the first layer's outputs (one layer each
# elsewhere keeps the compile time down).
SAMPLED = {
    name: dict(VARIANTS[name], n_layers=n_layers)
    for name, n_layers in [
        ('gpt2', 2),
        ('post_rmsnorm_rope_window_qknorm', 1),
        ('rope_mqa_swiglu_window_remat', 2),
        ('nopos_gqa_window_mup_geglu', 1),
        ('post_nobias_remat_relu2', 1),
        ('untied_vocabpad_gelu_exact', 1),
        ('sandwich_softcap_headdim_localtheta', 2),  # a window layer, then a global one
        ('parallel_partial_rotary_yarn', 1),
        ('output_norm_qkproj_llama3', 1),
        ('alibi_6heads_nonparametric', 1),
    ]
}
PROMPTS = [[5, 17, 3, 40, 8, 21, 9], [33, 2, 50, 11, 7], [1, 2, 3, 4, 5, 6, 7, 8]]


def tiny_model(**variant):
  """A random model of TINY's sizes with room for the prompts and samples, its params drawn in
  numpy from the shapes alone (compiling or running flax's init op by op would cost seconds per
  variant). Weights of std 0.3 make the logits far from ties, so greedy choices are robust to
  float rounding differences between the paths."""
  cfg = ModelConfig(**{**TINY, 'block_size': 64, **variant})
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    noise = rng.normal(0.0, 0.3, leaf.shape).astype(np.float32)
    return 1.0 + noise if path[-1].key == 'scale' else noise  # norm scales around 1

  return cfg, jax.tree_util.tree_map_with_path(draw, abstract_params(cfg))


def test_sampled_variants_cover_every_value():
  configs = [tiny_model(**variant)[0] for variant in SAMPLED.values()]
  covered = lambda field: {getattr(c, field) for c in configs}
  for field, allowed in (('norm_position', config_lib.NORM_POSITIONS), ('norm', config_lib.NORMS),
                         ('position', config_lib.POSITIONS), ('mlp', config_lib.MLPS),
                         ('qk_norm', config_lib.QK_NORMS), ('rope_scaling',
                                                            config_lib.ROPE_SCALINGS)):
    assert covered(field) == set(allowed), field
  assert covered('n_kv_heads') >= {1, 2, 4}
  assert covered('attention_window') == {None, 3, 5}
  assert {c.layer_windows for c in configs} >= {(3, None)}  # a window layer feeds a global one
  assert covered('parallel_block') == covered('norm_affine') == {True, False}
  assert covered('attn_logit_softcap') > {None} and covered('final_logit_softcap') > {None}


@pytest.mark.parametrize('variant', SAMPLED)
def test_cached_equals_uncached_greedy_and_batch_equals_single(variant):
  cfg, params = tiny_model(**SAMPLED[variant])
  cached = sampling.generate(cfg, params, PROMPTS, max_new_tokens=10, temperature=0)
  uncached = sampling.generate(cfg, params, PROMPTS, max_new_tokens=10, temperature=0,
                               use_cache=False)
  assert cached == uncached
  assert [sampling.generate(cfg, params, p, max_new_tokens=10, temperature=0)
          for p in PROMPTS] == cached


def test_top_k_1_equals_greedy():
  cfg, params = tiny_model(**SAMPLED['gpt2'])
  greedy = sampling.generate(cfg, params, PROMPTS, max_new_tokens=10, temperature=0)
  assert sampling.generate(cfg, params, PROMPTS, max_new_tokens=10, temperature=1.5, top_k=1,
                           seed=7) == greedy


def test_learned_positions_stop_at_block_size_unless_truncating():
  cfg = FAKE_CFG.replace(block_size=16)
  prompt = list(range(12))
  assert len(fake_generate(prompt, cfg=cfg, max_new_tokens=5)) == 5  # 12 + 5 - 1 = 16 slots
  with pytest.raises(ValueError, match='block_size=16'):
    fake_generate(prompt, cfg=cfg, max_new_tokens=6)
  assert fake_generate(prompt, cfg=cfg, max_new_tokens=6, truncate_prompt=True) == \
      fake_generate(prompt[-11:], cfg=cfg, max_new_tokens=6)
  with pytest.raises(ValueError, match='max_new_tokens=18'):
    fake_generate(prompt, cfg=cfg, max_new_tokens=18, truncate_prompt=True)
  with pytest.raises(ValueError, match='max_len=8'):
    fake_generate(prompt, cfg=cfg.replace(position='rope'), max_len=8)
  rope = cfg.replace(position='rope')  # no position table: only the cache size limits
  assert len(fake_generate(prompt, cfg=rope, max_new_tokens=20)) == 20


@pytest.mark.parametrize('kwargs, message', [
    (dict(max_new_tokens=0), 'max_new_tokens'),
    (dict(max_new_tokens=2.5), 'max_new_tokens'),
    (dict(temperature=-0.1), 'temperature'),
    (dict(temperature=float('nan')), 'temperature'),
    (dict(top_k=0), 'top_k'),
    (dict(top_p=0.0), 'top_p'),
    (dict(top_p=1.01), 'top_p'),
    (dict(prompt=[]), 'prompt_tokens is empty'),
    (dict(prompt=[[1], []]), r'prompt_tokens\[1\] is empty'),
    (dict(prompt=[1, 99]), 'prompt_tokens holds token id 99'),
    (dict(prompt='hello'), 'prompt_tokens'),
    (dict(valid_vocab_size=17), 'valid_vocab_size'),
    (dict(eot_token=16), 'eot_token'),
    (dict(max_len=65), 'max_len=65 is past block_size=64'),
    (dict(seed=None), 'seed'),
])
def test_bad_arguments_raise_one_clear_error(kwargs, message):
  prompt = kwargs.pop('prompt', [1, 2])
  with pytest.raises(ValueError, match=message):
    fake_generate(prompt, **kwargs)


# ---------------------------------------------------------------------------------------------
# Streaming: on_token sees every step's tokens while the loop runs, in order.

STREAMED = []


def record_step(tokens):
  STREAMED.append(tokens.tolist())


@pytest.mark.parametrize('use_cache', [True, False])
def test_on_token_streams_each_step_in_order(use_cache):
  STREAMED.clear()
  prompts = [[8], [0, 1, 2], [4, 11, 12]]
  out = fake_generate(prompts, max_new_tokens=10, eot_token=EOT, use_cache=use_cache,
                      on_token=record_step)
  assert out == [[9, 10], [3, 4, 5, 6, 7, 8, 9, 10], [13, 14, 15, 0, 1, 2, 3, 4, 5, 6]]
  assert all(isinstance(step, list) and len(step) == 3 for step in STREAMED)
  # One call per step, in order; a finished row shows eot while the others go on.
  columns = [list(row) for row in zip(*STREAMED)]
  assert columns == [out[0] + [EOT] * 8, out[1] + [EOT] * 2, out[2]]


def test_streamed_samples_equal_the_returned_ones_on_a_real_model():
  cfg, params = tiny_model(**SAMPLED['gpt2'])
  kwargs = dict(max_new_tokens=12, temperature=1.0, top_k=20, seed=3)
  STREAMED.clear()
  out = sampling.generate(cfg, params, PROMPTS[0], on_token=record_step, **kwargs)
  assert [step[0] for step in STREAMED] == out
  assert sampling.generate(cfg, params, PROMPTS[0], **kwargs) == out  # streaming changes nothing


def _pieces(tokenizer, tokens, context=()):
  stream = TextStream(tokenizer, context)
  return [stream.push(t) for t in tokens] + [stream.flush()]


def test_text_stream_releases_whole_characters_only():
  from gptjax.tokenizer import ByteTokenizer
  tokenizer = ByteTokenizer()
  text = 'a€b😀'
  pieces = _pieces(tokenizer, tokenizer.encode(text))
  assert pieces == ['a', '', '', '€', 'b', '', '', '', '😀', '']
  # the context is not repeated; the first eot ends the stream
  assert _pieces(tokenizer,
                 tokenizer.encode('é!') + [tokenizer.eot_token, 65],
                 context=tokenizer.encode('x')) == ['', 'é', '!', '', '', '']
  # a sample cut in the middle of a character ends in U+FFFD, released by flush
  assert _pieces(tokenizer, tokenizer.encode('€')[:2]) == ['', '', REPLACEMENT_CHAR]


def test_text_stream_on_gpt2_tokens_that_split_a_character():
  from gptjax.tokenizer import get_tokenizer
  tokenizer = get_tokenizer('gpt2')
  text = ' 你好, 🤖 world'
  tokens = tokenizer.encode(text)
  assert len(tokens) > len(text.split())  # some characters span several tokens
  pieces = _pieces(tokenizer, tokens, context=tokenizer.encode('Hi'))
  assert ''.join(pieces) == text
  assert not any(REPLACEMENT_CHAR in p for p in pieces)
  assert continuation(tokenizer, tokenizer.encode('Hi'), tokens + [tokenizer.eot_token]) == text


# ---------------------------------------------------------------------------------------------
# The prompt and its text


def test_encode_prompt_starts_unconditional_samples_from_eot():
  from gptjax.tokenizer import get_tokenizer
  tokenizer = get_tokenizer('gpt2')
  assert encode_prompt(None, tokenizer) == [tokenizer.eot_token]
  assert encode_prompt('Hello', tokenizer) == tokenizer.encode('Hello')
  with pytest.raises(ValueError, match='the prompt is empty'):
    encode_prompt('', tokenizer)


def test_fit_prompt_truncates_only_when_asked_and_only_where_there_is_a_limit():
  learned = FAKE_CFG.replace(block_size=16)
  prompt = list(range(12))
  assert sampling.fit_prompt(learned, prompt, max_new_tokens=5) == (prompt, None)
  kept, warning = sampling.fit_prompt(learned, prompt, max_new_tokens=8, truncate=True)
  assert kept == prompt[-9:] and 'keeping only its last 9 tokens' in warning
  assert 'block_size=16 (learned positions)' in warning
  kept, warning = sampling.fit_prompt(learned, prompt, max_new_tokens=4, max_len=10, truncate=True)
  assert kept == prompt[-7:] and 'past max_len=10' in warning
  with pytest.raises(ValueError, match='needs 19 positions, past block_size=16'):
    sampling.fit_prompt(learned, prompt, max_new_tokens=8)
  with pytest.raises(ValueError, match='max_new_tokens=17 does not fit'):
    sampling.fit_prompt(learned, prompt, max_new_tokens=17, truncate=True)
  rope = learned.replace(position='rope')  # no position table: only a cache size limits
  assert sampling.fit_prompt(rope, prompt, max_new_tokens=8) == (prompt, None)
  with pytest.raises(ValueError, match='past max_len=16'):
    sampling.fit_prompt(rope, prompt, max_new_tokens=8, max_len=16)
  assert sampling.fit_prompt(rope, prompt, max_new_tokens=8, max_len=19) == (prompt, None)


def test_library_errors_name_parameters_not_flags():
  rope = FAKE_CFG.replace(block_size=16, position='rope')
  for call in (lambda: sampling.fit_prompt(rope, list(range(12)), 8, max_len=16),
               lambda: fake_generate([1, 2], max_len=65),
               lambda: loading.load_model(workdir='runs/x', hf='gpt2'),
               lambda: loading.load_model(step=3), lambda: loading.load_model()):
    with pytest.raises(ValueError) as error:
      call()
    assert '--' not in str(error.value)


# ---------------------------------------------------------------------------------------------
# Against transformers: greedy decoding of an imported model equals its own greedy `generate`.


@pytest.mark.parametrize('name', ['qwen3-windows', 'llama3.2', 'gemma2', 'gpt-neox', 'olmo2'])
def test_greedy_decoding_of_every_family_matches_transformers_generate(name):
  """The KV-cached loop on a left-padded batch, through each family's windows, soft-caps, norm
  placements and rotary variants, chooses what transformers' own cached generate chooses."""
  torch = pytest.importorskip('torch')
  from gptjax.hf import from_hf

  model_type, fields = HF_CASES[name]
  model = hf_model(model_type, perturb=0.1, **fields)
  cfg, params = from_hf(model)
  prompts = [[5, 17, 3, 40, 8, 21, 9], [33, 2, 50], [250, 1, 2, 3, 4]]
  width = max(map(len, prompts))
  pad = 0
  ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
  mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
  with torch.no_grad():
    out = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=12,
                         eos_token_id=None, pad_token_id=pad)
  expected = out[:, width:].tolist()
  ours = sampling.generate(cfg, params, prompts, max_new_tokens=12, temperature=0, eot_token=None)
  assert ours == expected


def test_greedy_matches_transformers_generate_on_imported_gpt2():
  torch = pytest.importorskip('torch')
  from gptjax.hf import from_hf

  # O(1) weights: logits far from ties, so float rounding cannot flip them.
  model = hf_model('gpt2', n_layer=2, n_embd=64, n_head=4, vocab_size=300, n_positions=64)
  cfg, params = from_hf(model)
  prompts = [[5, 17, 3, 40, 8, 21, 9], [33, 2, 50], [250, 1, 2, 3, 4]]

  def hf_greedy(eos, max_new_tokens):
    # Left-padded batch; rows that reach eos are padded with it, as generate() does.
    width = max(map(len, prompts))
    ids = torch.tensor([[eos] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
      out = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                           eos_token_id=eos, pad_token_id=eos)
    rows = out[:, width:].tolist()
    return [row[:row.index(eos) + 1] if eos in row else row for row in rows]

  ours = sampling.generate(cfg, params, prompts, max_new_tokens=16, temperature=0)
  assert ours == hf_greedy(eos=299, max_new_tokens=16)
  # Make a token the middle row produces early the eos: that row stops there, the others go on.
  eos = ours[1][3]
  ours_eos = sampling.generate(cfg, params, prompts, max_new_tokens=16, temperature=0,
                               eot_token=eos)
  assert ours_eos == hf_greedy(eos=eos, max_new_tokens=16)
  assert len(ours_eos[1]) <= 4 and ours_eos[1][-1] == eos


def test_load_hf_gives_a_llama_checkpoint_its_own_tokenizer(tmp_path):
  torch = pytest.importorskip('torch')
  from gptjax.tokenizer import HFTokenizer

  tokenizer = hf_tokenizer()
  model = hf_model('llama', num_hidden_layers=1, hidden_size=32, num_attention_heads=4,
                   num_key_value_heads=2, intermediate_size=64, vocab_size=320,
                   max_position_embeddings=64, bos_token_id=0, eos_token_id=1)
  model.save_pretrained(tmp_path)
  tokenizer.save_pretrained(tmp_path)

  sampler = loading.load_hf(str(tmp_path))
  ours = sampler.tokenizer
  assert isinstance(ours, HFTokenizer)
  assert (ours.n_vocab, ours.eot_token) == (len(tokenizer), 1)
  assert encode_prompt(None, ours) == [0]  # unconditional samples start from BOS
  prompt = encode_prompt('the lazy fox', ours)
  assert prompt[0] == 0 and ours.decode(prompt) == 'the lazy fox'

  new = sampling.generate(sampler.cfg, sampler.params, prompt, max_new_tokens=10, temperature=0,
                          eot_token=ours.eot_token, valid_vocab_size=ours.n_vocab)
  with torch.no_grad():
    expected = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=10,
                              eos_token_id=1, pad_token_id=1)[0, len(prompt):].tolist()
  assert all(t < ours.n_vocab for t in expected)  # so the vocab mask changes nothing
  assert new == expected
