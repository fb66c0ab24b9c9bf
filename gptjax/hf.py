"""Hugging Face `transformers` checkpoints in and out: GPT-2 and the Llama family.

`from_hf` turns a transformers model object, a directory saved with `save_pretrained`, or a Hub
name into `(ModelConfig, params)`; `to_hf` writes params as a directory that
`AutoModelForCausalLM.from_pretrained` loads. The point of both is logit parity with the
reference implementation (the tests compare logits with transformers'), so a checkpoint whose
architecture gptjax cannot reproduce exactly is refused with the field that differs, never
approximated.

Names: one table per family (`_gpt2_weights`, `_llama_weights`) lists, for every HF tensor, the
leaves of our params tree it is made of; import and export both read the same table.
transformers, torch and huggingface_hub are imported only inside the functions that need them.
"""

from __future__ import annotations

import glob
import importlib
import json
import math
import os
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from gptjax.config import ModelConfig
from gptjax.model import abstract_params, param_paths


def _package(module: str, pip_name: str, purpose: str):
  try:
    return importlib.import_module(module)
  except ImportError:
    raise ImportError(f'{purpose} needs {pip_name}: pip install {pip_name}') from None


def _require(hf: Mapping[str, Any], field: str, default: Any, allowed: tuple, why: str) -> Any:
  value = hf.get(field, default)
  if value not in allowed:
    raise ValueError(f'{hf.get("model_type")} config {field}={value!r} cannot be reproduced '
                     f'exactly by gptjax ({why}); supported: {", ".join(map(repr, allowed))}')
  return value


# ---------------------------------------------------------------------------------------------
# Configs: Hugging Face config dict -> ModelConfig. Missing keys take the transformers class
# defaults, so config.json files written by older transformers versions read the same.

# Each family's activation names -> gptjax's cfg.mlp, and back for export. transformers' 'gelu'
# is the exact (erf) GELU; 'gelu_new' and 'gelu_pytorch_tanh' are both the tanh approximation.
_GPT2_MLPS = {'gelu_new': 'gelu', 'gelu_pytorch_tanh': 'gelu', 'gelu': 'gelu_exact'}
_LLAMA_MLPS = {
    'silu': 'swiglu', 'swish': 'swiglu', 'gelu_pytorch_tanh': 'geglu', 'gelu_new': 'geglu'
}
_GPT2_ACTIVATIONS = {'gelu': 'gelu_new', 'gelu_exact': 'gelu'}
_LLAMA_ACTIVATIONS = {'swiglu': 'silu', 'geglu': 'gelu_pytorch_tanh'}


def _gpt2_config(hf: Mapping[str, Any]) -> ModelConfig:
  activation = _require(hf, 'activation_function', 'gelu_new', tuple(_GPT2_MLPS),
                        "gptjax's MLPs have GELU in its tanh and erf forms")
  _require(hf, 'scale_attn_weights', True, (True,), 'attention logits are scaled by 1/sqrt(D)')
  _require(hf, 'scale_attn_by_inverse_layer_idx', False, (False,), 'no per-layer attention scaling')
  _require(hf, 'add_cross_attention', False, (False,), 'decoder-only, no cross-attention')
  # reorder_and_upcast_attn is accepted: it only moves the 1/sqrt(D) scale and upcasts to
  # float32 for fp16 training, and gptjax's attention softmax is always float32.
  d_model = hf['n_embd']
  return ModelConfig(vocab_size=hf['vocab_size'], block_size=hf['n_positions'],
                     n_layers=hf['n_layer'], d_model=d_model, n_heads=hf['n_head'],
                     d_ff=hf.get('n_inner') or 4 * d_model, mlp=_GPT2_MLPS[activation],
                     norm='layernorm', norm_position='pre',
                     norm_eps=hf.get('layer_norm_epsilon', 1e-5), position='learned',
                     tie_embeddings=hf.get('tie_word_embeddings',
                                           True), use_bias=True, qkv_bias=True,
                     embd_dropout=hf.get('embd_pdrop', 0.1), attn_dropout=hf.get('attn_pdrop', 0.1),
                     resid_dropout=hf.get('resid_pdrop',
                                          0.1), init_std=hf.get('initializer_range', 0.02))


def _rope_theta(hf: Mapping[str, Any]) -> float:
  # transformers 5 keeps theta in rope_parameters; 4.x wrote rope_theta (+ rope_scaling) at top.
  rope = hf.get('rope_parameters') or hf.get('rope_scaling') or {}
  rope_type = rope.get('rope_type', rope.get('type', 'default'))
  if rope_type != 'default':
    raise ValueError(f'{hf["model_type"]} config rope_parameters/rope_scaling type {rope_type!r} '
                     "cannot be reproduced exactly by gptjax (plain rotary only: 'default')")
  if rope.get('partial_rotary_factor', hf.get('partial_rotary_factor', 1.0)) != 1.0:
    raise ValueError(f'{hf["model_type"]} config partial_rotary_factor != 1 cannot be reproduced '
                     'exactly by gptjax (rotary on the whole head)')
  return float(rope.get('rope_theta', hf.get('rope_theta', 10000.0)))


def _attention_window(hf: Mapping[str, Any]) -> int | None:
  """Our attention_window has the same meaning as HF's sliding_window (key within the last w)."""
  kind = hf['model_type']
  if kind == 'mistral':
    return hf.get('sliding_window', 4096)
  if kind == 'qwen2' and hf.get('use_sliding_window', False):
    n = hf['num_hidden_layers']
    first_sliding = hf.get('max_window_layers', 28)  # Qwen2: layers from here on slide
    types = hf.get('layer_types') or [
        'sliding_attention' if i >= first_sliding else 'full_attention' for i in range(n)
    ]
    if len(set(types)) > 1:
      raise ValueError('qwen2 config mixes sliding and full attention layers (layer_types / '
                       'max_window_layers): gptjax uses one attention_window for every layer')
    return hf['sliding_window'] if types[0] == 'sliding_attention' else None
  return None


def _llama_biases(hf: Mapping[str, Any]) -> tuple[bool, bool]:
  """(qkv_bias, use_bias) of Llama (attention_bias, mlp_bias), Mistral (none), Qwen2 (q/k/v)."""
  kind = hf['model_type']
  if kind == 'qwen2':
    return True, False
  if kind == 'mistral':
    return False, False
  attention_bias, mlp_bias = hf.get('attention_bias', False), hf.get('mlp_bias', False)
  if attention_bias != mlp_bias:
    # HF's attention_bias covers q/k/v and o_proj; our use_bias covers o_proj and the MLP.
    raise ValueError(f'llama config attention_bias={attention_bias} with mlp_bias={mlp_bias} '
                     'cannot be reproduced exactly by gptjax (use_bias sets the attention output '
                     'and MLP biases together)')
  return attention_bias, attention_bias


def _llama_config(hf: Mapping[str, Any]) -> ModelConfig:
  activation = _require(hf, 'hidden_act', 'silu', tuple(_LLAMA_MLPS),
                        'gated MLPs gate with SiLU (SwiGLU) or tanh GELU (GeGLU)')
  d_model, n_heads = hf['hidden_size'], hf['num_attention_heads']
  head_dim = hf.get('head_dim') or d_model // n_heads
  if head_dim * n_heads != d_model:
    raise ValueError(f'{hf["model_type"]} config head_dim={head_dim} cannot be reproduced exactly '
                     f'by gptjax (needs head_dim == hidden_size / num_attention_heads = '
                     f'{d_model / n_heads:g})')
  qkv_bias, use_bias = _llama_biases(hf)
  return ModelConfig(vocab_size=hf['vocab_size'], block_size=hf['max_position_embeddings'],
                     n_layers=hf['num_hidden_layers'], d_model=d_model, n_heads=n_heads,
                     n_kv_heads=hf.get('num_key_value_heads') or n_heads,
                     d_ff=hf['intermediate_size'], mlp=_LLAMA_MLPS[activation], norm='rmsnorm',
                     norm_position='pre', norm_eps=hf.get('rms_norm_eps', 1e-6), position='rope',
                     rope_theta=_rope_theta(hf), attention_window=_attention_window(hf),
                     tie_embeddings=hf.get('tie_word_embeddings',
                                           False), use_bias=use_bias, qkv_bias=qkv_bias,
                     embd_dropout=0.0, attn_dropout=hf.get('attention_dropout', 0.0),
                     resid_dropout=0.0, init_std=hf.get('initializer_range', 0.02))


# ---------------------------------------------------------------------------------------------
# Weight tables: HF tensor name -> our params path(s), the names without the base-model prefix
# ('transformer.' / 'model.'), which HF drops when a checkpoint is saved from the base model.
# HF stores every weight as a matrix [in, out] (after the torch transpose) or a vector [out];
# ours keep heads as axes ([C, H, D], [H, D, C]), so each of ours is that matrix reshaped.


class Weight(NamedTuple):
  hf_name: str
  ours: tuple[str, ...]  # param paths; several: split along HF's output axis (GPT-2's q|k|v)
  transpose: bool = False  # torch nn.Linear stores [out, in]; our kernels start with the input
  in_axes: int = 1  # how many of our leading axes make HF's input axis (0 for a vector)


def _gpt2_weights(cfg: ModelConfig) -> list[Weight]:
  # GPT-2's Conv1D stores [in, out] like our kernels; c_attn is q|k|v along its output axis.
  table = [
      Weight('wte.weight', ('wte/embedding',)),
      Weight('wpe.weight', ('wpe/embedding',)),
      Weight('ln_f.weight', ('norm_f/scale',), in_axes=0),
      Weight('ln_f.bias', ('norm_f/bias',), in_axes=0)
  ]
  for i in range(cfg.n_layers):
    block, h = f'blocks_{i}', f'h.{i}'
    qkv = tuple(f'{block}/attn/{name}' for name in ('query', 'key', 'value'))
    table += [
        Weight(f'{h}.attn.c_attn.weight', tuple(f'{p}/kernel' for p in qkv)),
        Weight(f'{h}.attn.c_attn.bias', tuple(f'{p}/bias' for p in qkv), in_axes=0),
        Weight(f'{h}.attn.c_proj.weight', (f'{block}/attn/out/kernel',), in_axes=2)
    ]
    for ours, theirs in (('attn_norm/scale', 'ln_1.weight'), ('attn_norm/bias', 'ln_1.bias'),
                         ('attn/out/bias', 'attn.c_proj.bias'), ('mlp_norm/scale', 'ln_2.weight'),
                         ('mlp_norm/bias', 'ln_2.bias'), ('mlp/fc/bias', 'mlp.c_fc.bias'),
                         ('mlp/proj/bias', 'mlp.c_proj.bias')):
      table.append(Weight(f'{h}.{theirs}', (f'{block}/{ours}',), in_axes=0))
    table += [
        Weight(f'{h}.mlp.c_fc.weight', (f'{block}/mlp/fc/kernel',)),
        Weight(f'{h}.mlp.c_proj.weight', (f'{block}/mlp/proj/kernel',))
    ]
  if not cfg.tie_embeddings:
    table.append(Weight('lm_head.weight', ('lm_head',)))
  return table


def _llama_weights(cfg: ModelConfig) -> list[Weight]:
  table = [
      Weight('embed_tokens.weight', ('wte/embedding',)),
      Weight('norm.weight', ('norm_f/scale',), in_axes=0)
  ]
  for i in range(cfg.n_layers):
    block, layer = f'blocks_{i}', f'layers.{i}'
    table += [
        Weight(f'{layer}.input_layernorm.weight', (f'{block}/attn_norm/scale',), in_axes=0),
        Weight(f'{layer}.post_attention_layernorm.weight', (f'{block}/mlp_norm/scale',), in_axes=0)
    ]
    projections = [('attn/query', 'self_attn.q_proj', 1, cfg.qkv_bias),
                   ('attn/key', 'self_attn.k_proj', 1, cfg.qkv_bias),
                   ('attn/value', 'self_attn.v_proj', 1, cfg.qkv_bias),
                   ('attn/out', 'self_attn.o_proj', 2, cfg.use_bias)]
    projections += [(f'mlp/{name}', f'mlp.{name}_proj', 1, cfg.use_bias)
                    for name in ('gate', 'up', 'down')]
    for ours, theirs, in_axes, has_bias in projections:
      table.append(
          Weight(f'{layer}.{theirs}.weight', (f'{block}/{ours}/kernel',), transpose=True,
                 in_axes=in_axes))
      if has_bias:
        table.append(Weight(f'{layer}.{theirs}.bias', (f'{block}/{ours}/bias',), in_axes=0))
  if not cfg.tie_embeddings:
    table.append(Weight('lm_head.weight', ('lm_head',)))  # [vocab, d_model] on both sides
  return table


class _Family(NamedTuple):
  config: Callable[[Mapping[str, Any]], ModelConfig]
  weights: Callable[[ModelConfig], list[Weight]]
  prefix: str  # the base model's name inside the *ForCausalLM state dict
  architecture: str
  ignored: tuple[str, ...]  # suffixes of non-parameter buffers some checkpoints carry


_LLAMA_BUFFERS = ('rotary_emb.inv_freq',)
_FAMILIES = {
    'gpt2': _Family(_gpt2_config, _gpt2_weights, 'transformer.', 'GPT2LMHeadModel',
                    ('.attn.bias', '.attn.masked_bias')),  # causal-mask buffers of old checkpoints
    'llama': _Family(_llama_config, _llama_weights, 'model.', 'LlamaForCausalLM', _LLAMA_BUFFERS),
    'mistral': _Family(_llama_config, _llama_weights, 'model.', 'MistralForCausalLM',
                       _LLAMA_BUFFERS),
    'qwen2': _Family(_llama_config, _llama_weights, 'model.', 'Qwen2ForCausalLM', _LLAMA_BUFFERS),
}


def _family(hf_config: Mapping[str, Any]) -> _Family:
  model_type = hf_config.get('model_type')
  if model_type not in _FAMILIES:
    raise ValueError(f'model_type={model_type!r} is not supported by gptjax.hf; supported: '
                     f'{", ".join(map(repr, _FAMILIES))}')
  return _FAMILIES[model_type]


# ---------------------------------------------------------------------------------------------
# Params trees


def _check_params(cfg: ModelConfig, params: Mapping) -> None:
  """Raises ValueError naming the first path where params is not the tree `init_params` makes."""
  expected = param_paths(abstract_params(cfg))
  got = param_paths(params)
  for path in sorted(expected.keys() | got.keys()):
    want = expected[path].shape if path in expected else 'absent'
    have = tuple(np.shape(got[path])) if path in got else 'absent'
    if want != have:
      raise ValueError(f'params do not match the model config at {path}: '
                       f'shape {have} where the config needs {want}')


def _to_ours(w: Weight, tensor: np.ndarray, shapes: Mapping[str, tuple]) -> dict[str, np.ndarray]:
  """One HF tensor -> our leaves: transposed to [in, out], split along out, reshaped."""
  matrix = tensor.T if w.transpose else tensor
  sizes = [math.prod(shapes[path][w.in_axes:]) for path in w.ours]
  if matrix.shape[-1] != sum(sizes):
    raise ValueError(f'checkpoint tensor {w.hf_name!r} has shape {tuple(tensor.shape)}, which '
                     f'does not make {", ".join(w.ours)} of the config')
  parts = np.split(matrix, np.cumsum(sizes)[:-1], axis=-1)
  return {path: part.reshape(shapes[path]) for path, part in zip(w.ours, parts)}


def _to_hf(w: Weight, leaves: list[np.ndarray]) -> np.ndarray:
  """Our leaves -> one HF tensor: flattened to [in, out] (or [out]), joined, transposed."""
  matrices = [
      leaf.reshape(math.prod(leaf.shape[:w.in_axes]), -1) if w.in_axes else leaf.reshape(-1)
      for leaf in leaves
  ]
  matrix = np.concatenate(matrices, axis=-1) if len(matrices) > 1 else matrices[0]
  return np.ascontiguousarray(matrix.T if w.transpose else matrix)


# ---------------------------------------------------------------------------------------------
# Import


def _read_config(directory: str) -> dict:
  path = os.path.join(directory, 'config.json')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{directory} has no config.json: not a save_pretrained directory')
  with open(path) as f:
    return json.load(f)


def _read_tensors(directory: str) -> dict:
  """All tensors of a save_pretrained directory: (sharded) safetensors, else pytorch_model.bin."""
  index = os.path.join(directory, 'model.safetensors.index.json')
  if os.path.isfile(index):
    with open(index) as f:
      files = sorted({os.path.join(directory, v) for v in json.load(f)['weight_map'].values()})
  else:
    files = sorted(glob.glob(os.path.join(directory, '*.safetensors')))
  if files:
    safe_open = _package('safetensors', 'safetensors', 'reading safetensors').safe_open
    tensors = {}
    for file in files:
      # framework 'flax' rather than safetensors.numpy: numpy has no bfloat16, the dtype in which
      # most Llama-family checkpoints are stored.
      with safe_open(file, framework='flax') as f:
        tensors.update({name: f.get_tensor(name) for name in f.keys()})
    return tensors
  bins = sorted(glob.glob(os.path.join(directory, 'pytorch_model*.bin')))
  if not bins:
    raise FileNotFoundError(f'{directory} has no *.safetensors or pytorch_model*.bin weights')
  torch = _package('torch', 'torch', 'reading pytorch_model.bin')
  tensors = {}
  for file in bins:
    state = torch.load(file, map_location='cpu', weights_only=True)
    tensors.update({k: v.float().numpy() for k, v in state.items()})
  return tensors


def _download(name: str) -> str:
  hub = _package('huggingface_hub', 'huggingface_hub', f'downloading {name!r} from the Hub')
  try:
    directory = hub.snapshot_download(name, allow_patterns=['*.json', '*.safetensors'])
    if not glob.glob(os.path.join(directory, '*.safetensors')):
      directory = hub.snapshot_download(name, allow_patterns=['*.json', 'pytorch_model*.bin'])
  except Exception as e:  # offline, unknown repo, gated repo: all end the same way for the user
    raise OSError(f'could not download {name!r} from the Hugging Face Hub '
                  f'({type(e).__name__}): a Hub name needs a network connection; otherwise '
                  'pass a local directory saved with save_pretrained') from None
  return directory


def from_hf(model_or_path) -> tuple[ModelConfig, dict]:
  """(ModelConfig, float32 params) from a transformers model, a save_pretrained directory or a
  Hub name. Raises ValueError naming the config field when the architecture is not one gptjax
  reproduces exactly."""
  if isinstance(model_or_path, (str, os.PathLike)):
    path = os.fspath(model_or_path)
    if os.path.exists(path) and not os.path.isdir(path):
      raise ValueError(f'{path} is a file; from_hf wants a directory saved with save_pretrained')
    directory = path if os.path.isdir(path) else _download(path)
    hf_config = _read_config(directory)
    family = _family(hf_config)
    cfg = family.config(hf_config)  # validated before any weight is read
    tensors = _read_tensors(directory)
  elif hasattr(model_or_path, 'config') and hasattr(model_or_path, 'state_dict'):
    hf_config = model_or_path.config.to_dict()
    family = _family(hf_config)
    cfg = family.config(hf_config)
    tensors = {k: v.detach().float().cpu().numpy() for k, v in model_or_path.state_dict().items()}
  else:
    raise TypeError(f'from_hf takes a transformers model, a directory or a Hub name, '
                    f'not {type(model_or_path).__name__}')

  tensors = {k.removeprefix(family.prefix): v for k, v in tensors.items()}
  shapes = {path: leaf.shape for path, leaf in param_paths(abstract_params(cfg)).items()}
  flat, used = {}, set()
  for w in family.weights(cfg):
    if w.hf_name not in tensors:
      raise ValueError(f'checkpoint has no tensor {w.hf_name!r} (for {", ".join(w.ours)})')
    tensor = np.asarray(jnp.asarray(tensors[w.hf_name], jnp.float32))
    flat.update(_to_ours(w, tensor, shapes))
    used.add(w.hf_name)
  ignored = family.ignored + (('lm_head.weight',) if cfg.tie_embeddings else ())
  unused = sorted(k for k in tensors if k not in used and not k.endswith(ignored))
  if unused:
    raise ValueError(f'checkpoint tensors {unused[:3]} have no place in the gptjax model of its '
                     'config (weights and config.json disagree?)')
  params = jax.tree.map(jnp.asarray, traverse_util.unflatten_dict(flat, sep='/'))
  _check_params(cfg, params)
  return cfg, params


# ---------------------------------------------------------------------------------------------
# Export


def _export_target(cfg: ModelConfig) -> str:
  """The HF model_type that reproduces cfg exactly, else ValueError naming what does not fit."""
  # What neither family exported here has: μP's attention scale and output multiplier (Qwen3's
  # QK-norm and Gemma's embedding scaling belong to families not exported yet).
  neither = {
      'parametrization': 'sp', 'qk_norm': 'none', 'scale_embeddings': False,
      'head_dim': cfg.d_model // cfg.n_heads, 'norm_affine': True, 'parallel_block': False,
      'rotary_fraction': 1.0, 'rope_scaling': 'none', 'rope_local_theta': None,
      'window_pattern': None, 'attn_logit_softcap': None, 'final_logit_softcap': None,
      'attention_scale_dim': None
  }
  gpt2 = {
      'position': 'learned', 'norm': 'layernorm', 'mlp': tuple(_GPT2_ACTIVATIONS),
      'norm_position': 'pre', 'n_kv_heads': cfg.n_heads, 'attention_window': None, **neither
  }
  llama = {
      'position': 'rope', 'norm': 'rmsnorm', 'mlp': tuple(_LLAMA_ACTIVATIONS),
      'norm_position': 'pre', 'attention_window': None, **neither
  }
  targets = (  # (model_type, the values cfg must have), in order of preference
      ('gpt2', gpt2),
      ('llama', {**llama, 'use_bias': True}),  # attention_bias also covers q/k/v: any qkv_bias
      ('llama', {**llama, 'use_bias': False, 'qkv_bias': False}),
      ('qwen2', {**llama, 'use_bias': False, 'qkv_bias': True}),  # biases on q/k/v only
      ('mistral',
       {**llama, 'attention_window': cfg.attention_window, 'use_bias': False,
        'qkv_bias': False}))  # Llama plus a sliding window
  misfits = {}
  for model_type, needs in targets:
    wrong = [  # a tuple: any of its values
        f'{k}{" in " if isinstance(v, tuple) else "="}{v!r} (have {getattr(cfg, k)!r})'
        for k, v in needs.items()
        if (getattr(cfg, k) not in v if isinstance(v, tuple) else getattr(cfg, k) != v)
    ]
    if not wrong:
      return model_type
    family = 'gpt2' if model_type == 'gpt2' else 'llama (or qwen2, mistral)'
    if family not in misfits or len(wrong) < len(misfits[family]):
      misfits[family] = wrong
  reasons = '; '.join(f'{family} needs {", ".join(w)}' for family, w in misfits.items())
  raise ValueError(f'config cannot be exported to Hugging Face exactly: {reasons}')


def _hf_fields(cfg: ModelConfig, model_type: str) -> dict:
  if model_type == 'gpt2':
    eot = 50256 if cfg.vocab_size > 50256 else None  # GPT-2's <|endoftext|>, if it exists
    return dict(vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.d_model,
                n_layer=cfg.n_layers, n_head=cfg.n_heads,
                n_inner=None if cfg.d_ff == 4 * cfg.d_model else cfg.d_ff,
                activation_function=_GPT2_ACTIVATIONS[cfg.mlp], layer_norm_epsilon=cfg.norm_eps,
                embd_pdrop=cfg.embd_dropout, attn_pdrop=cfg.attn_dropout,
                resid_pdrop=cfg.resid_dropout, initializer_range=cfg.init_std,
                tie_word_embeddings=cfg.tie_embeddings, bos_token_id=eot, eos_token_id=eot)
  # Llama-family models have no embedding/residual dropout: those rates are training-only and
  # do not change the exported model's outputs.
  fields = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
                num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                num_key_value_heads=cfg.n_kv_heads, max_position_embeddings=cfg.block_size,
                rms_norm_eps=cfg.norm_eps, hidden_act=_LLAMA_ACTIVATIONS[cfg.mlp],
                rope_parameters={'rope_type': 'default',
                                 'rope_theta': cfg.rope_theta}, attention_dropout=cfg.attn_dropout,
                initializer_range=cfg.init_std, tie_word_embeddings=cfg.tie_embeddings)
  if model_type == 'llama':
    fields.update(attention_bias=cfg.use_bias, mlp_bias=cfg.use_bias)
  if model_type == 'mistral':
    fields.update(sliding_window=cfg.attention_window)
  return fields


def _write_config(model_type: str, fields: dict, out_dir: str) -> None:
  fields = {**fields, 'architectures': [_FAMILIES[model_type].architecture], 'dtype': 'float32'}
  try:
    from transformers import AutoConfig
  except ImportError:  # the essentials by hand; transformers fills every other default on load
    theta = fields.get('rope_parameters', {}).get('rope_theta')
    extra = {} if theta is None else {'rope_theta': theta}  # where transformers 4.x looks
    with open(os.path.join(out_dir, 'config.json'), 'w') as f:
      json.dump({'model_type': model_type, **fields, **extra}, f, indent=2)
    return
  AutoConfig.for_model(model_type, **fields).save_pretrained(out_dir)


def to_hf(cfg: ModelConfig, params: Mapping, out_dir: str | os.PathLike) -> str:
  """Writes config.json + model.safetensors that AutoModelForCausalLM.from_pretrained loads.

  Raises ValueError listing the fields that no supported HF family (gpt2, llama, qwen2,
  mistral) reproduces exactly."""
  model_type = _export_target(cfg)
  _check_params(cfg, params)
  family = _FAMILIES[model_type]
  # Weights as the HF architecture has them: GPT-2 always has every bias, and Llama's
  # attention_bias (set by use_bias) includes q/k/v; the ones we lack are written as zeros.
  hf_cfg = cfg.replace(qkv_bias=True) if cfg.use_bias else cfg
  ours = param_paths(params)
  every_bias = param_paths(abstract_params(cfg.replace(use_bias=True, qkv_bias=True)))
  tensors = {}
  for w in family.weights(hf_cfg):
    # A bias our config leaves out is zeros of the shape the HF architecture has for it.
    leaves = [
        np.asarray(ours[p], np.float32) if p in ours else np.zeros(every_bias[p].shape, np.float32)
        for p in w.ours
    ]
    full_name = w.hf_name if w.hf_name == 'lm_head.weight' else family.prefix + w.hf_name
    tensors[full_name] = _to_hf(w, leaves)
  # Tied models store the embedding once, without lm_head.weight, as save_pretrained does.
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  save_file = _package('safetensors.numpy', 'safetensors', 'to_hf').save_file
  save_file(tensors, os.path.join(out_dir, 'model.safetensors'), metadata={'format': 'pt'})
  _write_config(model_type, _hf_fields(cfg, model_type), out_dir)
  return out_dir
