"""Training throughput: run_pretraining.py's whole training step (input pipeline, BertModel, the
masked-LM and next-sentence heads, Adam) against Hugging Face transformers' `BertForPreTraining`
on PyTorch (bench/hf_pretraining.py, AdamW, eager) on the same data, in fp32 and, where the CPU
has AMX or AVX-512-BF16, in bfloat16 (ours: --amp --amp_dtype=bfloat16, the peer's forward pass
under torch.autocast).

  .venv/bin/python bench/train_throughput.py [--configs=base128,base512,mini128]
      [--precisions=fp32,bf16] [--rounds=2] [--windows=3] [--window_steps=5] [--threads=N]
      [--peer_compile] [--work_dir=DIR] [--dry_run] [--no_write]

Configs (model, sequence length, masked-LM predictions, batch): base128 = bert_config.json
(BERT-base), seq 128, 20, batch 8; base512 = BERT-base, seq 512, 80, batch 4; mini128 =
data/bert_config_mini.json (BERT-Mini L4 H256), seq 128, 20, batch 32. The data are TFRecords
that create_pretraining_data.py makes from data/sample_corpus.txt into --work_dir (once); the
peer gets the same examples as arrays (an .npz written from those TFRecords), so both see the
same batches in the same order.

Each side runs as a child process, --rounds times, the two sides interleaved (the order flips
every run). A run does --window_steps updates to warm up and then --windows timed windows of
--window_steps updates each; sequences/s is the median over every timed window of every round
(ours from run_pretraining.py's step records, the peer's from its own timer around the step).
Peak resident memory is wait4's ru_maxrss of the child (the largest over its rounds).

Model FLOPs per sequence (the usual count: 2 per multiply-add, backward = 2 x forward):
  3 x [L x (2 S (4 H^2 + 2 H I) + 4 S^2 H) + 2 P (H^2 + H V)]
for L layers, hidden H, intermediate I, the sequence's real tokens S (its padding is no work a
model needs: averaged over the examples the runs read), P masked-LM predictions, vocabulary V
(embedding look-ups, softmax, LayerNorm and the pooler/next-sentence head are left out).
Utilisation is FLOP/s over the fp32 or bf16 matrix-product rate of TensorFlow measured in the
same run (tf.matmul of n x n matrices, n = 1024 and 2048, the faster one).

With bf16, ours also trains BERT-Mini --curve_steps updates in fp32 and in bf16 (same seed and
data) and the table compares the two loss curves.

Prints the table and, unless --no_write, puts it into BENCHMARKS.md under the section
"## Training throughput (bench/train_throughput.py)".
"""

import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile

import benchlib
from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (bert config file, max_seq_length, max_predictions_per_seq, batch size)
CONFIGS = {
    "base128": ("bert_config.json", 128, 20, 8),
    "base512": ("bert_config.json", 512, 80, 4),
    "mini128": (os.path.join("data", "bert_config_mini.json"), 128, 20, 32),
}
# ours / peer sequences/s, by (config, precision)
GOALS = {("base128", "fp32"): 1.5, ("base512", "fp32"): 2.0,
         ("base128", "bf16"): 2.0, ("base512", "bf16"): 2.5}
BF16_UTILISATION_GOAL = 0.40
SECTION = "## Training throughput (bench/train_throughput.py)"
OURS, PEER = "ours", "peer"

flags.DEFINE_list("configs", list(CONFIGS), f"Any of {', '.join(CONFIGS)}.")
flags.DEFINE_list("precisions", ["fp32", "bf16"], "fp32 and/or bf16 (bf16 only where the CPU "
                  "has amx_bf16 or avx512_bf16).")
flags.DEFINE_integer("rounds", 2, "Runs of each side per config and precision.", lower_bound=1)
flags.DEFINE_integer("windows", 3, "Timed windows per run.", lower_bound=1)
flags.DEFINE_integer("window_steps", 5, "Updates per timed window (and warm-up updates).",
                     lower_bound=1)
flags.DEFINE_integer("threads", os.cpu_count() or 1, "Intra-op threads of ours "
                     "(--intra_op_threads), torch.set_num_threads of the peer.")
flags.DEFINE_float("learning_rate", 1e-4, "Learning rate of both sides (constant).")
flags.DEFINE_integer("curve_steps", 300, "Updates of the BERT-Mini fp32 and bf16 runs whose "
                     "loss curves are compared (0: none; needs bf16 in --precisions).",
                     lower_bound=0)
flags.DEFINE_bool("peer_compile", False, "Run the peer under torch.compile (default eager).")
flags.DEFINE_string("work_dir", os.path.join(tempfile.gettempdir(), "bench_train_throughput"),
                    "Data, outputs and logs.")
flags.DEFINE_bool("dry_run", False, "Print the commands only.")
flags.DEFINE_bool("no_write", False, "Print the table; leave BENCHMARKS.md alone.")
flags.DEFINE_string("benchmarks_file", os.path.join(REPO, "BENCHMARKS.md"),
                    "The file the table goes into.")
FLAGS = flags.FLAGS


def flops_per_sequence(config, lengths, predictions):
    """Mean training FLOPs of sequences with `lengths` real tokens (formula in the module
    docstring)."""
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    layers = [2 * seq * (4 * hidden ** 2 + 2 * hidden * inter) + 4 * seq ** 2 * hidden
              for seq in lengths]
    head = 2 * predictions * (hidden ** 2 + hidden * config["vocab_size"])
    return 3 * (config["num_hidden_layers"] * statistics.mean(layers) + head)


def real_lengths(npz):
    """The number of real tokens (input_mask 1) of each example of the peer's .npz."""
    import numpy as np

    with np.load(npz) as arrays:
        return [int(length) for length in arrays["input_mask"].sum(axis=1)]


def total_steps():
    return FLAGS.window_steps * (FLAGS.windows + 1)


def data_dir(seq, predictions):
    return os.path.join(FLAGS.work_dir, "data", f"seq{seq}-p{predictions}")


def data_command(seq, predictions):
    return [sys.executable, "create_pretraining_data.py",
            f"--input_file={os.path.join('data', 'sample_corpus.txt')}",
            f"--output_file={os.path.join(data_dir(seq, predictions), 'part-0.tfrecord')}",
            f"--vocab_file={os.path.join('data', 'vocab.txt')}", "--do_lower_case",
            f"--max_seq_length={seq}", f"--max_predictions_per_seq={predictions}",
            "--dupe_factor=1", "--random_seed=12345"]


def prepare_data(seq, predictions, examples):
    """The TFRecord directory of (seq, predictions) and its first `examples` examples as an
    .npz for the peer (both made once)."""
    directory = data_dir(seq, predictions)
    record = os.path.join(directory, "part-0.tfrecord")
    if not os.path.exists(record):
        os.makedirs(directory, exist_ok=True)
        result = subprocess.run(data_command(seq, predictions), cwd=REPO, capture_output=True,
                                text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                                check=False)
        if result.returncode:
            sys.exit(f"train_throughput.py: data preparation failed:\n{result.stderr[-3000:]}")
    npz = os.path.join(FLAGS.work_dir, "data", f"seq{seq}-p{predictions}-{examples}.npz")
    if not os.path.exists(npz):
        write_npz(record, seq, predictions, examples, npz)
    return directory, npz


def write_npz(record, seq, predictions, examples, path):
    """The first `examples` examples of TFRecord `record`, in file order, as numpy arrays."""
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, REPO)
    import input_pipeline

    spec = input_pipeline.feature_spec(seq, predictions)
    arrays = {name: [] for name in spec}
    for serialized in tf.data.TFRecordDataset(record).take(examples).as_numpy_iterator():
        for name, value in tf.io.parse_single_example(serialized, spec).items():
            arrays[name].append(value.numpy())
    if len(arrays["input_ids"]) < examples:
        sys.exit(f"train_throughput.py: {record} has {len(arrays['input_ids'])} examples, "
                 f"{examples} needed: lower --windows or --window_steps")
    with open(path + ".tmp", "wb") as f:
        np.savez(f, **{name: np.stack(values) for name, values in arrays.items()})
    os.replace(path + ".tmp", path)


def ours_command(name, precision, directory, output_dir, steps=None, warmup_steps=0,
                 learning_rate=None, log_every=None):
    """run_pretraining.py on config `name` in `precision`: `steps` updates (default the timed
    run's), the loss and sequences/s logged every `log_every` (default --window_steps)."""
    config, seq, predictions, batch = CONFIGS[name]
    steps = steps or total_steps()
    command = [sys.executable, "run_pretraining.py", f"--bert_config_file={config}",
               f"--input_files_dir={directory}", f"--output_dir={output_dir}", "--do_train",
               f"--max_seq_length={seq}", f"--max_predictions_per_seq={predictions}",
               f"--train_batch_size={batch}", f"--num_train_steps={steps}",
               f"--num_warmup_steps={warmup_steps}",
               f"--learning_rate={learning_rate or FLAGS.learning_rate}",
               "--optimizer_type=adam", f"--display_loss_steps={log_every or FLAGS.window_steps}",
               f"--save_checkpoints_steps={10 * steps}",
               f"--intra_op_threads={FLAGS.threads}", "--seed=12345"]
    if precision == "bf16":
        command += ["--amp", "--amp_dtype=bfloat16"]
    return command


def peer_command(name, precision, npz):
    config, _, _, batch = CONFIGS[name]
    command = [sys.executable, os.path.join("bench", "hf_pretraining.py"),
               f"--bert_config_file={config}", f"--data_npz={npz}",
               f"--train_batch_size={batch}", f"--steps={total_steps()}",
               f"--warmup_steps={FLAGS.window_steps}", f"--window_steps={FLAGS.window_steps}",
               f"--learning_rate={FLAGS.learning_rate}", f"--threads={FLAGS.threads}",
               "--seed=12345"]
    return command + benchlib.peer_switches(precision, FLAGS.peer_compile)


def ours_result(output_dir):
    """{windows: sequences/s of each full timed window, first_loss} from train_log.jsonl."""
    windows, first_loss = [], None
    with open(os.path.join(output_dir, "train_log.jsonl"), encoding="utf-8") as f:
        for record in map(json.loads, f):
            if record["type"] != "step":
                continue
            if first_loss is None:
                first_loss = record["data"]["total_loss"]
            # The first window holds the untimed warm-up runs: only later ones are whole.
            if record["step"] > FLAGS.window_steps and record["step"] % FLAGS.window_steps == 0:
                windows.append(record["data"]["throughput_train"])
    return {"windows": windows, "first_loss": first_loss}


def peer_result(output_dir):
    record = benchlib.last_json_line(output_dir)
    return {"windows": record["windows"], "first_loss": record["losses"][0]}


def measure(side, command, output_dir):
    """One run of one side: {windows, first_loss, peak_rss_mib, wall_seconds} or {error}."""
    result = benchlib.measure(side, command, output_dir, REPO,
                              ours_result if side == OURS else peer_result)
    if "error" not in result:
        print(f"  {side}: {', '.join(f'{w:.2f}' for w in result['windows'])} seq/s, first "
              f"loss {result['first_loss']:.4f}, peak RSS {result['peak_rss_mib']:,.0f} MiB, "
              f"{result['wall_seconds']:.0f} s", flush=True)
    return result


MATMUL_PROBE = """
import json, time, tensorflow as tf
rates = {}
for dtype in (tf.float32, tf.bfloat16):
    best = 0.0
    for n in (1024, 2048):
        a = tf.cast(tf.random.normal([n, n]), dtype)
        b = tf.cast(tf.random.normal([n, n]), dtype)
        product = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b)[:1], tf.float32)))
        product()
        repeats = max(2, int(4e10 / (2 * n ** 3)))
        start = time.perf_counter()
        for _ in range(repeats):
            product().numpy()
        best = max(best, 2 * n ** 3 * repeats / (time.perf_counter() - start))
    rates[dtype.name] = best
print(json.dumps(rates))
"""


def measured_matmul_rates():
    """TensorFlow's fp32 and bf16 matrix-product FLOP/s, measured in a child process with
    --threads intra-op threads."""
    probe = ("import tf_startup\nimport tensorflow as tf\n"
             f"tf.config.threading.set_intra_op_parallelism_threads({FLAGS.threads})\n"
             + MATMUL_PROBE)
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                            text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                            check=False)
    if result.returncode:
        sys.exit(f"train_throughput.py: matrix-product probe failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


CURVE_WINDOW = 25  # updates per point of the loss curves
CURVE_LEARNING_RATE = 1e-3  # the demo's rate: the loss falls far in a few hundred updates


def curve_command(precision, directory, output_dir):
    """Ours on BERT-Mini for --curve_steps updates, the loss logged every CURVE_WINDOW."""
    return ours_command("mini128", precision, directory, output_dir, steps=FLAGS.curve_steps,
                        warmup_steps=FLAGS.curve_steps // 10,
                        learning_rate=CURVE_LEARNING_RATE, log_every=CURVE_WINDOW)


def loss_curve(output_dir):
    """{step: mean total loss of the CURVE_WINDOW updates up to it} from train_log.jsonl."""
    with open(os.path.join(output_dir, "train_log.jsonl"), encoding="utf-8") as f:
        return {record["step"]: record["data"]["avg_loss_step"] for record in map(json.loads, f)
                if record["type"] == "step" and record["step"] % CURVE_WINDOW == 0}


def compare_curves():
    """Runs the fp32 and bf16 BERT-Mini curves; {"fp32": {step: loss}, "bf16": {...}}."""
    _, seq, predictions, _ = CONFIGS["mini128"]
    directory = data_dir(seq, predictions)
    curves = {}
    for precision in ("fp32", "bf16"):
        output_dir = os.path.join(FLAGS.work_dir, f"curve-{precision}")
        command = curve_command(precision, directory, output_dir)
        print(f"[{datetime.datetime.now():%H:%M:%S}] curve {precision}: {shlex.join(command)}",
              flush=True)
        code, _, _ = benchlib.run_measured(command, output_dir, REPO)
        if code:
            sys.exit(f"train_throughput.py: the {precision} curve run failed (exit {code}):\n"
                     f"{benchlib.stderr_tail(output_dir)}")
        curves[precision] = loss_curve(output_dir)
    return curves


def curve_lines(curves):
    """The Markdown lines that compare the two loss curves."""
    steps = sorted(set(curves["fp32"]) & set(curves["bf16"]))
    gaps = [abs(curves["bf16"][step] - curves["fp32"][step]) for step in steps]
    worst = max(range(len(steps)), key=gaps.__getitem__)
    return [
        "", (f"bf16 against fp32, BERT-Mini (seq 128, batch 32), {FLAGS.curve_steps} updates of "
             f"ours (Adam, learning rate {CURVE_LEARNING_RATE:g}, {FLAGS.curve_steps // 10} "
             f"warm-up), mean loss of every {CURVE_WINDOW} updates: largest difference "
             f"{gaps[worst]:.3f} (at update {steps[worst]}, fp32 {curves['fp32'][steps[worst]]:.3f}"
             f"), last window fp32 {curves['fp32'][steps[-1]]:.3f} / bf16 "
             f"{curves['bf16'][steps[-1]]:.3f}."), "",
        "| update | " + " | ".join(str(step) for step in steps) + " |",
        "|---|" + "---:|" * len(steps),
        *(f"| {precision} | " + " | ".join(f"{curves[precision][step]:.3f}" for step in steps)
          + " |" for precision in ("fp32", "bf16")),
    ]


def summarise(runs):
    """Median sequences/s over every window of `runs`, the largest peak RSS, the first loss."""
    done = [run for run in runs if "error" not in run]
    if not done:
        return {"error": "; ".join(run["error"] for run in runs)}
    windows = [w for run in done for w in run["windows"]]
    return {"throughput": statistics.median(windows), "windows": windows,
            "peak_rss_mib": max(run["peak_rss_mib"] for run in done),
            "first_loss": done[0]["first_loss"]}


def _goal_text(name, precision, ratio):
    goal = GOALS.get((name, precision))
    if goal is None:
        return ""
    return f" (goal {goal:g}x: {'met' if ratio >= goal else 'not met'})"


def table(results, lengths, rates, cpu, command, skipped, curves):
    """The Markdown block of this run: a "####" heading, the setting and the table."""
    bf16 = ", ".join(cpu["bf16"]) if cpu["bf16"] else "no bf16 instructions (fp32 only)"
    peer_mode = "torch.compile" if FLAGS.peer_compile else "eager"
    lines = [
        f"#### {datetime.date.today()}: {', '.join(results)}", "",
        (f"CPU: {cpu['model']}, {cpu['cores']} cores, {bf16}. {benchlib.versions()}. "
         f"Command: `{command}`." + (f" Skipped: {skipped}." if skipped else "")), "",
        (f"Ours: run_pretraining.py, Adam, {FLAGS.threads} intra-op threads; peer: "
         f"transformers BertForPreTraining, AdamW, {peer_mode}, torch.set_num_threads("
         f"{FLAGS.threads}); both: learning rate {FLAGS.learning_rate:g}, gradients clipped "
         f"to norm 1. Sequences/s: median of {FLAGS.rounds} runs x {FLAGS.windows} windows of "
         f"{FLAGS.window_steps} updates per side, after {FLAGS.window_steps} warm-up updates. "
         f"TensorFlow matrix products here: fp32 {rates['float32'] / 1e9:,.0f} GFLOP/s"
         + (f", bf16 {rates['bfloat16'] / 1e9:,.0f} GFLOP/s" if cpu["bf16"] else "")
         + "; utilisation = model FLOP/s (formula in bench/train_throughput.py, real tokens "
         "only) / that rate."),
        "",
        ("| config | precision | ours seq/s | peer seq/s | ours / peer | ours GFLOP/s "
         "(utilisation) | ours peak RSS MiB | peer peak RSS MiB | first loss ours / peer |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, by_precision in results.items():
        config_file, seq, predictions, batch = CONFIGS[name]
        with open(os.path.join(REPO, config_file), encoding="utf-8") as f:
            flops = flops_per_sequence(json.load(f), lengths[name], predictions)
        real = statistics.mean(lengths[name]) / seq
        for precision, sides in by_precision.items():
            ours, peer = sides[OURS], sides[PEER]
            label = f"{name} (seq {seq}, batch {batch}, {real:.0%} real tokens)"
            if "error" in ours or "error" in peer:
                lines.append(f"| {label} | {precision} | {ours.get('error', '')} | "
                             f"{peer.get('error', '')} | | | | | |")
                continue
            ratio = ours["throughput"] / peer["throughput"]
            rate = rates["bfloat16" if precision == "bf16" else "float32"]
            gflops = ours["throughput"] * flops / 1e9
            lines.append(
                f"| {label} | {precision} | {ours['throughput']:.2f} | "
                f"{peer['throughput']:.2f} | {ratio:.2f}{_goal_text(name, precision, ratio)} | "
                f"{gflops:,.0f} ({gflops * 1e9 / rate:.0%}) | {ours['peak_rss_mib']:,.0f} | "
                f"{peer['peak_rss_mib']:,.0f} | {ours['first_loss']:.3f} / "
                f"{peer['first_loss']:.3f} |")
    lines += ["", (f"Goals: see issue 14 (bf16 utilisation at least "
                   f"{BF16_UTILISATION_GOAL:.0%}; peak RSS no higher than the peer's)."),
              "", ("The peer's masked-LM head scores every position (transformers' "
                   "BertForPreTraining), ours only the masked ones (Google's); the peer's "
                   "peak RSS includes those logits.")]
    if curves:
        lines += curve_lines(curves)
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    cpu = benchlib.cpu_info()
    command = shlex.join(["python", "bench/train_throughput.py", *sys.argv[1:]])
    for name in FLAGS.configs:
        if name not in CONFIGS:
            raise app.UsageError(f"--configs: {name!r} is none of {', '.join(CONFIGS)}")
    precisions, skipped = benchlib.runnable_precisions("train_throughput.py", FLAGS.precisions, cpu)
    FLAGS.work_dir = os.path.abspath(FLAGS.work_dir)
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores, bf16: {cpu['bf16'] or 'none'}; "
          f"configs {FLAGS.configs}, precisions {precisions}", flush=True)
    data, runs = {}, {}
    for name in FLAGS.configs:
        _, seq, predictions, batch = CONFIGS[name]
        if FLAGS.dry_run:
            print(shlex.join(data_command(seq, predictions)))
            data[name] = (data_dir(seq, predictions), "DATA.npz")
        else:
            data[name] = prepare_data(seq, predictions, batch * total_steps())
        for precision in precisions:
            runs[name, precision] = {OURS: [], PEER: []}
    rates = None if FLAGS.dry_run else measured_matmul_rates()
    with_curves = FLAGS.curve_steps and "bf16" in precisions
    if with_curves and "mini128" not in data:
        _, seq, predictions, batch = CONFIGS["mini128"]
        if FLAGS.dry_run:
            print(shlex.join(data_command(seq, predictions)))
        else:
            prepare_data(seq, predictions, batch)
    turn = 0
    for round_index in range(FLAGS.rounds):
        for (name, precision), sides in runs.items():
            directory, npz = data[name]
            output_dir = os.path.join(FLAGS.work_dir, f"{name}-{precision}")
            commands = {OURS: ours_command(name, precision, directory,
                                           os.path.join(output_dir, f"ours-{round_index}")),
                        PEER: peer_command(name, precision, npz)}
            for side in (OURS, PEER) if turn % 2 == 0 else (PEER, OURS):
                if FLAGS.dry_run:
                    print(f"{name} {precision} {side}: {shlex.join(commands[side])}")
                    continue
                sides[side].append(measure(side, commands[side],
                                           os.path.join(output_dir, f"{side}-{round_index}")))
            turn += 1
    if with_curves and FLAGS.dry_run:
        for precision in ("fp32", "bf16"):
            print(f"curve {precision}: " + shlex.join(curve_command(
                precision, data_dir(*CONFIGS["mini128"][1:3]),
                os.path.join(FLAGS.work_dir, f"curve-{precision}"))))
    if FLAGS.dry_run:
        return
    curves = compare_curves() if with_curves else None
    results = {}
    for (name, precision), sides in runs.items():
        results.setdefault(name, {})[precision] = {side: summarise(side_runs)
                                                   for side, side_runs in sides.items()}
    with open(os.path.join(FLAGS.work_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"command": command, "cpu": cpu, "matmul_flops": rates, "results": results,
                   "curves": curves}, f, indent=1)
    failed = [f"{name} {precision} {side}" for name, by_precision in results.items()
              for precision, sides in by_precision.items() for side, r in sides.items()
              if "error" in r]
    benchlib.publish("train_throughput.py",
                     table(results, {name: real_lengths(npz) for name, (_, npz) in data.items()},
                           rates, cpu, command, ", ".join(skipped), curves), failed,
                     os.path.join(FLAGS.work_dir, "results.json"), FLAGS.benchmarks_file, SECTION,
                     write=not FLAGS.no_write)

if __name__ == "__main__":
    app.run(main)
