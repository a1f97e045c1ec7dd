"""Horovod scaling of run_pretraining.py on one machine: 2 ranks x 1 thread against 1 rank x
1 thread at the same per-rank batch, and the cost of the gradient allreduce.

  .venv/bin/python bench/horovod_scaling.py [--configs=small,base] [--steps=8] [--batch_size=8]
      [--no-append]   (by default the table is appended to BENCHMARKS.md)

Per model config it times (sequences/s over all ranks, from the run's train summary, the first
3 micro-batch runs left out): 1 rank; 2 ranks; 2 ranks with Open MPI busy-polling (our default
sets OMPI_MCA_mpi_yield_when_idle=1, see distributed.py); 2 ranks with --fp16_allreduce; 2
ranks with 2 accumulated micro-batches, allreduced per micro-batch and post-accumulation.
Scaling efficiency is throughput(2 ranks) / (2 x throughput(1 rank)). "allreduce share" is the
time of one allreduce of all the model's gradients alone (2 ranks, measured by --probe) over the
2-rank step time. Ranks get 1 intra- and 1 inter-op thread each.
"""

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

flags.DEFINE_list("configs", ["small", "base"], "Model configs: small (data/bert_config_mini."
                  "json, L4 H256) and/or base (bert_config.json, L12 H768).")
flags.DEFINE_integer("steps", 16, "Updates per run (the first 3 micro-batch runs are not timed).")
flags.DEFINE_integer("batch_size", 8, "Sequences per micro-batch and rank.")
flags.DEFINE_string("files_dir", "data/tfrecords/train", "Training TFRecords (seq 128, 20 "
                    "predictions).")
flags.DEFINE_bool("append", True, "Append the table to BENCHMARKS.md.")
flags.DEFINE_string("probe", None, "Internal: under mpirun, time the allreduce of the gradients "
                    "of this bert_config and print {fp32: s, fp16: s} as JSON.")
FLAGS = flags.FLAGS

CONFIGS = {"small": "data/bert_config_mini.json", "base": "bert_config.json"}
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2"]
# name: (ranks, extra flags, extra environment)
VARIANTS = {
    "1 rank": (1, [], {}),
    "2 ranks": (2, [], {}),
    "2 ranks, MPI busy-polling": (2, [], {"OMPI_MCA_mpi_yield_when_idle": "0"}),
    "2 ranks, fp16 allreduce": (2, ["--fp16_allreduce"], {}),
    "2 ranks, accumulate 2, allreduce per micro-batch": (2, ["--num_accumulation_steps=2"], {}),
    "2 ranks, accumulate 2, post-accumulation allreduce": (
        2, ["--num_accumulation_steps=2", "--allreduce_post_accumulation"], {}),
}


def train_command(config, ranks, extra, environment, output_dir):
    command = [sys.executable, "run_pretraining.py", f"--bert_config_file={config}",
               f"--input_files_dir={FLAGS.files_dir}", f"--output_dir={output_dir}",
               "--do_train", "--max_seq_length=128", "--max_predictions_per_seq=20",
               f"--train_batch_size={FLAGS.batch_size}", f"--num_train_steps={FLAGS.steps}",
               "--num_warmup_steps=0", "--learning_rate=1e-4", "--optimizer_type=lamb",
               "--intra_op_threads=1", "--inter_op_threads=1", "--save_checkpoints_steps=100000",
               *extra]
    if ranks == 1:
        return command
    exports = [part for name, value in environment.items() for part in ("-x", f"{name}={value}")]
    return [*MPIRUN, *exports, *command, "--horovod"]


def throughput(command, output_dir):
    """Sequences/s over all ranks that the run's train summary reports."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            check=False)
    if result.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    with open(os.path.join(output_dir, "train_log.jsonl"), encoding="utf-8") as f:
        [summary] = [r["data"] for r in map(json.loads, f) if r["type"] == "train"]
    return summary["throughput_train"]


def allreduce_seconds(config):
    """{"fp32": s, "fp16": s}: one allreduce of all gradients of `config`, 2 ranks."""
    command = [*MPIRUN, sys.executable, os.path.abspath(__file__), f"--probe={config}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def probe(config_file, repeats=10):
    """Times the allreduce of tensors shaped like every trainable variable of the model."""
    import tensorflow as tf

    import distributed
    import modeling

    tf1 = tf.compat.v1
    tf1.disable_eager_execution()
    config = modeling.BertConfig.from_json_file(config_file)
    with tf.Graph().as_default():
        model = modeling.BertModel(config, False, tf.zeros([1, 8], tf.int32))
        modeling.get_masked_lm_output(config, model.get_sequence_output(),
                                      model.get_embedding_table(), tf.zeros([1, 2], tf.int32),
                                      tf.zeros([1, 2], tf.int32), tf.ones([1, 2]))
        modeling.get_next_sentence_output(config, model.get_pooled_output(),
                                          tf.zeros([1], tf.int32))
        shapes = [v.shape for v in tf1.trainable_variables()]
    seconds = {}
    for name, compress in (("fp32", False), ("fp16", True)):
        handle = distributed.create(True, fp16_compression=compress)
        with tf.Graph().as_default():
            grads = [tf.Variable(tf.ones(shape)) for shape in shapes]
            reduced = handle.allreduce_gradients([g.read_value() for g in grads])
            # Fetch a value of every result: grappler prunes an allreduce whose output only
            # feeds a control dependency (a tf.group), and the timing would be of nothing.
            op = tf.add_n([tf.reduce_sum(r) for r in reduced])
            session_config = tf1.ConfigProto(intra_op_parallelism_threads=1,
                                             inter_op_parallelism_threads=1)
            with tf1.Session(config=session_config) as session:
                session.run(tf1.global_variables_initializer())
                session.run(op)
                start = time.perf_counter()
                for _ in range(repeats):
                    session.run(op)
                seconds[name] = (time.perf_counter() - start) / repeats
    if handle.is_chief:
        print(json.dumps(seconds))


def main(argv):
    del argv
    if FLAGS.probe:
        return probe(FLAGS.probe)
    rows = []
    for name in FLAGS.configs:
        config = CONFIGS[name]
        rates = {}
        for variant, (ranks, extra, environment) in VARIANTS.items():
            with tempfile.TemporaryDirectory() as output_dir:
                rates[variant] = throughput(
                    train_command(config, ranks, extra, environment, output_dir), output_dir)
            print(f"{name} {variant}: {rates[variant]:.2f} seq/s", file=sys.stderr)
        allreduce = allreduce_seconds(config)
        step_seconds = 2 * FLAGS.batch_size / rates["2 ranks"]
        base = rates["1 rank"]
        for variant, rate in rates.items():
            ranks = VARIANTS[variant][0]
            share = ""
            if variant == "2 ranks":
                share = f"{allreduce['fp32'] / step_seconds:.1%}"
            elif variant == "2 ranks, fp16 allreduce":
                share = f"{allreduce['fp16'] / step_seconds:.1%}"
            rows.append(f"| {name} | {variant} | {rate:.2f} | {rate / (ranks * base):.1%} | "
                        f"{share} |")
        rows.append(f"| {name} | allreduce of all gradients alone (fp32 / fp16) | | | "
                    f"{allreduce['fp32'] * 1e3:.0f} / {allreduce['fp16'] * 1e3:.0f} ms |")
    command = "python bench/horovod_scaling.py " + " ".join(
        f"--{k}={v}" for k, v in (("configs", ",".join(FLAGS.configs)), ("steps", FLAGS.steps),
                                  ("batch_size", FLAGS.batch_size)))
    heading = (f"### Horovod scaling: 2 ranks x 1 thread vs 1 rank x 1 thread (seq 128, batch "
               f"{FLAGS.batch_size} per rank, LAMB)")
    note = (f"{datetime.date.today()}, {os.cpu_count()} cores, {platform.processor() or 'CPU'}, "
            f"Python {platform.python_version()}. Command: `{command}`. Sequences/s over all "
            "ranks; efficiency = throughput / (ranks x 1-rank throughput); allreduce share = one "
            "allreduce of all gradients alone / 2-rank step time.")
    table = "\n".join(["", heading, "", note, "",
                       "| model | run | sequences/s | scaling efficiency | allreduce share |",
                       "|---|---|---:|---:|---:|", *rows])
    print(table)
    if FLAGS.append:
        with open(os.path.join(REPO, "BENCHMARKS.md"), "a", encoding="utf-8") as f:
            f.write(table + "\n")
    return None


if __name__ == "__main__":
    app.run(main)
