"""The nanoGPT peer: a plain PyTorch GPT in nanoGPT's architecture and training step.

Written here from nanoGPT's published design (Karpathy's model.py and train.py), not copied:
one fused qkv Linear, `F.scaled_dot_product_attention(is_causal=True)`, a 4x MLP, pre-norm
LayerNorm, learned positions, the head tied to the token embedding; torch's AdamW with nanoGPT's
two groups (weight decay on every parameter of 2 or more dimensions, none on biases and norms),
then `clip_grad_norm_(1.0)`, in eager mode (nanoGPT's CPU quickstart runs with --compile=False).

One departure, so that both sides compute the same function: the MLP uses GPT-2's tanh GELU, as
gptjax does (nanoGPT's nn.GELU() is the exact erf form; the two cost the same). The weights are
gptjax's, copied in, so that the first losses agree and both sides do the same work.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from gptjax.config import ModelConfig


def build_model(cfg: ModelConfig, params):
  """A nanoGPT-architecture torch.nn.Module with gptjax's GPT-2 style `params` copied in;
  calling it with (tokens, targets) returns the mean cross-entropy, as nanoGPT's forward does."""
  import torch
  nn, F = torch.nn, torch.nn.functional
  bias = cfg.use_bias

  class CausalSelfAttention(nn.Module):
    def __init__(self):
      super().__init__()
      self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=bias)
      self.c_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=bias)

    def forward(self, x):
      batch, time, channels = x.shape
      q, k, v = self.c_attn(x).split(channels, dim=2)
      q, k, v = (t.view(batch, time, cfg.n_heads, channels // cfg.n_heads).transpose(1, 2)
                 for t in (q, k, v))
      y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
      return self.c_proj(y.transpose(1, 2).contiguous().view(batch, time, channels))

  class MLP(nn.Module):
    def __init__(self):
      super().__init__()
      self.c_fc = nn.Linear(cfg.d_model, 4 * cfg.d_model, bias=bias)
      self.c_proj = nn.Linear(4 * cfg.d_model, cfg.d_model, bias=bias)

    def forward(self, x):
      return self.c_proj(F.gelu(self.c_fc(x), approximate='tanh'))

  class Block(nn.Module):
    def __init__(self):
      super().__init__()
      self.ln_1 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=bias)
      self.attn = CausalSelfAttention()
      self.ln_2 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=bias)
      self.mlp = MLP()

    def forward(self, x):
      x = x + self.attn(self.ln_1(x))
      return x + self.mlp(self.ln_2(x))

  class GPT(nn.Module):
    def __init__(self):
      super().__init__()
      self.transformer = nn.ModuleDict(
          dict(wte=nn.Embedding(cfg.padded_vocab_size,
                                cfg.d_model), wpe=nn.Embedding(cfg.block_size, cfg.d_model),
               h=nn.ModuleList(Block() for _ in range(cfg.n_layers)),
               ln_f=nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=bias)))
      self.lm_head = nn.Linear(cfg.d_model, cfg.padded_vocab_size, bias=False)
      self.lm_head.weight = self.transformer.wte.weight  # tied, as nanoGPT's

    def forward(self, tokens, targets):
      t = self.transformer
      x = t.wte(tokens) + t.wpe(torch.arange(tokens.shape[1]))
      for block in t.h:
        x = block(x)
      logits = self.lm_head(t.ln_f(x))
      return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

  model = GPT()
  model.load_state_dict(_nanogpt_state_dict(cfg, params, set(model.state_dict())))
  return model


def _nanogpt_state_dict(cfg: ModelConfig, params, names: set[str]) -> dict:
  """gptjax's weights under nanoGPT's names: exported as Hugging Face GPT-2 (the same names),
  its Conv1D [in, out] matrices transposed to nn.Linear's [out, in]."""
  import torch
  from safetensors.numpy import load_file

  from gptjax.hf import to_hf

  with tempfile.TemporaryDirectory() as directory:
    to_hf(cfg, params, directory)
    gpt2 = load_file(os.path.join(directory, 'model.safetensors'))
  state = {}
  for name, array in gpt2.items():
    if name not in names:  # a bias nanoGPT's bias=False leaves out (exported as zeros)
      assert not array.any(), name
      continue
    linear = array.ndim == 2 and not name.startswith(('transformer.wte', 'transformer.wpe'))
    state[name] = torch.from_numpy(np.ascontiguousarray(array.T if linear else array))
  state['lm_head.weight'] = state['transformer.wte.weight']
  return state


class NanoGPTTrainer:
  """nanoGPT's training step on a fixed batch: forward, backward, clip, AdamW."""
  def __init__(self, cfg: ModelConfig, params, optim):
    """optim: the run's config.optim (lr, b1, b2, weight_decay), as gptjax's step uses them."""
    import torch

    from common import torch_threads

    torch.set_num_threads(torch_threads())  # every core, as XLA uses every core
    self.torch = torch
    self.model = build_model(cfg, params)
    self.model.train()
    parameters = [p for p in self.model.parameters() if p.requires_grad]
    decay = [p for p in parameters if p.dim() >= 2]
    no_decay = [p for p in parameters if p.dim() < 2]
    # On a CPU nanoGPT's configure_optimizers leaves fused off (it is CUDA-only there).
    self.optimizer = torch.optim.AdamW([{'params': decay, 'weight_decay': optim.weight_decay},
                                        {'params': no_decay, 'weight_decay': 0.0}], lr=optim.lr,
                                       betas=(optim.b1, optim.b2), eps=1e-8)

  def set_batch(self, batch):
    self.inputs = self.torch.from_numpy(np.asarray(batch['inputs'], np.int64))
    self.targets = self.torch.from_numpy(np.asarray(batch['targets'], np.int64))

  def steps(self, n: int) -> float:
    for _ in range(n):
      loss = self.model(self.inputs, self.targets)
      loss.backward()
      self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
      self.optimizer.step()
      self.optimizer.zero_grad(set_to_none=True)
    return loss.item()
