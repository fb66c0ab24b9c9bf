"""Plain NumPy (float64) transformers, written from the papers and Hugging Face's formulations,
never from gptjax: the references the layer and model tests compare against."""

import numpy as np
import pytest
import scipy.special


def np_layernorm(x, scale, bias, eps):
  x = x.astype(np.float64)
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean)**2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def np_rmsnorm(x, scale, eps, axes=(-1,)):
  x = x.astype(np.float64)
  return x / np.sqrt((x**2).mean(axes, keepdims=True) + eps) * scale


def np_inv_freq(d, theta):
  return 1.0 / theta**(np.arange(0, d, 2, dtype=np.float64) / d)  # [d/2]


def np_rope(x, positions, theta=None, inv_freq=None, factor=1.0):
  """Hugging Face Llama's formulation: x * cos + rotate_half(x) * sin, with the frequency table
  repeated over the two halves. x [B, T, N, D], positions [B, T]. inv_freq [d/2] (default: plain
  rotary over all of D with base theta): only the first d dimensions rotate, the rest pass
  through (GPT-NeoX's rotary_ndims); factor multiplies cos and sin (YaRN's attention factor)."""
  if inv_freq is None:
    inv_freq = np_inv_freq(x.shape[-1], theta)
  d = 2 * len(inv_freq)
  freqs = positions.astype(np.float64)[..., None] * inv_freq  # [B, T, d/2]
  emb = np.concatenate([freqs, freqs], axis=-1)[:, :, None, :]  # [B, T, 1, d]
  x = x.astype(np.float64)
  x_rot, x_pass = x[..., :d], x[..., d:]
  x1, x2 = x_rot[..., :d // 2], x_rot[..., d // 2:]
  rotate_half = np.concatenate([-x2, x1], axis=-1)
  rotated = (x_rot * np.cos(emb) + rotate_half * np.sin(emb)) * factor
  return np.concatenate([rotated, x_pass], axis=-1)


def hf_rope_table(cfg, theta, scaling):
  """(inv_freq, attention factor) of transformers' own rope init functions for a scaled
  rotary: the reference for linear, llama3 and yarn. They compute in torch: without it
  (GPTJAX_TESTS_WITHOUT=torch, tests/conftest.py) the tests that need them skip."""
  pytest.importorskip('torch')
  import transformers
  from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
  rope = {
      'rope_type': scaling, 'rope_theta': theta, 'factor': cfg.rope_scaling_factor,
      'partial_rotary_factor': cfg.rotary_fraction
  }
  if scaling in ('llama3', 'yarn'):
    rope['original_max_position_embeddings'] = cfg.rope_original_block_size or cfg.block_size
  if scaling == 'llama3':
    rope.update(low_freq_factor=cfg.rope_low_freq_factor,
                high_freq_factor=cfg.rope_high_freq_factor)
  if scaling == 'yarn':
    rope.update(beta_fast=cfg.rope_beta_fast, beta_slow=cfg.rope_beta_slow)
  config = transformers.LlamaConfig(hidden_size=cfg.d_model, num_attention_heads=cfg.n_heads,
                                    head_dim=cfg.head_dim, max_position_embeddings=cfg.block_size,
                                    rope_parameters=rope)
  inv_freq, factor = ROPE_INIT_FUNCTIONS[scaling](config, 'cpu')
  return inv_freq.double().numpy(), float(factor)


def np_alibi_slopes(n):
  """BLOOM's build_alibi_tensor slopes (Press et al.): 2^(-8 i / n) for a power of two n."""
  closest = 2**int(np.floor(np.log2(n)))
  base = 2.0**(-(2.0**-(np.log2(closest) - 3)))
  slopes = base**np.arange(1, closest + 1)
  if closest != n:
    extra_base = 2.0**(-(2.0**-(np.log2(2 * closest) - 3)))
    slopes = np.concatenate([slopes, extra_base**np.arange(1, 1 + 2 * (n - closest), 2)])
  return slopes


def np_softmax(s):
  s = s - s.max(-1, keepdims=True)
  e = np.exp(s)
  return e / e.sum(-1, keepdims=True)


def np_softcap(x, cap):
  return x if cap is None else cap * np.tanh(x / cap)


def np_visible(t_len, s_len, window):
  t = np.arange(t_len)[:, None]
  s = np.arange(s_len)[None, :]
  visible = s <= t
  if window is not None:
    visible &= t - s < window
  return visible


def np_attention_scale(cfg):
  """1 / sqrt(D); under μP (Tensor Programs V) 1 / D, times sqrt(D) of the base model (same
  heads, d_model = mup_base_width, or heads of mup_base_head_dim), so that it is 1 / sqrt(D) at
  the base width."""
  d = cfg.head_dim
  if cfg.parametrization == 'mup':
    return np.sqrt(cfg.mup_base_head_dim or cfg.mup_base_width / cfg.n_heads) / d
  return 1.0 / np.sqrt(cfg.attention_scale_dim or d)


def np_layer_window(cfg, layer):
  """window_pattern's entry for a layer ('local', 'global' or a size), read independently."""
  if cfg.window_pattern is None:
    return cfg.attention_window
  entries = [e.strip() for e in cfg.window_pattern.split(',')]
  entry = entries[layer % len(entries)]
  return {'local': cfg.attention_window, 'global': None}.get(entry, entry)


def np_attention(params, x, positions, cfg, layer=0):
  """Softmax attention head by head; query head h reads kv head h // (n_heads / n_kv_heads)."""
  b, t, _ = x.shape
  h, kv, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
  x = x.astype(np.float64)

  def project(name, heads):  # [C, N, D] kernels as the [C, N*D] matrices of the papers
    p = params[name]
    return (x @ p['kernel'].reshape(-1, heads * d)
            + p.get('bias', np.zeros(heads * d)).reshape(-1)).reshape(b, t, heads, d)

  q, k, v = project('query', h), project('key', kv), project('value', kv)
  if cfg.qk_norm == 'head':  # RMSNorm of each head's D vector, one scale for all heads
    q = np_rmsnorm(q, params['q_norm']['scale'], cfg.norm_eps)
    k = np_rmsnorm(k, params['k_norm']['scale'], cfg.norm_eps)
  if cfg.qk_norm == 'projection':  # OLMo 2: over the whole [H*D] projection
    q = np_rmsnorm(q, params['q_norm']['scale'], cfg.norm_eps, axes=(-2, -1))
    k = np_rmsnorm(k, params['k_norm']['scale'], cfg.norm_eps, axes=(-2, -1))
  window = np_layer_window(cfg, layer)
  if cfg.position == 'rope':
    local = window is not None and cfg.rope_local_theta is not None
    theta = cfg.rope_local_theta if local else cfg.rope_theta
    scaling = 'none' if local else cfg.rope_scaling  # Gemma 3: local layers unscaled
    inv_freq, factor = np_inv_freq(int(d * cfg.rotary_fraction), theta), 1.0
    if scaling != 'none':
      inv_freq, factor = hf_rope_table(cfg, theta, scaling)
    q = np_rope(q, positions, inv_freq=inv_freq, factor=factor)
    k = np_rope(k, positions, inv_freq=inv_freq, factor=factor)
  visible = np_visible(t, t, None if window is None else int(window))
  distance = np.arange(t)[:, None] - np.arange(t)[None, :]
  out = np.zeros((b, t, h, d))
  weights = np.zeros((b, h, t, t))
  max_logit = -np.inf
  for head in range(h):
    kv_head = head // (h // kv)
    raw = np.einsum('btd,bsd->bts', q[:, :, head], k[:, :, kv_head]) * np_attention_scale(cfg)
    bias = -np_alibi_slopes(h)[head] * distance if cfg.position == 'alibi' else 0.0
    max_logit = max(max_logit, np.where(visible, raw + bias, -np.inf).max())  # before the cap
    scores = np_softcap(raw, cfg.attn_logit_softcap) + bias  # the cap on q.k, ALiBi after
    probs = np_softmax(np.where(visible, scores, -np.inf))
    weights[:, head] = probs
    out[:, :, head] = np.einsum('bts,bsd->btd', probs, v[:, :, kv_head])
  y = (out.reshape(b, t, h * d) @ params['out']['kernel'].reshape(h * d, -1)
       + params['out'].get('bias', 0.0))
  return y, weights, max_logit


def np_gelu_tanh(x):
  return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def np_silu(x):
  return x / (1.0 + np.exp(-x))


def np_gelu_erf(x):
  return 0.5 * x * (1.0 + scipy.special.erf(x / np.sqrt(2.0)))


NP_ACTIVATIONS = {
    'gelu': np_gelu_tanh, 'gelu_exact': np_gelu_erf, 'relu2': lambda x: np.maximum(x, 0.0)**2,
    'swiglu': np_silu, 'geglu': np_gelu_tanh
}


def np_mlp(params, x, kind):
  """GPT-2: proj(act(fc(x))); gated (Llama, Gemma): down(act(gate(x)) * up(x))."""
  def dense(name, h):
    return h.astype(np.float64) @ params[name]['kernel'] + params[name].get('bias', 0.0)

  act = NP_ACTIVATIONS[kind]
  if kind in ('swiglu', 'geglu'):
    return dense('down', act(dense('gate', x)) * dense('up', x))
  return dense('proj', act(dense('fc', x)))


def np_norm(cfg, p, h):
  """cfg.norm with the gains in p (none if the norms are non-parametric)."""
  scale = p['scale'] if cfg.norm_affine else 1.0
  if cfg.norm == 'rmsnorm':
    return np_rmsnorm(h, scale, cfg.norm_eps)
  bias = p.get('bias', 0.0) if cfg.norm_affine else 0.0
  return np_layernorm(h, scale, bias, cfg.norm_eps)


def np_block(cfg, p, x, positions, layer):
  """One block, its norms where cfg.norm_position puts them, sequential or parallel."""
  norm = lambda name, h: np_norm(cfg, p.get(name, {}), h)

  attend = lambda h: np_attention(p['attn'], h, positions, cfg, layer)[0]
  feed_forward = lambda h: np_mlp(p['mlp'], h, cfg.mlp)
  where = cfg.norm_position
  if cfg.parallel_block:
    return x + attend(norm('attn_norm', x)) + feed_forward(norm('mlp_norm', x))
  if where == 'pre':
    x = x + attend(norm('attn_norm', x))
    return x + feed_forward(norm('mlp_norm', x))
  if where == 'post':
    x = norm('attn_norm', x + attend(x))
    return norm('mlp_norm', x + feed_forward(x))
  if where == 'sandwich':  # Gemma 2
    x = x + norm('attn_out_norm', attend(norm('attn_norm', x)))
    return x + norm('mlp_out_norm', feed_forward(norm('mlp_norm', x)))
  assert where == 'output'  # OLMo 2
  x = x + norm('attn_out_norm', attend(x))
  return x + norm('mlp_out_norm', feed_forward(x))


def np_embed(cfg, params, tokens):
  """Token embeddings (x sqrt(C) for Gemma) plus learned positions: the first block's input."""
  x = params['wte']['embedding'][tokens].astype(np.float64)
  if cfg.scale_embeddings:
    x = x * np.sqrt(cfg.d_model)
  if cfg.position == 'learned':
    x = x + params['wpe']['embedding'][np.arange(tokens.shape[1])]
  return x


def np_forward(cfg, params, tokens):
  """The whole model in NumPy float64 from the references above: embeddings, blocks, final
  norm, tied or untied head (μP's logit multiplier), soft-capped logits."""
  b, t = tokens.shape
  positions = np.broadcast_to(np.arange(t), (b, t))
  x = np_embed(cfg, params, tokens)

  for i in range(cfg.n_layers):
    x = np_block(cfg, params[f'blocks_{i}'], x, positions, i)
  if cfg.norm_position != 'post':
    x = np_norm(cfg, params.get('norm_f', {}), x)
  head = params['wte']['embedding'] if cfg.tie_embeddings else params['lm_head']
  logits = x @ head.T
  if cfg.parametrization == 'mup':  # the output multiplier: alpha x base width / width
    logits = logits * cfg.mup_output_multiplier * cfg.mup_base_width / cfg.d_model
  return np_softcap(logits, cfg.final_logit_softcap)
