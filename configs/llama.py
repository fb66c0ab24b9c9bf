"""A small Llama-style model: RMSNorm, rotary positions, SwiGLU, grouped-query attention
(8 query heads sharing 2 key/value heads), pre-norm, no biases, untied embeddings; byte tokens over
the embedded standard-library corpus, sized for a CPU.

Run:
  python train.py --config=configs/llama.py   # into runs/llama
  python sample.py --workdir=runs/llama --prompt="import "
"""

from gptjax.config import base_config


def get_config():
  config = base_config(vocab_size=257, vocab_pad_multiple=64, block_size=128, n_layers=4,
                       d_model=128, n_heads=8, n_kv_heads=2, mlp='swiglu', norm='rmsnorm',
                       norm_eps=1e-6, norm_position='pre', position='rope', rope_theta=10000.0,
                       use_bias=False, tie_embeddings=False)
  config.data.tokenizer = 'bytes'
  config.optim.lr = 3e-3
  config.optim.warmup_steps = 50
  config.train.steps = 1000
  config.train.batch_size = 16
  config.train.log_every = 20
  config.train.eval_every = 200
  config.train.ckpt_every = 250
  return config
