"""GPT-2 small (124M parameters), exactly: 12 layers, 12 heads, d_model 768, context 1024,
tied embeddings, GELU, LayerNorm, learned positions, pre-norm, biases; nanoGPT's AdamW recipe
(lr 6e-4, betas 0.9/0.95, weight decay 0.1, 2000 warmup steps, cosine to 6e-5, clip 1.0) with
~0.5M-token batches (512 sequences of 1024 tokens = 2**19 tokens, via gradient accumulation).

The vocabulary is GPT-2's 50257 tokens; the LM-head matmul is padded to 50304 (a multiple of 64)
for speed and the padded logits are dropped inside the model, so they are never sampled and the
parameter count equals Hugging Face's GPT2LMHeadModel (124,439,808).

Run (on accelerators; --config.optim.grad_accum_steps=auto takes the fewest micro-batches that
fit in memory, and a setting that cannot fit is refused before the first step):
  python train.py --config=configs/gpt124m.py \
      --config.data.corpus=hf:HuggingFaceFW/fineweb:sample-10BT   # into runs/gpt124m
"""

from gptjax.config import base_config


def get_config():
  config = base_config(vocab_size=50257, vocab_pad_multiple=64, block_size=1024, n_layers=12,
                       d_model=768, n_heads=12, mlp='gelu', norm='layernorm', norm_position='pre',
                       position='learned', tie_embeddings=True, use_bias=True, dtype='bfloat16')
  config.data.tokenizer = 'gpt2'
  config.optim.lr = 6e-4
  config.optim.warmup_steps = 2000
  config.optim.grad_accum_steps = 32  # micro-batches of 16 x 1024 tokens
  config.train.steps = 19073  # 10B tokens at 524,288 tokens/step
  config.train.batch_size = 512
  config.train.log_every = 10
  config.train.eval_every = 250
  config.train.eval_batches = 20
  config.train.ckpt_every = 1000
  return config
