"""Plain NumPy (float64) transformers, written from the papers and Hugging Face's formulations,
never from gptjax: the references the layer and model tests compare against."""

import numpy as np
import scipy.special


def np_layernorm(x, scale, bias, eps):
  x = x.astype(np.float64)
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean)**2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def np_rmsnorm(x, scale, eps):
  x = x.astype(np.float64)
  return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * scale


def np_rope(x, positions, theta):
  """Hugging Face Llama's formulation: x * cos + rotate_half(x) * sin, with the frequency table
  repeated over the two halves. x [B, T, N, D], positions [B, T]."""
  d = x.shape[-1]
  inv_freq = 1.0 / theta**(np.arange(0, d, 2, dtype=np.float64) / d)  # [D/2]
  freqs = positions.astype(np.float64)[..., None] * inv_freq  # [B, T, D/2]
  emb = np.concatenate([freqs, freqs], axis=-1)[:, :, None, :]  # [B, T, 1, D]
  x = x.astype(np.float64)
  x1, x2 = x[..., :d // 2], x[..., d // 2:]
  rotate_half = np.concatenate([-x2, x1], axis=-1)
  return x * np.cos(emb) + rotate_half * np.sin(emb)


def np_softmax(s):
  s = s - s.max(-1, keepdims=True)
  e = np.exp(s)
  return e / e.sum(-1, keepdims=True)


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
  d = cfg.d_model / cfg.n_heads
  if cfg.parametrization == 'mup':
    return np.sqrt(cfg.mup_base_head_dim or cfg.mup_base_width / cfg.n_heads) / d
  return 1.0 / np.sqrt(d)


def np_attention(params, x, positions, cfg):
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
  if cfg.position == 'rope':
    q, k = np_rope(q, positions, cfg.rope_theta), np_rope(k, positions, cfg.rope_theta)
  visible = np_visible(t, t, cfg.attention_window)
  out = np.zeros((b, t, h, d))
  weights = np.zeros((b, h, t, t))
  for head in range(h):
    kv_head = head // (h // kv)
    scores = np.einsum('btd,bsd->bts', q[:, :, head], k[:, :, kv_head]) * np_attention_scale(cfg)
    probs = np_softmax(np.where(visible, scores, -np.inf))
    weights[:, head] = probs
    out[:, :, head] = np.einsum('bts,bsd->btd', probs, v[:, :, kv_head])
  y = (out.reshape(b, t, h * d) @ params['out']['kernel'].reshape(h * d, -1)
       + params['out'].get('bias', 0.0))
  return y, weights


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


def np_forward(cfg, params, tokens):
  """The whole model in NumPy float64 from the references above: embeddings,
  pre- or post-norm blocks, final norm, tied or untied head (μP's logit multiplier)."""
  b, t = tokens.shape
  positions = np.broadcast_to(np.arange(t), (b, t))
  x = params['wte']['embedding'][tokens].astype(np.float64)
  if cfg.scale_embeddings:
    x = x * np.sqrt(cfg.d_model)
  if cfg.position == 'learned':
    x = x + params['wpe']['embedding'][positions]

  def norm(p, h):
    if cfg.norm == 'rmsnorm':
      return np_rmsnorm(h, p['scale'], cfg.norm_eps)
    return np_layernorm(h, p['scale'], p.get('bias', 0.0), cfg.norm_eps)

  for i in range(cfg.n_layers):
    p = params[f'blocks_{i}']
    attend = lambda h: np_attention(p['attn'], h, positions, cfg)[0]
    feed_forward = lambda h: np_mlp(p['mlp'], h, cfg.mlp)
    if cfg.norm_position == 'pre':
      x = x + attend(norm(p['attn_norm'], x))
      x = x + feed_forward(norm(p['mlp_norm'], x))
    else:
      x = norm(p['attn_norm'], x + attend(x))
      x = norm(p['mlp_norm'], x + feed_forward(x))
  if cfg.norm_position == 'pre':
    x = norm(params['norm_f'], x)
  head = params['wte']['embedding'] if cfg.tie_embeddings else params['lm_head']
  logits = x @ head.T
  if cfg.parametrization == 'mup':  # the output multiplier: alpha x base width / width
    logits = logits * cfg.mup_output_multiplier * cfg.mup_base_width / cfg.d_model
  return logits
