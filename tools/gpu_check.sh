#!/usr/bin/env bash
# GPU checks on a bare CUDA machine with PyTorch, Lightning and transformers but no network:
# installs the project's other packages from local wheels (.whl/, see docs/scaling.md), then
# runs every method under ZeRO-2/3 and FSDP (tools/gpu_check.py), one fit on two GPUs against one GPU
# (DDP and ZeRO-2; only where the machine has two GPUs) and the GPU benchmarks.
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
ngpu=$(nvidia-smi -L | wc -l)
if [ "$ngpu" -ge 2 ]; then
    for strategy in ddp deepspeed_stage_2; do
        for n in 1 2; do  # Lightning starts the processes: no RANK/WORLD_SIZE of ours
            env -u RANK -u LOCAL_RANK -u WORLD_SIZE timeout 300 python3 -m halluc_cl.cli fit \
                --config configs/distill.yaml --config configs/world/tiny.yaml \
                --trainer.accelerator gpu --trainer.devices $n --trainer.strategy $strategy \
                --trainer.enable_progress_bar false --trainer.logger.init_args.save_dir "$out/two" \
                --trainer.logger.init_args.name $strategy --trainer.logger.init_args.version d$n \
                >/dev/null 2>"$out/two_${strategy}_$n.err" || echo "two-process $strategy d$n: failed"
        done
        echo "two-process $strategy (2 GPUs vs 1): $(python3 tools/same_summary.py \
            "$out/two/$strategy/d1" "$out/two/$strategy/d2" | head -5)"
    done
else
    echo "two-process check: skipped, this machine has $ngpu GPU(s) (tests/distributed runs it on CPU)"
fi
timeout 240 python3 tools/bench_mfu.py --out "$out/bench_mfu.json" 2>"$out/bench_mfu.err" \
    | tail -n 40
timeout 200 python3 tools/bench_step.py --device cuda --llama 1b --steps 20 --skip 5 \
    --methods sft distill_paper distill_paper_cached distill_cached distill_nearest ewc l2 \
        freeze_attention_only \
    --out "$out/bench_step_gpu.json" 2>"$out/bench_step.err" | grep -E '"(method|ratio_to_sft|step_s_median)"'
