#!/usr/bin/env bash
# NVIDIA TF BERT's two-phase LAMB pre-training (scripts/run_pretraining_lamb.sh of
# DeepLearningExamples): phase 1 seq 128 / 20 predictions for 90% of train_steps, phase 2 seq 512 /
# 80 predictions from phase 1's last checkpoint for 10% of train_steps scaled by the ratio of the
# global batch sizes. Horovod under mpiexec on > 1 GPU.
#
#   scripts/run_pretraining_lamb.sh [train_batch_size_phase1 64] [train_batch_size_phase2 8]
#     [eval_batch_size 8] [learning_rate_phase1 7.5e-4] [learning_rate_phase2 5e-4]
#     [precision fp16] [use_xla true] [num_gpus 8] [warmup_steps_phase1 2000]
#     [warmup_steps_phase2 200] [train_steps 7820] [save_checkpoints_steps 100]
#     [num_accumulation_steps_phase1 128] [num_accumulation_steps_phase2 512] [bert_model large]
#
# Data: DATA_DIR/phase1/{training,test} and DATA_DIR/phase2/{training,test} (TFRecords of
# seq 128/20 and 512/80). Environment overrides: DATA_DIR (data), RESULTS_DIR, BERT_CONFIG,
# PHASES ("1 2"; "2" resumes from RESULTS_DIR/phase_1); DRY_RUN=1 prints the commands and exits.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"

train_batch_size_phase1=${1:-64}
train_batch_size_phase2=${2:-8}
eval_batch_size=${3:-8}
learning_rate_phase1=${4:-7.5e-4}
learning_rate_phase2=${5:-5e-4}
precision=${6:-fp16}
use_xla=${7:-true}
num_gpus=${8:-8}
warmup_steps_phase1=${9:-2000}
warmup_steps_phase2=${10:-200}
train_steps=${11:-7820}
save_checkpoints_steps=${12:-100}
num_accumulation_steps_phase1=${13:-128}
num_accumulation_steps_phase2=${14:-512}
bert_model=${15:-large}

DATA_DIR=${DATA_DIR:-$ROOT/data}
case $bert_model in
  large) BERT_CONFIG=${BERT_CONFIG:-$DATA_DIR/uncased_L-24_H-1024_A-16/bert_config.json} ;;
  base) BERT_CONFIG=${BERT_CONFIG:-$ROOT/bert_config.json} ;;
  *) echo "$SCRIPT: error: bert_model '$bert_model' is not large or base" >&2; exit 2 ;;
esac
precision_flags "$precision" "$use_xla" fp32 fp16 manual_fp16
launcher "$num_gpus"

GBS1=$((train_batch_size_phase1 * num_gpus * num_accumulation_steps_phase1))
GBS2=$((train_batch_size_phase2 * num_gpus * num_accumulation_steps_phase2))
RESULTS_DIR=${RESULTS_DIR:-$ROOT/results/tf_bert_pretraining_lamb_${bert_model}_${precision}_gbs1${GBS1}_gbs2${GBS2}_$(date +%y%m%d%H%M%S)}
LOGFILE=$RESULTS_DIR/tf_bert_pretraining_lamb.log

train_steps_phase1=$((train_steps * 9 / 10))
train_steps_phase2=$((train_steps / 10 * GBS1 / GBS2))
PHASE1_CKPT=$RESULTS_DIR/phase_1/model.ckpt-$train_steps_phase1

phase() {  # phase N seq pred batch accumulation steps warmup lr [extra flags]
  local n=$1 seq=$2 pred=$3 batch=$4 accumulation=$5 steps=$6 warmup=$7 lr=$8
  shift 8
  local data=$DATA_DIR/phase$n
  [[ ${DRY_RUN:-0} == 1 ]] || require "$data/training" "$data/test" "$BERT_CONFIG"
  run "$LOGFILE" "${LAUNCH[@]}" "$PYTHON" "$ROOT/run_pretraining.py" \
    --input_files_dir="$data/training" \
    --eval_files_dir="$data/test" \
    --output_dir="$RESULTS_DIR/phase_$n" \
    --bert_config_file="$BERT_CONFIG" \
    --do_train=True \
    --do_eval=True \
    --train_batch_size="$batch" \
    --eval_batch_size="$eval_batch_size" \
    --max_seq_length="$seq" \
    --max_predictions_per_seq="$pred" \
    --num_train_steps="$steps" \
    --num_accumulation_steps="$accumulation" \
    --num_warmup_steps="$warmup" \
    --save_checkpoints_steps="$save_checkpoints_steps" \
    --learning_rate="$lr" \
    --optimizer_type=lamb \
    "${HOROVOD[@]}" "${PREC[@]}" \
    --allreduce_post_accumulation=True "$@"
}

for n in ${PHASES:-1 2}; do
  case $n in
    1) phase 1 128 20 "$train_batch_size_phase1" "$num_accumulation_steps_phase1" \
         "$train_steps_phase1" "$warmup_steps_phase1" "$learning_rate_phase1" ;;
    2) [[ ${DRY_RUN:-0} == 1 ]] || require "$PHASE1_CKPT.index"
       phase 2 512 80 "$train_batch_size_phase2" "$num_accumulation_steps_phase2" \
         "$train_steps_phase2" "$warmup_steps_phase2" "$learning_rate_phase2" \
         --init_checkpoint="$PHASE1_CKPT" ;;
    *) echo "$SCRIPT: error: PHASES may hold 1 and 2, not '$n'" >&2; exit 2 ;;
  esac
done
