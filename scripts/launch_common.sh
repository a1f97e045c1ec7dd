# Sourced by the seed-run scripts (scripts/run_*.sh and run_*_FPS.sh at the root):
#   ROOT, PYTHON      the clone and its .venv python (python3 without a .venv)
#   launcher N        LAUNCH=(mpiexec ... -np N) and HOROVOD=(--horovod) when N > 1, else empty.
#                     Multi-node: HOSTS=host1:N,host2:N (mpiexec's -H: each host with its number
#                     of ranks, one per GPU) runs that many ranks over those hosts, whatever N
#                     says; the clone and data must be at the same paths on every host, and
#                     each rank takes the GPU of its local rank.
#   require PATH...   one-line error and exit 1 for the first missing file or directory
#   precision_flags PRECISION USE_XLA ALLOWED...   PREC=(the precision's and XLA's flags), or a
#                     one-line error and exit 2 for a precision not in ALLOWED or USE_XLA not
#                     true/false
#   run LOG CMD...    DRY_RUN=1: print CMD (shell-quoted) and exit 0; else run it, output to LOG too
#   report DIR, squad_report DIR   the results of a finished pre-training / SQuAD run
#   bi_v100 LOG STEPS ACCUMULATION SAVE_STEPS FLAG...   the BI-V100 run (run_*_FPS.sh) into
#                     OUTPUT_DIR through LAUNCH/HOROVOD, FLAGs last (they win), then its report
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=python3
[[ -x $ROOT/.venv/bin/python ]] && PYTHON=$ROOT/.venv/bin/python
SCRIPT=$(basename "$0")

launcher() {
  LAUNCH=() HOROVOD=()
  local ranks=$1 entry
  if [[ -n ${HOSTS:-} ]]; then
    ranks=0
    for entry in ${HOSTS//,/ }; do
      if [[ ! $entry =~ ^[^:]+:[1-9][0-9]*$ ]]; then
        echo "$SCRIPT: error: HOSTS entry '$entry' is not HOST:RANKS (e.g. HOSTS=node1:8,node2:8)" >&2
        exit 2
      fi
      ranks=$((ranks + ${entry##*:}))
    done
  fi
  if ((ranks > 1)); then
    LAUNCH=(mpiexec)
    [[ $(id -u) -eq 0 ]] && LAUNCH+=(--allow-run-as-root)
    if [[ -n ${HOSTS:-} ]]; then
      # Horovod's multi-node form: ranks filled host by host, the environment passed along.
      LAUNCH+=(-np "$ranks" -H "$HOSTS" --map-by slot --bind-to none -x PATH -x LD_LIBRARY_PATH)
    else
      LAUNCH+=(-np "$ranks" --bind-to socket)
    fi
    HOROVOD=(--horovod)
  fi
}

precision_flags() {
  local precision=$1 use_xla=$2
  shift 2
  if [[ " $* " != *" $precision "* ]]; then
    echo "$SCRIPT: error: precision '$precision' is not one of: $*" >&2
    exit 2
  fi
  case $precision in
    fp32) PREC=() ;;
    fp16) PREC=(--use_fp16) ;;
    manual_fp16) PREC=(--manual_fp16) ;;
    bf16) PREC=(--amp --amp_dtype=bfloat16) ;;
  esac
  case $use_xla in
    true) PREC+=(--use_xla) ;;
    false) ;;
    *) echo "$SCRIPT: error: use_xla '$use_xla' is not true or false" >&2; exit 2 ;;
  esac
}

require() {
  local path
  for path in "$@"; do
    if [[ ! -e $path ]]; then
      echo "$SCRIPT: error: $path is missing; create or mount it (or set the variable naming it)" >&2
      exit 1
    fi
  done
}

run() {
  local log=$1
  shift
  if [[ ${DRY_RUN:-0} == 1 ]]; then
    printf '%q ' "$@" | sed 's/ $//'
    printf '\n'
    return 0
  fi
  mkdir -p "$(dirname "$log")"
  echo "[$SCRIPT] log: $log"
  "$@" 2>&1 | tee -a "$log"
}

# report OUTPUT_DIR: the last training throughput and the eval accuracy of a finished run.
report() {
  [[ ${DRY_RUN:-0} == 1 ]] && return 0
  "$PYTHON" - "$1" <<'PY'
import json, os, sys
out = sys.argv[1]
records = [json.loads(line) for line in open(os.path.join(out, "train_log.jsonl"))]
fps = [r["data"]["throughput_train"] for r in records if "throughput_train" in r.get("data", {})]
print(f"FPS: {fps[-1]:.2f} sequences/s" if fps else "FPS: not logged (no training steps ran)")
path = os.path.join(out, "eval_results.txt")
if os.path.exists(path):
    results = dict(line.strip().split(" = ") for line in open(path) if " = " in line)
    print(f"eval masked_lm_accuracy: {float(results['masked_lm_accuracy']):.6f}")
target = [r["data"] for r in records if r["type"] == "time_to_train"]
if target and "time_to_train_seconds" in target[-1]:
    t = target[-1]
    print(f"time to train: {t['time_to_train_seconds']:.1f} s ({t['status']}), {t['steps']} steps,"
          f" final loss {t.get('final_loss', float('nan')):.4f}")
PY
}

# squad_report OUTPUT_DIR: EM, F1 and sequences/s of a finished run_squad.py run.
squad_report() {
  [[ ${DRY_RUN:-0} == 1 ]] && return 0
  "$PYTHON" - "$1" <<'PY'
import json, os, sys
out = sys.argv[1]
records = [json.loads(line) for line in open(os.path.join(out, "train_log.jsonl"))]
latest = {r["type"]: r["data"] for r in records}
if "squad_v1.1" in latest:
    print(f"EM: {latest['squad_v1.1']['exact_match']:.2f}  F1: {latest['squad_v1.1']['f1']:.2f}")
if "throughput_train" in latest.get("train", {}):
    print(f"training: {latest['train']['throughput_train']:.2f} sequences/s")
if "predict" in latest:
    print(f"prediction: {latest['predict']['throughput_predict']:.2f} sequences/s")
print(f"predictions: {os.path.join(out, 'predictions.json')}")
PY
}

bi_v100() {
  local log=$1 steps=$2 accumulation=$3 save_steps=$4
  shift 4
  run "$log" "${LAUNCH[@]}" "$PYTHON" "$ROOT/run_pretraining.py" \
    --output_dir="$OUTPUT_DIR" \
    --do_train=True \
    --do_eval=True \
    --eval_batch_size=24 \
    --max_eval_steps=100 \
    --max_predictions_per_seq=76 \
    --max_seq_length=512 \
    --num_train_steps="$steps" \
    --num_accumulation_steps="$accumulation" \
    --num_warmup_steps=0 \
    --save_checkpoints_steps="$save_steps" \
    --learning_rate=5e-5 \
    --optimizer_type=lamb \
    "${HOROVOD[@]}" --amp --nouse_xla \
    --allreduce_post_accumulation=True \
    "$@"
  report "$OUTPUT_DIR"
}
