"""Corrupt input records in real runs of the run_pretraining.py CLI: a truncated file, a flipped
byte (bad CRC), a record that is not a tf.train.Example and one with a wrong input_ids length,
each in the middle of a shard written by create_pretraining_data.py."""

import hashlib
import json
import os
import shutil

import pytest
import tensorflow as tf
from conftest import VOCAB, run_cli
from test_run_pretraining import TINY_CONFIG, documents

import input_pipeline
import tfrecord

SEQ, PRED = 64, 10
BAD = 50  # index of the corrupt record in each corrupt file (of about 100)


def shard_records(path):
    """[(byte offset, record bytes)] of a good shard."""
    return [(offset, data) for _, offset, data, _ in input_pipeline.read_records(path)]


def write_corrupt(kind, source, path):
    """A copy of `source` whose record BAD is corrupt as `kind` says; returns its byte offset."""
    records = shard_records(source)
    offset = records[BAD][0]
    data = bytearray(source.read_bytes())
    if kind == "truncated":  # the file ends in the middle of record BAD
        data = data[:offset + 100]
    elif kind == "bad_crc":  # one flipped bit in record BAD's data
        data[offset + 12 + 40] ^= 0x10
    else:
        payloads = [record for _, record in records]
        if kind == "not_an_example":  # framing and CRC valid, the bytes are no protobuf
            payloads[BAD] = b"\xff\xfe\x00 not a tf.train.Example"
        else:  # "wrong_length": input_ids one value short
            example = tf.train.Example.FromString(payloads[BAD])
            del example.features.feature["input_ids"].int64_list.value[-1]
            payloads[BAD] = example.SerializeToString(deterministic=True)
        data = b"".join(map(tfrecord.frame_record, payloads))
    with open(path, "wb") as f:
        f.write(data)
    return offset


KINDS = {"truncated": "truncated: the record needs",
         "bad_crc": "bad CRC: the record's data is corrupt",
         "not_an_example": "not a tf.train.Example",
         "wrong_length": "wrong feature length: input_ids has 63 values (--max_seq_length=64)"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two good shards of about 100 records, a tiny model config, and a run trained 5 steps on
    the good shards (checkpoint model.ckpt-5)."""
    root = tmp_path_factory.mktemp("corrupt")
    (root / "text.txt").write_text(documents(0, 8))
    (root / "good").mkdir()
    run_cli(["create_pretraining_data.py", f"--input_file={root / 'text.txt'}",
             f"--output_file={root / 'good/a.tfrecord'},{root / 'good/b.tfrecord'}",
             "--dupe_factor=1", f"--vocab_file={VOCAB}", f"--max_seq_length={SEQ}",
             f"--max_predictions_per_seq={PRED}"])
    (root / "tiny.json").write_text(json.dumps(TINY_CONFIG))
    run_cli(cli(root, root / "good", root / "step5", "--do_train", steps=5))
    return root


def cli(root, train_dir, output_dir, *extra, steps):
    return ["run_pretraining.py", f"--bert_config_file={root / 'tiny.json'}",
            f"--input_files_dir={train_dir}", f"--output_dir={output_dir}",
            f"--max_seq_length={SEQ}", f"--max_predictions_per_seq={PRED}",
            "--train_batch_size=8", "--eval_batch_size=8", f"--num_train_steps={steps}",
            "--num_warmup_steps=1", "--learning_rate=1e-3", "--optimizer_type=adam",
            "--save_checkpoints_steps=5", "--display_loss_steps=5", *extra]


def resumable_copy(corpus, output_dir):
    """A copy of the step-5 run. Its saved input position belongs to the old file list, so the
    re-run reaches step 5 by re-reading its input."""
    shutil.copytree(corpus / "step5", output_dir)
    return checkpoint_digest(output_dir)


def checkpoint_digest(output_dir):
    """(latest checkpoint's name, sha256 of each of its files and of the state file)."""
    latest = tf.train.latest_checkpoint(str(output_dir))
    names = sorted(name for name in os.listdir(output_dir)
                   if name.startswith("model.ckpt") or name == "checkpoint")
    return os.path.basename(latest), {
        name: hashlib.sha256((output_dir / name).read_bytes()).hexdigest() for name in names}


def corrupt_dir(corpus, directory, kinds):
    """The good shards and one corrupt copy of a.tfrecord per kind; {kind: (path, offset)}."""
    directory.mkdir()
    for name in ("a.tfrecord", "b.tfrecord"):
        shutil.copy(corpus / "good" / name, directory / name)
    return {kind: (str(directory / f"{kind}.tfrecord"),
                   write_corrupt(kind, corpus / "good" / "a.tfrecord",
                                 directory / f"{kind}.tfrecord"))
            for kind in kinds}


def assert_one_line_error(result, path, offset, problem):
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"run_pretraining.py: error: corrupt input record: {path}: record "
                           f"{BAD} (byte offset {offset}): {problem}"), last
    assert last.endswith("regenerate the file, delete it, or pass --skip_corrupt_records"), last


# One kind the reader fails on (DataLossError) and one the parsing fails on (InvalidArgument):
# the two ways a training step ends on a corrupt record. tests/test_input_pipeline.py names
# every kind's problem.
@pytest.mark.parametrize("kind", ["bad_crc", "wrong_length"])
def test_corrupt_training_record_is_one_line_and_the_checkpoint_survives(corpus, tmp_path, kind):
    """Property: a resumed run whose input holds a corrupt record (bad CRC, wrong input_ids
    length) in the middle of a file exits 1 with one line naming the file, the record index and
    its byte offset, what is wrong and the fix, with no traceback; the step-5 checkpoint is
    still the latest and byte for byte the same."""
    (path, offset), = corrupt_dir(corpus, tmp_path / "train", [kind]).values()
    out = tmp_path / "run"
    before = resumable_copy(corpus, out)
    result = run_cli(cli(corpus, tmp_path / "train", out, "--do_train",
                         "--save_checkpoints_steps=1000", steps=200), check=False)
    assert_one_line_error(result, path, offset, KINDS[kind])
    assert checkpoint_digest(out) == before
    assert before[0] == "model.ckpt-5"
    assert tf.train.load_variable(str(out / "model.ckpt-5"), "global_step") == 5


def test_corrupt_eval_record_is_one_line(corpus, tmp_path):
    """Property: evaluation of a checkpoint on files holding a record with a bad CRC exits 1 with
    the same one line (file, record, offset, fix) and no traceback; no eval_results.txt."""
    (path, offset), = corrupt_dir(corpus, tmp_path / "eval", ["bad_crc"]).values()
    out = tmp_path / "run"
    before = resumable_copy(corpus, out)
    result = run_cli(cli(corpus, corpus / "good", out, "--do_eval",
                         f"--eval_files_dir={tmp_path / 'eval'}", "--max_eval_steps=1000",
                         steps=5), check=False)
    assert_one_line_error(result, path, offset, KINDS["bad_crc"])
    assert not (out / "eval_results.txt").exists()
    assert checkpoint_digest(out) == before


def summaries(output_dir, kind):
    with open(output_dir / "train_log.jsonl", encoding="utf-8") as f:
        return [r["data"] for r in map(json.loads, f) if r["type"] == kind]


def test_skip_corrupt_records_trains_and_counts_them_per_file(corpus, tmp_path):
    """Property: with --skip_corrupt_records a run whose training and eval files hold all four
    kinds of corrupt record trains to the end and evaluates; the log names every corrupt file
    with its count (1 each), says where a bad CRC or truncation stopped the reading of a file,
    and how many intact records after a bad CRC are lost with it, and the run summary reports
    the totals (4 train, 4 eval)."""
    train = corrupt_dir(corpus, tmp_path / "train", KINDS)
    evaluation = corrupt_dir(corpus, tmp_path / "eval", KINDS)
    out = tmp_path / "run"
    result = run_cli(cli(corpus, tmp_path / "train", out, "--do_train", "--do_eval",
                         f"--eval_files_dir={tmp_path / 'eval'}", "--skip_corrupt_records",
                         "--max_eval_steps=1000", steps=30))
    for path, _ in train.values():
        assert f"{path}: corrupt records skipped: 1 (train)" in result.stderr
    assert "train: corrupt records skipped: 4 in 4 files" in result.stderr
    for kind in ("bad_crc", "truncated"):
        path, offset = train[kind]
        assert f"{path}: record at byte offset {offset}: {KINDS[kind]}" in result.stderr
    after = len(shard_records(corpus / "good" / "a.tfrecord")) - BAD - 1
    assert f"the record and {after} after it, are not read" in result.stderr
    for kind, (path, offset) in evaluation.items():
        assert (f"{path}: skipped corrupt record {BAD} (byte offset {offset}): {KINDS[kind]}"
                in result.stderr)
        assert f"{path}: corrupt records skipped: 1 (eval)" in result.stderr
    records = summaries(out, "corrupt_records")
    assert {"train_corrupt_records_skipped": 4, "train_files_with_corrupt_records": 4} in records
    assert {"eval_corrupt_records_skipped": 4, "eval_files_with_corrupt_records": 4} in records
    assert summaries(out, "train")[-1]["global_step"] == 30
    assert os.path.exists(out / "eval_results.txt")
