"""Where one training step of ours spends its time and memory: run_pretraining.py's graph
pieces (BertModel, the masked-LM and next-sentence heads, create_optimizer, the stateless
dropout of the training graph) on one fixed random batch (--real_tokens of it real, the rest
padding), so that no input pipeline is measured.

  .venv/bin/python bench/train_step_profile.py [--bert_config_file=bert_config.json]
      [--batch_size=8] [--max_seq_length=128] [--max_predictions_per_seq=20] [--steps=6]
      [--real_tokens=1.0] [--[no]skip_padding] [--optimizer_type=adam] [--bf16] [--xla]
      [--threads=N] [--trace]

Prints the resident memory (VmRSS, and VmHWM: the peak so far) after the graph is built, after
the variables are initialised and after every step, each step's seconds and the median
sequences/s of the steps after the first two. --trace runs one more step under TensorFlow's
FULL_TRACE and prints the op types that took the most time (summed over threads) and the bytes
each op type's outputs requested. For A/B comparisons run it twice, one version after the
other, on a quiet machine.
"""

import collections
import os
import statistics
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import tf_startup  # noqa: F401  (first: TensorFlow with oneDNN kernels on, without Keras)

flags.DEFINE_string("bert_config_file", os.path.join(REPO, "bert_config.json"), "Model.")
flags.DEFINE_integer("batch_size", 8, "Sequences per step.")
flags.DEFINE_integer("max_seq_length", 128, "Tokens per sequence.")
flags.DEFINE_integer("max_predictions_per_seq", 20, "Masked-LM predictions per sequence.")
flags.DEFINE_integer("steps", 6, "Steps run (the first two are not in the median).",
                     lower_bound=3)
flags.DEFINE_float("real_tokens", 1.0, "Mean fraction of each sequence that is real tokens (the "
                   "rest padding): lengths uniform in [2 x this - 1, 1] x max_seq_length.",
                   lower_bound=0.5, upper_bound=1.0)
flags.DEFINE_bool("skip_padding", None, "Compute only the real tokens (BertModel(skip_padding="
                  "True)); default as run_pretraining.py: on, off with --xla.")
flags.DEFINE_enum("optimizer_type", "adam", ["adam", "adamw", "lamb"], "Optimizer.")
flags.DEFINE_bool("bf16", False, "oneDNN's bfloat16 mixed-precision rewrite (--amp "
                  "--amp_dtype=bfloat16 of run_pretraining.py).")
flags.DEFINE_bool("xla", False, "XLA compilation of the step (--use_xla of run_pretraining.py).")
flags.DEFINE_integer("threads", os.cpu_count() or 1, "Intra-op threads.")
flags.DEFINE_bool("trace", False, "Also profile one step (op time and output bytes by type).")
FLAGS = flags.FLAGS


def memory():
    """{"VmRSS": MiB, "VmHWM": MiB} of this process."""
    values = {}
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(value.split()[0]) // 1024
    return values


def skip_padding():
    """--skip_padding, or run_pretraining.py's choice: every layer on the real tokens only,
    except under XLA (which compiles anew for each row count)."""
    return FLAGS.skip_padding if FLAGS.skip_padding is not None else not FLAGS.xla


def training_step(tf, config):
    """(loss, train_op) of run_pretraining.py's graph on one fixed random batch."""
    import numpy as np

    import modeling
    import optimization
    import session_setup

    batch, seq, predictions = (FLAGS.batch_size, FLAGS.max_seq_length,
                               FLAGS.max_predictions_per_seq)
    rng = np.random.default_rng(0)
    ids = tf.constant(rng.integers(0, config.vocab_size, [batch, seq]), tf.int32)
    lengths = np.maximum(rng.integers(round(seq * (2 * FLAGS.real_tokens - 1)), seq + 1,
                                      [batch, 1]), predictions + 1)
    mask = tf.constant(np.arange(seq) < lengths, tf.int32)
    positions = 1 + np.argsort(rng.random([batch, seq - 1]), axis=1)  # real tokens, no [CLS]
    positions = np.sort(np.where(positions < lengths, positions, seq), axis=1)[:, :predictions]
    with session_setup.training_graph(12345, 0, 1, FLAGS.xla):
        model = modeling.BertModel(
            config, True, ids, mask, tf.zeros([batch, seq], tf.int32), scope="bert",
            output_positions=tf.constant(positions, tf.int32), skip_padding=skip_padding())
        mlm_loss, _, _ = modeling.get_masked_lm_output(
            config, model.get_sequence_output(), model.get_embedding_table(), None,
            tf.constant(rng.integers(0, config.vocab_size, [batch, predictions]), tf.int32),
            tf.ones([batch, predictions]))
        nsp_loss, _, _ = modeling.get_next_sentence_output(
            config, model.get_pooled_output(), tf.zeros([batch, 1], tf.int32))
        loss = mlm_loss + nsp_loss
        ops = optimization.create_optimizer(loss, 1e-4, 1000, 0,
                                            optimizer_type=FLAGS.optimizer_type)
    return loss, ops.train_op


def profile(tf, session, train_op):
    """Prints the op types of one traced step by time and by output bytes."""
    tf1 = tf.compat.v1
    metadata = tf1.RunMetadata()
    session.run(train_op, options=tf1.RunOptions(trace_level=tf1.RunOptions.FULL_TRACE),
                run_metadata=metadata)
    seconds, output_bytes = collections.Counter(), collections.Counter()
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            label = node.timeline_label
            op = label.split(" = ")[1].split("(")[0] if " = " in label else node.node_name
            seconds[op] += node.all_end_rel_micros / 1e6
            output_bytes[op] += sum(output.tensor_description.allocation_description
                                    .requested_bytes for output in node.output)
    total = sum(seconds.values())
    print(f"op time by type (one traced step, {total:.2f} s summed over threads):")
    for op, value in seconds.most_common(20):
        print(f"  {op:40s} {value * 1000:9.1f} ms {value / total:6.1%}")
    print("output bytes by op type (MiB):")
    for op, value in output_bytes.most_common(12):
        print(f"  {op:40s} {value / 2**20:9.0f}")


def main(argv):
    del argv
    import tensorflow as tf

    import distributed
    import modeling
    import session_setup

    tf.compat.v1.disable_eager_execution()
    print("started", memory(), flush=True)
    config = modeling.BertConfig.from_json_file(FLAGS.bert_config_file)
    loss, train_op = training_step(tf, config)
    print("graph built", memory(), flush=True)
    session = tf.compat.v1.Session(config=session_setup.session_config(
        distributed.create(False, False), FLAGS.threads, 0, use_xla=FLAGS.xla, amp=FLAGS.bf16,
        amp_dtype="bfloat16"))
    session.run(tf.compat.v1.global_variables_initializer())
    print("variables initialised", memory(), flush=True)
    seconds = []
    for step in range(FLAGS.steps):
        start = time.perf_counter()
        value, _ = session.run([loss, train_op])
        seconds.append(time.perf_counter() - start)
        print(f"step {step}: loss {value:.4f}, {seconds[-1]:.2f} s", memory(), flush=True)
    median = statistics.median(seconds[2:])
    print(f"median step {median:.3f} s = {FLAGS.batch_size / median:.2f} sequences/s; "
          f"peak RSS {memory()['VmHWM']:,} MiB")
    if FLAGS.trace:
        profile(tf, session, train_op)


if __name__ == "__main__":
    app.run(main)
