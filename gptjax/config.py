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
QK_NORMS = ('none', 'head')
NORM_POSITIONS = ('pre', 'post')
POSITIONS = ('learned', 'rope', 'none')
ATTENTION_IMPLS = ('xla', 'cudnn', 'explicit', 'auto')
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
  d_ff: int | None = None  # None: 4*d_model, or Llama's 8/3 rule for a gated MLP
  mlp: str = 'gelu'
  norm: str = 'layernorm'
  norm_position: str = 'pre'
  norm_eps: float = 1e-5
  qk_norm: str = 'none'
  scale_embeddings: bool = False  # token embeddings x sqrt(d_model), as Gemma (and Vaswani et al.)
  position: str = 'learned'
  rope_theta: float = 10000.0
  # Sliding window: each query sees this many most recent keys (itself included); None: all.
  attention_window: int | None = None
  tie_embeddings: bool = True
  use_bias: bool = True  # biases of the dense layers and LayerNorm
  qkv_bias: bool | None = None  # None: follows use_bias
  embd_dropout: float = 0.0
  attn_dropout: float = 0.0
  resid_dropout: float = 0.0
  dtype: str = 'float32'  # compute dtype of matmuls and activations
  param_dtype: str = 'float32'
  # Full-sequence attention kernel (gptjax.layers.KERNELS); 'auto': cuDNN flash attention where
  # it applies, else XLA; 'explicit' materialises the probabilities (the plain reference).
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
  remat: bool = False  # recompute each block in the backward pass: less memory, ~1/3 more compute

  def __post_init__(self):
    self._resolve_defaults()
    for name in ('vocab_size', 'vocab_pad_multiple', 'block_size', 'n_layers', 'd_model', 'n_heads',
                 'n_kv_heads', 'd_ff'):
      _positive_int(name, getattr(self, name))
    _choice('mlp', self.mlp, MLPS)
    _choice('norm', self.norm, NORMS)
    _choice('qk_norm', self.qk_norm, QK_NORMS)
    _choice('norm_position', self.norm_position, NORM_POSITIONS)
    _choice('position', self.position, POSITIONS)
    _choice('attention_impl', self.attention_impl, ATTENTION_IMPLS)
    _choice('dtype', self.dtype, DTYPES)
    _choice('param_dtype', self.param_dtype, DTYPES)
    _choice('parametrization', self.parametrization, PARAMETRIZATIONS)
    if self.mup_base_width is not None:
      _positive_int('mup_base_width', self.mup_base_width)
    elif self.parametrization == 'mup':
      raise ValueError('parametrization=mup needs mup_base_width: the d_model at which the '
                       'learning rate and init were tuned (e.g. mup_base_width=64)')
    if self.mup_base_head_dim is not None:
      _positive_int('mup_base_head_dim', self.mup_base_head_dim)
    _positive_float('mup_output_multiplier', self.mup_output_multiplier)
    if self.d_model % self.n_heads:
      raise ValueError(f'd_model={self.d_model} must be divisible by n_heads={self.n_heads}')
    if self.n_heads % self.n_kv_heads:
      raise ValueError(f'n_heads={self.n_heads} must be divisible by n_kv_heads='
                       f'{self.n_kv_heads} (each kv head serves a whole group of query heads)')
    if self.position == 'rope' and self.head_dim % 2:
      raise ValueError(f'position=rope needs an even head_dim, got d_model/n_heads={self.head_dim}')
    if self.attention_window is not None:
      _positive_int('attention_window', self.attention_window)
    for name in ('norm_eps', 'rope_theta', 'init_std'):
      _positive_float(name, getattr(self, name))
    for name in ('embd_dropout', 'attn_dropout', 'resid_dropout'):
      _probability(name, getattr(self, name))
    for name in ('tie_embeddings', 'use_bias', 'qkv_bias', 'remat', 'scale_embeddings'):
      if not isinstance(getattr(self, name), bool):
        raise ValueError(f'{name}={getattr(self, name)!r} must be True or False')

  def _resolve_defaults(self):
    """Fills the fields whose default depends on other fields, so every reader sees one value."""
    # Remembered (outside the dataclass fields) so that replace() re-derives them.
    object.__setattr__(
        self, '_defaulted',
        frozenset(name for name in ('n_kv_heads', 'qkv_bias', 'd_ff')
                  if getattr(self, name) is None))
    if self.n_kv_heads is None:
      object.__setattr__(self, 'n_kv_heads', self.n_heads)
    if self.qkv_bias is None:
      object.__setattr__(self, 'qkv_bias', self.use_bias)
    if self.d_ff is None and isinstance(self.d_model, int) and self.d_model > 0:
      gated = self.mlp in GATED_MLPS
      d_ff = swiglu_hidden_size(self.d_model) if gated else 4 * self.d_model
      object.__setattr__(self, 'd_ff', d_ff)

  @property
  def head_dim(self) -> int:
    return self.d_model // self.n_heads

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


@dataclasses.dataclass(frozen=True)
class ShardingConfig(_Section):
  """`config.sharding`: how parameters and optimizer state are placed on the devices (the batch
  is always split across all of them)."""

  SECTION: ClassVar[str] = 'sharding'

  fsdp: bool = False  # shard params and optimizer state across devices too

  def __post_init__(self):
    self._require([('fsdp', isinstance(self.fsdp, bool), 'must be True or False')])


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
    value = overrides.pop(f.name, f.default)
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
  return config
