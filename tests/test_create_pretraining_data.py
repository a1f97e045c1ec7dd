"""create_pretraining_data.py: identical records to google-research/bert's generator, worker-count
independence, atomic output, and one-line errors for bad input."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, run_cli

REFERENCE_SETTINGS = {
    # The two settings: BERT phase-1 style and the MLPerf eval set's.
    "seq128": {"max_seq_length": 128, "max_predictions_per_seq": 20, "dupe_factor": 2},
    "seq512": {"max_seq_length": 512, "max_predictions_per_seq": 76, "dupe_factor": 1},
}


def generator_args(input_file, output_file, vocab_file, **settings):
    args = [f"--input_file={input_file}", f"--output_file={output_file}",
            f"--vocab_file={vocab_file}", "--random_seed=12345"]
    return args + [f"--{name}={value}" for name, value in settings.items()]


def read_records(path):
    """Every record of a TFRecord file, parsed into {feature: list of values}."""
    records = []
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
        example = tf.train.Example.FromString(raw)
        records.append({
            name: list(feature.int64_list.value) or list(feature.float_list.value)
            for name, feature in example.features.feature.items()
        })
    return records


@pytest.fixture(scope="module")
def reference_outputs(tmp_path_factory, vocab_file, sample_corpus):
    """google-research/bert's generator (the bert-tensorflow package) on the sample corpus, each
    setting in its own process, run concurrently."""
    directory = tmp_path_factory.mktemp("reference")
    processes = {}
    for name, settings in REFERENCE_SETTINGS.items():
        output = str(directory / f"{name}.tfrecord")
        command = [sys.executable, "-m", "bert.create_pretraining_data",
                   *generator_args(sample_corpus, output, vocab_file, **settings)]
        processes[name] = (output, subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                                                    stderr=subprocess.PIPE, text=True))
    outputs = {}
    for name, (output, process) in processes.items():
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-2000:]
        outputs[name] = output
    return outputs


@pytest.mark.parametrize("name", sorted(REFERENCE_SETTINGS))
def test_records_identical_to_google_reference(name, reference_outputs, tmp_path, vocab_file,
                                               sample_corpus):
    """Same flags, seed and corpus: every feature of every record equals the reference's, in
    order (records compared parsed: the reference's bytes vary with protobuf's map order)."""
    output = str(tmp_path / "ours.tfrecord")
    run_cli(["create_pretraining_data.py", "--num_workers=2",
             *generator_args(sample_corpus, output, vocab_file, **REFERENCE_SETTINGS[name])])
    ours = read_records(output)
    theirs = read_records(reference_outputs[name])
    assert len(ours) == len(theirs) > 1000
    for index, (mine, reference) in enumerate(zip(ours, theirs)):
        assert mine == reference, f"record {index} differs"


def split_corpus(sample_corpus, tmp_path, num_documents=60):
    """The first documents of the sample corpus as two input files a.txt and b.txt."""
    with open(sample_corpus, encoding="utf-8") as corpus:
        documents = corpus.read().split("\n\n")[:num_documents]
    half = num_documents // 2
    (tmp_path / "a.txt").write_text("\n\n".join(documents[:half]) + "\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("\n\n".join(documents[half:]) + "\n", encoding="utf-8")
    return [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]


def test_several_input_and_output_files_match_reference(tmp_path, vocab_file, sample_corpus):
    """A glob over two input files (read in tf.gfile.Glob's order) and round-robin over two
    output files give the reference's records, file for file."""
    split_corpus(sample_corpus, tmp_path)
    from create_pretraining_data import expand_input_patterns

    pattern = str(tmp_path / "*.txt")
    assert expand_input_patterns(pattern) == tf.io.gfile.glob(pattern)
    settings = {"max_seq_length": 64, "max_predictions_per_seq": 10, "dupe_factor": 2}
    results = {}
    for who, command in (("ours", ["create_pretraining_data.py"]),
                         ("reference", ["-m", "bert.create_pretraining_data"])):
        outputs = [str(tmp_path / f"{who}{shard}.tfrecord") for shard in range(2)]
        run_cli([*command, *generator_args(tmp_path / "*.txt", ",".join(outputs), vocab_file,
                                           **settings)])
        results[who] = [read_records(path) for path in outputs]
    assert results["ours"] == results["reference"]
    assert min(len(shard) for shard in results["ours"]) > 100


def whole_word_masked_lm_predictions(reference, tokens, masked_lm_prob, max_predictions_per_seq,
                                     vocab_words, rng):
    """google-research/bert's masking with --do_whole_word_mask (its current code; the packaged
    oracle predates it): "##" pieces join the previous candidate, whole groups are masked."""
    groups = []
    for index, token in enumerate(tokens):
        if token in ("[CLS]", "[SEP]"):
            continue
        if groups and token.startswith("##"):
            groups[-1].append(index)
        else:
            groups.append([index])
    rng.shuffle(groups)
    output_tokens = list(tokens)
    num_to_predict = min(max_predictions_per_seq, max(1, round(len(tokens) * masked_lm_prob)))
    masked = []
    for group in groups:
        if len(masked) >= num_to_predict:
            break
        if len(masked) + len(group) > num_to_predict:
            continue
        for index in group:
            if rng.random() < 0.8:
                output_tokens[index] = "[MASK]"
            elif rng.random() < 0.5:
                output_tokens[index] = tokens[index]
            else:
                output_tokens[index] = vocab_words[rng.randint(0, len(vocab_words) - 1)]
            masked.append(reference.MaskedLmInstance(index=index, label=tokens[index]))
    masked.sort(key=lambda instance: instance.index)
    return output_tokens, [m.index for m in masked], [m.label for m in masked]


def test_whole_word_masking_matches_reference(tmp_path, vocab_file, sample_corpus, monkeypatch):
    """--do_whole_word_mask gives the records of the reference pipeline run with Google's
    whole-word masking."""
    import random

    from absl import flags
    from bert import create_pretraining_data as reference
    from bert import tokenization as reference_tokenization

    flags.FLAGS(["test"], known_only=True)
    inputs = split_corpus(sample_corpus, tmp_path)
    monkeypatch.setattr(reference, "create_masked_lm_predictions",
                        lambda *args: whole_word_masked_lm_predictions(reference, *args))
    tokenizer = reference_tokenization.FullTokenizer(vocab_file, do_lower_case=True)
    instances = reference.create_training_instances(
        inputs, tokenizer, 64, 2, 0.1, 0.15, 10, random.Random(12345))
    reference.write_instance_to_example_files(instances, tokenizer, 64, 10,
                                              [str(tmp_path / "reference.tfrecord")])
    run_cli(["create_pretraining_data.py",
             *generator_args(",".join(inputs), tmp_path / "ours.tfrecord", vocab_file,
                             max_seq_length=64, max_predictions_per_seq=10, dupe_factor=2,
                             do_whole_word_mask=True)])
    ours = read_records(str(tmp_path / "ours.tfrecord"))
    assert ours == read_records(str(tmp_path / "reference.tfrecord"))
    masked_groups = sum(len(record["masked_lm_ids"]) for record in ours)
    assert masked_groups > 1000


def test_worker_count_does_not_change_bytes(tmp_path, vocab_file, sample_corpus):
    """--num_workers 1 and 2 write byte-identical files."""
    outputs = []
    for workers in (1, 2):
        output = tmp_path / f"w{workers}.tfrecord"
        run_cli(["create_pretraining_data.py", f"--num_workers={workers}",
                 *generator_args(sample_corpus, output, vocab_file, dupe_factor=1)])
        outputs.append(output.read_bytes())
    assert outputs[0] == outputs[1] and len(outputs[0]) > 1_000_000


def test_summary_and_features(tmp_path, vocab_file, sample_corpus):
    """The CLI prints its summary; records have DESIGN.md's features, shapes and invariants."""
    output = tmp_path / "out.tfrecord"
    result = run_cli(["create_pretraining_data.py",
                      *generator_args(sample_corpus, output, vocab_file, dupe_factor=1,
                                      max_seq_length=64, max_predictions_per_seq=10)])
    for key in ("documents:", "instances:", "tokens:", "masked positions:", "time:"):
        assert key in result.stdout
    records = read_records(str(output))
    for record in records[:200]:
        assert {name: len(values) for name, values in record.items()} == {
            "input_ids": 64, "input_mask": 64, "segment_ids": 64, "masked_lm_positions": 10,
            "masked_lm_ids": 10, "masked_lm_weights": 10, "next_sentence_labels": 1}
        ids, mask = np.array(record["input_ids"]), np.array(record["input_mask"])
        length = int(mask.sum())
        assert ids[0] == 101 and ids[length - 1] == 102 and not ids[length:].any()
        weights = np.array(record["masked_lm_weights"])
        positions = np.array(record["masked_lm_positions"])[weights > 0]
        assert len(positions) >= 1 and (np.diff(positions) > 0).all() and positions.max() < length
    assert {record["next_sentence_labels"][0] for record in records} == {0, 1}


def test_invalid_utf8_bytes_are_dropped(tmp_path, vocab_file, sample_corpus):
    """Invalid UTF-8 bytes are ignored, as the reference's convert_to_unicode does: the output
    equals that of the same corpus without them."""
    with open(sample_corpus, "rb") as corpus:
        clean = b"\n\n".join(corpus.read().split(b"\n\n")[:40])
    dirty = clean.replace(b"the ", b"th\xff\xfee ").replace(b"Python", b"Pyt\xc3hon")
    assert dirty != clean
    outputs = []
    for name, data in (("clean", clean), ("dirty", dirty)):
        (tmp_path / f"{name}.txt").write_bytes(data)
        output = tmp_path / f"{name}.tfrecord"
        run_cli(["create_pretraining_data.py",
                 *generator_args(tmp_path / f"{name}.txt", output, vocab_file, dupe_factor=1)])
        outputs.append(output.read_bytes())
    assert outputs[0] == outputs[1]


# Runs create_pretraining_data.py with the final rename held back: it announces the rename and
# waits, so that a test can kill it at the last moment before the output gets its name.
RENAME_HELD_BACK = """
import os, runpy, sys, time
def held_back_rename(source, destination):
    print("renaming", source, flush=True)
    time.sleep(600)
os.replace = held_back_rename
sys.argv = sys.argv[1:]
runpy.run_path("create_pretraining_data.py", run_name="__main__")
"""


def test_interrupted_run_leaves_no_finished_looking_file(tmp_path, vocab_file, sample_corpus):
    """A run killed with SIGKILL after writing every record but before renaming (the writing
    itself takes milliseconds, too short to hit from outside) leaves only a complete
    `.tmp-<pid>` file, never the output name."""
    output = tmp_path / "out.tfrecord"
    process = subprocess.Popen(
        [sys.executable, "-c", RENAME_HELD_BACK, "create_pretraining_data.py",
         *generator_args(sample_corpus, output, vocab_file, dupe_factor=1)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    assert line.startswith("renaming "), "the run ended without renaming its output"
    process.send_signal(signal.SIGKILL)
    process.wait()
    [temporary] = tmp_path.glob("out.tfrecord.tmp-*")
    assert str(temporary) == line.split()[1]
    assert len(read_records(str(temporary))) > 1000
    assert not output.exists()


def write_vocab_without(tmp_path, vocab_file, missing):
    with open(vocab_file, encoding="utf-8") as source:
        tokens = [line.rstrip("\n") for line in source if line.rstrip("\n") != missing]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(("case", "message"), [
    ("missing_input", "does not exist: check --input_file"),
    ("glob_no_match", "matches no file"),
    ("empty_corpus", "no text in"),
    ("vocab_without_mask", "has no [MASK]"),
    ("missing_vocab", "vocab file"),
    ("short_max_seq_length", "--max_seq_length=4 is too small"),
    ("zero_predictions", "--max_predictions_per_seq=0"),
    ("unwritable_output", "output directory"),
])
def test_bad_input_gives_one_line_error(case, message, tmp_path, vocab_file, sample_corpus):
    """Each bad input exits non-zero with one line naming the problem and the fix, and writes
    nothing."""
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    output = tmp_path / "out.tfrecord"
    args = {"input_file": sample_corpus, "output_file": output, "vocab_file": vocab_file}
    settings = {}
    if case == "missing_input":
        args["input_file"] = tmp_path / "nope.txt"
    elif case == "glob_no_match":
        args["input_file"] = tmp_path / "*.nothing"
    elif case == "empty_corpus":
        args["input_file"] = empty
    elif case == "vocab_without_mask":
        args["vocab_file"] = write_vocab_without(tmp_path, vocab_file, "[MASK]")
    elif case == "missing_vocab":
        args["vocab_file"] = tmp_path / "no_vocab.txt"
    elif case == "short_max_seq_length":
        settings["max_seq_length"] = 4
    elif case == "zero_predictions":
        settings["max_predictions_per_seq"] = 0
    elif case == "unwritable_output":
        args["output_file"] = tmp_path / "no_such_dir" / "out.tfrecord"
    result = run_cli(["create_pretraining_data.py",
                      *generator_args(args["input_file"], args["output_file"],
                                      args["vocab_file"], **settings)], check=False)
    assert result.returncode != 0
    error_lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and message in error_lines[0], result.stderr
    assert not output.exists()


def test_dead_worker_fails_the_run(tmp_path, vocab_file, sample_corpus):
    """A worker process killed mid-run ends the run with a one-line error and exit code 2, not a
    hang, and no output file."""
    import psutil

    with open(sample_corpus, "rb") as corpus:
        text = corpus.read()
    big = tmp_path / "big.txt"
    big.write_bytes(text * 6)
    output = tmp_path / "out.tfrecord"
    process = subprocess.Popen(
        [sys.executable, "create_pretraining_data.py", "--num_workers=2",
         *generator_args(big, output, vocab_file, dupe_factor=1)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    parent = psutil.Process(process.pid)
    deadline = time.monotonic() + 120
    while len(parent.children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    parent.children()[0].kill()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    assert "error: a worker process died" in stderr
    assert not output.exists()
