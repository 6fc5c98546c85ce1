#!/usr/bin/env bash
# GPU checks on a bare CUDA machine with PyTorch, Lightning and transformers but no network:
# installs the project's other packages from local wheels (.whl/, see docs/scaling.md), then
# runs every method under ZeRO-2/3 (tools/gpu_check.py) and the GPU benchmarks.
#   bash tools/gpu_check.sh [out_dir]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-runs/gpu_check}}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export HALLUC_CL_CACHE=${HALLUC_CL_CACHE:-$PWD/.hc_cache}
# one process, no launcher: tell torch.distributed (and DeepSpeed) who we are
export RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29511
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 300 python3 tools/gpu_check.py 2>"$out/gpu_check.err" | tee "$out/gpu_check.txt"
timeout 240 python3 tools/bench_mfu.py --out "$out/bench_mfu.json" 2>"$out/bench_mfu.err" \
    | tail -n 40
timeout 200 python3 tools/bench_step.py --device cuda --llama 1b --steps 20 --skip 5 \
    --methods sft distill_paper distill_cached ewc l2 freeze_attention_only \
    --out "$out/bench_step_gpu.json" 2>"$out/bench_step.err" | grep -E '"(method|ratio_to_sft|step_s_median)"'
