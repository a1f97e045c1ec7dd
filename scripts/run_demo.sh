#!/usr/bin/env bash
# The demo run, no arguments: pre-train the mini BERT (data/bert_config_mini.json: 4 layers,
# hidden 256) on the shipped sample corpus on CPU for a few minutes, evaluate on held-out
# documents (4 times during training and at the end), print masked-LM accuracy, throughput and
# where the outputs are, and draw the run (tools/plot_run.py: run_summary.png, run_summary.md).
#   1. set-up (scripts/setup.sh, fast when done);
#   2. data/tfrecords/{train,eval}/ from data/sample_corpus.txt if missing: the last
#      EVAL_DOCUMENTS documents are held out for evaluation;
#   3. run_pretraining.py --do_train --do_eval into output/demo/ (a re-run resumes there and
#      finishes at once; delete output/demo/ to train again).
# Environment overrides: STEPS, BATCH, OUTPUT_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
"$ROOT/scripts/setup.sh"
PYTHON=python3
[[ -x $ROOT/.venv/bin/python ]] && PYTHON=$ROOT/.venv/bin/python

SEQ=128
PREDICTIONS=20
EVAL_DOCUMENTS=20
TRAIN_SHARDS=4
STEPS=${STEPS:-200}
BATCH=${BATCH:-16}
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/output/demo}
DATA=$ROOT/data/tfrecords

make_data() {
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  # Documents are separated by blank lines; split off the last EVAL_DOCUMENTS of them.
  local documents
  documents=$(awk 'BEGIN { n = 0; text = 0 }
                   /^[[:space:]]*$/ { if (text) { n++; text = 0 }; next } { text = 1 }
                   END { print n + text }' data/sample_corpus.txt)
  awk -v cut=$((documents - EVAL_DOCUMENTS)) -v train="$work/train.txt" -v eval="$work/eval.txt" '
    BEGIN { n = 0; text = 0 }
    /^[[:space:]]*$/ { if (text) { n++; text = 0 }; print > (n < cut ? train : eval); next }
    { text = 1; print > (n < cut ? train : eval) }' data/sample_corpus.txt
  local shards=() i
  for ((i = 0; i < TRAIN_SHARDS; i++)); do shards+=("$work/out/train/part-$i.tfrecord"); done
  mkdir -p "$work/out/train" "$work/out/eval"
  local common=(--vocab_file=data/vocab.txt --max_seq_length=$SEQ
                --max_predictions_per_seq=$PREDICTIONS --num_workers=2)
  echo "[demo] writing training TFRecords ($((documents - EVAL_DOCUMENTS)) documents, dupe 5)"
  "$PYTHON" create_pretraining_data.py --input_file="$work/train.txt" --dupe_factor=5 \
    --output_file="$(IFS=,; echo "${shards[*]}")" "${common[@]}"
  echo "[demo] writing eval TFRecords ($EVAL_DOCUMENTS held-out documents)"
  "$PYTHON" create_pretraining_data.py --input_file="$work/eval.txt" --dupe_factor=1 \
    --random_seed=54321 --output_file="$work/out/eval/part-0.tfrecord" "${common[@]}"
  # Publish both directories only when complete.
  rm -rf "$DATA"
  mkdir -p "$(dirname "$DATA")"
  mv "$work/out" "$DATA"
}

if [[ ! -d $DATA/train || ! -d $DATA/eval ]]; then
  make_data
fi

echo "[demo] pre-training bert_config_mini for $STEPS steps of $BATCH sequences on CPU"
TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2} "$PYTHON" run_pretraining.py \
  --bert_config_file=data/bert_config_mini.json \
  --input_files_dir="$DATA/train" \
  --eval_files_dir="$DATA/eval" \
  --output_dir="$OUTPUT_DIR" \
  --do_train --do_eval \
  --train_batch_size="$BATCH" \
  --eval_batch_size=32 \
  --max_seq_length=$SEQ \
  --max_predictions_per_seq=$PREDICTIONS \
  --num_train_steps="$STEPS" \
  --num_warmup_steps=$((STEPS / 10)) \
  --learning_rate=1e-3 \
  --optimizer_type=adam \
  --save_checkpoints_steps=100 \
  --display_loss_steps=20 \
  --max_eval_steps=100 \
  --eval_interval_samples=$((STEPS * BATCH / 4)) \
  --seed=12345

"$PYTHON" - "$OUTPUT_DIR" <<'EOF'
import json, os, sys
out = sys.argv[1]
results = dict(line.strip().split(" = ") for line in open(os.path.join(out, "eval_results.txt")))
train = [r["data"] for r in map(json.loads, open(os.path.join(out, "train_log.jsonl")))
         if r["type"] == "train"]
print("\n[demo] ===== result =====")
print(f"[demo] masked-LM accuracy on held-out documents: {float(results['masked_lm_accuracy']):.4f}"
      f" (chance: 1/30522); next-sentence accuracy {float(results['next_sentence_accuracy']):.4f}")
if train and "throughput_train" in train[-1]:
    last = train[-1]
    print(f"[demo] training: {last['steps']} steps in {last['wall_seconds']:.0f} s, "
          f"{last['throughput_train']:.1f} sequences/s")
print(f"[demo] outputs: {out} (checkpoints, eval_results.txt, train_log.jsonl, TensorBoard)")
EOF
"$PYTHON" tools/plot_run.py "$OUTPUT_DIR" | sed "s/^/[demo] /"
