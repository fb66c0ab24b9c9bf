import logging
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from gptjax import data
from gptjax.tokenizer import EOT_TEXT, get_tokenizer

pytestmark = pytest.mark.usefixtures('no_network')  # nothing here may download

NO_DATASETS = "the 'hf:' corpora need the optional package: pip install datasets"
TEXT = ''.join(f'line {i}: the quick brown fox — naïve café 😀 {i * i}\n' for i in range(300))


def decode_docs(prepared: Path, split: str) -> list[str]:
  """A split's documents, decoded (each document ends with end-of-text)."""
  meta = data.read_meta(prepared)
  text = get_tokenizer(meta['tokenizer']).decode(data.load_split(prepared, split))
  assert text.endswith(EOT_TEXT)
  return text.split(EOT_TEXT)[:-1]


def write_corpus_dir(root: Path, n_files: int = 40) -> dict[str, str]:
  texts = {
      f'sub{i % 3}/doc{i:02d}.txt': f'document {i}\n' + 'words here\n' * (i + 1)
      for i in range(n_files)
  }
  for rel, text in texts.items():
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)
  (root / '.git').mkdir()
  (root / '.git' / 'ignored.txt').write_text('hidden dirs are skipped')
  (root / 'binary.bin').write_bytes(b'\x00\x01 not a text suffix')
  return texts


# --------------------------------------------------------------------------- splits


def test_stdlib_file_list_is_deterministic_and_split_is_stable():
  root, files = data.stdlib_files()
  assert (root, files) == data.stdlib_files()
  assert files == sorted(files) and len(files) > 100
  assert 'os.py' in files and 'json/decoder.py' in files
  assert not any(part in {'site-packages', 'test', 'tests'} for f in files
                 for part in Path(f).parts[:-1])
  train, val = data.split_files(files, 5)
  assert val and set(train).isdisjoint(val) and sorted(train + val) == files
  # A file's split depends on its path only: not on the order or the other files.
  assert data.split_files(files[::-1], 5)[1] == val[::-1]
  assert data.split_files(files[::3], 5)[1] == [f for f in val if f in set(files[::3])]


def test_few_files_still_give_both_splits():
  for keys in (['a.txt', 'b.txt'], ['x.md', 'y.md', 'z.md']):
    mask = data.val_mask(keys, 5)
    assert mask.sum() == 1


def test_split_text_cuts_at_a_line_boundary():
  train, val = data.split_text(TEXT, 10)
  assert train + val == TEXT
  assert train.endswith('\n') and val.startswith('line ')
  assert 0.05 < len(val) / len(TEXT) < 0.15


# --------------------------------------------------------------------------- prepare


def test_prepare_stdlib_bytes_and_reuse(tmp_path, monkeypatch):
  out = data.prepare('stdlib', 'bytes', tmp_path, max_bytes=40_000, progress=False)
  assert out == data.prepared_dir(tmp_path, 'stdlib', 'bytes', max_bytes=40_000)
  assert {p.name for p in out.iterdir()} == {'train.bin', 'val.bin', 'meta.json'}
  meta = data.read_meta(out)
  assert meta['dtype'] == 'uint16' and meta['n_vocab'] == 257 and meta['eot_token'] == 256
  assert meta['corpus'] == 'stdlib' and 'standard library' in meta['source']
  train = data.load_split(out, 'train')
  assert isinstance(train, np.memmap) and train.dtype == np.uint16
  assert meta['splits']['train']['tokens'] == len(train)
  assert sum(s['bytes'] for s in meta['splits'].values()) <= 40_000
  assert meta['splits']['val']['tokens'] > 0

  # The train split is the train files in sorted order, the last one cut at the cap.
  root, files = data.stdlib_files()
  sources = [(root / f).read_text() for f in data.split_files(files, 5)[0][:50]]
  docs = decode_docs(out, 'train')
  assert len(docs) > 1 and docs[:-1] == sources[:len(docs) - 1]
  assert sources[len(docs) - 1].startswith(docs[-1])

  # A second call is a cache hit: nothing is re-read or rewritten.
  mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
  monkeypatch.setattr(data, '_source', lambda *a: pytest.fail('prepared data was rebuilt'))
  assert data.prepare('stdlib', 'bytes', tmp_path, max_bytes=40_000) == out
  assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes


def test_prepare_removes_what_a_killed_prepare_left_but_not_a_live_ones(tmp_path):
  dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                        capture_output=True, text=True, check=True).stdout.strip()
  out = data.prepared_dir(tmp_path, 'stdlib', 'bytes', max_bytes=20_000)
  out.mkdir(parents=True)
  left = out / f'train.bin.tmp{dead}'
  live = out / f'val.bin.tmp{os.getppid()}'  # a process that is running
  left.write_bytes(b'\0' * 100)
  live.write_bytes(b'\0' * 100)
  data.prepare('stdlib', 'bytes', tmp_path, max_bytes=20_000, progress=False)
  assert not left.exists() and live.exists()


def test_prepare_text_file_gpt2_roundtrips(tmp_path):
  path = tmp_path / 'book.txt'
  path.write_text(TEXT)
  out = data.prepare(str(path), 'gpt2', tmp_path / 'data', val_percent=10, progress=False)
  assert data.read_meta(out)['dtype'] == 'uint16'
  assert data.load_split(out, 'train').dtype == np.uint16
  train, val = decode_docs(out, 'train'), decode_docs(out, 'val')
  assert [*train, *val] == list(data.split_text(TEXT, 10))
  assert len(data.load_split(out, 'train')) < len(TEXT) // 2  # really BPE, not bytes


@pytest.mark.parametrize('layout', ['file', 'directory'])
def test_an_edited_local_corpus_is_tokenized_again(tmp_path, layout):
  root = tmp_path / 'corpus'
  texts = write_corpus_dir(root)
  edited = root / max(texts, key=lambda f: len(texts[f]))  # long enough to split by itself
  path = edited if layout == 'file' else root
  prepare = lambda: data.prepare(str(path), 'bytes', tmp_path / 'data', progress=False)
  first = prepare()
  assert prepare() == first  # unchanged: reused
  before = edited.stat()
  edited.write_text(edited.read_text().replace('words', 'WORDS', 1))  # the same size
  os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
  second = prepare()
  assert second != first and (first / 'meta.json').exists()  # the old tokens are kept
  docs = lambda out: decode_docs(out, 'train') + decode_docs(out, 'val')
  assert any('WORDS' in doc for doc in docs(second))
  assert not any('WORDS' in doc for doc in docs(first))
  (root / 'added.txt').write_text('another document\n')
  # A file added to a directory corpus is new content; next to a file corpus it is not.
  assert (prepare() == second) == (layout == 'file')


def test_a_non_utf8_corpus_keeps_its_bytes_for_the_byte_tokenizer_and_says_so(tmp_path, caplog):
  raw = ''.join(f'caf\xe9 line {i}\n' for i in range(300)).encode('latin-1') + b'\x00\xff\n'
  path = tmp_path / 'latin1.txt'
  path.write_bytes(raw)
  with caplog.at_level(logging.WARNING):
    out = data.prepare(str(path), 'bytes', tmp_path / 'data', progress=False)
  assert f'{path}: 301 bytes are not UTF-8' in caplog.text
  ids = np.concatenate([data.load_split(out, 'train'), data.load_split(out, 'val')])
  assert bytes(ids[ids < 256].astype(np.uint8)) == raw  # every byte, none turned into U+FFFD
  assert sum(s['bytes'] for s in data.read_meta(out)['splits'].values()) == len(raw)

  caplog.clear()
  with caplog.at_level(logging.WARNING):
    out = data.prepare(str(path), 'gpt2', tmp_path / 'data', progress=False)
  assert '301 bytes are not UTF-8' in caplog.text
  text = ''.join(decode_docs(out, 'train') + decode_docs(out, 'val'))
  assert text.count('\ufffd') == 301 and text.startswith('caf\ufffd line 0\n')


def test_prepare_directory_uses_file_level_split(tmp_path):
  texts = write_corpus_dir(tmp_path / 'corpus')
  out = data.prepare(str(tmp_path / 'corpus'), 'bytes', tmp_path / 'data', progress=False)
  train_files, val_files = data.split_files(sorted(texts), 5)
  assert val_files and train_files
  assert decode_docs(out, 'train') == [texts[f] for f in train_files]
  assert decode_docs(out, 'val') == [texts[f] for f in val_files]
  meta = data.read_meta(out)
  assert meta['splits']['val']['documents'] == len(val_files)
  # bytes per token: every byte is a token, plus one end-of-text per document.
  n_bytes = sum(len(texts[f].encode()) for f in val_files)
  assert data.bytes_per_token(out, 'val') == n_bytes / (n_bytes + len(val_files))


def test_dtype_follows_vocab_size(tmp_path, monkeypatch):
  assert data.token_dtype(257) == np.uint16
  assert data.token_dtype(50257) == np.uint16
  assert data.token_dtype(65536) == np.uint16
  assert data.token_dtype(65537) == np.uint32
  assert data.token_dtype(70000) == np.uint32

  class BigVocab:  # ids above 65535 must survive the round trip
    name, n_vocab, eot_token = 'big', 70000, 69999

    def encode(self, text):
      return [65536 + ord(c) % 1000 for c in text]

  monkeypatch.setattr(data, 'get_tokenizer', lambda name: BigVocab())
  (tmp_path / 'a.txt').write_text(TEXT)
  out = data.prepare(str(tmp_path / 'a.txt'), 'big', tmp_path / 'data', progress=False)
  tokens = data.load_split(out, 'train')
  assert data.read_meta(out)['dtype'] == 'uint32' and tokens.dtype == np.uint32
  assert tokens[0] == 65536 + ord('l') and tokens[-1] == 69999


@pytest.mark.parametrize('source', ['prose', 'code'])
def test_long_documents_are_cut_without_changing_gpt2_tokens(source):
  root, _ = data.stdlib_files()
  text = TEXT + '  \n\n\t x\n \ny' if source == 'prose' else (root / 'argparse.py').read_text()
  pieces = list(data._pieces(text, size=500))
  assert len(pieces) > 3 and ''.join(pieces) == text
  gpt2 = get_tokenizer('gpt2')
  assert [t for p in pieces for t in gpt2.encode(p)] == gpt2.encode(text)


def test_hf_text_loader_matches_local_path(tmp_path, monkeypatch):
  pytest.importorskip('datasets', reason=NO_DATASETS)
  monkeypatch.setenv('HF_DATASETS_OFFLINE', '1')
  (tmp_path / 'book.txt').write_text(TEXT)
  write_corpus_dir(tmp_path / 'corpus', n_files=12)
  for name in ('book.txt', 'corpus'):
    path = str(tmp_path / name)
    local = data.prepare(path, 'gpt2', tmp_path / 'data', progress=False)
    hf = data.prepare(f'hf:text:{path}', 'gpt2', tmp_path / 'data', progress=False)
    assert hf != local
    for split in ('train', 'val'):
      assert (hf / f'{split}.bin').read_bytes() == (local / f'{split}.bin').read_bytes()
    assert data.read_meta(hf)['splits'] == data.read_meta(local)['splits']


@pytest.mark.parametrize('with_validation', [False, True])
def test_hf_dataset_splits(tmp_path, monkeypatch, with_validation):
  datasets = pytest.importorskip('datasets', reason=NO_DATASETS)
  rows = [f'story {i}: once upon a time' for i in range(60)]
  splits = {'train': datasets.Dataset.from_dict({'text': rows, 'id': list(range(60))})}
  if with_validation:
    splits['validation'] = datasets.Dataset.from_dict({'text': ['the end', 'fin']})
  monkeypatch.setattr(datasets, 'load_dataset',
                      lambda name, config, **kw: datasets.DatasetDict(splits))
  out = data.prepare('hf:user/stories:small', 'bytes', tmp_path, progress=False)
  assert out.name == 'hf_user_stories_small-bytes'
  if with_validation:
    assert decode_docs(out, 'train') == rows and decode_docs(out, 'val') == ['the end', 'fin']
  else:  # rows held out by a stable hash of their index
    mask = data.val_mask([str(i) for i in range(60)], 5)
    assert 0 < mask.sum() < 60
    assert decode_docs(out, 'val') == [r for r, v in zip(rows, mask) if v]
    assert decode_docs(out, 'train') == [r for r, v in zip(rows, mask) if not v]


# --------------------------------------------------------------------------- batches


@pytest.fixture
def tokens(tmp_path):
  path = tmp_path / 'tokens.bin'
  np.arange(10_000, dtype=np.uint16).tofile(path)
  return np.memmap(path, dtype=np.uint16, mode='r')


def test_get_batch_is_a_pure_function_of_seed_and_step(tokens):
  kw = dict(batch_size=8, seq_len=16)
  x, y = data.get_batch(tokens, seed=0, step=3, **kw)
  assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == np.int32
  np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # targets are inputs shifted by one
  np.testing.assert_array_equal(y[:, -1], x[:, -1] + 1)
  assert 0 <= x.min() and y.max() < len(tokens)
  again = data.get_batch(tokens, seed=0, step=3, **kw)
  np.testing.assert_array_equal(again[0], x)
  assert not np.array_equal(data.get_batch(tokens, seed=0, step=4, **kw)[0], x)
  assert not np.array_equal(data.get_batch(tokens, seed=1, step=3, **kw)[0], x)


def test_process_slices_make_up_the_single_process_batch(tokens):
  kw = dict(seed=7, step=11, seq_len=32)
  whole = data.get_batch(tokens, batch_size=8, **kw)
  parts = [
      data.get_batch(tokens, batch_size=4, process_index=i, process_count=2, **kw) for i in range(2)
  ]
  for j in range(2):
    np.testing.assert_array_equal(np.concatenate([p[j] for p in parts]), whole[j])


class WindowOnly:
  """Token array stand-in that fails if more than one window is read at once."""
  def __init__(self, tokens, max_read):
    self.tokens, self.max_read, self.reads = tokens, max_read, 0

  def __len__(self):
    return len(self.tokens)

  def __getitem__(self, index):
    assert isinstance(index, slice), f'non-window read {index!r}'
    assert len(range(*index.indices(len(self)))) <= self.max_read, f'big read {index}'
    self.reads += 1
    return self.tokens[index]

  def __array__(self, *args, **kwargs):
    raise AssertionError('the whole token array was materialised')


def test_batches_read_only_the_windows_they_need(tokens):
  guarded = WindowOnly(tokens, max_read=17)
  data.get_batch(guarded, seed=0, step=0, batch_size=4, seq_len=16)
  data.eval_batches(guarded, batch_size=4, seq_len=16, n_batches=3)
  assert guarded.reads == 4 + 12


def test_get_batch_keeps_memory_flat(tmp_path):
  path = tmp_path / 'big.bin'
  np.zeros(8 << 20, np.uint16).tofile(path)  # 16 MiB
  tokens = np.memmap(path, dtype=np.uint16, mode='r')
  # tracemalloc sees numpy's allocations but not the memmap's file pages (page cache the
  # kernel can drop): a copy of the file, even a transient one, shows up in the peak.
  tracemalloc.start()
  try:
    for step in range(1000):
      data.get_batch(tokens, seed=0, step=step, batch_size=4, seq_len=16)
    current, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert peak < 1 << 20 and current < 1 << 20


def test_eval_batches_are_fixed_and_cover_the_split(tokens):
  kw = dict(batch_size=4, seq_len=16, n_batches=5)
  batches = data.eval_batches(tokens, **kw)
  assert len(batches) == 5
  for (x, y), (x2, _) in zip(batches, data.eval_batches(tokens, **kw)):
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
  assert batches[0][0][0, 0] == 0 and batches[-1][1][-1, -1] == len(tokens) - 1
  parts = [data.eval_batches(tokens, process_index=i, process_count=2, **kw) for i in range(2)]
  whole = data.eval_batches(tokens, **{**kw, 'batch_size': 8})
  for b in range(5):
    np.testing.assert_array_equal(np.concatenate([p[b][0] for p in parts]), whole[b][0])


def test_too_short_split_is_a_clear_error(tokens):
  with pytest.raises(data.DataError, match='need at least seq_len'):
    data.get_batch(tokens[:10], seed=0, step=0, batch_size=2, seq_len=16)


# --------------------------------------------------------------------------- errors


def one_line(excinfo) -> str:
  message = str(excinfo.value)
  assert '\n' not in message
  return message


def test_missing_corpus_path_is_a_one_line_error(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    data.prepare(str(tmp_path / 'nope.txt'), 'bytes', tmp_path / 'data', progress=False)
  assert str(tmp_path / 'nope.txt') in one_line(e)
  assert not (tmp_path / 'data').exists() or not any((tmp_path / 'data').rglob('*.bin'))


def test_missing_prepared_dir_says_what_to_run(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    data.load_split(tmp_path / 'stdlib-bytes', 'train')
  assert 'prepare' in one_line(e) and str(tmp_path / 'stdlib-bytes') in one_line(e)


def test_shakespeare_without_network_is_a_one_line_error(tmp_path):
  with pytest.raises(data.DataError) as e:
    data.prepare('shakespeare', 'bytes', tmp_path, progress=False)
  assert 'network' in one_line(e) and 'local text file' in one_line(e)


def test_shakespeare_uses_the_downloaded_copy(tmp_path):
  (tmp_path / 'cache').mkdir()
  (tmp_path / 'cache' / 'tinyshakespeare.txt').write_text(TEXT)
  out = data.prepare('shakespeare', 'bytes', tmp_path, progress=False)
  assert ''.join(decode_docs(out, 'train') + decode_docs(out, 'val')) == TEXT


def test_hf_corpus_without_datasets_is_a_one_line_error(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, 'datasets', None)  # makes `import datasets` fail
  with pytest.raises(data.DataError) as e:
    data.prepare('hf:roneneldan/TinyStories', 'bytes', tmp_path, progress=False)
  assert 'pip install datasets' in one_line(e)


def test_hf_load_failure_is_a_one_line_error(tmp_path, monkeypatch):
  datasets = pytest.importorskip('datasets', reason=NO_DATASETS)

  def offline(*args, **kwargs):  # what the Hub client raises without a network, minus retries
    raise ConnectionError("Couldn't reach 'user/data' on the Hub (OfflineModeIsEnabled)\nmore")

  monkeypatch.setattr(datasets, 'load_dataset', offline)
  with pytest.raises(data.DataError) as e:
    data.prepare('hf:user/data:config', 'bytes', tmp_path, progress=False)
  assert "'user/data:config'" in one_line(e) and "Couldn't reach" in one_line(e)


def test_unknown_split_is_an_error(tmp_path):
  (tmp_path / 'a.txt').write_text(TEXT)
  out = data.prepare(str(tmp_path / 'a.txt'), 'bytes', tmp_path / 'data', progress=False)
  with pytest.raises(data.DataError, match='allowed: train, val'):
    data.load_split(out, 'test')
