#!/usr/bin/env bash
# The GPU checks of one device session in one go, run on the GPU machine from the repository
# root with the bundle of scripts/gpu_bundle.sh carried:
#
#   scripts/gpu_check.sh [BUNDLE_DIR] [quick|full]        (defaults: .gpu-bundle, quick)
#
# quick: the GPU test programs (CUDA backend; op kernels, weight norm and device layers; the
# device GPT against the CPU model) and a short `einjit train --device cuda` run, f32 and bf16.
# full: also the training throughput of the GPT-2 124M shape, einjit against PyTorch on the
# GPU (bench/train_throughput.py), f32 and bf16. The corpus is README.md (the data/ directory
# is not carried). Every step's output goes to stdout and to $OUT/gpu-check/ when $OUT is set;
# a failing step is reported and the next one runs; the exit status is that of the last failure.
set -uo pipefail
bundle=${1:-.gpu-bundle}
mode=${2:-quick}
logs=${OUT:-/tmp}/gpu-check
mkdir -p "$logs"
status=0

step() {  # step NAME COMMAND...: runs it, keeps its output, remembers a failure
  local name=$1
  shift
  echo "== $name: $*"
  "$@" 2>&1 | tee "$logs/$name.log"
  local code=${PIPESTATUS[0]}
  echo "== $name: exit $code"
  [[ $code -eq 0 ]] || status=$code
}

[[ -x $bundle/run.sh ]] || { echo "gpu_check: no bundle at $bundle (scripts/gpu_bundle.sh makes it)" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$logs/gpu.txt"

step backend_tests "$bundle/run.sh" einjit_cuda_backend_tests
step op_tests "$bundle/run.sh" einjit_runtime_cuda_gpu_tests
step device_gpt_tests "$bundle/run.sh" test_device_gpt_gpu
for precision in f32 bf16; do
  rm -rf "/tmp/gpu-check-train-$precision"
  step "train_$precision" "$bundle/einjit" train --model gpt2 --struct 'btt(rank=4, norm)' --layers all_but_last \
    --n-layer 4 --d-model 256 --n-head 4 --context 128 --batch 32 --steps 60 --eval-every 30 --log-every 10 \
    --device cuda --precision "$precision" --data README.md --out "/tmp/gpu-check-train-$precision"
done
if [[ $mode == full ]]; then
  for precision in f32 bf16; do
    step "throughput_124m_$precision" /usr/bin/python3 bench/train_throughput.py "$bundle/einjit" --device cuda \
      --precision "$precision" --model gpt2-124m --corpus README.md --steps 10 --warmup 3
  done
fi
exit $status
