"""End-to-end runs of the run_pretraining.py CLI as subprocesses on tiny data and a tiny model."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from conftest import SAMPLE_CORPUS, VOCAB, run_cli

import modeling

SEQ, PRED = 64, 10
TINY_CONFIG = {"attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
               "hidden_dropout_prob": 0.1, "hidden_size": 32, "initializer_range": 0.02,
               "intermediate_size": 64, "max_position_embeddings": 64, "num_attention_heads": 2,
               "num_hidden_layers": 2, "type_vocab_size": 2, "vocab_size": 30522}
EVAL_KEYS = {"masked_lm_accuracy", "masked_lm_loss", "next_sentence_accuracy",
             "next_sentence_loss", "global_step", "loss"}


def documents(first, last):
    """Lines of documents first..last-1 of the sample corpus (blank-line separated)."""
    out, index = [], 0
    with open(SAMPLE_CORPUS, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                index += 1
            if first <= index < last:
                out.append(line)
    return "".join(out)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny TFRecords: 2 training shards from 30 documents, 1 eval shard from 10 others."""
    root = tmp_path_factory.mktemp("pretraining")
    (root / "train.txt").write_text(documents(0, 30))
    (root / "eval.txt").write_text(documents(290, 300))
    (root / "train").mkdir()
    (root / "eval").mkdir()
    common = [f"--vocab_file={VOCAB}", f"--max_seq_length={SEQ}",
              f"--max_predictions_per_seq={PRED}"]
    run_cli(["create_pretraining_data.py", f"--input_file={root / 'train.txt'}",
             f"--output_file={root / 'train/a.tfrecord'},{root / 'train/b.tfrecord'}",
             "--dupe_factor=2", *common])
    run_cli(["create_pretraining_data.py", f"--input_file={root / 'eval.txt'}",
             f"--output_file={root / 'eval/e.tfrecord'}", "--dupe_factor=1", *common])
    (root / "tiny.json").write_text(json.dumps(TINY_CONFIG))
    return root


def args(data, output_dir, *extra, steps=12):
    return ["run_pretraining.py", f"--bert_config_file={data / 'tiny.json'}",
            f"--input_files_dir={data / 'train'}", f"--eval_files_dir={data / 'eval'}",
            f"--output_dir={output_dir}", f"--max_seq_length={SEQ}",
            f"--max_predictions_per_seq={PRED}", "--train_batch_size=8", "--eval_batch_size=16",
            f"--num_train_steps={steps}", "--num_warmup_steps=2", "--learning_rate=1e-3",
            "--optimizer_type=adam", "--display_loss_steps=1", "--save_checkpoints_steps=5",
            *extra]


def step_records(output_dir):
    with open(os.path.join(output_dir, "train_log.jsonl"), encoding="utf-8") as f:
        return [r for r in map(json.loads, f) if r["type"] == "step"]


def assert_loss_finite_and_decreasing(output_dir):
    losses = [r["data"]["total_loss"] for r in step_records(output_dir)]
    assert np.all(np.isfinite(losses)), losses
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05, losses


def eval_results(output_dir):
    with open(os.path.join(output_dir, "eval_results.txt"), encoding="utf-8") as f:
        return dict(line.rstrip("\n").split(" = ") for line in f)


def checkpoint_step(output_dir):
    return int(tf.train.load_variable(tf.train.latest_checkpoint(output_dir), "global_step"))


def test_training_lowers_the_loss_and_eval_writes_every_key(data, tmp_path):
    """Property: a train+eval run lowers the loss, logs JSON lines with the dllogger keys, keeps
    checkpoints at the save interval and the end, and writes every eval_results.txt key."""
    out = tmp_path / "run"
    result = run_cli(args(data, out, "--do_train", "--do_eval", "--keep_checkpoint_max=2"))
    assert_loss_finite_and_decreasing(out)
    logged = step_records(out)[-1]["data"]
    assert {"total_loss", "mlm_loss", "nsp_loss", "learning_rate", "avg_loss_step",
            "throughput_train"} <= set(logged)
    results = eval_results(out)
    assert set(results) == EVAL_KEYS
    assert results["global_step"] == "12"
    assert 0 < float(results["masked_lm_accuracy"]) < 1
    assert float(results["loss"]) == pytest.approx(
        float(results["masked_lm_loss"]) + float(results["next_sentence_loss"]), rel=0.05)
    state = tf.train.get_checkpoint_state(str(out))
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == [
        "model.ckpt-10", "model.ckpt-12"]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(out))
    assert "throughput_train" in result.stderr and str(out) in result.stderr
    # Progress off a terminal: at least the final line of training and of evaluation.
    assert re.search(r"^train: 12/12 steps \(100%\), [\d.]+ steps/s, loss [\d.]+, "
                     r"[\d.]+ seq/s, \d+s$", result.stderr, re.MULTILINE), result.stderr[-2000:]
    assert re.search(r"^eval: \d+/\d+ batches", result.stderr, re.MULTILINE)


# Runs run_pretraining.py, recording the thread settings in force when TensorFlow creates its
# eager context: that creates the CPU device whose intra-op pool every session then shares.
THREADS_AT_DEVICE_CREATION = """
import runpy, sys
import tensorflow as tf
from tensorflow.python.eager import context
initialize, seen = context.Context.ensure_initialized, []
def recording(self):
    if self._context_handle is None:
        seen.append((tf.config.threading.get_intra_op_parallelism_threads(),
                     tf.config.threading.get_inter_op_parallelism_threads()))
    return initialize(self)
context.Context.ensure_initialized = recording
sys.argv = sys.argv[1:]
try:
    runpy.run_path("run_pretraining.py", run_name="__main__")
finally:
    print("threads at device creation:", seen[:1])
"""


def test_thread_flags_size_the_pools_ops_run_on(data, tmp_path):
    """Property: --intra_op_threads/--inter_op_threads are in force when the CPU device and its
    thread pool are created (by the first tf.data function, before any session), so a "1 thread"
    run computes on one thread; a session config alone came too late for that pool."""
    result = run_cli(["-c", THREADS_AT_DEVICE_CREATION,
                      *args(data, tmp_path / "run", "--do_train", "--intra_op_threads=1",
                            "--inter_op_threads=1", steps=2)])
    assert "threads at device creation: [(1, 1)]" in result.stdout, result.stdout


def write_google_checkpoint(prefix, output_bias):
    """A checkpoint of the tiny model's variables only (as Google releases them)."""
    config = modeling.BertConfig.from_dict(TINY_CONFIG)
    with tf.Graph().as_default():
        ids = tf.zeros([1, SEQ], tf.int32)
        model = modeling.BertModel(config, False, ids)
        modeling.get_masked_lm_output(config, model.get_sequence_output(),
                                      model.get_embedding_table(), tf.zeros([1, PRED], tf.int32),
                                      tf.zeros([1, PRED], tf.int32), tf.ones([1, PRED]))
        modeling.get_next_sentence_output(config, model.get_pooled_output(),
                                          tf.zeros([1], tf.int32))
        [bias] = [v for v in tf.compat.v1.global_variables()
                  if v.op.name == "cls/predictions/output_bias"]
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run(bias.assign(tf.fill(bias.shape, output_bias)))
            tf.compat.v1.train.Saver().save(session, prefix)


def test_init_checkpoint_loads_only_when_output_dir_has_none(data, tmp_path):
    """Property: --init_checkpoint with Google's names initialises the model; a re-run of the same
    output_dir resumes its own checkpoint and ignores a different --init_checkpoint."""
    write_google_checkpoint(str(tmp_path / "google" / "bert_model.ckpt"), 0.5)
    write_google_checkpoint(str(tmp_path / "other" / "bert_model.ckpt"), -3.0)
    out = tmp_path / "run"
    tiny_lr = "--learning_rate=1e-9"
    run_cli(args(data, out, "--do_train", tiny_lr,
                 f"--init_checkpoint={tmp_path / 'google' / 'bert_model.ckpt'}", steps=2))
    bias = tf.train.load_variable(str(out / "model.ckpt-2"), "cls/predictions/output_bias")
    np.testing.assert_allclose(bias, 0.5, atol=1e-4)
    run_cli(args(data, out, "--do_train", tiny_lr,
                 f"--init_checkpoint={tmp_path / 'other' / 'bert_model.ckpt'}", steps=3))
    bias = tf.train.load_variable(str(out / "model.ckpt-3"), "cls/predictions/output_bias")
    np.testing.assert_allclose(bias, 0.5, atol=1e-4)


@pytest.mark.parametrize("extra", [
    ["--use_xla"],
    ["--amp"],
    ["--num_accumulation_steps=2", "--allreduce_post_accumulation"],
    ["--optimizer_type=lamb", "--learning_rate=2e-2"],
], ids=["xla", "amp", "accumulation", "lamb"])
def test_switches_train_with_finite_decreasing_loss(data, tmp_path, extra):
    """Property: each switch runs the training step to num_train_steps with a finite loss that
    goes down (AMP logs its loss scale; under XLA every cluster compiles for one input shape
    only, however many real tokens each batch holds)."""
    out = tmp_path / "run"
    xla = "--use_xla" in extra
    compile_log = {"TF_CPP_MIN_LOG_LEVEL": "0", "TF_CPP_VMODULE": "device_compilation_profiler=2"}
    result = run_cli(args(data, out, "--do_train", *extra, steps=12),
                     env=compile_log if xla else None)
    assert_loss_finite_and_decreasing(out)
    assert checkpoint_step(out) == 12
    if "--amp" in extra:
        assert "loss_scaler" in step_records(out)[-1]["data"]
    if xla:
        compiles = re.findall(r"Compiled (\w+) (\d+) times", result.stderr)
        assert compiles, "no XLA compilation logged"
        recompiled = {name: int(times) for name, times in compiles if int(times) > 1}
        assert not recompiled, f"clusters compiled for several shapes: {recompiled}"
        assert "Not compiling" not in result.stderr


def test_amp_that_tensorflow_skips_is_reported_and_the_run_trains(data, tmp_path):
    """Property: where TensorFlow skips the rewrite --amp asks for (bfloat16 with its oneDNN
    kernels off, as on a CPU without AVX-512), the run says it computes in float32, names what
    the rewrite needs, and still trains to num_train_steps."""
    out = tmp_path / "run"
    result = run_cli(args(data, out, "--do_train", "--amp", "--amp_dtype=bfloat16", steps=2),
                     env={"TF_ENABLE_ONEDNN_OPTS": "0"})
    assert "computes in float32 throughout" in result.stderr, result.stderr[-2000:]
    assert "AVX-512" in result.stderr
    assert checkpoint_step(out) == 2


@pytest.mark.parametrize("extra, message", [
    (["--max_seq_length=32"], "--max_seq_length=32 but the records of"),
    (["--do_train", "--input_files_dir=/nonexistent"],
     "--input_files_dir=/nonexistent: no such directory"),
    ([], "nothing to do: pass --do_train and/or --do_eval"),
    (["--do_train", "--amp_dtype=bfloat16"], "--amp_dtype=bfloat16 needs --amp"),
    (["--do_train", "--init_checkpoint=/nonexistent/model.ckpt"], "no checkpoint there"),
    (["--do_eval"], "--do_eval without --do_train: no checkpoint in"),
    (["--do_train", "--train_batch_size=0"], "--train_batch_size=0 must be >= 1"),
], ids=["seq-mismatch", "missing-dir", "no-mode", "bf16-no-amp", "missing-init", "eval-no-ckpt",
        "zero-batch"])
def test_bad_flags_fail_fast_with_a_one_line_error(data, tmp_path, extra, message):
    """Property: contradictory flags and missing files exit non-zero before any graph is built,
    with one line naming the problem."""
    base = args(data, tmp_path / "run")
    if extra and extra[0].startswith("--max_seq_length"):
        extra = ["--do_train", *extra]
    result = run_cli([*base, *extra], check=False)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("run_pretraining.py: error:") and message in last, result.stderr[-800:]
    assert not os.path.exists(tmp_path / "run" / "checkpoint")
