"""Look inside a model: tokens, parameters, attention, the residual stream, the next-token choice.

  python -m gptjax.analysis params     --config=configs/tiny.py
  python -m gptjax.analysis tokens     --config=configs/tiny.py --text="Hello, world!"
  python -m gptjax.analysis next       --workdir=runs/small --prompt="def " --top_k=5 --steps=10
  python -m gptjax.analysis attention  --workdir=runs/small --prompt="import os"
  python -m gptjax.analysis layers     --workdir=runs/small --prompt="def " --positions=last
  python -m gptjax.analysis embeddings --hf=path/to/gpt2 --words=dog,cat,car
  python -m gptjax.analysis kvcache    --config=configs/gpt124m.py --batch=8 --context=1024

The model comes from a training run (--workdir, --step), Hugging Face weights (--hf) or a config
file (--config: random weights, so the pictures show an untrained model), loaded by the same
gptjax.loading.load_model as sample.py. Tables go to stdout; pictures are PNGs in --out_dir
(default: WORKDIR/analysis for --workdir, else the current directory).

Each subcommand is a pure function that computes the numbers (what the tests check) and a small
printer or plotter around it.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from gptjax import cli
from gptjax.config import ModelConfig
from gptjax.files import file_in_the_way
from gptjax.flops import count_params, format_param_table
from gptjax.loading import LoadedModel, load_model
from gptjax.model import GPT, forward_with_intermediates, kv_cache_bytes
from gptjax.sampling import fit_prompt, generate, mask_vocab
from gptjax.tables import format_bytes, text_table
from gptjax.text import encode_prompt
from gptjax.tokenizer import Tokenizer

DEFAULT_TEXT = 'Hello, world! Tokenizers split "unbelievably" long words: 12345 + 678.'
DEFAULT_PROMPT = 'The quick brown fox jumps over the'
DEFAULT_WORDS = 'dog,cat,car,truck,king,queen'

# ---------------------------------------------------------------------------------------------
# Numbers and tokens as table cells


def _prob(p: float) -> str:
  return f'{p:.4f}' if p >= 1e-3 else f'{p:.2e}'


def token_text(tokenizer: Tokenizer, token: int, width: int = 16) -> str:
  """A token as a short quoted string (repr shows its spaces and newlines)."""
  text = repr(tokenizer.decode([token]))
  return text if len(text) <= width else text[:width - 4] + '...' + text[-1]


# ---------------------------------------------------------------------------------------------
# Jitted model calls (cfg is static: a frozen, hashable dataclass)


@functools.partial(jax.jit, static_argnums=0)
def _logits(cfg: ModelConfig, params, tokens):
  return GPT(cfg).apply({'params': params}, tokens)


_intermediates = jax.jit(forward_with_intermediates, static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def _head(cfg: ModelConfig, params, residual):
  return GPT(cfg).apply({'params': params}, residual, method=GPT.head)


def encode(model: LoadedModel, text: str, new_tokens: int = 1) -> list[int]:
  """The prompt's tokens, fitted to the context with room for new_tokens more; learned positions
  end at block_size, so a longer prompt keeps only its last tokens (with a warning)."""
  tokens, warning = fit_prompt(model.cfg, encode_prompt(text, model.tokenizer), new_tokens,
                               truncate=True)
  if warning:
    print(f'warning: {warning}', file=sys.stderr)
  return tokens


# ---------------------------------------------------------------------------------------------
# params: where the parameters and the FLOPs are


class ParamSummary(NamedTuple):
  total: int  # as stored: a tied embedding counted once
  embeddings: int  # wte + wpe
  tied: bool
  untied_total: int  # with a separate V x C LM head
  tied_total: int  # with the LM head sharing wte


def param_summary(cfg: ModelConfig, params) -> ParamSummary:
  total = count_params(params)
  embeddings = count_params(params['wte']) + count_params(params.get('wpe', {}))
  head = cfg.vocab_size * cfg.d_model
  untied = total + head if cfg.tie_embeddings else total
  return ParamSummary(total, embeddings, cfg.tie_embeddings, untied, untied - head)


def show_params(model: LoadedModel) -> str:
  """The per-module table with totals and FLOPs/token (flops.format_param_table), and what
  tying the LM head to the token embedding saves."""
  s = param_summary(model.cfg, model.params)
  rows = [('tied (LM head = wte, stored once)', f'{s.tied_total:,}',
           '<- this model' if s.tied else ''),
          ('untied (own LM head)', f'{s.untied_total:,}', '' if s.tied else '<- this model')]
  return '\n\n'.join([
      format_param_table(model.params, model.cfg),
      text_table(('LM head', 'total params', ''), rows, 'lrl')
  ])


# ---------------------------------------------------------------------------------------------
# tokens: how text becomes ids


class TokenRow(NamedTuple):
  index: int
  id: int
  bytes: bytes
  text: str


def token_rows(tokenizer: Tokenizer, text: str) -> list[TokenRow]:
  return [
      TokenRow(i, t, tokenizer.token_bytes(t), tokenizer.decode([t]))
      for i, t in enumerate(tokenizer.encode(text))
  ]


def show_tokens(model: LoadedModel, text: str) -> str:
  rows = token_rows(model.tokenizer, text)
  table = text_table(('index', 'id', 'bytes', 'text'),
                     [(r.index, r.id, repr(r.bytes), repr(r.text)) for r in rows], 'rrll')
  round_trip = model.tokenizer.decode([r.id for r in rows]) == text
  return '\n'.join([
      f'text: {text!r}',
      f'{len(rows)} tokens ({model.tokenizer.name} tokenizer) for {len(text)} characters, '
      f'{len(text.encode("utf-8"))} bytes; decoding the ids gives the text back: '
      f'{"yes" if round_trip else "no"}', '', table
  ])


# ---------------------------------------------------------------------------------------------
# next: logits -> softmax -> a choice


class NextToken(NamedTuple):
  logits: np.ndarray  # [V] float32, the model's scores for the next token
  probs: np.ndarray  # [V] softmax of logits over the tokenizer's vocabulary (padding ids: 0)
  top_ids: np.ndarray  # [k] most likely first
  greedy: int  # argmax: what greedy decoding picks


def next_token(cfg: ModelConfig, params, tokens: list[int], top_k: int,
               valid_vocab_size: int) -> NextToken:
  logits = _logits(cfg, params, jnp.asarray([tokens], jnp.int32))[0, -1]
  logits = mask_vocab(logits, valid_vocab_size)
  probs = np.asarray(jax.nn.softmax(logits))
  top_ids = np.asarray(jax.lax.top_k(logits, min(top_k, valid_vocab_size))[1])
  return NextToken(np.asarray(logits), probs, top_ids, int(jnp.argmax(logits)))


def greedy_continuation(cfg: ModelConfig, params, tokens: list[int], steps: int,
                        valid_vocab_size: int) -> list[tuple[int, float]]:
  """(token, probability the model gave it) for each of `steps` greedy (argmax) steps.

  The tokens come from generate (the KV-cache loop); their probabilities from one full forward
  over the prompt and the continuation, reading position t's distribution for token t + 1.
  """
  if steps == 0:
    return []
  new = generate(cfg, params, tokens, max_new_tokens=steps, temperature=0,
                 valid_vocab_size=valid_vocab_size)
  logits = _logits(cfg, params, jnp.asarray([tokens + new[:-1]], jnp.int32))[0, len(tokens) - 1:]
  probs = jax.nn.softmax(mask_vocab(logits, valid_vocab_size), axis=-1)  # [steps, V]
  chosen = np.asarray(probs[jnp.arange(steps), jnp.asarray(new)])
  return [(t, float(p)) for t, p in zip(new, chosen)]


def show_next(model: LoadedModel, prompt: str, top_k: int, steps: int) -> str:
  cfg, tok = model.cfg, model.tokenizer
  tokens = encode(model, prompt, max(steps, 1))  # the next token is read even with no steps
  nxt = next_token(cfg, model.params, tokens, top_k, tok.n_vocab)
  top = nxt.logits[nxt.top_ids[0]]
  z = float(np.exp(nxt.logits[:tok.n_vocab] - top).sum())
  rows = [(rank + 1, i, token_text(tok, i), f'{nxt.logits[i]:.3f}', f'{nxt.logits[i] - top:.3f}',
           _prob(np.exp(nxt.logits[i] - top)), _prob(nxt.probs[i]),
           '<- greedy' if i == nxt.greedy else '') for rank, i in enumerate(nxt.top_ids)]
  table = text_table(('rank', 'id', 'token', 'logit', 'logit-max', 'exp', 'probability', ''), rows,
                     'rrlrrrrl')
  steps_rows = greedy_continuation(cfg, model.params, tokens, steps, tok.n_vocab)
  continuation = text_table(
      ('step', 'id', 'token', 'probability'),
      [(s + 1, t, token_text(tok, t), _prob(p)) for s, (t, p) in enumerate(steps_rows)], 'rrlr')
  text = tok.decode(tokens + [t for t, _ in steps_rows])
  return '\n'.join([
      f'prompt: {tok.decode(tokens)!r} ({len(tokens)} tokens)',
      f"the last position's {tok.n_vocab:,} logits -> softmax: p = exp(logit - max) / Z, "
      f'Z = sum of exp(logit - max) = {z:.4g}; the probabilities sum to {nxt.probs.sum():.6f}', '',
      f'top {len(nxt.top_ids)} next tokens:', table, '',
      f'greedy continuation ({steps} steps, each the argmax, fed back as the next input):',
      continuation, '', f'text: {text!r}'
  ])


# ---------------------------------------------------------------------------------------------
# attention: which earlier tokens each position reads


def attention_maps(cfg: ModelConfig, params, tokens: list[int]) -> np.ndarray:
  """[L, H, T, T] attention probabilities; row t (query) over columns s (keys), causal."""
  _, _, weights = _intermediates(cfg, params, jnp.asarray([tokens], jnp.int32))
  return np.asarray(weights[:, 0])


def save_png(fig, path: str) -> str:
  """Writes and closes the figure, creating its directory (output_dir checked it before)."""
  import matplotlib.pyplot as plt
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def plot_attention(maps: np.ndarray, labels: Sequence[str], path: str) -> str:
  """A layers x heads grid of attention maps; token labels on the outer axes."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  n_layers, n_heads, t, _ = maps.shape
  # Inches per map: room for the labels of short prompts, a readable whole for big models.
  size = max(1.0, min(0.22 * t, 4.0, 48 / max(n_layers, n_heads)))
  fig, axes = plt.subplots(n_layers, n_heads, figsize=(size * n_heads + 1, size * n_layers + 1),
                           squeeze=False)
  font = max(4, min(9, 160 // max(t, 1)))
  for layer in range(n_layers):
    for head in range(n_heads):
      ax = axes[layer, head]
      ax.imshow(maps[layer, head], cmap='viridis', vmin=0, vmax=1)
      ax.set_xticks(range(t), labels if layer == n_layers - 1 else [''] * t, rotation=90,
                    fontsize=font)
      ax.set_yticks(range(t), labels if head == 0 else [''] * t, fontsize=font)
      ax.set_title(f'layer {layer} head {head}', fontsize=8)
  fig.supxlabel('key (attended to)')
  fig.supylabel('query (attending)')
  return save_png(fig, path)


def show_attention(model: LoadedModel, prompt: str, out_dir: str) -> str:
  tok = model.tokenizer
  tokens = encode(model, prompt)
  maps = attention_maps(model.cfg, model.params, tokens)
  labels = [token_text(tok, t, width=12) for t in tokens]
  path = plot_attention(maps, labels, os.path.join(out_dir, 'attention.png'))
  last = maps[:, :, -1]  # [L, H, T]: what the last position reads
  rows = [(layer, head, labels[int(last[layer, head].argmax())], f'{last[layer, head].max():.3f}')
          for layer in range(maps.shape[0]) for head in range(maps.shape[1])]
  return '\n'.join([
      f'prompt: {len(tokens)} tokens; maps [layers {maps.shape[0]}, heads {maps.shape[1]}, '
      f'query {maps.shape[2]}, key {maps.shape[3]}]: each row sums to 1, zero above the diagonal',
      f'wrote {path}', '', f'where the last token {labels[-1]} looks most:',
      text_table(('layer', 'head', 'key token', 'weight'), rows, 'rrlr')
  ])


# ---------------------------------------------------------------------------------------------
# layers: the residual stream block by block, and the logit lens


class LayerStats(NamedTuple):
  norm: np.ndarray  # [L] L2 norm of the residual vector, averaged over positions
  mean: np.ndarray  # [L] mean of its entries
  std: np.ndarray  # [L] standard deviation of its entries


def layer_statistics(block_outputs: jax.Array) -> LayerStats:
  """Statistics of block_outputs [L, B, T, C] (the residual stream after each block)."""
  x = np.asarray(block_outputs, np.float32)
  return LayerStats(
      np.linalg.norm(x, axis=-1).mean(axis=(1, 2)), x.mean(axis=(1, 2, 3)), x.std(axis=(1, 2, 3)))


def logit_lens(cfg: ModelConfig, params, block_outputs: jax.Array) -> np.ndarray:
  """[L, B, T, V]: each block's residual stream decoded by the final norm and LM head, i.e.
  what the model would predict if it ended after that block. The last block's is the output."""
  return np.asarray(_head(cfg, params, block_outputs))


def show_layers(model: LoadedModel, prompt: str, positions: str) -> str:
  cfg, tok = model.cfg, model.tokenizer
  tokens = encode(model, prompt)
  _, outputs, _ = _intermediates(cfg, model.params, jnp.asarray([tokens], jnp.int32))
  stats = layer_statistics(outputs)
  stats_table = text_table(
      ('block', '|x| (mean over positions)', 'mean', 'std'),
      [(i, f'{stats.norm[i]:.3f}', f'{stats.mean[i]:+.4f}', f'{stats.std[i]:.4f}')
       for i in range(cfg.n_layers)], 'rrrr')
  lens = jax.nn.softmax(
      mask_vocab(jnp.asarray(logit_lens(cfg, model.params, outputs)[:, 0]), tok.n_vocab),
      axis=-1)  # [L, T, V]
  top = np.asarray(lens.argmax(-1))  # [L, T]
  if positions == 'last':
    final = int(top[-1, -1])
    lens_table = text_table(
        ('block', 'top-1', 'p(top-1)', f'p({token_text(tok, final)})'),
        [(i, token_text(tok, int(top[i, -1])), _prob(float(
            lens[i, -1, top[i, -1]])), _prob(float(lens[i, -1, final])))
         for i in range(cfg.n_layers)], 'rlrr')
    where = f'at the last position (after {token_text(tok, tokens[-1])})'
  else:
    header = ['block'] + [f'{t}:{token_text(tok, x, 10)}' for t, x in enumerate(tokens)]
    lens_table = text_table(header, [[i] + [token_text(tok, int(x), 10) for x in top[i]]
                                     for i in range(cfg.n_layers)], 'r' + 'l' * len(tokens))
    where = 'at every position (columns: the input token there; cells: the predicted next one)'
  return '\n'.join([
      f'prompt: {tok.decode(tokens)!r} ({len(tokens)} tokens)', '',
      'residual stream after each block:', stats_table, '',
      f"logit lens: each block's output through the final norm and LM head, top-1 prediction "
      f"{where}; the last block is the model's own output:", lens_table
  ])


# ---------------------------------------------------------------------------------------------
# embeddings: which words the input embedding puts close together


class WordVector(NamedTuple):
  word: str
  tokens: list[int]
  vector: np.ndarray  # [C]: the mean of its tokens' rows of wte


def word_vectors(params, tokenizer: Tokenizer, words: Sequence[str]) -> list[WordVector]:
  wte = np.asarray(params['wte']['embedding'], np.float32)  # [V, C]
  out = []
  for word in words:
    tokens = tokenizer.encode(word)
    if not tokens:
      raise ValueError(f'the word {word!r} encodes to no tokens')
    out.append(WordVector(word, tokens, wte[tokens].mean(axis=0)))
  return out


def cosine_similarity(vectors: np.ndarray) -> np.ndarray:
  """[N, C] -> [N, N]: cos of the angle between every pair of rows."""
  unit = vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)
  return unit @ unit.T


def plot_similarity(similarity: np.ndarray, labels: Sequence[str], path: str) -> str:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  n = len(labels)
  fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n, 0.6 + 0.8 * n))
  image = ax.imshow(similarity, cmap='RdBu_r', vmin=-1, vmax=1)
  ax.set_xticks(range(n), labels, rotation=45, ha='right')
  ax.set_yticks(range(n), labels)
  for i in range(n):
    for j in range(n):
      ax.text(j, i, f'{similarity[i, j]:.2f}', ha='center', va='center', fontsize=8,
              color='white' if abs(similarity[i, j]) > 0.6 else 'black')
  fig.colorbar(image, ax=ax, label='cosine similarity')
  ax.set_title('input embeddings (wte)')
  return save_png(fig, path)


def show_embeddings(model: LoadedModel, words: Sequence[str], out_dir: str) -> str:
  tok = model.tokenizer
  vectors = word_vectors(model.params, tok, words)
  similarity = cosine_similarity(np.stack([v.vector for v in vectors]))
  labels = [repr(w) for w in words]
  splits = [
      f'{label}: token {v.tokens[0]}'
      if len(v.tokens) == 1 else f'{label}: splits into {len(v.tokens)} tokens '
      f'{", ".join(token_text(tok, t) for t in v.tokens)} (their embeddings averaged)'
      for label, v in zip(labels, vectors)
  ]
  table = text_table(['', *labels], [[label, *(f'{x:+.3f}' for x in row)]
                                     for label, row in zip(labels, similarity)],
                     'l' + 'r' * len(labels))
  path = plot_similarity(similarity, labels, os.path.join(out_dir, 'embeddings.png'))
  return '\n'.join(
      [*splits, '', 'cosine similarity of the input embeddings:', table, '', f'wrote {path}'])


# ---------------------------------------------------------------------------------------------
# kvcache: what caching keys and values costs in memory and buys in speed


class CacheSize(NamedTuple):
  variant: str
  n_kv_heads: int
  bytes: int


def kv_cache_variants(cfg: ModelConfig, batch: int, context: int) -> list[CacheSize]:
  """The cache of this model's shape, in its compute dtype, as MHA, GQA with every n_kv_heads
  dividing n_heads, and MQA."""
  h = cfg.n_heads
  kv_heads = [h, *(k for k in range(h - 1, 1, -1) if h % k == 0), 1] if h > 1 else [1]
  names = {h: 'MHA', 1: 'MQA'}
  return [
      CacheSize(names.get(k, 'GQA'), k, kv_cache_bytes(cfg.replace(n_kv_heads=k), batch, context))
      for k in kv_heads
  ]


def window_note(cfg: ModelConfig, batch: int, context: int) -> str:
  """What the sliding-window layers' ring caches save, as a note under the table ('' if no
  layer's window is shorter than the context)."""
  rings = [w for w in cfg.layer_windows if w is not None and w < context]
  if not rings:
    return ''
  ours = kv_cache_bytes(cfg, batch, context)
  every_slot = kv_cache_bytes(cfg.replace(attention_window=None, window_pattern=None), batch,
                              context)
  windows = ', '.join(str(w) for w in sorted(set(rings)))
  return (f'\nwindow layers: {len(rings)} of {cfg.n_layers} keep a ring of their last {windows} '
          f'slots, so the cache is {format_bytes(ours)} instead of {format_bytes(every_slot)} '
          f'({every_slot / ours:.2f}x smaller)')


def generation_speed(cfg: ModelConfig, params, tokens: list[int], batch: int, new_tokens: int,
                     use_cache: bool) -> float:
  """Generated tokens per second (all rows), after one untimed call that compiles."""
  def run():
    return generate(cfg, params, [tokens] * batch, max_new_tokens=new_tokens, temperature=0,
                    use_cache=use_cache)

  run()
  start = time.perf_counter()
  run()  # generate returns host lists: the work is done when it returns
  return batch * new_tokens / (time.perf_counter() - start)


def show_kvcache(model: LoadedModel, batch: int, context: int | None, new_tokens: int,
                 kv_dtype: str | None, prompt: str) -> str:
  cfg = model.cfg
  context = context or cfg.block_size
  dtype = jnp.dtype(kv_dtype or cfg.dtype)
  sizes = kv_cache_variants(cfg.replace(dtype=dtype.name), batch, context)
  mha = sizes[0].bytes
  rows = [(s.variant, s.n_kv_heads, format_bytes(s.bytes //
                                                 (batch * context)), format_bytes(s.bytes),
           f'{s.bytes / mha:.3f}', '<- this model' if s.n_kv_heads == cfg.n_kv_heads else '')
          for s in sizes]
  table = text_table(('variant', 'n_kv_heads', 'per token', 'total', 'x MHA', ''), rows, 'lrrrrl')
  if cfg.position == 'learned' and context > cfg.block_size:
    table += (f'\nnote: context {context} is past block_size={cfg.block_size}, the last '
              'position this model (learned positions) has an embedding for')
  table += window_note(cfg.replace(dtype=dtype.name), batch, context)
  tokens = encode(model, prompt, new_tokens)
  cached, uncached = (generation_speed(cfg, model.params, tokens, batch, new_tokens, use_cache)
                      for use_cache in (True, False))
  speeds = text_table(('decoding', 'tokens/s'),
                      [('with KV cache', f'{cached:,.1f}'),
                       ('without (full forward each step)', f'{uncached:,.1f}')], 'lr')
  return '\n'.join([
      f'KV cache = 2 (k, v) x n_layers {cfg.n_layers} x n_kv_heads x head_dim {cfg.head_dim} '
      f'x batch {batch} x context {context} (a window layer: its window) x {dtype.itemsize} '
      f'bytes ({dtype.name})', table, '',
      f'greedy generation of {new_tokens} tokens x batch {batch} after a {len(tokens)}-token '
      f'prompt on {jax.devices()[0].platform} (compile excluded):', speeds,
      f'speedup: {cached / uncached:.1f}x'
  ])


# ---------------------------------------------------------------------------------------------
# Command line

SUBCOMMANDS = ('params', 'tokens', 'next', 'attention', 'layers', 'embeddings', 'kvcache')


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, so importing this module
  leaves absl's global flags alone."""
  flags.DEFINE_string('workdir', None, 'Training run to analyse (its latest checkpoint).')
  flags.DEFINE_integer('step', None, 'With --workdir: the checkpoint step.')
  flags.DEFINE_string('hf', None, 'Hugging Face GPT-2/Llama-family model directory (or Hub name).')
  config_flags.DEFINE_config_file('config', None, 'Config file: its model, randomly initialised.',
                                  lock_config=True)
  flags.DEFINE_string(
      'out_dir', None, 'Where PNGs go (default: WORKDIR/analysis with --workdir, '
      'else the current directory).')
  flags.DEFINE_string('text', DEFAULT_TEXT, 'tokens: the text to split.')
  flags.DEFINE_string('prompt', DEFAULT_PROMPT, 'next, attention, layers, kvcache: the prompt.')
  flags.DEFINE_integer('top_k', 10, 'next: how many of the most likely next tokens to show.')
  flags.DEFINE_integer('steps', 10, 'next: greedy continuation length.')
  flags.DEFINE_enum('positions', 'all', ['all', 'last'], 'layers: logit lens at every position '
                    'or only the last.')
  flags.DEFINE_list(
      'words', DEFAULT_WORDS, 'embeddings: comma-separated words (as given: for '
      'GPT-2 "dog" and " dog" are different tokens).')
  flags.DEFINE_integer('batch', 1, 'kvcache: batch size.')
  flags.DEFINE_integer('context', None, 'kvcache: context length (default: block_size).')
  flags.DEFINE_integer('new_tokens', 32, 'kvcache: tokens generated to measure speed.')
  flags.DEFINE_enum('kv_dtype', None, ['float32', 'bfloat16', 'float16'],
                    "kvcache: element type of the cache (default: the model's compute dtype).")


FLAGS = flags.FLAGS


def check_args(argv: Sequence[str]) -> str:
  """The subcommand, after every check of the flags but the model's (gptjax.loading.load_model
  checks those)."""
  valid = ', '.join(SUBCOMMANDS)
  if len(argv) < 2:
    raise ValueError(f'give a subcommand: one of {valid}')
  if argv[1] not in SUBCOMMANDS:
    raise ValueError(f'unknown subcommand {argv[1]!r}: one of {valid}')
  if len(argv) > 2:
    raise ValueError(f'unexpected arguments: {" ".join(argv[2:])} (text goes in --text or '
                     '--prompt)')
  for name, least in (('top_k', 1), ('steps', 0), ('batch', 1), ('context', 1), ('new_tokens', 1)):
    if FLAGS[name].value is not None and FLAGS[name].value < least:
      raise ValueError(f'--{name}={FLAGS[name].value} must be >= {least}')
  if argv[1] == 'embeddings' and (len(FLAGS.words) < 2 or not all(FLAGS.words)):
    raise ValueError(f'--words={",".join(FLAGS.words)}: give two or more non-empty words, '
                     'e.g. --words=dog,cat,car')
  return argv[1]


def output_dir() -> str:
  """Where the PNGs go, checked before the model loads (a minute for a large one) and created
  only when a picture is written."""
  default = os.path.join(FLAGS.workdir, 'analysis') if FLAGS.workdir is not None else '.'
  path = FLAGS.out_dir or default
  existing = file_in_the_way(path)
  if existing is not None:
    flag = f'--out_dir={path}' if FLAGS.out_dir else f'the default output directory {path}'
    raise ValueError(f'{flag}: {existing} is a file; give --out_dir a directory (created if '
                     'missing)')
  return path


def main(argv):
  command = check_args(argv)
  absl_logging.set_verbosity(absl_logging.ERROR)  # keep orbax's restore chatter off the screen
  out_dir = output_dir() if command in ('attention', 'embeddings') else None
  model = load_model(FLAGS.workdir, FLAGS.step, FLAGS.hf, cli.config_flag())
  print(model.description, file=sys.stderr)
  reports = {
      'params': lambda: show_params(model),
      'tokens': lambda: show_tokens(model, FLAGS.text),
      'next': lambda: show_next(model, FLAGS.prompt, FLAGS.top_k, FLAGS.steps),
      'attention': lambda: show_attention(model, FLAGS.prompt, out_dir),
      'layers': lambda: show_layers(model, FLAGS.prompt, FLAGS.positions),
      'embeddings': lambda: show_embeddings(model, FLAGS.words, out_dir),
      'kvcache': lambda: show_kvcache(model, FLAGS.batch, FLAGS.context, FLAGS.new_tokens, FLAGS.
                                      kv_dtype, FLAGS.prompt),
  }
  print(reports[command]())


if __name__ == '__main__':
  if hasattr(signal, 'SIGPIPE'):  # output piped into a reader that closes early (| head): stop
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
  define_flags()
  cli.run(main)
