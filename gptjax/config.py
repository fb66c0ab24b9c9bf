"""The model's typed, validated configuration.

`config.model` in an ml_collections ConfigDict is the user-facing place for every architecture
knob; `ModelConfig.from_config(config.model)` turns it into this frozen dataclass, checking every
combination before anything is compiled, so a bad sweep point fails in milliseconds with a message
that names the field instead of deep inside XLA.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
from pathlib import Path
from typing import Any, Mapping

import jax.numpy as jnp

MLPS = ('gelu', 'swiglu')
NORMS = ('layernorm', 'rmsnorm')
NORM_POSITIONS = ('pre', 'post')
POSITIONS = ('learned', 'rope', 'none')
ATTENTION_IMPLS = ('xla', 'cudnn', 'auto')
DTYPES = ('float32', 'bfloat16', 'float16')


def is_int(value: Any) -> bool:
  """An int and not a bool (True is an int to Python, never a valid layer count to us)."""
  return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def closest_key_hint(key: str, known) -> str:
  """'; did you mean 'lr'?' for a misspelled key, else the list of known keys."""
  known = list(known)
  close = difflib.get_close_matches(key, known, n=1)
  return f'; did you mean {close[0]!r}?' if close else f'; known fields: {", ".join(known)}'


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


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Every architecture knob of the decoder. Defaults are GPT-2 small (124M)."""

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
  d_ff: int | None = None  # None: 4*d_model for 'gelu', Llama's 8/3 rule for 'swiglu'
  mlp: str = 'gelu'
  norm: str = 'layernorm'
  norm_position: str = 'pre'
  norm_eps: float = 1e-5
  position: str = 'learned'
  rope_theta: float = 10000.0
  attention_window: int | None = None  # each query sees this many most recent keys (itself included)
  tie_embeddings: bool = True
  use_bias: bool = True  # biases of the dense layers and LayerNorm
  qkv_bias: bool | None = None  # None: follows use_bias
  embd_dropout: float = 0.0
  attn_dropout: float = 0.0
  resid_dropout: float = 0.0
  dtype: str = 'float32'  # compute dtype of matmuls and activations
  param_dtype: str = 'float32'
  attention_impl: str = 'auto'  # 'auto': cuDNN flash attention where it applies, else XLA
  init_std: float = 0.02
  remat: bool = False  # recompute each block in the backward pass: less memory, ~1/3 more compute

  def __post_init__(self):
    self._resolve_defaults()
    for name in ('vocab_size', 'vocab_pad_multiple', 'block_size', 'n_layers', 'd_model',
                 'n_heads', 'n_kv_heads', 'd_ff'):
      _positive_int(name, getattr(self, name))
    _choice('mlp', self.mlp, MLPS)
    _choice('norm', self.norm, NORMS)
    _choice('norm_position', self.norm_position, NORM_POSITIONS)
    _choice('position', self.position, POSITIONS)
    _choice('attention_impl', self.attention_impl, ATTENTION_IMPLS)
    _choice('dtype', self.dtype, DTYPES)
    _choice('param_dtype', self.param_dtype, DTYPES)
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
    for name in ('tie_embeddings', 'use_bias', 'qkv_bias', 'remat'):
      if not isinstance(getattr(self, name), bool):
        raise ValueError(f'{name}={getattr(self, name)!r} must be True or False')

  def _resolve_defaults(self):
    """Fills the fields whose default depends on other fields, so every reader sees one value."""
    # Remembered (outside the dataclass fields) so that replace() re-derives them.
    object.__setattr__(self, '_defaulted', frozenset(
        name for name in ('n_kv_heads', 'qkv_bias', 'd_ff') if getattr(self, name) is None))
    if self.n_kv_heads is None:
      object.__setattr__(self, 'n_kv_heads', self.n_heads)
    if self.qkv_bias is None:
      object.__setattr__(self, 'qkv_bias', self.use_bias)
    if self.d_ff is None and isinstance(self.d_model, int) and self.d_model > 0:
      d_ff = swiglu_hidden_size(self.d_model) if self.mlp == 'swiglu' else 4 * self.d_model
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

  @classmethod
  def from_config(cls, config: Mapping[str, Any]) -> 'ModelConfig':
    """Builds from `config.model` (a ConfigDict or any mapping)."""
    as_dict = config.to_dict() if hasattr(config, 'to_dict') else dict(config)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in as_dict:
      if key not in known:
        raise ValueError(f'unknown model config field {key!r}{closest_key_hint(key, known)}')
    return cls(**as_dict)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def replace(self, **changes) -> 'ModelConfig':
    rederive = {name: None for name in self._defaulted if name not in changes}
    return dataclasses.replace(self, **rederive, **changes)


# Fields whose default is None ("derive it") still need a type, so that command-line overrides
# such as --config.model.n_kv_heads=2 are parsed as ints rather than rejected.
_OPTIONAL_FIELD_TYPES = {'n_kv_heads': int, 'd_ff': int, 'attention_window': int, 'qkv_bias': bool}


def model_config_dict(**overrides) -> 'ml_collections.ConfigDict':
  """`config.model` for an ml_collections config file: every ModelConfig field, typed.

  Config files start from this and override what their model changes, so a new ModelConfig field
  is automatically available to every config and every command line.
  """
  import ml_collections
  from ml_collections import config_dict

  model = ml_collections.ConfigDict()
  for f in dataclasses.fields(ModelConfig):
    value = overrides.pop(f.name, f.default)
    if value is None and f.name in _OPTIONAL_FIELD_TYPES:
      value = config_dict.placeholder(_OPTIONAL_FIELD_TYPES[f.name])
    model[f.name] = value
  if overrides:
    ModelConfig.from_config(overrides)  # raises, naming the unknown field
  return model


def base_config(**model_overrides) -> 'ml_collections.ConfigDict':
  """Every section a training run reads, with defaults; config files override what they change."""
  import ml_collections
  from ml_collections import config_dict

  from gptjax.optim import default_optim_config

  config = ml_collections.ConfigDict()
  config.seed = 0  # parameter init and dropout
  config.model = model_config_dict(**model_overrides)

  config.data = ml_collections.ConfigDict()
  config.data.corpus = 'stdlib'  # 'stdlib' | a local file or directory | 'shakespeare' | 'hf:NAME'
  config.data.tokenizer = 'gpt2'  # 'gpt2' | 'bytes'
  config.data.data_dir = 'data'  # prepared train.bin/val.bin are cached here, keyed by corpus
  config.data.val_percent = 5
  config.data.max_bytes = config_dict.placeholder(int)
  # The order of training batches, separate from `seed` so that runs differing only in their init
  # seed (an ablation's repeats) see exactly the same data.
  config.data.seed = 0

  config.optim = default_optim_config()

  config.train = ml_collections.ConfigDict()
  config.train.steps = 1000
  config.train.batch_size = 8  # global, in sequences, across devices and accumulation steps
  config.train.seq_len = config_dict.placeholder(int)  # None: model.block_size
  config.train.log_every = 10
  config.train.eval_every = 100
  config.train.eval_batches = 8
  config.train.ckpt_every = 500
  config.train.keep_checkpoints = 3
  config.train.init_from = 'scratch'  # 'scratch' | a workdir | 'hf:PATH_OR_NAME'

  config.sharding = ml_collections.ConfigDict()
  config.sharding.fsdp = False  # shard params and optimizer state across devices too
  return config
