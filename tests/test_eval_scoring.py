"""gptjax.eval.scoring: log-likelihoods of continuations in padded, bucketed batches equal the
log-softmax of the model's own logits on each unpadded sequence; the windows and the pair
tokenization follow lm-evaluation-harness's own functions."""

import functools

import jax
import numpy as np
import pytest
from scipy.special import log_softmax

from conftest import TINY, random_params
from gptjax.config import ModelConfig
from gptjax.eval.scoring import Scorer, bucket_length, encode_pair, rolling_windows
from gptjax.model import GPT, init_params
from gptjax.tokenizer import get_tokenizer

pytestmark = pytest.mark.usefixtures('fast_compiles')


@functools.lru_cache(maxsize=None)
def _forward(cfg):
  return jax.jit(lambda params, tokens: GPT(cfg).apply({'params': params}, tokens))


def direct_loglikelihood(cfg, params, context, continuation, valid_vocab_size):
  """Sum of log-softmax over the model's logits of the sequence, in float64 NumPy. The sequence
  is right-padded to block_size, which a causal model cannot see from the positions before the
  padding: one compilation serves every pair."""
  tokens = np.array(context + continuation)
  inputs = np.zeros((1, cfg.block_size), np.int32)
  inputs[0, :len(tokens) - 1] = tokens[:-1]
  logits = np.asarray(_forward(cfg)(params, inputs), np.float64)[0]
  logits[:, valid_vocab_size:] = -np.inf
  logprobs = log_softmax(logits, axis=-1)
  positions = np.arange(len(context) - 1, len(tokens) - 1)
  targets = tokens[len(context):]
  return logprobs[positions, targets].sum(), bool(np.all(logits[positions].argmax(-1) == targets))


@pytest.mark.parametrize('fields', [{}, dict(vocab_pad_multiple=64, position='rope')])
def test_scores_equal_the_direct_log_softmax_sum(fields):
  """Pairs of many lengths in batches of 3 (a partial last batch, several buckets): each equals
  its own unpadded forward. With a padded vocabulary the padding ids take no mass."""
  cfg = ModelConfig(**{**TINY, 'block_size': 32, **fields})
  params = random_params(init_params(cfg, jax.random.key(0)))
  rng = np.random.default_rng(0)
  valid = 50
  pairs = [(rng.integers(0, valid, n_context).tolist(), rng.integers(0, valid, n_cont).tolist())
           for n_context, n_cont in [(1, 1), (5, 3), (20, 7), (12, 20), (3, 1), (30, 2), (1, 32)]]
  # The model's own greedy token as a continuation: is_greedy must say so.
  context = pairs[1][0]
  logits = GPT(cfg).apply({'params': params}, np.array([context]))[0, -1, :valid]
  pairs.append((context, [int(np.argmax(logits))]))

  scored = Scorer(cfg, params, valid_vocab_size=valid, batch_size=3).score(pairs)
  for (context, continuation), (logprob, greedy) in zip(pairs, scored):
    expected, expected_greedy = direct_loglikelihood(cfg, params, context, continuation, valid)
    np.testing.assert_allclose(logprob, expected, rtol=1e-5, atol=1e-4)
    assert greedy == expected_greedy
  assert scored[-1][1]


@pytest.mark.parametrize('fields', [{}, dict(position='rope', n_kv_heads=2, attention_window=5)])
def test_continuations_of_one_context_score_as_if_each_ran_whole(fields):
  """Multiple-choice endings share their context, which runs once into a KV cache: each
  ending's score equals its own full forward. Groups of 1 to 7 endings (more than a batch of 4),
  contexts and endings of many lengths, one pair that fills the whole context (no room for the
  padded buckets), batches that would not fit the model if padded to their longest context and
  longest ending together; a window layer reads its ring cache."""
  cfg = ModelConfig(**{**TINY, 'block_size': 32, **fields})
  params = random_params(init_params(cfg, jax.random.key(0)))
  rng = np.random.default_rng(1)
  pairs = []
  for n_context, n_endings in [(3, 4), (9, 1), (1, 2), (20, 7), (14, 3), (25, 2)]:
    context = rng.integers(0, 61, n_context).tolist()
    for _ in range(n_endings):
      pairs.append((context, rng.integers(0, 61, rng.integers(1, 33 - n_context)).tolist()))
  pairs.append((pairs[-1][0], rng.integers(0, 61, 32 - 25 + 1).tolist()))  # exactly fills it
  expected = [direct_loglikelihood(cfg, params, *pair, 61) for pair in pairs]
  for batch_size in (4, 32):  # 32: contexts and endings of different questions in one batch
    scored = Scorer(cfg, params, valid_vocab_size=61, batch_size=batch_size).score(pairs)
    np.testing.assert_allclose([s[0] for s in scored], [e[0] for e in expected], rtol=1e-5,
                               atol=1e-4)
    assert [s[1] for s in scored] == [e[1] for e in expected]


def test_a_pair_longer_than_the_model_loses_its_first_tokens():
  cfg = ModelConfig(**TINY)  # block_size 16
  params = random_params(init_params(cfg, jax.random.key(0)))
  context, continuation = list(range(1, 30)), [7, 8, 9]
  (logprob, _), = Scorer(cfg, params, valid_vocab_size=61).score([(context, continuation)])
  kept = (context + continuation)[-17:]
  expected, _ = direct_loglikelihood(cfg, params, kept[:-3], continuation, 61)
  np.testing.assert_allclose(logprob, expected, rtol=1e-5, atol=1e-4)


def test_bad_pairs_and_settings_are_refused():
  cfg = ModelConfig(**TINY)
  params = init_params(cfg, jax.random.key(0))
  scorer = Scorer(cfg, params, valid_vocab_size=61)
  with pytest.raises(ValueError, match='at least one token'):
    scorer.score([([], [1])])
  with pytest.raises(ValueError, match='rolling_windows'):
    scorer.score([([1], list(range(17)))])
  with pytest.raises(ValueError, match='batch_size=0'):
    Scorer(cfg, params, valid_vocab_size=61, batch_size=0)
  with pytest.raises(ValueError, match='past block_size=16'):
    Scorer(cfg, params, valid_vocab_size=61, max_length=32)


def test_bucket_lengths_are_few_and_cover_every_length():
  buckets = {bucket_length(n, 1024) for n in range(1, 1025)}
  assert sorted(buckets) == [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]
  assert all(bucket_length(n, 1024) >= n for n in range(1, 1025))
  assert bucket_length(100, 50) == 50


def test_rolling_windows_are_lm_evals():
  utils = pytest.importorskip('lm_eval.utils')
  for n in [1, 5, 16, 17, 33, 50]:
    tokens = list(range(100, 100 + n))
    for max_length in [1, 4, 16]:
      theirs = [
          utils.make_disjoint_window(w)
          for w in utils.get_rolling_token_windows(tokens, 0, max_length, context_len=1)
      ]
      assert rolling_windows(tokens, 0, max_length) == [tuple(map(list, w)) for w in theirs]


def test_encode_pair_is_lm_evals():
  model = pytest.importorskip('lm_eval.api.model')
  tokenizer = get_tokenizer('gpt2')

  class Template(model.TemplateLM):  # only the tokenization of lm-eval's base class
    eot_token_id = tokenizer.eot_token
    tok_encode = staticmethod(lambda text, **kwargs: tokenizer.encode(text))
    _loglikelihood_tokens = loglikelihood_rolling = generate_until = None

  template = Template.__new__(Template)
  for context, continuation in [('The sky is', ' blue'), ('The sky is ', 'blue'),
                                ('Q: 2+2=\n\n  ', '4.'), ('def f(x):', '\n    return x')]:
    assert encode_pair(tokenizer.encode, context,
                       continuation) == template._encode_pair(context, continuation)
