#!/usr/bin/env bash
# GPU checks, one command per check, for a machine with an NVIDIA GPU and CUDA torch that may have
# no network and no CLIMB Studio environment. On a machine with the environment, first run
# `.venv/bin/python scripts/gpu_bundle.py` (writes the git-ignored .gpu/), then copy the repository
# with the part a check needs to the GPU machine and run there:
#   bash bench/gpu_session.sh proxy    # needs .gpu/wheels
#   bash bench/gpu_session.sh embed    # needs .gpu/minilm-fp16
# Each writes its logs to $OUT. The PERF lines in them are the README table's rows: add them to
# bench/perf_rows.json (run_all.ROWS) and rewrite the table with bench/run_all.py's rewrite_readme.
set -uo pipefail

part=${1:?usage: bash bench/gpu_session.sh proxy|embed}
case "$part" in proxy | embed) ;; *) echo "unknown part '$part': use proxy or embed"; exit 2 ;; esac
OUT=${OUT:-/tmp/gpu-session}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/nvidia-smi.csv" 2>&1 || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee "$OUT/torch.txt"

case "$part" in
proxy)
    # The engine imports DuckDB and tomli-w, which a bare CUDA image lacks: install the bundled wheels.
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .gpu/wheels/*.whl || { echo "could not install .gpu/wheels (run scripts/gpu_bundle.py here first)"; exit 1; }
    export PYTHONPATH="/tmp/site:$PWD"
    # The default GPT proxy (200k tokens) on CUDA bf16 against the machine's CPU in fp32.
    timeout 150 "$PY" bench/bench_gpu.py --only proxy --proxy-tokens 200000 2>&1 | tee "$OUT/gpu_proxy.log"
    # Batched proxies: groups of the default GPT trained stacked vs one after another, both on CUDA.
    timeout 200 "$PY" bench/bench_proxy.py --only batched --device cuda --group 4,8 --batch-tokens 200000 \
        --repeats 3 --skip-vmap 2>&1 | tee "$OUT/gpu_batched.log"
    ;;
embed)
    # No engine import here (and so no DuckDB): the encoder comes from the bundled float16 folder.
    timeout 240 "$PY" bench/bench_gpu.py --only embed --docs 2000 --model .gpu/minilm-fp16 2>&1 \
        | tee "$OUT/gpu_embed.log"
    ;;
esac
