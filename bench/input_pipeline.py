"""Records/s of the training input pipeline alone (read, shuffle, batch, parse, prefetch).

  .venv/bin/python bench/input_pipeline.py [--files_dir=data/tfrecords/train] [--batch_size=16]

Compare the printed records/s with the sequences/s run_pretraining.py logs: the pipeline must
be far faster than the training step so it never is the bottleneck.
"""

import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import input_pipeline

flags.DEFINE_string("files_dir", "data/tfrecords/train", "Directory of training TFRecords.")
flags.DEFINE_integer("batch_size", 16, "Records per batch.")
flags.DEFINE_integer("max_seq_length", 128, "Sequence length of the records.")
flags.DEFINE_integer("max_predictions_per_seq", 20, "Masked positions of the records.")
flags.DEFINE_integer("batches", 2000, "Batches to time (after 50 warm-up batches).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    files = input_pipeline.list_input_files(FLAGS.files_dir, flag="--files_dir")
    dataset = input_pipeline.train_dataset(files, FLAGS.batch_size, FLAGS.max_seq_length,
                                           FLAGS.max_predictions_per_seq, seed=1)
    iterator = iter(dataset)
    for _ in range(50):
        next(iterator)
    start = time.perf_counter()
    for _ in range(FLAGS.batches):
        next(iterator)
    seconds = time.perf_counter() - start
    rate = FLAGS.batches * FLAGS.batch_size / seconds
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f
                    if line.startswith("model name")), "unknown CPU")
    print(f"| pipeline | batch | seq | records/s | machine |\n|---|---|---|---|---|\n"
          f"| train_dataset | {FLAGS.batch_size} | {FLAGS.max_seq_length} | {rate:,.0f} | "
          f"{os.cpu_count()} cores, {cpu} |")


if __name__ == "__main__":
    app.run(main)
