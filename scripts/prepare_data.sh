#!/usr/bin/env bash
# Text directory -> training TFRecord shards (one per text file) + an eval set, in parallel over
# files, resumable: a finished shard (written atomically by create_pretraining_data.py) is
# skipped, so a re-run after an interruption does only what is left.
#
#   scripts/prepare_data.sh TEXT_DIR OUT_DIR
#
# TEXT_DIR: text files in the pre-training format (MLPerf: results4/ with part-*-of-00500 and
# eval.txt). Writes OUT_DIR/training/<file>.tfrecord, OUT_DIR/eval_intermediate/eval.tfrecord and
# OUT_DIR/eval_10k/eval.tfrecord (EVAL_EXAMPLES picked by tools/pick_eval_samples.py).
# Environment: MD5_FILE (md5sum list checked first), EVAL_TEXT (TEXT_DIR/eval.txt; the eval set
# is skipped when absent), SEQ (512), PREDICTIONS (76), DUPE (10), EVAL_DUPE (10),
# EVAL_EXAMPLES (10000), SEED (12345), VOCAB (data/vocab.txt), JOBS (number of CPUs).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"

TEXT_DIR=${1:?usage: prepare_data.sh TEXT_DIR OUT_DIR}
OUT_DIR=${2:?usage: prepare_data.sh TEXT_DIR OUT_DIR}
EVAL_TEXT=${EVAL_TEXT:-$TEXT_DIR/eval.txt}
VOCAB=${VOCAB:-$ROOT/data/vocab.txt}
JOBS=${JOBS:-$(nproc)}
require "$TEXT_DIR" "$VOCAB"
cd "$ROOT"

if [[ -n ${MD5_FILE:-} ]]; then
  "$PYTHON" -m tools.check_md5 --md5_file "$MD5_FILE" --dir "$TEXT_DIR"
fi

export PYTHON VOCAB OUT_DIR SEQ=${SEQ:-512} PREDICTIONS=${PREDICTIONS:-76} SEED=${SEED:-12345}
export DUPE=${DUPE:-10}
common=(--vocab_file="$VOCAB" --do_lower_case=True --max_seq_length="$SEQ"
        --max_predictions_per_seq="$PREDICTIONS" --masked_lm_prob=0.15 --random_seed="$SEED"
        --short_seq_prob=0.1)

mkdir -p "$OUT_DIR/training"
rm -f "$OUT_DIR"/*/*.tmp-*  # leftovers of an interrupted run
mapfile -t texts < <(find "$TEXT_DIR" -maxdepth 1 -type f ! -name '*.md5' ! -name '*md5*.txt' \
                     ! -path "$EVAL_TEXT" | sort)
todo=()
for text in "${texts[@]}"; do
  [[ -f $OUT_DIR/training/$(basename "$text").tfrecord ]] || todo+=("$text")
done
total=${#texts[@]}
echo "[prepare] $total text files: $((total - ${#todo[@]})) already done, ${#todo[@]} to write with $JOBS jobs"
if ((${#todo[@]})); then
  printf '%s\0' "${todo[@]}" | xargs -0 -n 1 -P "$JOBS" bash -c '
    set -euo pipefail
    out=$OUT_DIR/training/$(basename "$1").tfrecord
    start=$SECONDS
    "$PYTHON" create_pretraining_data.py --input_file="$1" --output_file="$out" \
      --vocab_file="$VOCAB" --do_lower_case=True --max_seq_length="$SEQ" \
      --max_predictions_per_seq="$PREDICTIONS" --masked_lm_prob=0.15 --random_seed="$SEED" \
      --short_seq_prob=0.1 --dupe_factor="$DUPE" >/dev/null 2>"$out.err" \
      || { cat "$out.err" >&2; rm -f "$out.err"; exit 255; }
    rm -f "$out.err"
    done=$(find "$OUT_DIR/training" -name "*.tfrecord" | wc -l)
    echo "[prepare] training $done/'"$total"' $(basename "$1") ($((SECONDS - start)) s)"' _
fi

if [[ -f $EVAL_TEXT ]]; then
  eval_out=$OUT_DIR/eval_10k/eval.tfrecord
  if [[ -f $eval_out ]]; then
    echo "[prepare] eval set already done: $eval_out"
  else
    intermediate=$OUT_DIR/eval_intermediate/eval.tfrecord
    mkdir -p "$(dirname "$intermediate")"
    [[ -f $intermediate ]] || "$PYTHON" create_pretraining_data.py --input_file="$EVAL_TEXT" \
      --output_file="$intermediate" --dupe_factor="${EVAL_DUPE:-10}" "${common[@]}" >/dev/null
    "$PYTHON" -m tools.pick_eval_samples --input "$intermediate" --output "$eval_out" \
      --num_examples_to_pick "${EVAL_EXAMPLES:-10000}"
  fi
fi
echo "[prepare] done: $total shards in $OUT_DIR/training"
