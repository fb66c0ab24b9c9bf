"""GPT-2 small (124M parameters), exactly: 12 layers, 12 heads, d_model 768, context 1024,
tied embeddings, GELU, LayerNorm, learned positions, pre-norm, biases.

The vocabulary is GPT-2's 50257 tokens; the LM head matmul is padded to 50304 (a multiple of 64)
for speed, and the padded logits are dropped inside the model, so they are never sampled and the
parameter count equals Hugging Face's GPT2LMHeadModel (124,439,808).

Run:
  python sample.py --config=configs/gpt124m.py --prompt="Hello, I am"
"""

from gptjax.config import model_config_dict


def get_config():
  import ml_collections

  config = ml_collections.ConfigDict()
  config.model = model_config_dict(
      vocab_size=50257, vocab_pad_multiple=64, block_size=1024, n_layers=12, d_model=768,
      n_heads=12, mlp='gelu', norm='layernorm', norm_position='pre', position='learned',
      tie_embeddings=True, use_bias=True)
  config.tokenizer = 'gpt2'
  config.seed = 0
  return config
