#!/usr/bin/env bash
# The BI-V100 (Iluvatar DeepSparkHub) BERT run on every card of CUDA_VISIBLE_DEVICES (default
# 0-7, one Horovod rank per card under mpiexec): MLPerf phase 2 (seq 512, 76 predictions, LAMB,
# 4 micro-batches per update) from MLPerf's model.ckpt-28252, AMP, then eval; prints FPS and
# the eval masked-LM accuracy at the end.
#
#   CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 bash run_multi_card_FPS.sh \
#       --input_files_dir=DIR --init_checkpoint=.../model.ckpt-28252 --eval_files_dir=DIR \
#       --train_batch_size=6 --bert_config_file=.../bert_config.json
#
# Every argument is a run_pretraining.py flag and overrides the defaults below (the last value
# of a flag wins). Environment: OUTPUT_DIR (results/bi_v100_multi_card), DRY_RUN=1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/launch_common.sh"

export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0,1,2,3,4,5,6,7}
IFS=, read -r -a cards <<<"$CUDA_VISIBLE_DEVICES"
launcher "${#cards[@]}"
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/results/bi_v100_multi_card}

bi_v100 "$ROOT/logs/bi_v100/${#cards[@]}cards_$(date +%m%d%H%M%S).log" 2000 4 20000 "$@"
