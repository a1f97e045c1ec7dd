#!/usr/bin/env bash
# The BI-V100 (Iluvatar DeepSparkHub) BERT run on one card: MLPerf phase 2 (seq 512, 76
# predictions, LAMB) continued from MLPerf's model.ckpt-28252, AMP, then eval; prints FPS and the
# eval masked-LM accuracy at the end. The card is CUDA_VISIBLE_DEVICES (default 0).
#
#   bash run_1card_FPS.sh --input_files_dir=DIR --init_checkpoint=.../model.ckpt-28252 \
#       --eval_files_dir=DIR --train_batch_size=6 --bert_config_file=.../bert_config.json
#
# Every argument is a run_pretraining.py flag and overrides the defaults below (the last value
# of a flag wins). Environment: OUTPUT_DIR (results/bi_v100_1card), DRY_RUN=1 prints the command.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/launch_common.sh"

export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
launcher 1
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/results/bi_v100_1card}

bi_v100 "$ROOT/logs/bi_v100/1card_$(date +%m%d%H%M%S).log" 13206 1 1000 "$@"
