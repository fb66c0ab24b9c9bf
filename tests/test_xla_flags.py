"""gptjax's XLA:CPU options: on the CPU only, unless the user set them, and live in XLA."""

import jax
import jax.numpy as jnp

from gptjax import xla_flags

NAME = xla_flags.YNN_FUSION


def test_the_options_apply_on_cpu_unless_the_user_named_them():
  assert xla_flags.cpu_compiler_options({}) == {NAME: 'LIBRARY_FUSION_TYPE_DOT'}
  assert xla_flags.cpu_compiler_options({'XLA_FLAGS': '--xla_force_host_platform_device_count=8'
                                         }) == xla_flags.CPU_OPTIONS
  assert xla_flags.cpu_compiler_options({'XLA_FLAGS': f'--{NAME}=individual_dot'}) == {}


def test_no_options_off_the_cpu_or_on_another_jaxlib(monkeypatch):
  """On a GPU the options mean nothing; a jaxlib outside the tested range may not know them
  (XLA refuses an unknown option)."""
  with monkeypatch.context() as patch:
    patch.setattr(xla_flags.jax, 'default_backend', lambda: 'gpu')
    assert xla_flags.cpu_compiler_options({}) == {}
  monkeypatch.setattr(xla_flags.importlib.metadata, 'version', lambda _: '0.13.0')
  assert xla_flags.cpu_compiler_options({}) == {}


def entry_fusions(compiler_options) -> int:
  f = jax.jit(lambda x, y: jnp.maximum(x @ y + 1.0, 0.0), compiler_options=compiler_options)
  hlo = f.lower(jnp.ones((64, 64)), jnp.ones((64, 64))).compile().as_text()
  return sum('fusion(' in line for line in hlo.split('ENTRY')[1].splitlines())


def test_the_option_reaches_xla():
  """With it YNNPACK runs the matmul and the bias + ReLU after it as one kernel; with jaxlib's
  default the elementwise part is a fusion of its own."""
  assert entry_fusions(xla_flags.cpu_compiler_options({})) == 1
  assert entry_fusions({NAME: 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'}) == 2
