"""Training to a target accuracy (run_pretraining.py): evaluations during training, the stop at
--stop_threshold, and MLPerf mode, whose logs mlperf-logging's compliance checker (ruleset
5.0.0, the last with BERT) must accept."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf
from conftest import VOCAB, run_cli
from test_run_pretraining import PRED, SEQ, args, data, documents  # noqa: F401 (fixture)

import mlperf_log

# A model that can learn the masked tokens of 8 sequences by heart: no dropout.
MEMORIZER = {"attention_probs_dropout_prob": 0.0, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
             "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 128,
             "max_position_embeddings": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
             "type_vocab_size": 2, "vocab_size": 30522}


def check_log(path):
    """mlperf-logging's compliance checker on `path` (it leaves compliance_checker.log in its
    working directory: the log's); the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "training",
         "--ruleset", mlperf_log.RULESET, str(path)],
        capture_output=True, text=True, check=False, cwd=os.path.dirname(path))


def mlperf_events(path):
    """(key, value, metadata) of every line of an MLPerf log."""
    events = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line.split(":::MLLOG", 1)[1])
            events.append((record["key"], record["value"], record["metadata"]))
    return events


def records(output_dir, kind):
    with open(os.path.join(output_dir, "train_log.jsonl"), encoding="utf-8") as f:
        return [r["data"] for r in map(json.loads, f) if r["type"] == kind]


@pytest.fixture(scope="module")
def memorize(tmp_path_factory):
    """8 sequences of 2 documents, one TFRecord file that is training and eval set at once."""
    root = tmp_path_factory.mktemp("memorize")
    (root / "text.txt").write_text(documents(40, 42))
    (root / "data").mkdir()
    run_cli(["create_pretraining_data.py", f"--input_file={root / 'text.txt'}",
             f"--output_file={root / 'data' / 'all.tfrecord'}", f"--vocab_file={VOCAB}",
             f"--max_seq_length={SEQ}", f"--max_predictions_per_seq={PRED}", "--dupe_factor=1"])
    (root / "config.json").write_text(json.dumps(MEMORIZER))
    return root


def memorize_args(memorize, output_dir, *extra):
    return ["run_pretraining.py", f"--bert_config_file={memorize / 'config.json'}",
            f"--input_files_dir={memorize / 'data'}", f"--eval_files_dir={memorize / 'data'}",
            f"--output_dir={output_dir}", f"--max_seq_length={SEQ}",
            f"--max_predictions_per_seq={PRED}", "--train_batch_size=8", "--eval_batch_size=8",
            "--max_eval_steps=4", "--num_train_steps=400", "--num_warmup_steps=10",
            "--learning_rate=2e-2", "--optimizer_type=lamb", "--display_loss_steps=50",
            "--save_checkpoints_steps=1000", "--do_train", *extra]


def test_closed_division_run_reaches_the_target_and_passes_the_checker(memorize, tmp_path):
    """MLPerf mode, closed division: a model that learns its eval set by heart reaches masked-LM
    accuracy 0.720 (MLPerf's target), stops at that evaluation with a checkpoint there, logs
    run_stop "success", and the compliance checker accepts the log; every evaluation counts
    training samples (epoch_num) and went to the JSON log and TensorBoard too."""
    out = tmp_path / "run"
    log = out / "mlperf.log"
    run_cli(memorize_args(memorize, out, f"--mlperf_log_file={log}",
                          "--eval_interval_samples=200"))
    checked = check_log(log)
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
    events = mlperf_events(log)
    keys = [key for key, _, _ in events]
    assert keys[:2] == ["cache_clear", "init_start"]
    assert keys.index("init_stop") < keys.index("run_start") < keys.index("block_start")
    accuracies = [(value, meta["epoch_num"]) for key, value, meta in events
                  if key == "eval_accuracy"]
    evaluations = records(out, "eval")
    steps = [e["global_step"] for e in evaluations]
    assert steps == list(range(25, 25 * len(steps) + 1, 25))  # 200 samples = 25 updates of 8
    assert accuracies == [(e["masked_lm_accuracy"], e["training_samples"]) for e in evaluations]
    assert accuracies[-1][0] >= mlperf_log.TARGET_ACCURACY > max(a for a, _ in accuracies[:-1])
    assert events[-1][0] == "run_stop" and events[-1][2]["status"] == "success"
    assert tf.train.latest_checkpoint(str(out)).endswith(f"model.ckpt-{steps[-1]}")
    summary = records(out, "time_to_train")[-1]
    assert summary["status"] == "success" and summary["steps"] == steps[-1]
    assert summary["final_masked_lm_accuracy"] == accuracies[-1][0]
    assert summary["time_to_train_seconds"] > 0 and summary["final_loss"] > 0
    scalars = {value.tag for path in tf.io.gfile.glob(str(out / "events.out.tfevents*"))
               for event in tf.compat.v1.train.summary_iterator(path)
               for value in event.summary.value}
    assert "eval/masked_lm_accuracy" in scalars


def test_run_out_of_steps_is_aborted_and_a_resumed_run_writes_one_valid_log(memorize,
                                                                           tmp_path):
    """MLPerf mode with a target out of reach: the run ends at --num_train_steps (evaluated
    there), run_stop says "aborted", the open-division checker accepts the log. Resumed (same
    output_dir, more steps), the run writes its log fresh, again valid, with one run_start and
    samples counted from the start of training; the first run's log stays as mlperf.log.1."""
    out = tmp_path / "run"
    log = out / "mlperf.log"
    common = [f"--mlperf_log_file={log}", "--mlperf_division=open", "--stop_threshold=0.999",
              "--eval_interval_samples=80"]
    run_cli(memorize_args(memorize, out, *common, "--num_train_steps=30"))
    checked = check_log(log)
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
    first = mlperf_events(log)
    assert first[-1][0] == "run_stop" and first[-1][2]["status"] == "aborted"
    assert [e["global_step"] for e in records(out, "eval")] == [10, 20, 30]
    assert records(out, "time_to_train")[-1]["status"] == "aborted"

    run_cli(memorize_args(memorize, out, *common, "--num_train_steps=40"))
    assert mlperf_events(out / "mlperf.log.1") == first
    checked = check_log(log)
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
    events = mlperf_events(log)
    assert [key for key, _, _ in events].count("run_start") == 1
    assert [m["epoch_num"] for k, _, m in events if k == "eval_accuracy"] == [40 * 8]


def test_default_eval_interval_is_mlperfs():
    """MLPerf's interval: floor(0.05 x (230.23 x batch + 3,000,000) / 25,000) x 25,000."""
    assert mlperf_log.default_eval_interval_samples(48) == 150_000
    assert mlperf_log.default_eval_interval_samples(8192) == 225_000


@pytest.mark.parametrize("extra,message", [
    (["--stop_threshold=0.72"], "--stop_threshold needs evaluations during training"),
    (["--eval_interval_samples=80", "--stop_threshold=72"], "pass a value in (0, 1]"),
    (["--mlperf_log_file=x.log"], "closed division trains BERT with LAMB"),
])
def test_inconsistent_flags_are_one_line_errors(data, tmp_path, extra, message):  # noqa: F811
    result = run_cli(args(data, tmp_path / "run", "--do_train", *extra), check=False)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("run_pretraining.py: error: ") and message in last
