#!/usr/bin/env bash
# A command proxy that trains with Megatron-LM's pretrain_gpt.py and scores with lm-eval.
# Documented, not run in this repository's tests (it needs GPUs, Megatron-LM and a converted
# checkpoint path); see docs/command-proxies.md. Use it as:
#
#   climb search WS --proxy command --executor slurm --gpus-per-run 8 --partition gpu \
#       --proxy-command 'bash examples/megatron_proxy/run.sh {job}' \
#       --target lm-eval:arc_easy,metric=acc_norm --target lm-eval:hellaswag,metric=acc_norm
#
# Once per workspace, tokenise each cluster's JSONL for Megatron (the blend in job.json names
# these prefixes: <data dir>/cluster-N.train_text_document.{bin,idx}):
#
#   for f in WS/proxy_data/*/cluster-*.train.jsonl; do
#     python $MEGATRON/tools/preprocess_data.py --input "$f" --output-prefix "${f%.jsonl}" \
#       --json-keys text --tokenizer-type GPT2BPETokenizer --vocab-file gpt2-vocab.json \
#       --merge-file gpt2-merges.txt --append-eod --workers 16
#   done
set -euo pipefail
JOB="$1"
MEGATRON="${MEGATRON:-$HOME/Megatron-LM}"
read_job() { python -c "import json,sys; j=json.load(open('$JOB/job.json')); print($1)"; }
BLEND="$(read_job "j['data']['megatron_blend']")"
TOKENS="$(read_job "j['tokens']")"
SEED="$(read_job "j['seed'] % 2**31")"
SEQ=2048; GBS=256
ITERS=$(( TOKENS / (SEQ * GBS) ))

torchrun --nproc_per_node "${GPUS:-8}" "$MEGATRON/pretrain_gpt.py" \
  --num-layers 24 --hidden-size 1024 --num-attention-heads 16 --seq-length $SEQ --max-position-embeddings $SEQ \
  --micro-batch-size 16 --global-batch-size $GBS --train-iters $ITERS --lr 3e-4 --min-lr 3e-5 \
  --lr-decay-style cosine --lr-warmup-fraction 0.01 --weight-decay 0.1 --clip-grad 1.0 --bf16 \
  --data-path $BLEND --split 1000,0,0 --seed "$SEED" \
  --tokenizer-type GPT2BPETokenizer --vocab-file gpt2-vocab.json --merge-file gpt2-merges.txt \
  --save "$JOB/ckpt" --save-interval $ITERS --eval-iters 0 --log-interval 10

# Convert the checkpoint to Hugging Face format with Megatron's converter of your version, then:
python "$MEGATRON/tools/checkpoint/convert.py" --model-type GPT --loader mcore --saver llama_mistral \
  --load-dir "$JOB/ckpt" --save-dir "$JOB/hf" --checkpoint-type hf
TASKS="$(read_job "','.join(j['lm_eval']['tasks'])")"
INCLUDE="$(read_job "j['lm_eval']['include'][-1]")"
lm_eval --model hf --model_args "pretrained=$JOB/hf" --tasks "$TASKS" --include_path "$INCLUDE" \
  --batch_size 32 --output_path "$JOB/lm_eval"
# CLIMB reads $JOB/lm_eval/**/results_*.json and takes each target's metric; no result.json needed.
