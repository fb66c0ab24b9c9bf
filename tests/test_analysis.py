"""gptjax.analysis: each subcommand's numbers on a tiny model, and the command line end to end."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax import analysis
from gptjax.config import ModelConfig
from gptjax.flops import count_params
from gptjax.loading import LoadedModel
from gptjax.model import GPT, abstract_params, forward_with_intermediates, kv_cache_bytes
from gptjax.sampling import generate
from gptjax.tokenizer import ByteTokenizer, get_tokenizer

pytestmark = pytest.mark.usefixtures('fast_compiles')  # compiling is most of their time

REPO = Path(__file__).resolve().parent.parent
forward = jax.jit(forward_with_intermediates, static_argnums=0)  # eager is seconds slower
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
# Byte tokens (257) in a vocabulary of 263 rows: the 6 padding ids must get probability 0.
TINY = dict(vocab_size=263, d_model=32, n_heads=4, n_layers=2, block_size=32)
PROMPT = 'héllo, wörld'  # multi-byte characters: tokens that are parts of one character


def tiny_model(randomize, **overrides) -> LoadedModel:
  cfg = ModelConfig(**{**TINY, **overrides})
  params = randomize(abstract_params(cfg))
  return LoadedModel(cfg, params, ByteTokenizer(), 'tiny test model')


@pytest.fixture(scope='module')
def model(randomize):
  return tiny_model(randomize)


def assert_png(path: Path):
  assert path.read_bytes()[:8] == PNG_MAGIC
  import matplotlib.image
  image = matplotlib.image.imread(path)
  assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50


def softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# params


@pytest.mark.parametrize('tie', [True, False])
def test_param_totals_with_and_without_tied_embeddings(randomize, tie):
  m = tiny_model(randomize, tie_embeddings=tie)
  s = analysis.param_summary(m.cfg, m.params)
  head = m.cfg.vocab_size * m.cfg.d_model
  assert s.total == count_params(m.params)
  assert s.untied_total - s.tied_total == head
  assert s.total == (s.tied_total if tie else s.untied_total)
  assert s.embeddings == head + m.cfg.block_size * m.cfg.d_model  # wte + wpe
  report = analysis.show_params(m)
  assert f'{s.tied_total:,}' in report and f'{s.untied_total:,}' in report
  assert 'FLOPs/token, matmul' in report and 'FLOPs/token, attention' in report
  assert 'blocks_1.mlp' in report


# ---------------------------------------------------------------------------------------------
# tokens


@pytest.mark.parametrize('tokenizer', [ByteTokenizer(), get_tokenizer('gpt2')],
                         ids=['bytes', 'gpt2'])
def test_tokens_round_trip(tokenizer):
  text = 'Hello, wörld! 🙂 <|endoftext|> tokens'
  rows = analysis.token_rows(tokenizer, text)
  assert [r.index for r in rows] == list(range(len(rows)))
  assert [r.id for r in rows] == tokenizer.encode(text)
  assert b''.join(r.bytes for r in rows) == text.encode('utf-8')
  assert tokenizer.decode([r.id for r in rows]) == text


def test_show_tokens_counts_and_lists_every_token(model):
  report = analysis.show_tokens(model, PROMPT)
  n = len(PROMPT.encode('utf-8'))  # one byte per token
  assert f'{n} tokens (bytes tokenizer)' in report and 'gives the text back: yes' in report
  assert repr(b'\xc3') in report  # the first byte of é, alone
  assert len(report.splitlines()) == 5 + n  # text, count, blank line, header, rule


# ---------------------------------------------------------------------------------------------
# next


def test_next_token_probabilities_are_a_softmax_of_the_logits(model):
  cfg, params = model.cfg, model.params
  tokens = model.tokenizer.encode(PROMPT)
  nxt = analysis.next_token(cfg, params, tokens, top_k=5, valid_vocab_size=257)
  logits = np.asarray(GPT(cfg).apply({'params': params}, jnp.asarray([tokens])))[0, -1]
  np.testing.assert_allclose(nxt.logits[:257], logits[:257], atol=1e-4)  # jit vs eager
  np.testing.assert_allclose(nxt.probs[:257], softmax(logits[:257]), rtol=1e-5, atol=1e-7)
  assert np.all(nxt.probs[257:] == 0)  # padding rows of the vocabulary are never chosen
  assert nxt.probs.sum() == pytest.approx(1.0, abs=1e-6)
  assert nxt.top_ids[0] == nxt.greedy == int(np.argmax(logits[:257]))
  top_probs = nxt.probs[nxt.top_ids]
  assert len(top_probs) == 5 and np.all(np.diff(top_probs) <= 0)


@pytest.mark.slow  # in the full suite; out of the inner loop (-m "not slow")
def test_greedy_continuation_is_generate_with_each_tokens_probability(model):
  cfg, params = model.cfg, model.params
  tokens = model.tokenizer.encode(PROMPT)
  steps = analysis.greedy_continuation(cfg, params, tokens, 6, valid_vocab_size=257)
  new = [t for t, _ in steps]
  assert new == generate(cfg, params, tokens, max_new_tokens=6, temperature=0, valid_vocab_size=257)
  assert new[0] == analysis.next_token(cfg, params, tokens, 1, 257).greedy
  logits = np.asarray(GPT(cfg).apply({'params': params}, jnp.asarray([tokens + new])))[0]
  for i, (token, p) in enumerate(steps):
    probs = softmax(logits[len(tokens) - 1 + i, :257])
    assert token == int(np.argmax(probs))
    assert p == pytest.approx(float(probs[token]), rel=1e-4)
  assert analysis.greedy_continuation(cfg, params, tokens, 0, 257) == []


def test_show_next_marks_the_greedy_choice(model):
  report = analysis.show_next(model, PROMPT, top_k=4, steps=3)
  top = report.split('top 4 next tokens:\n')[1].splitlines()
  assert top[2].split()[0] == '1' and top[2].endswith('<- greedy')  # header, rule, rank 1
  assert sum('<- greedy' in line for line in report.splitlines()) == 1
  assert 'greedy continuation (3 steps' in report and 'sum to 1.000000' in report


# ---------------------------------------------------------------------------------------------
# attention


def test_attention_rows_sum_to_one_and_nothing_is_seen_from_the_future(model, tmp_path):
  cfg = model.cfg
  tokens = model.tokenizer.encode(PROMPT)
  maps = analysis.attention_maps(cfg, model.params, tokens)
  t = len(tokens)
  assert maps.shape == (cfg.n_layers, cfg.n_heads, t, t)
  np.testing.assert_allclose(maps.sum(-1), 1.0, rtol=1e-5)
  assert np.all(maps[..., np.triu_indices(t, k=1)[0], np.triu_indices(t, k=1)[1]] == 0)
  assert np.all(maps[..., 0, 0] == 1)  # the first token sees only itself
  report = analysis.show_attention(model, PROMPT, str(tmp_path))
  assert_png(tmp_path / 'attention.png')
  assert f'wrote {tmp_path / "attention.png"}' in report
  assert len(report.split('looks most:\n')[1].splitlines()) == 2 + cfg.n_layers * cfg.n_heads


# ---------------------------------------------------------------------------------------------
# layers


@pytest.mark.parametrize(
    'overrides', [{}, {'norm_position': 'post'}, {'tie_embeddings': False, 'norm': 'rmsnorm'}],
    ids=['pre-norm', 'post-norm', 'untied-rmsnorm'])
def test_logit_lens_at_the_last_block_is_the_models_output(randomize, overrides):
  m = tiny_model(randomize, **overrides)
  tokens = jnp.asarray([m.tokenizer.encode(PROMPT), m.tokenizer.encode(PROMPT[::-1])])
  logits, outputs, _ = forward(m.cfg, m.params, tokens)
  lens = analysis.logit_lens(m.cfg, m.params, outputs)
  assert lens.shape == (m.cfg.n_layers, *logits.shape)
  np.testing.assert_allclose(lens[-1], logits, rtol=1e-5, atol=1e-5)
  assert not np.allclose(lens[0], logits, atol=1e-2)  # an earlier block predicts otherwise


def test_layer_statistics_of_the_residual_stream(model):
  tokens = jnp.asarray([model.tokenizer.encode(PROMPT)])
  _, outputs, _ = forward(model.cfg, model.params, tokens)
  stats = analysis.layer_statistics(outputs)
  x = np.asarray(outputs)
  for i in range(model.cfg.n_layers):
    assert stats.norm[i] == pytest.approx(np.mean(np.sqrt((x[i]**2).sum(-1))), rel=1e-5)
    assert stats.mean[i] == pytest.approx(x[i].mean(), abs=1e-6)
    assert stats.std[i] == pytest.approx(x[i].std(), rel=1e-5)


@pytest.mark.parametrize('positions', ['all', 'last'])
def test_show_layers_has_a_row_per_block(model, positions):
  report = analysis.show_layers(model, 'abc', positions)
  lens_rows = report.split('own output:\n')[1].splitlines()[2:]
  assert [row.split()[0] for row in lens_rows] == ['0', '1']
  if positions == 'all':
    assert all(len(row.split()) == 1 + 3 for row in lens_rows)  # a prediction per position


# ---------------------------------------------------------------------------------------------
# embeddings


def test_word_vectors_and_cosine_similarity(model, tmp_path):
  words = ['ab', 'a', 'b', 'ab']
  vectors = analysis.word_vectors(model.params, model.tokenizer, words)
  wte = np.asarray(model.params['wte']['embedding'])
  assert vectors[0].tokens == [97, 98]
  np.testing.assert_allclose(vectors[0].vector, (wte[97] + wte[98]) / 2, rtol=1e-6)
  sim = analysis.cosine_similarity(np.stack([v.vector for v in vectors]))
  assert sim.shape == (4, 4)
  np.testing.assert_allclose(np.diag(sim), 1.0, rtol=1e-6)
  np.testing.assert_allclose(sim, sim.T, atol=1e-7)
  assert sim[0, 3] == pytest.approx(1.0)
  assert np.all(np.abs(sim) <= 1 + 1e-6)
  report = analysis.show_embeddings(model, ['ab', 'c', 'é'], str(tmp_path))
  assert "'ab': splits into 2 tokens" in report and "'c': token 99" in report
  assert "'é': splits into 2 tokens" in report  # two UTF-8 bytes
  assert_png(tmp_path / 'embeddings.png')


# ---------------------------------------------------------------------------------------------
# kvcache


def test_kv_cache_sizes_follow_the_formula(randomize):
  cfg = ModelConfig(**{**TINY, 'n_heads': 8, 'd_model': 64})
  gpt2_bf16 = ModelConfig(dtype='bfloat16')  # 12 layers, 12 heads of 64 dims
  assert kv_cache_bytes(gpt2_bf16, 1, 1024) == 2 * 12 * 12 * 64 * 1024 * 2
  sizes = analysis.kv_cache_variants(cfg, batch=3, context=20)  # float32: 4 bytes
  assert [(s.variant, s.n_kv_heads) for s in sizes] == [('MHA', 8), ('GQA', 4), ('GQA', 2),
                                                        ('MQA', 1)]
  for s in sizes:
    assert s.bytes == 2 * cfg.n_layers * s.n_kv_heads * cfg.head_dim * 3 * 20 * 4
  assert sizes[-1].bytes * cfg.n_heads == sizes[0].bytes  # MQA = MHA / n_heads


def test_kv_cache_formula_is_what_the_model_allocates(randomize):
  from gptjax.model import init_cache
  cfg = ModelConfig(**{**TINY, 'n_kv_heads': 2, 'dtype': 'bfloat16'})
  cache = init_cache(cfg, batch_size=3, max_len=20)
  allocated = sum(x.nbytes for layer in cache.layers for x in layer)
  assert allocated == kv_cache_bytes(cfg, batch_size=3, max_len=20)


def test_window_layers_cache_only_their_window():
  """Gemma 2's alternation at context 1024 and window 128: half the layers hold 128 slots."""
  from gptjax.model import init_cache
  cfg = ModelConfig(
      **{
          **TINY, 'n_layers': 4, 'attention_window': 4, 'window_pattern': 'local,global',
          'position': 'rope'
      })
  cache = init_cache(cfg, batch_size=2, max_len=12)
  assert [layer.k.shape[2] for layer in cache.layers] == [4, 12, 4, 12]
  allocated = sum(x.nbytes for layer in cache.layers for x in layer)
  assert allocated == kv_cache_bytes(cfg, 2, 12) == 2 * (4 + 12 + 4 + 12) * 4 * 8 * 2 * 4
  gemma = ModelConfig(n_layers=26, attention_window=128, window_pattern='local,global')
  note = analysis.window_note(gemma, batch=1, context=1024)
  assert 'window layers: 13 of 26 keep a ring of their last 128 slots' in note
  assert f'({2 * 1024 / (1024 + 128):.2f}x smaller)' in note
  assert analysis.window_note(gemma, batch=1, context=100) == ''  # windows past the context


def test_show_kvcache_measures_both_decoders(model):
  report = analysis.show_kvcache(model, batch=2, context=None, new_tokens=4, kv_dtype=None,
                                 prompt='ab')
  variants = report.split('-\n', 1)[1].splitlines()[:3]
  assert [row.split()[:2] for row in variants] == [['MHA', '4'], ['GQA', '2'], ['MQA', '1']]
  assert variants[0].endswith('<- this model')
  speeds = [line for line in report.splitlines() if line.startswith(('with KV', 'without'))]
  assert len(speeds) == 2 and all(float(s.split()[-1].replace(',', '')) > 0 for s in speeds)


# ---------------------------------------------------------------------------------------------
# The command line


def analyse(*args):
  return subprocess.run([sys.executable, '-m', 'gptjax.analysis', *map(str, args)], cwd=REPO,
                        capture_output=True, text=True, timeout=120,
                        env={**os.environ, 'JAX_PLATFORMS': 'cpu'})


@pytest.mark.slow
def test_cli_attention_on_configs_tiny_writes_a_png(tmp_path):
  result = analyse('attention', f'--config={REPO / "configs/tiny.py"}', '--config.model.n_layers=2',
                   f'--out_dir={tmp_path / "out"}', '--prompt=Hello there')
  assert result.returncode == 0, result.stderr
  assert 'random init' in result.stderr and 'Traceback' not in result.stderr
  assert_png(tmp_path / 'out' / 'attention.png')
  assert "where the last token ' there' looks most" in result.stdout


@pytest.mark.slow
def test_cli_tokens_round_trips_the_text():
  text = 'Tokenizers split "unbelievably" long words'
  result = analyse('tokens', '--config=configs/tiny.py', f'--text={text}')
  assert result.returncode == 0, result.stderr
  ids = get_tokenizer('gpt2').encode(text)
  assert f'{len(ids)} tokens (gpt2 tokenizer)' in result.stdout
  header, rows = result.stdout.split('\n\n', 1)[1].split('\n', 1)
  rows = rows.splitlines()[1:]  # after the rule
  assert [int(row.split()[1]) for row in rows] == ids
  text_column = header.index('text')
  assert ''.join(ast.literal_eval(row[text_column:]) for row in rows) == text


@pytest.mark.parametrize('args, fragments', [
    ([], ['give a subcommand', 'params, tokens, next, attention, layers, embeddings, kvcache']),
    (['plot', '--config=configs/tiny.py'], ["unknown subcommand 'plot'", 'params, tokens']),
    (['params', '--config=configs/tiny.py', '--colour=red'], ["flag 'colour'"]),
    (['next', '--config=configs/tiny.py', '--top_k=0'], ['--top_k=0 must be >= 1']),
    (['params', '--config=configs/tiny.py', '--config.model.n_layer=2'], ['n_layer']),
    (['embeddings', '--config=configs/tiny.py', '--words=dog'], ['two or more']),
    (['params'], ['no model given', 'workdir', 'hf', 'config']),
    (['params', '--config=configs/tiny.py', '--hf=gpt2'], ['one model at a time']),
    (['params', '--config=configs/tiny.py', '--step=2'], ['step=2', 'give its workdir']),
    (['params', '--config=configs/nope.py'], ['--config=configs/nope.py', 'no such file']),
    (['params', '--config=configs/tiny.py', 'extra'], ['unexpected arguments: extra']),
    (['attention', '--config=configs/tiny.py', '--out_dir=README.md/plots'
      ], ['--out_dir=README.md/plots: README.md is a file']),
])
@pytest.mark.slow
def test_cli_mistakes_are_one_line(args, fragments):
  result = analyse(*args)
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
  for fragment in fragments:
    assert fragment in lines[0]
