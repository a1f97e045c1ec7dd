#!/usr/bin/env bash
# DLPerf's BERT-base pre-training run (NVIDIA TF BERT, Adam) as published for TITAN V:
# seq 128, 20 predictions, batch 32 per GPU, 1,000,000 steps, 10,000 warm-up, lr 1.25e-5,
# loss shown every 100 steps, checkpoints every 10,000; Horovod under mpiexec on > 1 GPU.
#
#   scripts/run_pretraining_adam.sh [DATA_DIR] [num_gpus] [train_batch_size] [train_steps]
#                                   [precision fp32|fp16|manual_fp16] [use_xla true|false] [TEST_NUM]
#
# Data: DATA_DIR/tfrecord (training TFRecords, seq 128 / 20 predictions). Log:
# logs/tf_bert/1n{num_gpus}g/bert_b{batch}_{precision}_{TEST_NUM}.log.
# Environment overrides: BERT_CONFIG (bert_config.json), INPUT_FILES_DIR, RESULTS_DIR,
# LOG_DIR, WARMUP_STEPS, LEARNING_RATE, SAVE_CHECKPOINTS_STEPS, DISPLAY_LOSS_STEPS;
# DRY_RUN=1 prints the command and exits.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"

DATA_DIR=${1:-$ROOT/data}
num_gpus=${2:-1}
train_batch_size=${3:-32}
train_steps=${4:-1000000}
precision=${5:-fp32}
use_xla=${6:-false}
TEST_NUM=${7:-1}
seq_len=128
max_pred_per_seq=20

BERT_CONFIG=${BERT_CONFIG:-$ROOT/bert_config.json}
INPUT_FILES_DIR=${INPUT_FILES_DIR:-$DATA_DIR/tfrecord}
GBS=$((train_batch_size * num_gpus))
RESULTS_DIR=${RESULTS_DIR:-$ROOT/results/tf_bert_pretraining_adam_base_${precision}_gbs${GBS}_$(date +%y%m%d%H%M%S)}
LOG_DIR=${LOG_DIR:-$ROOT/logs/tf_bert/1n${num_gpus}g}

precision_flags "$precision" "$use_xla" fp32 fp16 manual_fp16
launcher "$num_gpus"

[[ ${DRY_RUN:-0} == 1 ]] || mkdir -p "$RESULTS_DIR"
[[ ${DRY_RUN:-0} == 1 ]] || require "$DATA_DIR" "$INPUT_FILES_DIR" "$BERT_CONFIG" "$RESULTS_DIR"

run "$LOG_DIR/bert_b${train_batch_size}_${precision}_${TEST_NUM}.log" \
  "${LAUNCH[@]}" "$PYTHON" "$ROOT/run_pretraining.py" \
  --input_files_dir="$INPUT_FILES_DIR" \
  --output_dir="$RESULTS_DIR" \
  --bert_config_file="$BERT_CONFIG" \
  --do_train=True \
  --do_eval=False \
  --train_batch_size="$train_batch_size" \
  --eval_batch_size=16 \
  --max_seq_length=$seq_len \
  --max_predictions_per_seq=$max_pred_per_seq \
  --num_train_steps="$train_steps" \
  --num_warmup_steps="${WARMUP_STEPS:-10000}" \
  --num_accumulation_steps=1 \
  --save_checkpoints_steps="${SAVE_CHECKPOINTS_STEPS:-10000}" \
  --display_loss_steps="${DISPLAY_LOSS_STEPS:-100}" \
  --learning_rate="${LEARNING_RATE:-1.25e-5}" \
  --optimizer_type=adam \
  --allreduce_post_accumulation=False \
  "${HOROVOD[@]}" "${PREC[@]}"
