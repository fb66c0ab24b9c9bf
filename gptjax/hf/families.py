"""What every Hugging Face family module provides, and the config readers they share.

A family is one `Family` entry: how its config.json becomes a ModelConfig (refusing, with the
field named, anything gptjax cannot reproduce exactly), the table of its tensors, what a
ModelConfig must look like to be exported as it, and the config fields written on export.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, NamedTuple

from gptjax.config import ModelConfig


class Weight(NamedTuple):
  """One HF tensor and the leaves of our params tree it is made of. HF stores every weight as a
  matrix [in, out] (after the torch transpose) or a vector [out]; ours keep heads as axes
  ([C, H, D], [H, D, C]), so each of ours is that matrix reshaped."""
  hf_name: str
  ours: tuple[str, ...]  # param paths; several: split along HF's output axis (GPT-2's q|k|v)
  transpose: bool = False  # torch nn.Linear stores [out, in]; our kernels start with the input
  in_axes: int = 1  # how many of our leading axes make HF's input axis (0 for a vector)
  # The parts interleaved head by head ([H, parts, D] along the output axis, GPT-NeoX's fused
  # query_key_value) rather than one after the other.
  per_head: bool = False
  offset: float = 0.0  # ours = HF's + offset (Gemma stores its norm gains as gain - 1)


HEAD = 'lm_head.weight'  # every family's untied LM head, outside the base model


class Family(NamedTuple):
  config: Callable[[Mapping[str, Any]], ModelConfig]  # HF config dict -> ModelConfig
  weights: Callable[[ModelConfig], list[Weight]]
  # What cfg must have to be exported as this family: {field: value, or a tuple of any of}.
  export_needs: Callable[[ModelConfig], dict[str, Any]]
  export_fields: Callable[[ModelConfig], dict[str, Any]]  # the HF config fields written
  prefix: str  # the base model's name inside the *ForCausalLM state dict
  architecture: str
  ignored: tuple[str, ...] = ()  # suffixes of non-parameter buffers some checkpoints carry
  # Tensor names older checkpoints use -> today's (Pythia's embed_out is transformers 5's lm_head).
  renamed: tuple[tuple[str, str], ...] = ()


def require(hf: Mapping[str, Any], field: str, default: Any, allowed: tuple, why: str) -> Any:
  value = hf.get(field, default)
  if value not in allowed:
    raise ValueError(f'{hf.get("model_type")} config {field}={value!r} cannot be reproduced '
                     f'exactly by gptjax ({why}); supported: {", ".join(map(repr, allowed))}')
  return value


def refuse(hf: Mapping[str, Any], field: str, why: str):
  return ValueError(f'{hf.get("model_type")} config {field}={hf.get(field)!r} cannot be '
                    f'reproduced exactly by gptjax ({why})')


# What none of the families can hold; each family's export_needs starts from it and overrides
# what it has.
NO_EXTRAS = {
    'parametrization': 'sp', 'qk_norm': 'none', 'scale_embeddings': False, 'norm_affine': True,
    'parallel_block': False, 'rotary_fraction': 1.0, 'rope_scaling': 'none',
    'rope_local_theta': None, 'window_pattern': None, 'attention_window': None,
    'attn_logit_softcap': None, 'final_logit_softcap': None, 'attention_scale_dim': None,
    'norm_position': 'pre'
}

# ---------------------------------------------------------------------------------------------
# Rotary: HF's rope_parameters (transformers 5) or rope_theta / rope_scaling (4.x) <-> our fields


def rope_fields(hf: Mapping[str, Any], theta_default: float = 10000.0,
                fraction_default: float = 1.0) -> dict[str, Any]:
  """The ModelConfig rotary fields of an HF config; scalings gptjax lacks are refused."""
  rope = dict(hf.get('rope_parameters') or hf.get('rope_scaling') or {})
  kind = rope.get('rope_type', rope.get('type', 'default'))
  model_type = hf.get('model_type')
  if kind not in ('default', 'linear', 'llama3', 'yarn'):
    raise ValueError(f'{model_type} config rope type {kind!r} cannot be reproduced exactly by '
                     "gptjax (supported: 'default', 'linear', 'llama3', 'yarn')")
  fields = {
      'rope_theta': float(rope.get('rope_theta', hf.get('rope_theta', theta_default))),
      'rotary_fraction': float(
          rope.get('partial_rotary_factor', hf.get('partial_rotary_factor', fraction_default)))
  }
  if kind == 'default':
    return fields
  original = rope.get('original_max_position_embeddings',
                      hf.get('original_max_position_embeddings'))
  factor = rope.get('factor')
  if factor is None and kind == 'yarn' and original:  # DeepSeek's convention
    factor = hf['max_position_embeddings'] / original
  fields.update(rope_scaling=kind, rope_scaling_factor=float(factor))
  if kind in ('llama3', 'yarn'):
    fields['rope_original_block_size'] = int(original or hf['max_position_embeddings'])
  if kind == 'llama3':
    fields.update(rope_low_freq_factor=float(rope['low_freq_factor']),
                  rope_high_freq_factor=float(rope['high_freq_factor']))
  if kind == 'yarn':
    # transformers' default attention factor, 0.1 ln(factor) + 1, over the rounded ramp.
    unsupported = {
        'attention_factor': rope.get('attention_factor') is not None,
        'mscale': bool(rope.get('mscale') and rope.get('mscale_all_dim')),
        'truncate': rope.get('truncate', True) is not True
    }
    for key, present in unsupported.items():
      if present:
        raise ValueError(f'{model_type} config rope {key}={rope[key]!r} cannot be reproduced '
                         "exactly by gptjax (YaRN with transformers' default attention factor "
                         'and truncated ramp)')
    fields.update(rope_beta_fast=float(rope.get('beta_fast') or 32),
                  rope_beta_slow=float(rope.get('beta_slow') or 1))
  return fields


def rope_parameters(cfg: ModelConfig) -> dict[str, Any]:
  """cfg's rotary as transformers 5's rope_parameters."""
  rope = {
      'rope_type': 'default' if cfg.rope_scaling == 'none' else cfg.rope_scaling,
      'rope_theta': cfg.rope_theta
  }
  if cfg.rotary_fraction != 1.0:
    rope['partial_rotary_factor'] = cfg.rotary_fraction
  if cfg.rope_scaling != 'none':
    rope['factor'] = cfg.rope_scaling_factor
  if cfg.rope_scaling in ('llama3', 'yarn'):
    rope['original_max_position_embeddings'] = cfg.rope_original_block_size or cfg.block_size
  if cfg.rope_scaling == 'llama3':
    rope.update(low_freq_factor=cfg.rope_low_freq_factor,
                high_freq_factor=cfg.rope_high_freq_factor)
  if cfg.rope_scaling == 'yarn':
    rope.update(beta_fast=cfg.rope_beta_fast, beta_slow=cfg.rope_beta_slow)
  return rope


# ---------------------------------------------------------------------------------------------
# Per-layer windows: HF's layer_types + sliding_window <-> attention_window + window_pattern


def window_fields(hf: Mapping[str, Any], types: list[str] | None,
                  window: int | None) -> dict[str, Any]:
  """attention_window and window_pattern of layers typed 'sliding_attention' (window `window`)
  or 'full_attention'; the pattern is the shortest period of the types."""
  n = hf['num_hidden_layers']
  if window is None or not types or 'sliding_attention' not in types:
    return {'attention_window': None, 'window_pattern': None}
  unknown = set(types) - {'sliding_attention', 'full_attention'}
  if unknown or len(types) != n:
    raise refuse(hf, 'layer_types', f'{n} layers of sliding_attention or full_attention')
  if set(types) == {'sliding_attention'}:
    return {'attention_window': int(window), 'window_pattern': None}
  period = next(p for p in range(1, n + 1) if all(types[i] == types[i % p] for i in range(n)))
  pattern = ','.join('local' if t == 'sliding_attention' else 'global' for t in types[:period])
  return {'attention_window': int(window), 'window_pattern': pattern}


def layer_types(cfg: ModelConfig) -> list[str]:
  return ['full_attention' if w is None else 'sliding_attention' for w in cfg.layer_windows]


def exportable_windows(cfg: ModelConfig) -> tuple:
  """An export need: cfg.layer_windows where an HF config can hold them (full layers and
  layers of one sliding_window), else what it would take."""
  one = single_window(cfg)
  if all(w in (None, one) for w in cfg.layer_windows):
    return cfg.layer_windows
  return ('one sliding window size',)


def single_window(cfg: ModelConfig) -> int | None:
  """The one window of cfg's windowed layers (HF families have one sliding_window), else None."""
  windows = {w for w in cfg.layer_windows if w is not None}
  return windows.pop() if len(windows) == 1 else None


def integral(hf: Mapping[str, Any], field: str, value: Any) -> int:
  if not (isinstance(value,
                     (int, float)) and math.isfinite(value) and value == int(value) and value > 0):
    raise refuse(hf, field, 'a positive whole number')
  return int(value)
