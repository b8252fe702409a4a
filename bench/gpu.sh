#!/usr/bin/env bash
# The one-shot GPU check: everything the project owes a GPU, on a machine with an NVIDIA
# GPU, CuPy, NumPy, PyTorch and pytest but no package registry: the steps' limits add up
# to about 15 minutes, so run it as two calls of under 10 (GPU_PART=1, then GPU_PART=2).
#
#     bash bench/gpu.sh [OUT_DIR]           # on the GPU machine, from the repository root
#     GPU_BACKEND=numpy bash bench/gpu.sh   # the dry run on a CPU: same steps, numpy
#     GPU_PART=1 bash bench/gpu.sh; GPU_PART=2 bash bench/gpu.sh
#                                           # in two calls of under 10 minutes each:
#                                           # steps 1-6 (at most 540 s), then 7-9 (345 s)
#
# Pure-Python wheels the project needs and such a machine may lack (array-api-compat,
# array-api-strict) travel in the git-ignored folder .whl/ (bench/README.md says how to
# fill it); they are installed into a private folder, nothing else is touched.
#
# Steps, each with its own time limit, each going on whatever the one before did:
#   1. the test suite on the GPU backend (the files that exercise the arithmetic);
#   2. examples/mnist.py on the GPU: accuracy, seconds per epoch;
#   3. bench/time_to_accuracy.py: seconds of training until 98% test accuracy;
#   4. bench/mlp.py --gpu-only: nnscratch on cupy and torch CUDA against PyTorch CUDA
#      eager (and fused Adam): ms/step and array operations per step;
#   5. bench/opcount.py: the operation counts, by operator;
#   5b. bench/fused.py --gpu: the fused optimizer kernel (CuPy's ElementwiseKernel) against
#      the standard path and torch's Adam on CUDA (tests/test_fused.py, in step 1, checks
#      that it computes the standard path's θ);
#   6. bench/nccl_check.py: nnscratch.distributed's NCCL path, one GPU as one rank;
#   7. where jax sees a GPU (jax[cuda12]): bench/compiled.py on CUDA, the compiled jax
#      step against PyTorch CUDA eager and the jax.grad + optax anchor (compile included),
#      and bench/time_to_accuracy.py on jax (fit compiles: seconds to 98%).
#   8. bench/cnn.py --gpu: the CNNs on cupy and torch CUDA against PyTorch CUDA eager;
#   9. examples/mnist.py --model cnn on the GPU: accuracy, seconds per epoch.
# Everything goes to OUT_DIR (default $OUT, else bench/results/gpu-<date>): one log per
# step, summary.txt, and the results JSON.
set -uo pipefail
cd "$(dirname "$0")/.."

BACKEND=${GPU_BACKEND:-cupy}
OUT_DIR=${1:-${OUT:-bench/results/gpu-$(date +%Y-%m-%d)}}
mkdir -p "$OUT_DIR"
SUMMARY="$OUT_DIR/summary.txt"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 NNSCRATCH_BACKEND="$BACKEND"
START=$(date +%s)

say() { echo "$*" | tee -a "$SUMMARY"; }
PART=${GPU_PART:-}
part_of() { [ -z "$PART" ] || [ "$PART" = "$1" ]; }  # GPU_PART unset: every step
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, record the exit code
  local name=$1 limit=$2; shift 2
  case "$name" in jax-*|cnn-*) part_of 2 || return 0 ;; *) part_of 1 || return 0 ;; esac
  local begun=$(date +%s)
  say ""
  say "== $name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1
  local code=$?
  tail -n 25 "$OUT_DIR/$name.log" | tee -a "$SUMMARY"
  say "-- $name: exit $code after $(( $(date +%s) - begun ))s"
}

: >"$SUMMARY"
say "nnscratch GPU one-shot, $(date -u +%Y-%m-%dT%H:%M:%SZ), backend $BACKEND, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$SUMMARY"
else
  say "no nvidia-smi: a dry run without a GPU"
fi

# The wheels that travel with the script, into a private folder on PYTHONPATH.
SITE=$(mktemp -d)
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl \
    || say "warning: the wheels in .whl/ did not install"
fi
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - <<'EOF' 2>&1 | tee -a "$SUMMARY"
import importlib
for name in ("numpy", "array_api_compat", "array_api_strict", "cupy", "torch", "safetensors", "pytest"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except ImportError as exc:
        print(f"{name}: missing ({exc})")
import nnscratch as nn
print("active backend:", nn.get_backend())
EOF

DATA=${NNSCRATCH_DATA:-}
if [ -z "$DATA" ]; then
  for candidate in shared/data/mnist ../shared/data/mnist; do
    [ -f "$candidate/t10k-labels-idx1-ubyte.gz" ] && DATA=$(cd "$candidate" && pwd) && break
  done
fi
[ -n "$DATA" ] && export NNSCRATCH_DATA="$DATA"
say "MNIST: ${DATA:-not found (the MNIST steps will say so)}"

TESTS="tests/test_backend.py tests/test_layers.py tests/test_activations.py tests/test_losses.py
 tests/test_optim.py tests/test_training.py tests/test_reference_torch.py tests/test_parameters.py
 tests/test_opcount.py tests/test_checkpoint.py tests/test_metrics.py tests/test_divergence.py
 tests/test_errors.py tests/test_properties.py tests/test_io.py tests/test_fused.py"
# shellcheck disable=SC2086
step tests 180 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" $TESTS
if [ "$BACKEND" = cupy ]; then
  SHORT=""; BENCH="--backends cupy,torch:cuda --gpu-only --rounds 5 --steps 200"
  CNN_BENCH="--gpu --rounds 3 --steps 50"; CNN_SHORT=""
else  # the dry run: the same scripts, briefly, on what the CPU has
  SHORT="--epochs 1 --limit 5000"; BENCH="--backends $BACKEND --quick"
  CNN_BENCH="--quick --networks nn.cnn"; CNN_SHORT="--epochs 1 --limit 1000"
fi
# shellcheck disable=SC2086
step example 90 "$PY" examples/mnist.py --save "$OUT_DIR/digits.safetensors" --quiet $SHORT
# shellcheck disable=SC2086
step time-to-accuracy 60 "$PY" bench/time_to_accuracy.py --backend "$BACKEND" \
  --out "$OUT_DIR/results.json" $SHORT
# shellcheck disable=SC2086
step bench 120 "$PY" bench/mlp.py $BENCH --batch-sizes 128 --no-memory --fit-only \
  --out "$OUT_DIR/results.json"
step opcount 30 "$PY" bench/opcount.py
if [ "$BACKEND" = cupy ]; then  # the fused optimizer kernel: checked by tests/test_fused.py
  step fused 30 "$PY" bench/fused.py --gpu --rounds 5  # (in step 1), timed here
else
  step fused 30 "$PY" bench/fused.py --rounds 2 --steps 3 --size 100000
fi
step nccl 30 "$PY" bench/nccl_check.py
if ! part_of 2; then
  :
elif "$PY" -c "import jax; jax.devices('gpu')" >/dev/null 2>&1; then
  step jax-compiled 120 "$PY" bench/compiled.py --device cuda --rounds 3 \
    --output "$OUT_DIR/compiled.json"
  step jax-time-to-accuracy 60 "$PY" bench/time_to_accuracy.py --backend jax \
    --device cuda --out "$OUT_DIR/results-jax.json"
else
  say "jax-compiled: skipped (jax with CUDA not installed, or it sees no GPU)"
fi
# shellcheck disable=SC2086
step cnn-bench 75 "$PY" bench/cnn.py $CNN_BENCH --results "$OUT_DIR/results.json"
# shellcheck disable=SC2086
step cnn-example 90 "$PY" examples/mnist.py --model cnn --save "$OUT_DIR/cnn.safetensors" \
  --quiet $CNN_SHORT
say ""
say "done in $(( $(date +%s) - START ))s; logs in $OUT_DIR"
rm -rf "$SITE"
