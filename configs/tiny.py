"""A tiny GPT-2-style model (4 layers, d_model 128, context 128, GPT-2 tokenizer) that builds and
runs anywhere in seconds.

Run:
  python sample.py --config=configs/tiny.py --prompt="Hello, I am"   # random weights
  python train.py --config=configs/tiny.py                           # into runs/tiny
"""

from gptjax.config import base_config


def get_config():
  config = base_config(vocab_size=50257, vocab_pad_multiple=64, block_size=128, n_layers=4,
                       d_model=128, n_heads=4)
  config.data.tokenizer = 'gpt2'
  config.optim.warmup_steps = 20
  config.train.steps = 200
  config.train.batch_size = 8
  return config
