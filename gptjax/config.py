"""The typed, validated configuration of a model and of a training run.

`config.model` in an ml_collections ConfigDict is the user-facing place for every architecture
knob; `ModelConfig.from_config(config.model)` turns it into a frozen dataclass, checking every
combination before anything is compiled, so a bad sweep point fails in milliseconds with a message
that names the field instead of deep inside XLA. The run's other sections (`config.optim`,
`config.train`, `config.data`, `config.sharding`) are typed and checked the same way by
OptimConfig, TrainConfig, DataConfig and ShardingConfig, and `base_config()` builds every section
from these dataclasses, so each default is written once.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import typing
from pathlib import Path
from typing import Any, ClassVar, Mapping

import jax.numpy as jnp

if typing.TYPE_CHECKING:  # ml_collections itself is imported where a ConfigDict is built
  import ml_collections

# 'gelu': GPT-2's tanh-approximated GELU; 'gelu_exact': erf GELU (nanoGPT, BERT); 'relu2': ReLU²
# (Primer); 'swiglu' / 'geglu': gated, with SiLU (Llama) / tanh GELU (Gemma) on the gate.
MLPS = ('gelu', 'gelu_exact', 'relu2', 'swiglu', 'geglu')
GATED_MLPS = ('swiglu', 'geglu')  # three matrices: the default d_ff is Llama's 8/3 rule
NORMS = ('layernorm', 'rmsnorm')
# QK-norm: 'head' is an RMSNorm of each query and key head over its D, before rotary (Qwen3,
# Gemma 3): it bounds the attention logits, which is what lets a model take a higher lr.
# 'projection': OLMo 2's, an RMSNorm of the whole query (H*D) and key (K*D) projections.
QK_NORMS = ('none', 'head', 'projection')
# Where each sublayer's norm sits: 'pre' x + f(norm(x)) (GPT-2, Llama); 'post' norm(x + f(x))
# (the original Transformer); 'sandwich' x + norm(f(norm(x))) (Gemma 2); 'output' x + norm(f(x))
# (OLMo 2).
NORM_POSITIONS = ('pre', 'post', 'sandwich', 'output')
# 'alibi': no embedding, a per-head linear penalty on distance in the attention logits (Press et
# al.).
POSITIONS = ('learned', 'rope', 'none', 'alibi')
# How rotary frequencies stretch for a longer context: 'linear' (position interpolation),
# 'llama3' (Llama 3.1's frequency-dependent scaling), 'yarn' (Peng et al.).
ROPE_SCALINGS = ('none', 'linear', 'llama3', 'yarn')
ATTENTION_IMPLS = ('xla', 'cudnn', 'explicit', 'blocked', 'auto')
# model.remat: what a block keeps for its backward pass (gptjax.model.REMAT_POLICIES): 'none'
# keeps everything (no recomputation), 'full' only the block's input, the others also the
# matmul outputs (dots_*, jax.checkpoint_policies) or the named attention tensors.
REMAT_POLICIES = ('none', 'full', 'dots_saveable', 'dots_with_no_batch_dims_saveable',
                  'save_attention_out', 'save_qkv_attention_out')
DTYPES = ('float32', 'bfloat16', 'float16')
PARAMETRIZATIONS = ('sp', 'mup')  # gptjax.parametrization: how init, logits and lr scale with width
SCHEDULES = ('cosine', 'linear', 'constant', 'wsd')
INIT_STATES = ('params', 'full')  # train.init_state
TOKENIZER_NAMES = ('gpt2', 'bytes')  # gptjax.tokenizer.get_tokenizer builds each
DEFAULT_VAL_PERCENT = 5  # of a corpus held out for validation


def is_int(value: Any) -> bool:
  """An int and not a bool (True is an int to Python, never a valid layer count to us)."""
  return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def closest_key(key: str, known) -> str | None:
  """The known key a misspelled one most likely meant ('lr' for 'lrr'), or None."""
  close = difflib.get_close_matches(key, list(known), n=1)
  return close[0] if close else None


def closest_key_hint(key: str, known) -> str:
  """'; did you mean 'lr'?' for a misspelled key, else the list of known keys."""
  close = closest_key(key, known)
  return f'; did you mean {close!r}?' if close else f'; known fields: {", ".join(known)}'


def leaf_keys(config, prefix: str = '') -> list[str]:
  """Every field of a ConfigDict as a dotted key ('model.norm', 'optim.lr', 'seed')."""
  import ml_collections
  keys = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      keys += leaf_keys(value, f'{prefix}{key}.')
    else:
      keys.append(f'{prefix}{key}')
  return keys


def check_config_key(config, key: str, where: str = 'config key', known=None) -> None:
  """A key the config lacks is a ValueError naming the closest real one."""
  known = leaf_keys(config) if known is None else known
  if key not in known:
    raise ValueError(f'unknown {where} {key!r}{closest_key_hint(key, known)}')


def update_config(config, values: Mapping[str, Any], where: str = 'config key') -> None:
  """config.update_from_flattened_dict(values), but a key the config lacks is an error naming
  the closest real one (ml_collections would add it, and the misspelled setting would do
  nothing), and a value of the wrong type is a ValueError naming the key."""
  known = leaf_keys(config)
  for key, value in values.items():
    check_config_key(config, key, where, known)
    try:
      config.update_from_flattened_dict({key: value})
    except TypeError as error:
      raise ValueError(f'{where} {key}={value!r}: {error}') from None


def config_field_type(config, key: str) -> type:
  """The declared type of the existing field `key` ('optim.lr' -> float) of a ConfigDict."""
  *sections, leaf = key.split('.')
  section = config
  for name in sections:
    section = section[name]
  return section.get_type(leaf)


def parse_field_value(config, key: str, text: str) -> Any:
  """The value a command-line string means for the (existing) field `key` of a ConfigDict: an
  int field reads '64', a float field '3e-3', a bool field 'true'/'false', a str field any text;
  a field of several types (int | str) reads a number where the text is one."""
  field_type = config_field_type(config, key)
  booleans = {'true': True, 'false': False}
  if field_type is bool:
    if text.lower() not in booleans:
      raise ValueError(f'{key}={text!r}: {key} takes true or false')
    return booleans[text.lower()]
  for number_type in (int, float):
    if field_type is number_type:
      try:
        return number_type(text)
      except ValueError:
        raise ValueError(f'{key}={text!r}: {key} takes a number ({number_type.__name__})') from None
  if field_type is str:
    return text
  for number_type in (int, float):  # several types allowed: a number where it reads as one
    try:
      return number_type(text)
    except ValueError:
      pass
  return booleans.get(text.lower(), text)


def load_config_module(path: str | Path):
  """A config file as a module (its get_config, and for sweeps its SWEEPS)."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'no config file {path}')
  spec = importlib.util.spec_from_file_location(f'gptjax_config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise ValueError(f'{path} defines no get_config(); a config file defines get_config(arg=None)')
  return module


def load_config_file(path: str | Path, arg: str | None = None):
  """config_file.get_config(arg), as train.py builds it from --config=PATH[:ARG]."""
  module = load_config_module(path)
  return module.get_config() if arg is None else module.get_config(arg)


def _choice(field: str, value: Any, allowed: tuple[str, ...]) -> None:
  if value not in allowed:
    raise ValueError(f'{field}={value!r} is not one of {", ".join(map(repr, allowed))}')


def _positive_int(field: str, value: Any) -> None:
  if not is_int(value) or value <= 0:
    raise ValueError(f'{field}={value!r} must be a positive integer')


def _probability(field: str, value: Any) -> None:
  if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
    raise ValueError(f'{field}={value!r} must be a dropout rate in [0, 1)')


def _positive_float(field: str, value: Any) -> None:
  if not is_number(value) or not value > 0:
    raise ValueError(f'{field}={value!r} must be a number > 0')


def swiglu_hidden_size(d_model: int, multiple_of: int = 256) -> int:
  """Llama's rule: 2/3 of 4*d_model (so SwiGLU's 3 matrices cost what GELU's 2 do), rounded up."""
  hidden = int(2 * (4 * d_model) / 3)
  return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class _Section:
  """What every section shares: each is built from its part of the ConfigDict with unknown keys
  refused (the closest known one suggested) and every field checked, so that a typo or a bad
  value fails before data is prepared or anything is compiled, with a message naming the field
  (`section.field` for the training sections).
  """

  SECTION: ClassVar[str]

  @classmethod
  def from_config(cls, config: Mapping[str, Any]):
    """Builds from `config.<SECTION>` (a ConfigDict or any mapping)."""
    as_dict = config.to_dict() if hasattr(config, 'to_dict') else dict(config)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in as_dict:
      if key not in known:
        raise ValueError(f'unknown {cls.SECTION} config field {key!r}'
                         f'{closest_key_hint(key, known)}')
    return cls(**as_dict)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def _require(self, rules) -> None:
    """rules: (field, ok, requirement) in order; the first one not ok raises."""
    for name, ok, requirement in rules:
      if not ok:
        raise ValueError(f'{self.SECTION}.{name}={getattr(self, name)!r} {requirement}')


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Section):
  """Every architecture knob of the decoder. Defaults are GPT-2 small (124M)."""

  SECTION: ClassVar[str] = 'model'

  vocab_size: int = 50257  # rows of the embedding table: the tokenizer's vocabulary
  # The LM head matmul is padded to a multiple of this (e.g. 64: 50257 -> 50304) for speed; the
  # padded logits are sliced off inside the model, so they can never be sampled or get gradient,
  # and parameters stay exactly vocab_size rows (same count and layout as the reference models).
  vocab_pad_multiple: int = 1
  block_size: int = 1024  # context length the model is trained for
  n_layers: int = 12
  d_model: int = 768
  n_heads: int = 12
  n_kv_heads: int | None = None  # None: == n_heads (MHA); 1: MQA; in between: GQA
  # Size of each attention head; None: d_model / n_heads. Set, heads may be wider or narrower than
  # that (Qwen3-0.6B: 16 heads of 128 at d_model 1024); the projections map C <-> H x head_dim.
  head_dim: int | None = None
  d_ff: int | None = None  # None: 4*d_model, or Llama's 8/3 rule for a gated MLP
  mlp: str = 'gelu'
  norm: str = 'layernorm'
  norm_position: str = 'pre'
  norm_eps: float = 1e-5
  norm_affine: bool = True  # False: non-parametric norms, no scale and no bias (OLMo 1)
  # Attention and MLP side by side on the same normed input, x + attn(n1(x)) + mlp(n2(x))
  # (GPT-J, GPT-NeoX, PaLM): one sequential dependency less per layer (pre-norm only).
  parallel_block: bool = False
  qk_norm: str = 'none'
  scale_embeddings: bool = False  # token embeddings x sqrt(d_model), as Gemma (and Vaswani et al.)
  position: str = 'learned'
  rope_theta: float = 10000.0
  # The fraction of each head's dimensions that rotary rotates (GPT-NeoX / Pythia: 0.25); the
  # rest pass through unchanged.
  rotary_fraction: float = 1.0
  rope_scaling: str = 'none'
  rope_scaling_factor: float = 1.0  # linear / llama3 / yarn: how many times longer the context
  # llama3 / yarn: the context the frequencies were pretrained for (HF's
  # original_max_position_embeddings); None: block_size.
  rope_original_block_size: int | None = None
  rope_low_freq_factor: float = 1.0  # llama3: wavelengths beyond original / this are scaled
  rope_high_freq_factor: float = 4.0  # llama3: wavelengths below original / this are kept
  rope_beta_fast: float = 32.0  # yarn: rotations above which a frequency is kept
  rope_beta_slow: float = 1.0  # yarn: rotations below which a frequency is interpolated
  # Theta of the sliding-window layers (Gemma 3: 10k local, 1M global), which then take plain
  # rotary without rope_scaling, as Gemma 3's do; None: rope_theta and rope_scaling everywhere.
  rope_local_theta: float | None = None
  # Sliding window: each query sees this many most recent keys (itself included); None: all.
  attention_window: int | None = None
  # Per-layer windows, comma-separated and repeated over the layers: 'local' (attention_window),
  # 'global' or a window size; e.g. 'local,global': Gemma 2's alternation from layer 0. None:
  # attention_window in every layer.
  window_pattern: str | None = None
  # Soft-capping, cap * tanh(x / cap), of the attention logits (after scaling) and of the output
  # logits (Gemma 2: 50 and 30); None: off.
  attn_logit_softcap: float | None = None
  final_logit_softcap: float | None = None
  # Attention logits are q.k / sqrt(this); None: head_dim (Gemma 2's query_pre_attn_scalar).
  attention_scale_dim: int | None = None
  tie_embeddings: bool = True
  use_bias: bool = True  # biases of the dense layers and LayerNorm
  qkv_bias: bool | None = None  # None: follows use_bias
  embd_dropout: float = 0.0
  attn_dropout: float = 0.0
  resid_dropout: float = 0.0
  dtype: str = 'float32'  # compute dtype of matmuls and activations
  param_dtype: str = 'float32'
  # Full-sequence attention kernel (gptjax.layers.KERNELS); 'auto': cuDNN flash attention where
  # it applies, else XLA; 'explicit' materialises the probabilities (the plain reference);
  # 'blocked': a block of queries at a time over the keys it sees (long contexts on a CPU).
  attention_impl: str = 'auto'
  init_std: float = 0.02
  # 'sp': GPT-2's standard parametrization. 'mup': the maximal-update parametrization (Yang et al.,
  # Tensor Programs V), under which the best learning rate and init found at d_model =
  # mup_base_width carry over to wider models (gptjax.parametrization has the rules).
  parametrization: str = 'sp'
  mup_base_width: int | None = None  # the d_model hyperparameters were tuned at (mup only)
  # The base model's head_dim, which μP's 1 / head_dim attention equals SP's 1 / sqrt(head_dim)
  # at; None: head_dim / m, a base with as many heads. A ladder that grows n_heads at a fixed
  # head_dim sets it to that head_dim, and its attention stays SP's.
  mup_base_head_dim: int | None = None
  # μP's output multiplier α (the `mup` package's output_mult): logits x α / m, a constant to tune
  # at the base width like the learning rate (mup only; 1.0 keeps μP identical to SP at the base).
  mup_output_multiplier: float = 1.0
  # Recompute each block in the backward pass, saving only what the policy names (REMAT_POLICIES):
  # less memory for more compute ('full': ~1/3 more). True / False: 'full' / 'none'.
  remat: str | bool = 'none'
  # The blocks as one nn.scan over parameters stacked on a leading 'layers' axis: compile time
  # that does not grow with depth. Needs every layer alike (one attention window for all).
  # Checkpoints and Hugging Face import/export convert between the two layouts.
  scan_layers: bool = False

  def __post_init__(self):
    if isinstance(self.remat, bool):  # the first release's on/off, still accepted
      object.__setattr__(self, 'remat', 'full' if self.remat else 'none')
    self._resolve_defaults()
    for name in ('vocab_size', 'vocab_pad_multiple', 'block_size', 'n_layers', 'd_model', 'n_heads',
                 'n_kv_heads', 'head_dim', 'd_ff'):
      _positive_int(name, getattr(self, name))
    for name, allowed in (('mlp', MLPS), ('norm', NORMS), ('qk_norm', QK_NORMS),
                          ('norm_position', NORM_POSITIONS), ('position', POSITIONS),
                          ('rope_scaling', ROPE_SCALINGS), ('attention_impl', ATTENTION_IMPLS),
                          ('dtype', DTYPES), ('param_dtype', DTYPES),
                          ('parametrization', PARAMETRIZATIONS), ('remat', REMAT_POLICIES)):
      _choice(name, getattr(self, name), allowed)
    for name in ('norm_eps', 'rope_theta', 'init_std', 'rope_scaling_factor',
                 'rope_low_freq_factor', 'rope_high_freq_factor', 'rope_beta_fast',
                 'rope_beta_slow'):
      _positive_float(name, getattr(self, name))
    for name in ('rope_local_theta', 'attn_logit_softcap', 'final_logit_softcap'):
      if getattr(self, name) is not None:
        _positive_float(name, getattr(self, name))
    for name in ('attention_window', 'attention_scale_dim', 'rope_original_block_size',
                 'mup_base_head_dim'):
      if getattr(self, name) is not None:
        _positive_int(name, getattr(self, name))
    for name in ('embd_dropout', 'attn_dropout', 'resid_dropout'):
      _probability(name, getattr(self, name))
    for name in ('tie_embeddings', 'use_bias', 'qkv_bias', 'scale_embeddings', 'scan_layers',
                 'norm_affine', 'parallel_block'):
      if not isinstance(getattr(self, name), bool):
        raise ValueError(f'{name}={getattr(self, name)!r} must be True or False')
    self._check_heads()
    self._check_positions()
    self._check_combinations()
    object.__setattr__(self, 'layer_windows', self._parse_window_pattern())
    if self.scan_layers and len(set(self.layer_windows)) > 1:
      raise ValueError(f'scan_layers=True runs one block for every layer, but window_pattern='
                       f'{self.window_pattern!r} gives the layers different windows; use '
                       'scan_layers=False')

  def _check_heads(self):
    if 'head_dim' in self._defaulted and self.d_model % self.n_heads:
      raise ValueError(f'd_model={self.d_model} must be divisible by n_heads={self.n_heads} '
                       '(or set head_dim)')
    if self.n_heads % self.n_kv_heads:
      raise ValueError(f'n_heads={self.n_heads} must be divisible by n_kv_heads='
                       f'{self.n_kv_heads} (each kv head serves a whole group of query heads)')

  def _check_positions(self):
    if not (is_number(self.rotary_fraction) and 0 < self.rotary_fraction <= 1):
      raise ValueError(f'rotary_fraction={self.rotary_fraction!r} must be in (0, 1]')
    rotary_dims = self.rotary_dims
    if self.position == 'rope' and (rotary_dims % 2 or rotary_dims == 0):
      raise ValueError(
          f'position=rope rotates pairs of dimensions: head_dim={self.head_dim} x '
          f'rotary_fraction={self.rotary_fraction} = {rotary_dims} must be even and > 0')
    rope_only = {
        'rope_scaling': self.rope_scaling != 'none', 'rotary_fraction': self.rotary_fraction != 1,
        'rope_local_theta': self.rope_local_theta is not None
    }
    for name, is_set in rope_only.items():
      if is_set and self.position != 'rope':
        raise ValueError(f'{name}={getattr(self, name)!r} needs position=rope '
                         f'(position={self.position!r})')
    if self.rope_scaling == 'llama3' and not self.rope_high_freq_factor > self.rope_low_freq_factor:
      raise ValueError(f'rope_high_freq_factor={self.rope_high_freq_factor} must be > '
                       f'rope_low_freq_factor={self.rope_low_freq_factor} (llama3 scaling)')

  def _check_combinations(self):
    if self.parametrization == 'mup' and self.mup_base_width is None:
      raise ValueError('parametrization=mup needs mup_base_width: the d_model at which the '
                       'learning rate and init were tuned (e.g. mup_base_width=64)')
    if self.mup_base_width is not None:
      _positive_int('mup_base_width', self.mup_base_width)
    _positive_float('mup_output_multiplier', self.mup_output_multiplier)
    if self.parametrization == 'mup' and self.attention_scale_dim is not None:
      raise ValueError('attention_scale_dim is an SP attention scale; parametrization=mup sets '
                       'its own (mup_base_head_dim)')
    if self.parallel_block and self.norm_position != 'pre':
      raise ValueError(f'parallel_block=True needs norm_position=pre (GPT-J, GPT-NeoX), not '
                       f'{self.norm_position!r}')

  def _parse_window_pattern(self) -> tuple[int | None, ...]:
    """The attention window of every layer (None: global), from window_pattern."""
    if self.window_pattern is None:
      return (self.attention_window,) * self.n_layers
    if not isinstance(self.window_pattern, str) or not self.window_pattern.strip():
      raise ValueError(f'window_pattern={self.window_pattern!r} must be comma-separated '
                       "'local', 'global' or window sizes (e.g. 'local,global'), or None")
    windows = []
    for entry in self.window_pattern.split(','):
      entry = entry.strip()
      if entry == 'global':
        windows.append(None)
      elif entry == 'local':
        if self.attention_window is None:
          raise ValueError(f"window_pattern={self.window_pattern!r} has 'local' layers: set "
                           'attention_window, their window')
        windows.append(self.attention_window)
      elif entry.isdigit() and int(entry) > 0:
        windows.append(int(entry))
      else:
        raise ValueError(f"window_pattern entry {entry!r} is not one of 'local', 'global' "
                         'or a window size > 0')
    return tuple(windows[i % len(windows)] for i in range(self.n_layers))

  def _resolve_defaults(self):
    """Fills the fields whose default depends on other fields, so every reader sees one value."""
    # Remembered (outside the dataclass fields) so that replace() re-derives them.
    object.__setattr__(
        self, '_defaulted',
        frozenset(name for name in ('n_kv_heads', 'qkv_bias', 'd_ff', 'head_dim')
                  if getattr(self, name) is None))
    if self.n_kv_heads is None:
      object.__setattr__(self, 'n_kv_heads', self.n_heads)
    if self.qkv_bias is None:
      object.__setattr__(self, 'qkv_bias', self.use_bias)
    if self.head_dim is None and is_int(self.d_model) and is_int(self.n_heads) and self.n_heads > 0:
      object.__setattr__(self, 'head_dim', self.d_model // self.n_heads)
    if self.d_ff is None and isinstance(self.d_model, int) and self.d_model > 0:
      gated = self.mlp in GATED_MLPS
      d_ff = swiglu_hidden_size(self.d_model) if gated else 4 * self.d_model
      object.__setattr__(self, 'd_ff', d_ff)

  @property
  def rotary_dims(self) -> int:
    """How many of each head's dimensions rotary rotates (HF: int(head_dim * fraction))."""
    return int(self.head_dim * self.rotary_fraction)

  def _local_rope(self, layer: int) -> bool:
    """Whether a layer takes rope_local_theta (a window layer, when that is set)."""
    return self.layer_windows[layer] is not None and self.rope_local_theta is not None

  def layer_rope_theta(self, layer: int) -> float:
    return self.rope_local_theta if self._local_rope(layer) else self.rope_theta

  def layer_rope_scaling(self, layer: int) -> str:
    return 'none' if self._local_rope(layer) else self.rope_scaling

  @property
  def padded_vocab_size(self) -> int:
    m = self.vocab_pad_multiple
    return m * ((self.vocab_size + m - 1) // m)

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def params_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  def replace(self, **changes) -> 'ModelConfig':
    rederive = {name: None for name in self._defaulted if name not in changes}
    return dataclasses.replace(self, **rederive, **changes)


def _is_positive_int(value: Any) -> bool:
  return is_int(value) and value > 0


def _is_nonempty_str(value: Any) -> bool:
  return isinstance(value, str) and bool(value)


def _choices(allowed) -> str:
  return f'is not one of {", ".join(map(repr, allowed))}'


@dataclasses.dataclass(frozen=True)
class OptimConfig(_Section):
  """`config.optim`: AdamW on a warmup + decay schedule, with global-norm clipping and gradient
  accumulation. Defaults are nanoGPT's GPT-2 (124M) recipe; small configs override warmup_steps
  and decay_steps."""

  SECTION: ClassVar[str] = 'optim'

  lr: float = 6e-4  # peak learning rate, reached at the end of warmup
  min_lr_ratio: float = 0.1  # the schedule decays to lr * min_lr_ratio
  warmup_steps: int = 2000
  # Step at which the decay reaches min lr (counted from step 0, warmup included); None: the run's
  # total number of steps.
  decay_steps: int | None = None
  schedule: str = 'cosine'
  # 'wsd' (warmup-stable-decay): the peak lr until the last decay_fraction of decay_steps, then a
  # linear decay; a run of any length shares its stable phase with a longer one, so one long run's
  # checkpoints can be cooled down at several budgets (train.init_state='full').
  decay_fraction: float = 0.2
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.1
  # nanoGPT decays every matrix, the embedding tables included (wte is also the tied LM head).
  decay_embeddings: bool = True
  grad_clip: float | None = 1.0  # max global gradient norm; 0 or None: no clipping
  # Micro-batches per optimizer step, or 'auto': the fewest whose step fits in memory, found
  # before the first step (gptjax.memory).
  grad_accum_steps: int | str = 1

  def __post_init__(self):
    fraction = 'must be in [0, 1)'
    self._require([
        ('lr', is_number(self.lr) and self.lr > 0, 'must be > 0'),
        ('min_lr_ratio', is_number(self.min_lr_ratio)
         and 0 <= self.min_lr_ratio <= 1, 'must be in [0, 1]'),
        ('warmup_steps', is_int(self.warmup_steps)
         and self.warmup_steps >= 0, 'must be an integer >= 0'),
        ('decay_steps', self.decay_steps is None
         or _is_positive_int(self.decay_steps), 'must be None or a positive integer'),
        ('schedule', self.schedule in SCHEDULES, _choices(SCHEDULES)),
        ('decay_fraction', is_number(self.decay_fraction)
         and 0 < self.decay_fraction <= 1, 'must be in (0, 1]'),
        ('b1', is_number(self.b1) and 0 <= self.b1 < 1, fraction),
        ('b2', is_number(self.b2) and 0 <= self.b2 < 1, fraction),
        ('eps', is_number(self.eps) and self.eps > 0, 'must be > 0'),
        ('weight_decay', is_number(self.weight_decay) and self.weight_decay >= 0, 'must be >= 0'),
        ('decay_embeddings', isinstance(self.decay_embeddings, bool), 'must be True or False'),
        ('grad_clip', self.grad_clip is None or (is_number(self.grad_clip) and self.grad_clip >= 0),
         'must be None or >= 0 (0 and None disable clipping)'),
        ('grad_accum_steps', self.grad_accum_steps == 'auto'
         or _is_positive_int(self.grad_accum_steps), "must be an integer >= 1 or 'auto'"),
    ])
    # After the fields, so that both sides of the comparison are known to be integers.
    self._require([('decay_steps', self.decay_steps is None or self.schedule == 'constant'
                    or self.decay_steps >= self.warmup_steps,
                    f'must be >= optim.warmup_steps={self.warmup_steps} '
                    '(decay starts when warmup ends)')])
    if self.schedule == 'wsd' and self.decay_steps is not None:
      self._require([('decay_fraction', self.decay_start >= self.warmup_steps,
                      f'leaves a stable phase from step {self.decay_start}, before warmup ends at '
                      f'optim.warmup_steps={self.warmup_steps}; lower one of them')])

  @property
  def decay_start(self) -> int:
    """The step at which the lr starts to fall from its peak: warmup's end, or under 'wsd' the
    end of the stable phase (decay_steps must be resolved)."""
    if self.schedule != 'wsd':
      return self.warmup_steps
    return self.decay_steps - round(self.decay_fraction * self.decay_steps)


@dataclasses.dataclass(frozen=True)
class TrainConfig(_Section):
  """`config.train`: how long the loop runs, on what batches, and how often it logs, evaluates
  and checkpoints."""

  SECTION: ClassVar[str] = 'train'

  steps: int = 1000
  batch_size: int = 8  # global, in sequences, across devices and accumulation steps
  seq_len: int | None = None  # None: model.block_size
  log_every: int = 10
  eval_every: int = 100
  eval_batches: int = 8
  ckpt_every: int = 500
  keep_checkpoints: int = 3
  init_from: str = 'scratch'  # 'scratch' | a workdir | 'hf:PATH_OR_NAME'
  init_step: int | None = None  # the checkpoint of an init_from workdir; None: its latest
  # 'params': fine-tune, from step 0 with a fresh optimizer. 'full': branch the init_from workdir's
  # run at init_step, its optimizer state and step count too, as if it had been trained in this
  # workdir (a warmup-stable-decay run cooled down from a longer run's checkpoint).
  init_state: str = 'params'
  # PaLM's z-loss: z_loss * log(Z)^2 of the output softmax added to the loss (e.g. 1e-4); logged
  # as z_loss, apart from the cross-entropy. 0: off.
  z_loss: float = 0.0
  # At each evaluation, also log max_attn_logit: the largest attention logit (before soft-caps)
  # on the first validation batch, what QK-norm and soft-capping keep from growing.
  log_attention_logits: bool = False
  # Batches a background thread gathers and puts on the devices ahead of the step that trains on
  # them (each still a function of its step number); 0: made in the loop, between steps.
  prefetch: int = 2

  def __post_init__(self):
    counts = ('steps', 'batch_size', 'log_every', 'eval_every', 'eval_batches', 'ckpt_every',
              'keep_checkpoints')
    self._require([
        *((name, _is_positive_int(getattr(self, name)), 'must be a positive integer')
          for name in counts),
        ('seq_len', self.seq_len is None or _is_positive_int(self.seq_len),
         'must be None (model.block_size) or a positive integer'),
        ('init_from', _is_nonempty_str(self.init_from),
         "must be 'scratch', a workdir or 'hf:PATH_OR_NAME'"),
        ('init_step', self.init_step is None or (is_int(self.init_step) and self.init_step >= 0),
         'must be None (the latest checkpoint) or an integer >= 0'),
        ('init_state', self.init_state in INIT_STATES, _choices(INIT_STATES)),
        ('z_loss', is_number(self.z_loss) and self.z_loss >= 0, 'must be a number >= 0'),
        ('log_attention_logits', isinstance(self.log_attention_logits,
                                            bool), 'must be True or False'),
        ('prefetch', is_int(self.prefetch) and self.prefetch >= 0, 'must be an integer >= 0'),
    ])
    from_workdir = self.init_from not in ('scratch', '') and not self.init_from.startswith('hf:')
    self._require([
        ('init_step', self.init_step is None
         or from_workdir, f'needs train.init_from to be a workdir (it is {self.init_from!r})'),
        ('init_state', self.init_state == 'params' or from_workdir,
         f"'full' needs train.init_from to be a workdir (it is {self.init_from!r})"),
    ])


@dataclasses.dataclass(frozen=True)
class DataConfig(_Section):
  """`config.data`: the corpus, its tokenizer and split, where the prepared tokens are cached,
  and the order in which training batches are drawn."""

  SECTION: ClassVar[str] = 'data'

  corpus: str = 'stdlib'  # 'stdlib' | a local file or directory | 'shakespeare' | 'hf:NAME'
  tokenizer: str = 'gpt2'  # 'gpt2' | 'bytes'
  data_dir: str = 'data'  # prepared train.bin/val.bin are cached here, keyed by corpus
  val_percent: int = DEFAULT_VAL_PERCENT  # of the corpus held out for validation
  max_bytes: int | None = None  # use only this much of the corpus's text; None: all of it
  # The order of training batches, separate from `seed` so that runs differing only in their init
  # seed (an ablation's repeats) see exactly the same data.
  seed: int = 0

  def __post_init__(self):
    self._require([
        ('corpus', _is_nonempty_str(self.corpus),
         "must be 'stdlib', 'shakespeare', a local path or 'hf:NAME[:CONFIG]'"),
        ('tokenizer', self.tokenizer in TOKENIZER_NAMES, _choices(TOKENIZER_NAMES)),
        ('data_dir', _is_nonempty_str(self.data_dir), 'must be a directory path'),
        ('val_percent', is_int(self.val_percent)
         and 0 < self.val_percent < 100, 'must be an integer in 1..99'),
        ('max_bytes', self.max_bytes is None
         or _is_positive_int(self.max_bytes), 'must be None or a positive integer'),
        ('seed', is_int(self.seed) and self.seed >= 0, 'must be an integer >= 0'),
    ])


# The vocabulary of logical axis names that parameters and activations carry (gptjax.layers.dense
# sets them; gptjax.parallel maps them onto the mesh through ShardingConfig.rules).
AXIS_NAMES = ('batch', 'sequence', 'embed', 'heads', 'kv_heads', 'head_dim', 'mlp', 'vocab',
              'expert', 'layers')
MESH_AXES = ('data', 'fsdp', 'tensor', 'expert')  # config.sharding.mesh's axes
DEFAULT_MESH = {'data': -1, 'fsdp': 1, 'tensor': 1, 'expert': 1}
# Logical name -> the mesh axes it is split over ('a,b': over both; '': never split). The batch
# is split over every axis that does not split the weights' compute (data parallelism, and FSDP,
# which gathers each weight for its layer); FSDP shards the weights' embed axis; tensor
# parallelism (Megatron) splits heads and the MLP's hidden width, so that the q/k/v and fc
# projections are column-parallel and their output projections row-parallel.
DEFAULT_RULES = {
    'batch': 'data,fsdp,expert',
    'sequence': '',
    'embed': 'fsdp',
    'heads': 'tensor',
    'kv_heads': 'tensor',
    'head_dim': '',
    'mlp': 'tensor',
    'vocab': 'tensor',
    'expert': 'expert',
    'layers': '',
}


@dataclasses.dataclass(frozen=True)
class ShardingConfig(_Section):
  """`config.sharding`: the device mesh and which logical axes are split over which of its axes.

  mesh: devices per mesh axis (data, fsdp, tensor, expert); one may be -1, "all the rest". The
  default, data=-1, is plain data parallelism. FSDP: fsdp=-1 (or data x fsdp: hybrid sharded
  data parallelism). Tensor parallelism: tensor=N, kept within one host.
  rules: logical axis name -> comma-separated mesh axes ('' for none); see DEFAULT_RULES.
  """

  SECTION: ClassVar[str] = 'sharding'

  mesh: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_MESH))
  rules: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_RULES))

  def __post_init__(self):
    for key in self.mesh:
      if key not in MESH_AXES:
        raise ValueError(f'unknown sharding.mesh axis {key!r}{closest_key_hint(key, MESH_AXES)}')
    for axis, size in self.mesh.items():
      if not (is_int(size) and (size >= 1 or size == -1)):
        raise ValueError(f'sharding.mesh.{axis}={size!r} must be a positive number of devices, '
                         'or -1 for all the devices the other axes leave')
    rest = [axis for axis, size in self.mesh.items() if size == -1]
    if len(rest) > 1:
      raise ValueError(f'sharding.mesh: {" and ".join(rest)} are both -1; at most one axis takes '
                       '"the rest" of the devices')
    for name, value in self.rules.items():
      if name not in AXIS_NAMES:
        raise ValueError(
            f'unknown sharding.rules axis {name!r}{closest_key_hint(name, AXIS_NAMES)}')
      axes = _rule_axes(value) if isinstance(value, str) else None
      if axes is None or not all(a in MESH_AXES for a in axes) or len(set(axes)) < len(axes):
        raise ValueError(f'sharding.rules.{name}={value!r} must name distinct mesh axes, comma '
                         f"separated, from {', '.join(MESH_AXES)} ('' for none)")

  @classmethod
  def from_config(cls, config: Mapping[str, Any]):
    if 'fsdp' in config:  # the one field of the first release's section
      raise ValueError('sharding.fsdp is now a mesh axis: sharding.mesh.fsdp=-1 (with '
                       'sharding.mesh.data=1) shards the state over every device')
    return super().from_config(config)

  @classmethod
  def from_saved(cls, saved: Mapping[str, Any] | None) -> 'ShardingConfig':
    """The section saved with a checkpoint; the first release's {'fsdp': bool} is its mesh."""
    saved = dict(saved or {})
    if 'fsdp' in saved:
      saved = {'mesh': {'data': 1, 'fsdp': -1} if saved.pop('fsdp') else dict(DEFAULT_MESH)}
    return cls.from_config(saved)

  def __hash__(self):  # sections are hashable (cache keys); dicts are not
    return hash((tuple(self.mesh.items()), tuple(self.rules.items())))

  def rule_axes(self) -> dict[str, tuple[str, ...]]:
    """Every logical name -> the mesh axes it is split over (the defaults for names not set)."""
    return {name: _rule_axes(self.rules.get(name, DEFAULT_RULES[name])) for name in AXIS_NAMES}


def _rule_axes(value: str) -> tuple[str, ...]:
  return tuple(axis.strip() for axis in value.split(',') if axis.strip())


EVAL_TYPES = ('multiple_choice', 'loglikelihood', 'lm_eval')


@dataclasses.dataclass(frozen=True)
class EvalConfig(_Section):
  """One entry of `config.evals` (a ConfigDict of named evals), run by the trainer at its own
  cadence on process 0 while training goes on (gptjax.eval.inloop)."""

  SECTION: ClassVar[str] = 'evals'

  # 'multiple_choice': a JSONL of HellaSwag-form questions ({"ctx", "endings", "label"}), acc
  # and acc_norm. 'loglikelihood': a text file (one document) or a JSONL of {"text"} documents,
  # bits per byte. 'lm_eval': an lm-evaluation-harness task (needs the [eval] extra), its metrics.
  type: str = 'multiple_choice'
  path: str = ''  # the data file (multiple_choice, loglikelihood)
  task: str = ''  # lm_eval: a task name or a task YAML file
  limit: int | None = None  # the first N questions / documents / task examples; None: all
  every: int | None = None  # steps between two runs of it; None: train.eval_every
  batch_size: int = 16  # rows per forward pass

  def __post_init__(self):
    self._require([
        ('type', self.type in EVAL_TYPES, _choices(EVAL_TYPES)),
        ('limit', self.limit is None
         or _is_positive_int(self.limit), 'must be None (all) or a positive integer'),
        ('every', self.every is None
         or _is_positive_int(self.every), 'must be None (train.eval_every) or a positive integer'),
        ('batch_size', _is_positive_int(self.batch_size), 'must be a positive integer'),
    ])
    needs = 'task' if self.type == 'lm_eval' else 'path'
    self._require([
        (needs, _is_nonempty_str(getattr(self, needs)), f'is needed by type={self.type!r}' +
         (' (an lm-eval task name or YAML file)' if needs == 'task' else ' (the data file)'))
    ])

  @classmethod
  def named(cls, name: str, config: Mapping[str, Any]) -> 'EvalConfig':
    """config.evals.<name>, with errors naming `evals.<name>.<field>`."""
    try:
      return cls.from_config(config)
    except ValueError as e:
      raise ValueError(
          str(e).replace('evals.', f'evals.{name}.',
                         1).replace('unknown evals config',
                                    f'unknown evals.{name} config')) from None


def _section_dict(cls, overrides: dict[str, Any]) -> 'ml_collections.ConfigDict':
  """Every field of the dataclass `cls` with its default or override, as a ConfigDict.

  A field whose default is None ("derive it", "all of it") becomes a placeholder of its declared
  type, so that a command-line override such as --config.train.seq_len=64 is parsed as an int
  rather than rejected. A field of several types (`int | str`) takes any literal:
  --config.optim.grad_accum_steps=8 is the int 8, =auto the string.
  """
  import ml_collections
  from ml_collections import config_dict

  types = typing.get_type_hints(cls)
  section = ml_collections.ConfigDict()
  for f in dataclasses.fields(cls):
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    value = overrides.pop(f.name, default)
    if value is None:
      # `int | None` -> int; a plain `int` set to None stays an int field (and fails validation).
      value_type = next((t for t in typing.get_args(types[f.name]) if t is not type(None)),
                        types[f.name])
      value = config_dict.placeholder(value_type)
    elif len([t for t in typing.get_args(types[f.name]) if t is not type(None)]) > 1:
      value = config_dict.FieldReference(value, field_type=object)
    section[f.name] = value
  if overrides:
    cls.from_config(overrides)  # raises, naming the unknown field
  return section


def model_config_dict(**overrides) -> 'ml_collections.ConfigDict':
  """`config.model` for an ml_collections config file: every ModelConfig field, typed.

  Config files start from this and override what their model changes, so a new ModelConfig field
  is automatically available to every config and every command line.
  """
  return _section_dict(ModelConfig, overrides)


def optim_config_dict(**overrides) -> 'ml_collections.ConfigDict':
  """`config.optim`: every OptimConfig field, typed, with its default unless overridden."""
  return _section_dict(OptimConfig, overrides)


def train_config_dict(**overrides) -> 'ml_collections.ConfigDict':
  """`config.train`: every TrainConfig field, typed, with its default unless overridden."""
  return _section_dict(TrainConfig, overrides)


def data_config_dict(**overrides) -> 'ml_collections.ConfigDict':
  """`config.data`: every DataConfig field, typed, with its default unless overridden."""
  return _section_dict(DataConfig, overrides)


def sharding_config_dict(**overrides) -> 'ml_collections.ConfigDict':
  """`config.sharding`: every ShardingConfig field, typed, with its default unless overridden."""
  return _section_dict(ShardingConfig, overrides)


def eval_config_dict(**overrides) -> 'ml_collections.ConfigDict':
  """One named eval for `config.evals`: every EvalConfig field, typed, e.g.
  config.evals.choices = eval_config_dict(type='multiple_choice', path='data/hs.jsonl')."""
  return _section_dict(EvalConfig, overrides)


def base_config(**model_overrides) -> 'ml_collections.ConfigDict':
  """Every section a training run reads, with defaults; config files override what they change."""
  import ml_collections

  config = ml_collections.ConfigDict()
  config.seed = 0  # parameter init and dropout
  config.model = model_config_dict(**model_overrides)
  config.data = data_config_dict()
  config.optim = optim_config_dict()
  config.train = train_config_dict()
  config.sharding = sharding_config_dict()
  config.evals = ml_collections.ConfigDict()  # name -> eval_config_dict(...): none by default
  return config
