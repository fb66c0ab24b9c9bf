"""Corpora -> token files on disk -> reproducible batches.

A corpus is named by a string:

- ``'stdlib'``: the running interpreter's standard library sources (the embedded default: it
  needs no network and no download, and every Python install has it).
- a local path: a text file, or a directory of ``.txt``/``.md``/``.rst``/``.py`` files.
- ``'shakespeare'``: tiny-shakespeare, downloaded once into ``data_dir/cache``.
- ``'hf:NAME[:CONFIG]'``: a Hugging Face dataset's ``text`` column, e.g.
  ``'hf:roneneldan/TinyStories'`` or ``'hf:HuggingFaceFW/fineweb:sample-10BT'``;
  ``'hf:text:PATH'`` loads a local file or directory through the same code path (that is how
  the Hugging Face path is tested offline).

:func:`prepare` tokenizes a corpus once into ``train.bin`` / ``val.bin`` (flat token arrays, read
back with :func:`load_split` as ``np.memmap``) and ``meta.json``. Documents are separated by the
tokenizer's end-of-text token. :func:`get_batch` makes the batch for a step a pure function of
(seed, step, process), so resuming and changing the number of processes replay the same data.

Train/val splits never depend on file order or count: with several documents, a document is held
out iff ``crc32(its key) % 100 < val_percent`` (key: relative path, or row index for Hugging Face
datasets without a validation split); a single document (a text file) is split inside its text,
the last ``val_percent`` % going to val, cut at a line boundary.
"""

from __future__ import annotations

import codecs
import concurrent.futures
import json
import logging
import os
import platform
import re
import sysconfig
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Container, Iterable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from gptjax.config import DEFAULT_VAL_PERCENT
from gptjax.files import write_json_atomic
from gptjax.tokenizer import Tokenizer, get_tokenizer, utf8_bytes

SHAKESPEARE_URL = (
    'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt')
TEXT_SUFFIXES = ('.txt', '.md', '.rst', '.py')
# Third-party packages differ between machines, the test suites contain deliberately broken
# and generated files, and pydoc_data/config-*/_sysconfigdata* are generated or build-specific.
# Leaving them out keeps 'stdlib' the same corpus on every install of a given Python version.
_STDLIB_SKIP_DIRS = {
    'site-packages', 'dist-packages', 'test', 'tests', 'idle_test', 'turtledemo', 'pydoc_data'
}
_ENCODE_CHARS = 1 << 21  # text handed to the tokenizer per batch: bounds memory when streaming
_SPLITS = ('train', 'val')
_NAMED = ('stdlib', 'shakespeare')


class DataError(ValueError):
  """A corpus or prepared dataset can't be used; the message says what to do."""


class DataNotFoundError(DataError, FileNotFoundError):
  """A corpus path or prepared dataset does not exist."""


# --------------------------------------------------------------------------- splits


def split_text(text: str, val_percent: int) -> tuple[str, str]:
  """(train, val) of a single document: the last val_percent % of it, from a line start."""
  cut = len(text) * (100 - val_percent) // 100
  newline = text.find('\n', cut)
  if 0 <= newline < len(text) - 1:  # a later line start exists; otherwise cut mid-line
    cut = newline + 1
  return text[:cut], text[cut:]


def val_mask(keys: Iterable[str], val_percent: int) -> np.ndarray:
  """Which documents are held out: a stable hash of each key, so adding, removing or
  reordering documents never moves another one between splits."""
  hashes = np.fromiter((zlib.crc32(k.encode()) for k in keys), dtype=np.int64)
  mask = hashes % 100 < val_percent
  if len(hashes) >= 2 and (mask.all() or not mask.any()):
    # Too few documents for the threshold to pick a proper subset: hold out the one with
    # the smallest hash, so both splits are nonempty (still independent of order).
    mask = np.arange(len(hashes)) == hashes.argmin()
  return mask


def split_files(rel_paths: Sequence[str], val_percent: int) -> tuple[list[str], list[str]]:
  mask = val_mask(rel_paths, val_percent)
  return ([p for p, v in zip(rel_paths, mask) if not v], [p for p, v in zip(rel_paths, mask) if v])


# --------------------------------------------------------------------------- corpora


@dataclass
class _Source:
  description: str
  train: Iterable[str]  # documents, read lazily where possible
  val: Iterable[str]
  n_bytes: int | None  # approximate total size, for the progress bar's ETA


def list_files(
    root: Path, suffixes: Sequence[str] = TEXT_SUFFIXES,
    skip_dirs: Container[str] = frozenset()) -> list[str]:
  """Relative posix paths of the text files under root, sorted (hidden dirs skipped)."""
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames if not d.startswith('.') and d not in skip_dirs]
    rel = Path(dirpath).relative_to(root)
    found += [(rel / f).as_posix() for f in filenames if f.endswith(tuple(suffixes))]
  return sorted(found)


def stdlib_files() -> tuple[Path, list[str]]:
  root = Path(sysconfig.get_paths()['stdlib'])
  files = list_files(root, ('.py',), _STDLIB_SKIP_DIRS)
  return root, [
      f for f in files
      if not f.startswith('config-') and not Path(f).name.startswith('_sysconfigdata')
  ]


def _read(path: Path) -> str:
  """A file's text. Text mode translates \r\n to \n, as the Hugging Face text loader does.
  Bytes that are not UTF-8 are kept as surrogate escapes (U+DC80..U+DCFF): the byte tokenizer
  turns them back into the very bytes, a text tokenizer sees U+FFFD; either way it is said."""
  text = path.read_text(encoding='utf-8', errors='surrogateescape')
  undecodable = sum(1 for c in text if '\udc80' <= c <= '\udcff')
  if undecodable:
    logging.warning(
        '%s: %d bytes are not UTF-8 (a binary file, or another encoding?): the bytes '
        'tokenizer keeps them, a text tokenizer reads each as U+FFFD', path, undecodable)
  return text


def _file_source(path: Path, val_percent: int, description: str) -> _Source:
  train, val = split_text(_read(path), val_percent)
  return _Source(description, [train], [val], path.stat().st_size)


def _files_source(root: Path, files: list[str], val_percent: int, description: str) -> _Source:
  if len(files) == 1:
    return _file_source(root / files[0], val_percent, description)
  train, val = split_files(files, val_percent)
  return _Source(description, (_read(root / f) for f in train), (_read(root / f) for f in val),
                 sum((root / f).stat().st_size for f in files))


def _existing(path: str) -> Path:
  resolved = Path(path).expanduser().resolve()
  if not resolved.exists():
    raise DataNotFoundError(
        f"corpus path {resolved} does not exist; pass a text file, a directory, 'stdlib', "
        "'shakespeare' or 'hf:NAME[:CONFIG]'")
  return resolved


def _local_files(path: Path) -> tuple[Path, list[str]]:
  if path.is_file():
    return path.parent, [path.name]
  files = list_files(path)
  if not files:
    raise DataError(f"no {'/'.join(TEXT_SUFFIXES)} files under {path}")
  return path, files


def _content_stamp(path: Path) -> str:
  """The size and modification time of every file a local corpus reads: editing, adding or
  removing a file gives the corpus another prepared directory, so stale tokens are never reused
  (hashing the contents would re-read a large corpus at every start)."""
  root, files = _local_files(path)
  stamps = [(f, st.st_size, st.st_mtime_ns) for f in files for st in [(root / f).stat()]]
  return json.dumps(stamps)


def _download_shakespeare(cache_dir: Path) -> Path:
  path = cache_dir / 'tinyshakespeare.txt'
  if path.exists():
    return path
  cache_dir.mkdir(parents=True, exist_ok=True)
  try:
    with urllib.request.urlopen(SHAKESPEARE_URL, timeout=30) as response:
      text = response.read()
  except OSError as e:
    raise DataError(
        f"could not download tiny-shakespeare from {SHAKESPEARE_URL} ({e}); corpus "
        "'shakespeare' needs a network; or pass a local text file as the corpus") from None
  tmp = path.with_suffix(f'.tmp{os.getpid()}')
  tmp.write_bytes(text)
  tmp.replace(path)
  return path


def _hf_source(name: str, config: str | None, val_percent: int, **load_kwargs) -> _Source:
  try:
    import datasets  # optional dependency, imported only for 'hf:' corpora
  except ImportError:
    raise DataError("'hf:' corpora need the Hugging Face datasets package: "
                    "pip install datasets") from None
  label = name if config is None else f'{name}:{config}'
  try:
    splits = datasets.load_dataset(name, config, **load_kwargs)
  except Exception as e:  # network, unknown name or config, ...: all mean the same to a user
    reason = (str(e).strip().splitlines() or [''])[0]
    raise DataError(f'could not load Hugging Face dataset {label!r}: '
                    f'{type(e).__name__}: {reason}') from None
  if 'train' not in splits or 'text' not in splits['train'].column_names:
    raise DataError(f"Hugging Face dataset {label!r} needs a 'train' split with a 'text' "
                    f"column; it has {dict(splits.column_names)}")
  train = splits['train'].select_columns(['text'])
  n_bytes = train.data.nbytes  # Arrow buffer size: close to the text's UTF-8 size

  def rows(ds) -> Iterator[str]:
    for batch in ds.iter(batch_size=1024):
      yield from batch['text']

  if 'validation' in splits:
    val = splits['validation'].select_columns(['text'])
    n_bytes += val.data.nbytes
    description = f'Hugging Face {label}, splits train/validation'
  elif len(train) == 1:  # one document, e.g. 'hf:text:FILE': split like a local text file
    head, tail = split_text(train[0]['text'], val_percent)
    return _Source(f'Hugging Face {label}, one document split by text', [head], [tail], n_bytes)
  else:
    mask = val_mask((str(i) for i in range(len(train))), val_percent)
    train, val = train.select(np.flatnonzero(~mask)), train.select(np.flatnonzero(mask))
    description = f'Hugging Face {label}, rows held out by hash of index'
  return _Source(description, rows(train), rows(val), n_bytes)


def _hf_text_source(path: Path, val_percent: int, cache_dir: Path) -> _Source:
  # The file-level split is decided here, before loading, so a directory gets exactly the
  # split that the plain local-path corpus gets; one document per file, like _read.
  root, files = _local_files(path)
  if len(files) == 1:
    data_files = {'train': [str(root / files[0])]}
  else:
    train, val = split_files(files, val_percent)
    data_files = {
        'train': [str(root / f) for f in train], 'validation': [str(root / f) for f in val]
    }
  return _hf_source('text', None, val_percent, data_files=data_files, sample_by='document',
                    encoding_errors='replace', cache_dir=str(cache_dir / 'hf'))


def canonical_corpus(corpus: str) -> str:
  """The corpus spec with local paths made absolute (so it names the same data anywhere)."""
  if corpus in _NAMED:
    return corpus
  if corpus.startswith('hf:text:'):
    return 'hf:text:' + str(Path(corpus[len('hf:text:'):]).expanduser().resolve())
  if corpus.startswith('hf:'):
    return corpus
  return str(Path(corpus).expanduser().resolve())


def _source(corpus: str, val_percent: int, cache_dir: Path) -> _Source:
  if corpus == 'stdlib':
    root, files = stdlib_files()
    return _files_source(
        root, files, val_percent, f'Python {platform.python_version()} standard library at {root}, '
        f'{len(files)} .py files')
  if corpus == 'shakespeare':
    return _file_source(_download_shakespeare(cache_dir), val_percent,
                        f'tiny-shakespeare ({SHAKESPEARE_URL})')
  if corpus.startswith('hf:text:'):
    return _hf_text_source(_existing(corpus[len('hf:text:'):]), val_percent, cache_dir)
  if corpus.startswith('hf:'):
    name, _, config = corpus[len('hf:'):].partition(':')
    return _hf_source(name, config or None, val_percent)
  path = _existing(corpus)
  root, files = _local_files(path)
  description = f'text file {path}' if path.is_file() else f'{len(files)} files under {path}'
  return _files_source(root, files, val_percent, description)


# --------------------------------------------------------------------------- preparation


def token_dtype(n_vocab: int) -> np.dtype:
  return np.dtype(np.uint16 if n_vocab <= 1 << 16 else np.uint32)


def prepared_dir(data_dir: str | os.PathLike, corpus: str, tokenizer_name: str, *,
                 val_percent: int = DEFAULT_VAL_PERCENT, max_bytes: int | None = None) -> Path:
  """Where prepare() puts (corpus, tokenizer, options); readable, and unique per local path and
  per state of its files (see _content_stamp)."""
  spec = canonical_corpus(corpus)
  if spec.startswith('hf:text:') or not spec.startswith('hf:') and spec not in _NAMED:
    path = spec.removeprefix('hf:text:')
    prefix = 'hf_text_' if spec.startswith('hf:text:') else ''
    key = f'{path}\n{_content_stamp(_existing(path))}'
    name = f'{prefix}{Path(path).name}_{zlib.crc32(key.encode()):08x}'
  else:
    name = spec
  name = re.sub(r'[^\w.-]+', '_', name).strip('_')
  if val_percent != DEFAULT_VAL_PERCENT:
    name += f'-val{val_percent}'
  if max_bytes is not None:
    name += f'-max{max_bytes}'
  return Path(data_dir) / f'{name}-{tokenizer_name}'


def _take_bytes(docs: Iterable[str], budget: int) -> Iterator[str]:
  """The first `budget` UTF-8 bytes of the documents, cutting the last one short."""
  for doc in docs:
    if budget <= 0:
      return
    raw = utf8_bytes(doc)
    if len(raw) > budget:
      # Not final: a character cut in half stays in the decoder's buffer, and so is dropped.
      doc = codecs.getincrementaldecoder('utf-8')('surrogateescape').decode(raw[:budget])
    budget -= len(raw)
    yield doc


# A cut after "\n" between two non-space characters leaves the GPT-2 pre-tokenization (and so
# the tokens) unchanged: that "\n" is always a token of its own. Cutting long documents there
# lets a multi-GB text file be tokenized in bounded memory.
_SAFE_CUT = re.compile(r'(?<=\S\n)(?=\S)')


def _pieces(text: str, size: int = _ENCODE_CHARS) -> Iterator[str]:
  start = 0
  while len(text) - start > size and (cut := _SAFE_CUT.search(text, start + size)):
    yield text[start:cut.start()]
    start = cut.start()
  yield text[start:]


def _write_tokens(docs: Iterable[str], tokenizer: Tokenizer, dtype: np.dtype, path: Path,
                  bar: tqdm) -> dict:
  """Tokenize documents into `path`, each followed by end-of-text; returns counts."""
  counts = {'tokens': 0, 'bytes': 0, 'documents': 0}

  def pieces() -> Iterator[tuple[str, bool]]:  # (text, ends a document), empty docs dropped
    for doc in docs:
      if doc:
        *body, last = _pieces(doc)
        yield from ((piece, False) for piece in body)
        yield last, True

  def batches() -> Iterator[list[tuple[str, bool]]]:
    batch, chars = [], 0
    for piece in pieces():
      batch.append(piece)
      chars += len(piece[0])
      if chars >= _ENCODE_CHARS:
        yield batch
        batch, chars = [], 0
    if batch:
      yield batch

  eot = np.array([tokenizer.eot_token], dtype)
  # tiktoken releases the GIL while encoding, so threads tokenize in parallel (this is what
  # tiktoken's own encode_batch does); we call the tokenizer's encode so that data and
  # prompts are tokenized identically (e.g. a literal <|endoftext|> is the EOT token).
  with open(path, 'wb') as f, concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
    for batch in batches():
      for (text, ends_doc), ids in zip(batch, pool.map(tokenizer.encode,
                                                       [text for text, _ in batch])):
        tokens = np.asarray(ids, dtype)
        f.write(tokens.tobytes())
        n_bytes = len(utf8_bytes(text))
        counts['tokens'] += len(tokens)
        counts['bytes'] += n_bytes
        if ends_doc:
          f.write(eot.tobytes())
          counts['tokens'] += 1
          counts['documents'] += 1
        bar.update(n_bytes)
  return counts


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # alive, another user's
    return True
  return True


def _remove_dead_temporaries(out: Path) -> None:
  """Token files a killed prepare left half-written (`train.bin.tmp<pid>`, possibly gigabytes);
  a live process's are its work in progress and stay."""
  for path in out.glob('*.bin.tmp*'):
    pid = path.name.rpartition('.tmp')[2]
    if pid.isdigit() and not _pid_alive(int(pid)):
      path.unlink(missing_ok=True)


def prepare(corpus: str, tokenizer_name: str, data_dir: str | os.PathLike, *,
            val_percent: int = DEFAULT_VAL_PERCENT, max_bytes: int | None = None,
            progress: bool = True) -> Path:
  """Tokenize `corpus` once; returns the directory holding train.bin, val.bin, meta.json.

  A present meta.json means a finished preparation (it is written last), so a second call
  returns at once. `max_bytes` caps the text used (split between train and val in the
  val_percent ratio, taking documents in order) to keep tiny runs tiny.
  """
  if not 0 < val_percent < 100:
    raise DataError(f'val_percent must be in 1..99, got {val_percent}')
  spec = canonical_corpus(corpus)
  out = prepared_dir(data_dir, corpus, tokenizer_name, val_percent=val_percent, max_bytes=max_bytes)
  request = {
      'corpus': spec, 'tokenizer': tokenizer_name, 'val_percent': val_percent,
      'max_bytes': max_bytes
  }
  if (out / 'meta.json').exists():
    meta = read_meta(out)
    if any(meta.get(k) != v for k, v in request.items()):
      raise DataError(f"{out} holds another preparation ({meta.get('corpus')}, "
                      f"{meta.get('tokenizer')}); delete it or use another data_dir")
    return out

  tokenizer = get_tokenizer(tokenizer_name)
  dtype = token_dtype(tokenizer.n_vocab)
  source = _source(spec, val_percent, Path(data_dir) / 'cache')
  val_budget = None if max_bytes is None else max(1, max_bytes * val_percent // 100)
  budgets = {'train': None if max_bytes is None else max_bytes - val_budget, 'val': val_budget}
  total = source.n_bytes if max_bytes is None else min(source.n_bytes or max_bytes, max_bytes)

  out.mkdir(parents=True, exist_ok=True)
  _remove_dead_temporaries(out)
  tmp = {split: out / f'{split}.bin.tmp{os.getpid()}' for split in _SPLITS}
  counts = {}
  try:
    with tqdm(total=total, unit='B', unit_scale=True, disable=not progress,
              desc=f'tokenizing {corpus} ({tokenizer_name})') as bar:
      for split, docs in (('train', source.train), ('val', source.val)):
        if budgets[split] is not None:
          docs = _take_bytes(docs, budgets[split])
        counts[split] = _write_tokens(docs, tokenizer, dtype, tmp[split], bar)
        if counts[split]['bytes'] == 0:
          raise DataError(f'the {split} split of corpus {corpus!r} is empty; '
                          'use a larger corpus or max_bytes')
    for split in _SPLITS:
      tmp[split].replace(out / f'{split}.bin')
  finally:
    for path in tmp.values():
      path.unlink(missing_ok=True)
  write_json_atomic(
      out / 'meta.json', {
          **request,
          'source': source.description,
          'n_vocab': tokenizer.n_vocab,
          'eot_token': tokenizer.eot_token,
          'dtype': dtype.name,
          'splits': counts,
      })
  return out


def read_meta(prepared: str | os.PathLike) -> dict:
  path = Path(prepared) / 'meta.json'
  if not path.exists():
    raise DataNotFoundError(
        f'no prepared data at {Path(prepared)} (meta.json missing); run '
        'gptjax.data.prepare(corpus, tokenizer, data_dir) first, or train, which prepares it')
  return json.loads(path.read_text())


def load_split(prepared: str | os.PathLike, split: str) -> np.memmap:
  """A split's tokens, memory-mapped: nothing is read until a batch needs it."""
  if split not in _SPLITS:
    raise DataError(f"unknown split {split!r}; allowed: {', '.join(_SPLITS)}")
  meta = read_meta(prepared)
  return np.memmap(Path(prepared) / f'{split}.bin', dtype=meta['dtype'], mode='r')


def bytes_per_token(prepared: str | os.PathLike, split: str) -> float:
  """UTF-8 bytes of text per token (end-of-text tokens count, carry no bytes), so that
  bits_per_byte = loss_in_nats / ln(2) / bytes_per_token."""
  counts = read_meta(prepared)['splits'][split]
  return counts['bytes'] / counts['tokens']


# --------------------------------------------------------------------------- batches


def _windows(tokens, offsets: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
  # One slice per row: a memmap reads only these windows' pages, never the whole file.
  rows = np.stack([np.asarray(tokens[o:o + seq_len + 1]) for o in offsets]).astype(np.int32)
  return rows[:, :-1], rows[:, 1:]  # [B, T] inputs, [B, T] targets = inputs shifted by one


def _check(tokens, seq_len: int, process_index: int, process_count: int) -> None:
  if len(tokens) < seq_len + 1:
    raise DataError(f'split has {len(tokens)} tokens; need at least seq_len + 1 = '
                    f'{seq_len + 1}; use a larger corpus or a shorter block_size')
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')


def get_batch(tokens, *, seed: int, step: int, batch_size: int, seq_len: int,
              process_index: int = 0, process_count: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """(inputs, targets), int32 [batch_size, seq_len], of random windows for this step.

  Offsets for the whole global batch (process_count * batch_size rows) are drawn from
  (seed, step) alone and each process takes its own slice of rows. So the batch is a pure
  function of (seed, step, process): resume needs only the step, and the global batch is the
  same whether one process or several load it.
  """
  _check(tokens, seq_len, process_index, process_count)
  rng = np.random.default_rng([seed, int(step)])
  offsets = rng.integers(0, len(tokens) - seq_len, size=process_count * batch_size)
  return _windows(tokens, offsets[process_index * batch_size:][:batch_size], seq_len)


def eval_batches(tokens, *, batch_size: int, seq_len: int, n_batches: int, process_index: int = 0,
                 process_count: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
  """The same n_batches every evaluation: windows evenly spaced over the whole split (so the
  estimate covers all of it, not a random corner), each global batch sliced per process."""
  _check(tokens, seq_len, process_index, process_count)
  global_batch = process_count * batch_size
  offsets = np.linspace(0, len(tokens) - seq_len - 1, n_batches * global_batch)
  offsets = offsets.round().astype(np.int64).reshape(n_batches, global_batch)
  mine = offsets[:, process_index * batch_size:][:, :batch_size]
  return [_windows(tokens, row, seq_len) for row in mine]
