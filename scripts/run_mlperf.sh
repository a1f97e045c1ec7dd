#!/usr/bin/env bash
# MLPerf BERT phase 2 from a config in scripts/configs/ (config_A100x1x1, config_A100x1x2):
# seq 512, 76 predictions, LAMB, from MLPerf's model.ckpt-28252, in MLPerf mode: evaluations
# on the 10,000 instances picked by tools/pick_eval_samples.py during training (MLPerf's
# interval), stop at masked-LM accuracy 0.720, the MLPerf log in OUTPUT_DIR/mlperf.log; prints
# FPS, the masked-LM accuracy and the time to train.
#
#   scripts/run_mlperf.sh CONFIG_NAME [extra run_pretraining.py flags, which win]
#
# Environment: DATA_DIR (data/mlperf) holding training/ (TFRecords 512/76), eval_10k/ and
# phase1/{model.ckpt-28252.*,bert_config.json}; overrides MAX_STEPS, BATCHSIZE, EVAL_BATCHSIZE,
# EVAL_INTERVAL_SAMPLES, TARGET_ACCURACY, INIT_CHECKPOINT, BERT_CONFIG, OUTPUT_DIR, HOSTS
# (multi-node); DRY_RUN=1 prints the command and exits.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"

config=${1:?usage: run_mlperf.sh CONFIG_NAME (e.g. config_A100x1x1) [flags]}
shift
config_file=$ROOT/scripts/configs/$config.sh
if [[ ! -f $config_file ]]; then
  echo "$SCRIPT: error: no config $config; choose one of: $(cd "$ROOT/scripts/configs" && ls -- *.sh | sed 's/\.sh$//' | tr '\n' ' ')" >&2
  exit 2
fi
overrides=$(declare -p MAX_STEPS BATCHSIZE EVAL_BATCHSIZE EVAL_INTERVAL_SAMPLES TARGET_ACCURACY \
  2>/dev/null || true)
source "$config_file"
eval "$overrides"  # environment values win over the config's

DATA_DIR=${DATA_DIR:-$ROOT/data/mlperf}
INIT_CHECKPOINT=${INIT_CHECKPOINT:-$DATA_DIR/phase1/model.ckpt-28252}
BERT_CONFIG=${BERT_CONFIG:-$DATA_DIR/phase1/bert_config.json}
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/results/mlperf_${config}}
launcher "$NUM_GPUS"
[[ ${DRY_RUN:-0} == 1 ]] || require "$DATA_DIR/training" "$DATA_DIR/eval_10k" \
  "$INIT_CHECKPOINT.index" "$BERT_CONFIG"

run "$ROOT/logs/mlperf/${config}_$(date +%y%m%d%H%M%S).log" \
  "${LAUNCH[@]}" "$PYTHON" "$ROOT/run_pretraining.py" \
  --input_files_dir="$DATA_DIR/training" \
  --eval_files_dir="$DATA_DIR/eval_10k" \
  --init_checkpoint="$INIT_CHECKPOINT" \
  --bert_config_file="$BERT_CONFIG" \
  --output_dir="$OUTPUT_DIR" \
  --do_train=True \
  --do_eval=True \
  --max_seq_length=512 \
  --max_predictions_per_seq=76 \
  --train_batch_size="$BATCHSIZE" \
  --num_accumulation_steps="$GRADIENT_STEPS" \
  --learning_rate="$LR" \
  --num_train_steps="$MAX_STEPS" \
  --num_warmup_steps="$WARMUP_STEPS" \
  --optimizer_type=lamb \
  --eval_batch_size="$EVAL_BATCHSIZE" \
  --max_eval_steps=$(((10000 + EVAL_BATCHSIZE - 1) / EVAL_BATCHSIZE)) \
  --save_checkpoints_steps="$MAX_STEPS" \
  --mlperf_log_file="$OUTPUT_DIR/mlperf.log" \
  --eval_interval_samples="$EVAL_INTERVAL_SAMPLES" \
  --stop_threshold="$TARGET_ACCURACY" \
  "${HOROVOD[@]}" --amp \
  --allreduce_post_accumulation=True \
  "$@"
report "$OUTPUT_DIR"
