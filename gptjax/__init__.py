"""gptjax: a readable, tested JAX/Flax GPT for learning and for ablation research."""
