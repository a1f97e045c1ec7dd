"""Time from process start to the first training step: a fresh start against a resume at global
step 1,000,000, on the same data, model and flags.

  .venv/bin/python bench/resume_time.py [--repeats=3] [--batch_size=32] [--no-append]

The step-1,000,000 checkpoint is made from a real 2-step run by setting `global_step` (every
other variable as trained) and giving it that run's saved input position (the tf.data iterator
state: file order, offsets and shuffle buffer; its size does not depend on the step). Each
repeat times, interleaved: a fresh start; the resume at 1,000,000 with its input position; and,
to show what the saved position replaces, resumes without it at two small steps, which read and
skip every consumed record (the extrapolation to 1,000,000 is linear in the records skipped).
Time to first step = the first step record's timestamp in train_log.jsonl minus the launch time.
"""

import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

flags.DEFINE_integer("repeats", 3, "Interleaved repeats of each measurement (median reported).")
flags.DEFINE_integer("batch_size", 32, "Sequences per step (the seed runs' per-GPU batch).")
flags.DEFINE_list("skip_steps", ["2000", "8000"], "Steps of the resumes without input position.")
flags.DEFINE_bool("append", True, "Append the table to BENCHMARKS.md.")
FLAGS = flags.FLAGS

BIG_STEP = 1_000_000
SEQ, PRED = 128, 20


def cpu_model():
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        return next((line.split(":", 1)[1].strip() for line in f
                     if line.startswith("model name")), platform.processor() or "unknown")


def make_data(root):
    """4 training shards from the sample corpus (seq 128, 20 predictions, dupe factor 2)."""
    train = os.path.join(root, "train")
    os.makedirs(train)
    outputs = ",".join(os.path.join(train, f"part-{i}.tfrecord") for i in range(4))
    subprocess.run([sys.executable, "create_pretraining_data.py",
                    "--input_file=data/sample_corpus.txt", f"--output_file={outputs}",
                    "--vocab_file=data/vocab.txt", f"--max_seq_length={SEQ}",
                    f"--max_predictions_per_seq={PRED}", "--dupe_factor=2"],
                   cwd=REPO, check=True, capture_output=True)
    return train


def command(train, out, steps):
    return [sys.executable, "run_pretraining.py", "--bert_config_file=data/bert_config_mini.json",
            f"--input_files_dir={train}", f"--output_dir={out}", "--do_train",
            f"--train_batch_size={FLAGS.batch_size}", f"--max_seq_length={SEQ}",
            f"--max_predictions_per_seq={PRED}", f"--num_train_steps={steps}",
            "--num_warmup_steps=1", "--learning_rate=1e-4", "--optimizer_type=lamb",
            "--display_loss_steps=1", "--save_checkpoints_steps=100000000"]


def time_to_first_step(train, out, first_step, timeout):
    """Seconds from launch to the first logged step of a run that trains one step after
    `first_step - 1`; None when it did not get there within `timeout` seconds."""
    log = os.path.join(out, "train_log.jsonl")
    seen = 0
    if os.path.exists(log):
        with open(log, encoding="utf-8") as f:
            seen = len(f.readlines())
    launched = time.time()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    try:
        subprocess.run(command(train, out, first_step), cwd=REPO, env=env, check=True,
                       capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    with open(log, encoding="utf-8") as f:
        records = [json.loads(line) for line in f.readlines()[seen:]]
    step = next(r for r in records if r["type"] == "step")
    assert step["step"] == first_step, step
    return step["timestamp"] - launched


def set_global_step(source_prefix, target_prefix, step):
    """Writes the checkpoint `source_prefix` with global_step = `step` to `target_prefix`."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    reader = tf.train.load_checkpoint(source_prefix)
    with tf.Graph().as_default():
        variables, dtypes = [], reader.get_variable_to_dtype_map()
        for name in reader.get_variable_to_shape_map():
            value = step if name == "global_step" else reader.get_tensor(name)
            variables.append(tf1.Variable(tf.constant(value, dtype=dtypes[name]), name=name))
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            tf1.train.Saver(variables, save_relative_paths=True).save(
                session, target_prefix, write_meta_graph=False)
    directory = os.path.dirname(target_prefix)
    with open(os.path.join(directory, "checkpoint"), "w", encoding="utf-8") as f:
        name = os.path.basename(target_prefix)
        f.write(f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n')


def checkpoint_at(trained, root, name, step, with_input_state):
    """A copy of the 2-step run `trained` whose checkpoint says global_step = `step`."""
    out = os.path.join(root, name)
    os.makedirs(out)
    set_global_step(os.path.join(trained, "model.ckpt-2"),
                    os.path.join(out, f"model.ckpt-{step}"), step)
    if with_input_state:
        source = os.path.join(trained, "input_state", "rank-0")
        target = os.path.join(out, "input_state", "rank-0")
        os.makedirs(target)
        shutil.copy(os.path.join(source, "fingerprint"), target)
        for file in os.listdir(source):
            if file.startswith("input.ckpt-2."):
                shutil.copy(os.path.join(source, file),
                            os.path.join(target, file.replace("ckpt-2.", f"ckpt-{step}.")))
    return out


def main(argv):
    del argv
    root = tempfile.mkdtemp(prefix="resume_time_")
    train = make_data(root)
    trained = os.path.join(root, "trained")
    subprocess.run(command(train, trained, 2), cwd=REPO, check=True, capture_output=True)
    state_bytes = sum(os.path.getsize(os.path.join(d, f))
                      for d, _, files in os.walk(os.path.join(trained, "input_state"))
                      for f in files)
    rows = {"fresh start (step 0)": [], f"resume at {BIG_STEP:,}, saved input position": []}
    skip_steps = [int(s) for s in FLAGS.skip_steps]
    for step in skip_steps:
        rows[f"resume at {step:,}, no input position (reads and skips)"] = []
    for repeat in range(FLAGS.repeats):
        rows["fresh start (step 0)"].append(
            time_to_first_step(train, os.path.join(root, f"fresh{repeat}"), 1, 600))
        out = checkpoint_at(trained, root, f"big{repeat}", BIG_STEP, True)
        rows[f"resume at {BIG_STEP:,}, saved input position"].append(
            time_to_first_step(train, out, BIG_STEP + 1, 600))
        for step in skip_steps:
            out = checkpoint_at(trained, root, f"skip{step}_{repeat}", step, False)
            rows[f"resume at {step:,}, no input position (reads and skips)"].append(
                time_to_first_step(train, out, step + 1, 1200))
    fresh = statistics.median(rows["fresh start (step 0)"])
    medians = {name: statistics.median(values) for name, values in rows.items()}
    # Skipping cost per step, from the two skip measurements, extrapolated to BIG_STEP.
    (s1, s2), names = skip_steps, [n for n in rows if "reads and skips" in n]
    per_step = (medians[names[1]] - medians[names[0]]) / (s2 - s1)
    extrapolated = medians[names[0]] + per_step * (BIG_STEP - s1)
    lines = [
        f"### Resume: time to the first step, fresh start vs global step {BIG_STEP:,}", "",
        (f"{datetime.date.today()}, {os.cpu_count()} cores, {cpu_model()}, Python "
        f"{platform.python_version()}. BERT-Mini (data/bert_config_mini.json), LAMB, batch "
        f"{FLAGS.batch_size}, seq {SEQ}, 4 shards of the sample corpus. Command: `python "
        f"bench/resume_time.py --repeats={FLAGS.repeats} --batch_size={FLAGS.batch_size}`. "
        f"Launch to first logged step, median of {FLAGS.repeats} interleaved repeats; saved "
        f"input position {state_bytes / 2**20:.2f} MB."), "",
        "| start | time to first step (s) | × fresh start | runs (s) |", "|---|---:|---:|---|"]
    for name, values in rows.items():
        lines.append(f"| {name} | {medians[name]:.1f} | {medians[name] / fresh:.2f} | "
                     + ", ".join(f"{v:.1f}" for v in values) + " |")
    lines.append(f"| resume at {BIG_STEP:,} without input position (extrapolated: "
                 f"{per_step * 1000:.1f} ms per skipped step of {FLAGS.batch_size}) | "
                 f"{extrapolated:,.0f} | {extrapolated / fresh:,.0f} | |")
    table = "\n".join(lines) + "\n"
    print(table)
    if FLAGS.append:
        with open(os.path.join(REPO, "BENCHMARKS.md"), "a", encoding="utf-8") as f:
            f.write("\n" + table)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
