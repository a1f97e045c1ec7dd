#!/usr/bin/env bash
# SQuAD v1.1 fine-tuning + prediction + EM/F1, the published BERT-Base recipe (google-research/
# bert: batch 12, lr 3e-5, 2 epochs, seq 384, doc stride 128, query 64; F1 88.41 / EM 81.25).
# Positional arguments in NVIDIA's run_squad.sh order, Google's values as defaults:
#
#   scripts/run_squad.sh [batch_size 12] [learning_rate 3e-5] [precision fp32|fp16|bf16]
#                        [use_xla false] [num_gpus 1] [seq_length 384] [doc_stride 128]
#                        [epochs 2.0]
#
# Seed 003 (Cambricon MLU, BERT-Base FP32, F1 88.69) ran batch 4 on each of 4 cards:
#   scripts/run_squad.sh 4 3e-5 fp32 false 4
# --learning_rate is per card: under Horovod (num_gpus > 1) the rate is multiplied by the number
# of cards, as NVIDIA's run_squad.py does; the global batch is batch_size x num_gpus.
#
# Inputs (environment): BERT_DIR with vocab.txt, bert_config.json and bert_model.ckpt
# (default data/bert_base, e.g. Google's uncased_L-12_H-768_A-12), SQUAD_DIR with
# train-v1.1.json and dev-v1.1.json (default data/squad; data/squad ships the dev set and a
# 4,370-question slice of the train set: TRAIN_FILE=data/squad/train-v1.1-slice.json),
# INIT_CHECKPOINT, TRAIN_FILE, PREDICT_FILE, RESULTS_DIR, LOG_DIR. DRY_RUN=1 prints the command
# and exits.
# At the end it prints EM, F1 and sequences/s.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"

batch_size=${1:-12}
learning_rate=${2:-3e-5}
precision=${3:-fp32}
use_xla=${4:-false}
num_gpus=${5:-1}
seq_length=${6:-384}
doc_stride=${7:-128}
epochs=${8:-2.0}

BERT_DIR=${BERT_DIR:-$ROOT/data/bert_base}
SQUAD_DIR=${SQUAD_DIR:-$ROOT/data/squad}
INIT_CHECKPOINT=${INIT_CHECKPOINT:-$BERT_DIR/bert_model.ckpt}
TRAIN_FILE=${TRAIN_FILE:-$SQUAD_DIR/train-v1.1.json}
PREDICT_FILE=${PREDICT_FILE:-$SQUAD_DIR/dev-v1.1.json}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/results/squad_base_${precision}_gbs$((batch_size * num_gpus))_$(date +%y%m%d%H%M%S)}
LOG_DIR=${LOG_DIR:-$ROOT/logs/squad}

precision_flags "$precision" "$use_xla" fp32 fp16 bf16
launcher "$num_gpus"

[[ ${DRY_RUN:-0} == 1 ]] || require "$BERT_DIR/vocab.txt" "$BERT_DIR/bert_config.json" \
  "$INIT_CHECKPOINT.index" "$TRAIN_FILE" "$PREDICT_FILE"

run "$LOG_DIR/squad_b${batch_size}_${precision}_${num_gpus}gpu.log" \
  "${LAUNCH[@]}" "$PYTHON" "$ROOT/run_squad.py" \
  --vocab_file="$BERT_DIR/vocab.txt" \
  --bert_config_file="$BERT_DIR/bert_config.json" \
  --init_checkpoint="$INIT_CHECKPOINT" \
  --do_train=True \
  --train_file="$TRAIN_FILE" \
  --do_predict=True \
  --predict_file="$PREDICT_FILE" \
  --train_batch_size="$batch_size" \
  --predict_batch_size=8 \
  --learning_rate="$learning_rate" \
  --num_train_epochs="$epochs" \
  --warmup_proportion=0.1 \
  --max_seq_length="$seq_length" \
  --doc_stride="$doc_stride" \
  --max_query_length=64 \
  --do_lower_case=True \
  --save_checkpoints_steps=1000 \
  --output_dir="$RESULTS_DIR" \
  "${HOROVOD[@]}" "${PREC[@]}"

squad_report "$RESULTS_DIR"
