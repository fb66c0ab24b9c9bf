"""GPT: token (+ position) embeddings -> n_layers blocks -> final norm -> LM head.

One module serves every variant in ModelConfig. Two ways to run it:
  * full sequence: `GPT(cfg).apply({'params': p}, tokens)` -> logits [B, T, V] float32;
  * cached decoding: `GPT(cfg).apply({'params': p}, tokens, cache=cache)` -> (logits, cache), where
    `cache` is an explicit KVCache pytree (see `init_cache`): the prompt is written in one call
    (prefill) and each further call appends one token.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from gptjax import parallel
from gptjax.config import ModelConfig
from gptjax.layers import POSITIONS, MLP, Attention, LayerCache, make_norm
from gptjax.layers.dense import Embed, normal_init
from gptjax.layers.residual import store_gradient
from gptjax.parametrization import output_multiplier

# Up to this many rows (tokens x batch) the LM head runs as a matrix-vector product over the
# stored [V, C] head (see GPT.head); measured by benchmarks/profile_decode.py.
MATRIX_VECTOR_HEAD_ROWS = 1


@flax.struct.dataclass
class KVCache:
  """Keys/values of every layer for a batch of rows that share a slot clock.

  layers: one LayerCache per block, each [B, n_kv_heads, S, head_dim]: S = max_len slots, except
    in a sliding-window layer, whose cache is a ring of min(window, max_len) slots (the only keys
    its queries can still see), slot s at s mod S.
  index: int32 scalar, the slot the next token is written to (== tokens written so far).
  first_valid: int32 [B], the first slot of each row that holds a real token. Rows of a batch
    whose prompts differ in length are left-padded; row b's token in slot s sits at position
    s - first_valid[b], and slots before first_valid[b] are never attended to.
  max_len: how many tokens the cache takes (static: a Python int, not an array).
  """
  layers: tuple[LayerCache, ...]
  index: jax.Array
  first_valid: jax.Array
  max_len: int = flax.struct.field(pytree_node=False)


def cache_slots(cfg: ModelConfig, max_len: int) -> tuple[int, ...]:
  """Slots of each layer's cache: max_len, or a window layer's ring of min(window, max_len)."""
  return tuple(max_len if w is None else min(w, max_len) for w in cfg.layer_windows)


def init_cache(cfg: ModelConfig, batch_size: int, max_len: int | None = None,
               first_valid: jax.Array | None = None) -> KVCache:
  """An empty cache for `batch_size` rows and `max_len` tokens (default: block_size)."""
  max_len = cfg.block_size if max_len is None else max_len
  if cfg.position == 'learned' and max_len > cfg.block_size:
    raise ValueError(f'a cache of {max_len} positions goes past block_size={cfg.block_size}: '
                     'learned position embeddings exist only up to block_size '
                     '(use a shorter max_len, or position=rope)')
  layers = []
  for slots in cache_slots(cfg, max_len):
    shape = (batch_size, cfg.n_kv_heads, slots, cfg.head_dim)
    layers.append(
        LayerCache(jnp.zeros(shape, cfg.compute_dtype), jnp.zeros(shape, cfg.compute_dtype)))
  if first_valid is None:
    first_valid = jnp.zeros((batch_size,), jnp.int32)
  return KVCache(tuple(layers), jnp.zeros((), jnp.int32), jnp.asarray(first_valid, jnp.int32),
                 max_len)


def kv_cache_bytes(cfg: ModelConfig, batch_size: int = 1, max_len: int = 1) -> int:
  """Bytes of `init_cache(cfg, batch_size, max_len)`: keys and values (2) of every layer's slots
  (window layers: at most their window), kv head and head dimension, in the compute dtype.
  GQA/MQA shrink it by n_heads / n_kv_heads, windows by max_len / window in their layers."""
  return (2 * sum(cache_slots(cfg, max_len)) * cfg.n_kv_heads * cfg.head_dim * batch_size
          * cfg.compute_dtype.itemsize)


def remat_policy(name: str):
  """model.remat's name -> the jax.checkpoint policy of what a block saves for its backward
  pass ('full': None, nothing but its input). The attention names are set in layers/attention."""
  policies = jax.checkpoint_policies
  return {
      'full': None,
      'dots_saveable': policies.dots_saveable,
      'dots_with_no_batch_dims_saveable': policies.dots_with_no_batch_dims_saveable,
      'save_attention_out': policies.save_only_these_names('attention_out'),
      'save_qkv_attention_out': policies.save_only_these_names('query', 'key', 'value',
                                                               'attention_out'),
  }[name]


class Block(nn.Module):
  """Attention and MLP sublayers, each with a residual connection, its norms placed as
  cfg.norm_position says (see gptjax.config.NORM_POSITIONS), one after the other or side by side
  (cfg.parallel_block).

  train (dropout) and need_weights (sow attention maps) are attributes, not call arguments, so
  that nn.remat sees them as the static Python values they are; layer (this block's index)
  picks its attention window and rotary table.
  """
  cfg: ModelConfig
  train: bool = False
  need_weights: bool = False
  layer: int = 0

  @nn.compact
  def __call__(self, x, positions, first_valid=None, cache=None, cache_index=None):
    cfg = self.cfg
    attn = Attention(cfg, self.train, self.need_weights, self.layer, name='attn')
    mlp = MLP(cfg, name='mlp')
    drop = nn.Dropout(cfg.resid_dropout, deterministic=not self.train)
    placement = cfg.norm_position
    # Norms on the way into a sublayer (pre, sandwich) and out of it (sandwich, output).
    into = lambda name, h: make_norm(cfg, name)(h) if placement in ('pre', 'sandwich') else h
    out_of = lambda name, h: make_norm(cfg, name)(h) if placement in ('sandwich', 'output') else h

    # Each sublayer's input is where the residual stream's gradient is stored (see
    # layers/residual.py: on CPU, XLA would otherwise recompute it from every later layer).
    x = store_gradient(x)
    if cfg.parallel_block:  # x + attn(norm1(x)) + mlp(norm2(x)), GPT-NeoX's two norms
      y, cache = attn(into('attn_norm', x), positions, first_valid, cache, cache_index)
      x = x + drop(y) + drop(mlp(into('mlp_norm', x)))
    elif placement == 'post':  # norm(x + f(x)), as in the original Transformer
      y, cache = attn(x, positions, first_valid, cache, cache_index)
      x = store_gradient(make_norm(cfg, 'attn_norm')(x + drop(y)))
      x = make_norm(cfg, 'mlp_norm')(x + drop(mlp(x)))
    else:  # x + out_norm(f(in_norm(x))): the residual stream itself is never normalised
      y, cache = attn(into('attn_norm', x), positions, first_valid, cache, cache_index)
      x = store_gradient(x + drop(out_of('attn_out_norm', y)))
      x = x + drop(out_of('mlp_out_norm', mlp(into('mlp_norm', x))))
    self.sow('intermediates', 'output', x)
    return x, cache


class GPT(nn.Module):
  """The embeddings and the head are built in setup, so `head` can be applied on its own (the
  logit lens); the blocks in __call__, because their attributes depend on its arguments."""
  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.wte = Embed(cfg.vocab_size, cfg.d_model,
                     embedding_init=normal_init(cfg.init_std, ('vocab', 'embed')),
                     dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype, row_axis='vocab')
    position_embedding = POSITIONS[cfg.position].embedding
    self.wpe = None if position_embedding is None else position_embedding(cfg)
    # Post-norm blocks already end in a norm; the other placements get a final one.
    if cfg.norm_position != 'post':
      self.norm_f = make_norm(cfg, None)
    if not cfg.tie_embeddings:
      self.lm_head = self.param('lm_head', normal_init(cfg.init_std, ('vocab', 'embed')),
                                (cfg.vocab_size, cfg.d_model), cfg.params_dtype)
    self.embd_dropout = nn.Dropout(cfg.embd_dropout)

  @nn.compact
  def __call__(self, tokens, *, cache: KVCache | None = None, train: bool = False,
               need_weights: bool = False, logits_at: jax.Array | None = None):
    """tokens [B, T] int -> logits [B, T, vocab_size] float32 (and the new cache if given one).

    train: enables dropout (needs a 'dropout' rng). need_weights: computes the attention
    probabilities explicitly and sows them into the 'intermediates' collection. logits_at
    [B, K] int: only the logits at these of the T positions, [B, K, vocab_size]: the LM head is
    a large part of a forward pass, and scoring a continuation reads a few positions.
    """
    cfg = self.cfg
    b, t = tokens.shape
    if cache is None:
      if cfg.position == 'learned' and t > cfg.block_size:
        raise ValueError(f'sequence of {t} tokens is longer than block_size={cfg.block_size}, '
                         'the last position with a learned embedding')
      slots = jnp.arange(t)
      positions = jnp.broadcast_to(slots, (b, t))
      first_valid = index = None
    else:
      if t > cache.max_len:
        raise ValueError(f'{t} tokens do not fit a cache of {cache.max_len} slots')
      index, first_valid = cache.index, cache.first_valid
      slots = index + jnp.arange(t)
      positions = jnp.maximum(slots[None, :] - first_valid[:, None], 0)  # [B, T]

    x = self.wte(tokens)  # [B, T, C]
    if cfg.scale_embeddings:  # Gemma: by sqrt(C) rounded to the compute dtype, as it does
      x = x * jnp.asarray(cfg.d_model**0.5, x.dtype)
    if self.wpe is not None:
      x = x + self.wpe(positions)
    x = self.embd_dropout(x, deterministic=not train)
    x = parallel.constrain(x, ('batch', 'sequence', 'embed'))

    block_class = Block if cfg.remat == 'none' else nn.remat(Block, policy=remat_policy(cfg.remat),
                                                             prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      # One Block traced once and run n_layers times over parameters stacked on a leading
      # 'layers' axis: the compiled program does not grow with depth. (Dropout draws other
      # masks than the unrolled model's, from one key split per layer.)
      blocks = nn.scan(block_class, variable_axes={'params': 0, 'intermediates': 0},
                       split_rngs={'params': True, 'dropout': True},
                       in_axes=(nn.broadcast, nn.broadcast, 0, nn.broadcast), length=cfg.n_layers,
                       metadata_params={nn.PARTITION_NAME: 'layers'})
      stacked = None if cache is None else jax.tree.map(lambda *a: jnp.stack(a), *cache.layers)
      x, stacked = blocks(cfg, train, need_weights, 0, name='blocks')(x, positions, first_valid,
                                                                      stacked, index)
      new_layers = [
          None if stacked is None else jax.tree.map(lambda a: a[i], stacked)
          for i in range(cfg.n_layers)
      ]
    else:
      new_layers = []
      for i in range(cfg.n_layers):
        block = block_class(cfg, train, need_weights, i, name=f'blocks_{i}')
        layer_cache = None if cache is None else cache.layers[i]
        x, layer_cache = block(x, positions, first_valid, layer_cache, index)
        new_layers.append(layer_cache)

    if logits_at is not None:
      x = jnp.take_along_axis(x, logits_at[..., None], axis=1)  # [B, K, C]
    # Decoding multiplies a few rows by the head, so a padded copy of it would cost more than
    # the friendlier shape saves.
    logits = self.head(x, pad_vocab=cache is None)
    if cache is None:
      return logits
    # Writing past the end of the cache cannot raise inside jit (dynamic_update_slice would
    # silently clamp), so such logits are NaN: loud, never plausible-but-wrong.
    logits = jnp.where(index + t <= cache.max_len, logits, jnp.nan)
    return logits, cache.replace(layers=tuple(new_layers), index=index + t)

  def head(self, x, pad_vocab: bool = True):
    """Residual stream [B, T, C] -> logits [B, T, vocab_size] float32 (final norm + LM head).

    Also the logit lens: applied to any block's output it shows what the model would predict
    if the network ended there. pad_vocab: multiply by the head padded to padded_vocab_size
    (the same logits, a matmul shape accelerators prefer).
    """
    cfg = self.cfg
    if cfg.norm_position != 'post':
      x = self.norm_f(x)
    w = self.wte.embedding if cfg.tie_embeddings else self.lm_head  # [V, C]
    pad = cfg.padded_vocab_size - cfg.vocab_size
    if pad and pad_vocab:  # the extra logits are dropped below
      w = jnp.pad(w, ((0, pad), (0, 0)))
    rows = x.reshape(-1, x.shape[-1]).astype(cfg.compute_dtype)  # [B*T, C]
    w = w.astype(cfg.compute_dtype)
    if rows.shape[0] <= MATRIX_VECTOR_HEAD_ROWS:
      # A batch-1 decode step: [V, C] @ [C, 1] is a matrix-vector product over the head as it is
      # stored. Written [1, C] @ [C, V], XLA:CPU fused the final norm into a loop over the
      # transposed head instead, 30% of the GPT-2 124M step (benchmarks/profile_decode.py).
      logits = jnp.dot(w, rows.T, preferred_element_type=jnp.float32).T
    else:
      # As one [B*T, C] @ [C, V] matmul: from [B, T, C] the head's weight gradient contracts two
      # dimensions, and XLA:CPU transposed the whole [B, T, V] logits gradient to do it (8% of
      # the GPT-2-shaped train step, benchmarks/profile_train.py).
      logits = jnp.dot(rows, w.T, preferred_element_type=jnp.float32)
    logits = logits.reshape(*x.shape[:-1], -1)
    if logits.ndim == 3:  # [B, T, V]: a tensor-parallel head keeps its vocabulary shard's logits
      logits = parallel.constrain(logits, ('batch', 'sequence', 'vocab'))
    logits = logits[..., :cfg.vocab_size]
    if cfg.parametrization == 'mup':  # α / width multiplier: the head keeps an unscaled init and lr
      logits = logits * jnp.float32(output_multiplier(cfg))
    if cfg.final_logit_softcap is not None:  # Gemma 2: cap * tanh(logits / cap)
      cap = jnp.float32(cfg.final_logit_softcap)
      logits = cap * jnp.tanh(logits / cap)
    return logits


def init_params(cfg: ModelConfig, rng: jax.Array) -> dict:
  """Freshly initialised parameters (GPT-2 scheme: N(0, 0.02), residual projections scaled;
  hidden matrices scaled down with width under μP, see gptjax.parametrization). A scanned model
  gets the unrolled model's weights, stacked: the layout never changes what a seed draws."""
  if cfg.scan_layers:
    unrolled_params = init_params(cfg.replace(scan_layers=False), rng)
    return with_layers_layout(unrolled_params, cfg.n_layers, scanned=True)
  return nn.meta.unbox(jax.jit(_boxed_init, static_argnums=0)(cfg, rng))


def _boxed_init(cfg: ModelConfig, rng: jax.Array) -> dict:
  """Params still wrapped in flax's logical-partitioning boxes (which carry the axis names)."""
  tokens = jnp.zeros((1, min(cfg.block_size, 8)), jnp.int32)
  return GPT(cfg).init(rng, tokens)['params']


@functools.lru_cache(maxsize=None)
def abstract_params(cfg: ModelConfig) -> dict:
  """The params tree `init_params(cfg)` builds, as jax.ShapeDtypeStruct leaves: shapes without
  allocating or compiling anything (cached: a large model takes a fraction of a second to trace)."""
  return jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))


@functools.lru_cache(maxsize=None)
def param_axes(cfg: ModelConfig) -> dict[str, tuple[str | None, ...]]:
  """{param path: logical axis names}, e.g. 'blocks_0/attn/query/kernel': ('embed', 'heads',
  'head_dim'): what each axis of each parameter means, for sharding rules (names in
  gptjax.layers.AXIS_NAMES; None for an axis no rule shards)."""
  boxed = jax.eval_shape(lambda: _boxed_init(cfg, jax.random.key(0)))
  specs = nn.get_partition_spec(boxed)
  return {path: tuple(spec) for path, spec in param_paths(specs).items()}


def with_layers_layout(tree: Any, n_layers: int, scanned: bool) -> Any:
  """A params tree, or any tree holding params-shaped dicts (Adam's moments in an optimizer
  state), in the scanned layout ('blocks': every block's leaves stacked on a leading axis) or
  the unrolled one ('blocks_0' ... 'blocks_{n-1}'), whichever it is in now."""
  if isinstance(tree, dict):
    tree = {k: with_layers_layout(v, n_layers, scanned) for k, v in tree.items()}
    if scanned and 'blocks_0' in tree:
      layers = [tree.pop(f'blocks_{i}') for i in range(n_layers)]
      tree['blocks'] = jax.tree.map(lambda *a: jnp.stack(a), *layers)
    elif not scanned and 'blocks' in tree:
      stacked = tree.pop('blocks')
      tree.update({f'blocks_{i}': jax.tree.map(lambda a: a[i], stacked) for i in range(n_layers)})
    return tree
  if isinstance(tree, (tuple, list)):
    items = [with_layers_layout(v, n_layers, scanned) for v in tree]
    return type(tree)(*items) if hasattr(tree, '_fields') else type(tree)(items)
  return tree


def unrolled(cfg: ModelConfig, params: dict) -> tuple[ModelConfig, dict]:
  """(cfg, params) with the blocks unrolled: how decoding and the analysis tools run a
  scanned model (a per-layer cache and per-layer intermediates)."""
  if not cfg.scan_layers:
    return cfg, params
  return cfg.replace(scan_layers=False), with_layers_layout(params, cfg.n_layers, scanned=False)


def place_params(cfg: ModelConfig, params: dict, layout: parallel.Layout) -> dict:
  """params placed on layout's mesh by their logical axes (config.sharding.rules)."""
  return jax.device_put(params, parallel.state_shardings(params, layout, param_axes(cfg)))


def param_path(key_path) -> str:
  """A jax key path -> 'blocks_0/attn/query/kernel': the one spelling of a parameter's name."""
  # DictKey.key, SequenceKey.idx, and a named tuple's (an optimizer state's) GetAttrKey.name.
  names = (getattr(k, 'key', getattr(k, 'idx', getattr(k, 'name', k))) for k in key_path)
  return '/'.join(map(str, names))


def param_paths(params: Any) -> dict[str, Any]:
  """{'blocks_0/attn/query/kernel': leaf, ...} in tree order, with `param_path` names: used by
  error messages, the weight-decay mask, the FLOPs table and Hugging Face import/export."""
  leaves = jax.tree_util.tree_flatten_with_path(params, is_leaf=lambda x: hasattr(x, 'shape'))[0]
  return {param_path(key_path): leaf for key_path, leaf in leaves}


def max_attention_logits(cfg: ModelConfig, params: dict, tokens: jax.Array) -> jax.Array:
  """[n_layers]: each layer's largest attention logit (q.k scaled, before any soft-cap) over
  the visible pairs of tokens [B, T]: the quantity whose growth QK-norm and soft-capping curb."""
  cfg, params = unrolled(cfg, params)
  _, state = GPT(cfg).apply({'params': params}, tokens, need_weights=True,
                            mutable=['intermediates'])
  inter = state['intermediates']
  return jnp.stack([inter[f'blocks_{i}']['attn']['max_logit'][0] for i in range(cfg.n_layers)])


def forward_with_intermediates(cfg: ModelConfig, params: dict, tokens: jax.Array):
  """Logits plus what happened inside: for analysis tools and tests.

  Returns (logits [B, T, V], block_outputs [L, B, T, C], attention_weights [L, B, H, T, T]).
  block_outputs[i] is the residual stream after block i (before the final norm).
  """
  cfg, params = unrolled(cfg, params)
  logits, state = GPT(cfg).apply({'params': params}, tokens, need_weights=True,
                                 mutable=['intermediates'])
  inter = state['intermediates']
  blocks = [inter[f'blocks_{i}'] for i in range(cfg.n_layers)]
  block_outputs = jnp.stack([blk['output'][0] for blk in blocks])
  weights = jnp.stack([blk['attn']['attention_weights'][0] for blk in blocks])
  return logits, block_outputs, weights
