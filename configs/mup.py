"""μP's learning-rate transfer, measured: the same 2-layer byte-level model at d_model 32 to 256,
under SP and under μP (base width 32), each width trained at seven learning rates. Under SP the
best learning rate moves as the model widens; under μP it should stay put (README: μP).

Run (112 runs, about 45 minutes on a 2-core CPU):
  python -m gptjax.sweep --config=configs/mup.py --workdir=runs/mup_transfer \\
      --grid=model.parametrization=sp,mup --grid=model.d_model=32,64,128,256 \\
      --tune=optim.lr=0.000398,0.001,0.00251,0.00631,0.0158,0.0398,0.1 --seeds=2

μP's output multiplier α, tuned at the base width (30 runs, about 4 minutes):
  python -m gptjax.sweep --config=configs/mup.py --workdir=runs/mup_alpha --parallel=2 \\
      --grid=model.mup_output_multiplier=1,2,4,8,16 --tune=optim.lr=0.00631,0.0158,0.0398 --seeds=2
"""

from gptjax.config import base_config


def get_config():
  config = base_config(vocab_size=257, vocab_pad_multiple=64, block_size=64, n_layers=2, d_model=32,
                       n_heads=4, position='rope', parametrization='mup', mup_base_width=32)
  config.data.corpus = 'stdlib'
  config.data.tokenizer = 'bytes'
  config.optim.lr = 1e-2
  config.optim.warmup_steps = 30
  config.optim.weight_decay = 0.1
  config.train.steps = 300
  config.train.batch_size = 16
  config.train.log_every = 50
  config.train.eval_every = 100
  config.train.eval_batches = 8
  config.train.ckpt_every = 300
  return config
