"""Benchmark: instances/s of our data generator (1 and 2 workers) against google-research/bert's
(the `bert-tensorflow` package) on the same corpus, in the same run, outputs compared.

Each generator runs as a whole process (start-up, reading, tokenizing, instance creation,
writing), one after the other, `--repeats` times; the best wall time of each counts. The
records of every run are parsed and compared with the reference's.

Usage: .venv/bin/python bench/create_pretraining_data.py [--dupe_factor 5] [--repeats 2]
       [--corpus_copies N]  (the input file N times over, as N times the documents)
       [--no-append]   (by default the table is appended to BENCHMARKS.md)
"""

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def cpu_model():
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def parsed_records(path):
    import tensorflow as tf

    records = []
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
        features = tf.train.Example.FromString(raw).features.feature
        records.append({name: (tuple(f.int64_list.value), tuple(f.float_list.value))
                        for name, f in features.items()})
    return records


def timed_run(command):
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input_file", default=os.path.join(REPO, "data", "sample_corpus.txt"))
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--max_predictions_per_seq", type=int, default=20)
    parser.add_argument("--dupe_factor", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--corpus_copies", type=int, default=1)
    parser.add_argument("--no-append", dest="append", action="store_false")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        input_file = args.input_file
        if args.corpus_copies > 1:
            input_file = os.path.join(workdir, "corpus.txt")
            with open(args.input_file, "rb") as source:
                text = source.read().rstrip(b"\n") + b"\n\n"
            with open(input_file, "wb") as copies:
                copies.write(text * args.corpus_copies)
        benchmark(args, input_file, workdir)


def benchmark(args, input_file, workdir):
    """Runs the generators on `input_file`, compares outputs, prints (and appends) the table."""
    common = [f"--input_file={input_file}", f"--vocab_file={REPO}/data/vocab.txt",
              f"--max_seq_length={args.max_seq_length}",
              f"--max_predictions_per_seq={args.max_predictions_per_seq}",
              f"--dupe_factor={args.dupe_factor}", "--random_seed=12345"]
    runs = {
        "google-research/bert (reference)": ([sys.executable, "-m",
                                               "bert.create_pretraining_data"], "ref"),
        "bert-tf, 1 worker": ([sys.executable, "create_pretraining_data.py",
                               "--num_workers=1"], "w1"),
        "bert-tf, 2 workers": ([sys.executable, "create_pretraining_data.py",
                                "--num_workers=2"], "w2"),
    }
    best = {}
    for _ in range(args.repeats):
        for name, (command, tag) in runs.items():
            output = os.path.join(workdir, f"{tag}.tfrecord")
            seconds = timed_run([*command, *common, f"--output_file={output}"])
            best[name] = min(best.get(name, float("inf")), seconds)
    reference = parsed_records(os.path.join(workdir, "ref.tfrecord"))
    identical = {name: parsed_records(os.path.join(workdir, f"{tag}.tfrecord")) == reference
                 for name, (_, tag) in runs.items()}

    reference_seconds = best["google-research/bert (reference)"]
    rows = ["| generator | wall time (s) | instances/s | × reference | records identical |",
            "|---|---:|---:|---:|---|"]
    for name, seconds in best.items():
        rows.append(f"| {name} | {seconds:.2f} | {len(reference) / seconds:,.0f} | "
                    f"{reference_seconds / seconds:.2f} | {'yes' if identical[name] else 'NO'} |")
    command = ("python bench/create_pretraining_data.py "
               f"--dupe_factor {args.dupe_factor} --repeats {args.repeats}")
    if args.corpus_copies > 1:
        command += f" --corpus_copies {args.corpus_copies}"
    report = "\n".join([
        (f"### create_pretraining_data: {len(reference):,} instances "
        f"(seq {args.max_seq_length}, {args.max_predictions_per_seq} predictions, "
        f"dupe_factor {args.dupe_factor}, {os.path.getsize(input_file):,}-byte corpus)"),
        "",
        (f"{datetime.date.today()}, {os.cpu_count()} cores, {cpu_model()}, Python "
        f"{platform.python_version()}. Command: `{command}`. Whole-process wall time, best of "
        f"{args.repeats}."),
        "",
        *rows,
        "",
    ])
    print(report)
    if args.append:
        with open(os.path.join(REPO, "BENCHMARKS.md"), "a", encoding="utf-8") as benchmarks:
            benchmarks.write("\n" + report)
    if not all(identical.values()):
        raise SystemExit("outputs differ from the reference")


if __name__ == "__main__":
    main()
