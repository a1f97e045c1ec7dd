"""input_pipeline.py on small synthetic TFRecords whose records carry their own index."""

import os

import numpy as np
import pytest
import tensorflow as tf

import input_pipeline
import tfrecord

SEQ, PRED = 16, 4
RECORDS_PER_FILE = 24


def write_records(path, first_index, count, seq=SEQ, pred=PRED):
    """Records whose input_ids[0] is their global index."""
    with tfrecord.TFRecordWriter(path) as writer:
        for index in range(first_index, first_index + count):
            ids = np.full(seq, 7, np.int64)
            ids[0] = index
            writer.write(tfrecord.encode_example({
                "input_ids": ids, "input_mask": np.ones(seq, np.int64),
                "segment_ids": np.zeros(seq, np.int64),
                "masked_lm_positions": np.arange(1, pred + 1, dtype=np.int64),
                "masked_lm_ids": np.full(pred, 5, np.int64),
                "masked_lm_weights": np.ones(pred, np.float32),
                "next_sentence_labels": np.array([index % 2], np.int64),
            }))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("records")
    paths = []
    for shard in range(4):
        path = str(directory / f"part-{shard}.tfrecord")
        write_records(path, shard * RECORDS_PER_FILE, RECORDS_PER_FILE)
        paths.append(path)
    return paths


def indices(dataset, batches):
    """input_ids[:, 0] of the first `batches` batches, as a list of lists."""
    return [batch["input_ids"][:, 0].numpy().tolist() for batch in dataset.take(batches)]


def flat(batches):
    return [index for batch in batches for index in batch]


def test_train_batches_have_the_design_features_as_int32_with_full_batches(files):
    batch = next(iter(input_pipeline.train_dataset(files, 5, SEQ, PRED, seed=1)))
    assert batch["input_ids"].shape == (5, SEQ)
    assert batch["masked_lm_positions"].shape == (5, PRED)
    assert batch["next_sentence_labels"].shape == (5, 1)
    assert {name: t.dtype.name for name, t in batch.items()} == {
        "input_ids": "int32", "input_mask": "int32", "segment_ids": "int32",
        "masked_lm_positions": "int32", "masked_lm_ids": "int32",
        "masked_lm_weights": "float32", "next_sentence_labels": "int32"}


def test_train_order_is_a_function_of_the_seed_and_is_shuffled(files):
    first = indices(input_pipeline.train_dataset(files, 8, SEQ, PRED, seed=3), 12)
    again = indices(input_pipeline.train_dataset(files, 8, SEQ, PRED, seed=3), 12)
    other = indices(input_pipeline.train_dataset(files, 8, SEQ, PRED, seed=4), 12)
    assert first == again
    assert first != other
    order = flat(first)
    assert order != sorted(order)
    # Interleaved: the first two batches already mix several files.
    assert len({index // RECORDS_PER_FILE for index in order[:16]}) > 1


def test_skipping_consumed_batches_continues_the_uninterrupted_order(files):
    full = indices(input_pipeline.train_dataset(files, 8, SEQ, PRED, seed=5), 20)
    resumed = indices(input_pipeline.train_dataset(files, 8, SEQ, PRED, seed=5, skip_batches=7),
                      13)
    assert resumed == full[7:]


def test_ranks_read_disjoint_file_shards(files):
    seen = []
    for rank in range(2):
        dataset = input_pipeline.train_dataset(files, 6, SEQ, PRED, seed=1, rank=rank,
                                               num_ranks=2)
        seen.append({i // RECORDS_PER_FILE for i in flat(indices(dataset, 8))})
    assert seen[0] == {0, 2} and seen[1] == {1, 3}


def test_fewer_files_than_ranks_is_an_error(files):
    with pytest.raises(input_pipeline.InputError, match="every rank needs at least one file"):
        input_pipeline.train_dataset(files[:1], 4, SEQ, PRED, seed=1, rank=0, num_ranks=2)


def test_eval_is_one_ordered_pass_with_a_short_last_batch(files):
    batches = indices(input_pipeline.eval_dataset(files, 10, SEQ, PRED), 100)
    assert flat(batches) == list(range(4 * RECORDS_PER_FILE))
    assert [len(b) for b in batches][-1] == 6


def test_check_files_names_the_flag_and_value_of_a_shape_mismatch(files):
    input_pipeline.check_files(files, SEQ, PRED)
    with pytest.raises(input_pipeline.InputError,
                       match=r"--max_seq_length=32 but the records of .* have 16"):
        input_pipeline.check_files(files, 32, PRED)
    with pytest.raises(input_pipeline.InputError, match=r"pass --max_predictions_per_seq=4"):
        input_pipeline.check_files(files, SEQ, 20)


def test_check_files_rejects_empty_and_non_tfrecord_files(tmp_path):
    empty = tmp_path / "empty.tfrecord"
    empty.write_bytes(b"")
    with pytest.raises(input_pipeline.InputError, match="empty TFRecord file"):
        input_pipeline.check_files([str(empty)], SEQ, PRED)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(input_pipeline.InputError, match="not a TFRecord file"):
        input_pipeline.check_files([str(text)], SEQ, PRED)


def test_list_input_files_takes_directories_and_globs(files, tmp_path):
    directory = os.path.dirname(files[0])
    assert input_pipeline.list_input_files(directory) == sorted(files)
    assert input_pipeline.list_input_files(None, os.path.join(directory, "part-[01]*")) == \
        sorted(files)[:2]
    with pytest.raises(input_pipeline.InputError, match="no such directory"):
        input_pipeline.list_input_files(str(tmp_path / "missing"))
    with pytest.raises(input_pipeline.InputError, match="no file matches"):
        input_pipeline.list_input_files(None, str(tmp_path / "*.tfrecord"))


def record_offsets(path):
    return [offset for _, offset, _, _ in input_pipeline.read_records(path)]


def short_input_ids_record(index):
    """A record like write_records' whose input_ids has one value too few."""
    return tfrecord.encode_example({
        "input_ids": np.full(SEQ - 1, index, np.int64), "input_mask": np.ones(SEQ, np.int64),
        "segment_ids": np.zeros(SEQ, np.int64),
        "masked_lm_positions": np.arange(1, PRED + 1, dtype=np.int64),
        "masked_lm_ids": np.full(PRED, 5, np.int64),
        "masked_lm_weights": np.ones(PRED, np.float32),
        "next_sentence_labels": np.array([0], np.int64)})


@pytest.fixture
def corrupt_files(tmp_path):
    """Four files of 24 records (input_ids[0] = global index): part-0 good; part-1 with a flipped
    byte in record 10 (bad CRC); part-2 with records 5 and 23 not Examples and record 20 one
    input_id short; part-3 truncated inside record 15. Returns (paths, {path: bad offsets})."""
    paths = []
    for shard in range(4):
        path = str(tmp_path / f"part-{shard}.tfrecord")
        write_records(path, shard * RECORDS_PER_FILE, RECORDS_PER_FILE)
        paths.append(path)
    offsets = [record_offsets(path) for path in paths]
    flipped = bytearray((tmp_path / "part-1.tfrecord").read_bytes())
    flipped[offsets[1][10] + 12 + 30] ^= 0x01
    (tmp_path / "part-1.tfrecord").write_bytes(flipped)
    records = [record for _, _, record, _ in input_pipeline.read_records(paths[2])]
    records[5], records[20], records[23] = b"\xff\xfe junk", short_input_ids_record(68), b"\xff"
    with tfrecord.TFRecordWriter(paths[2]) as writer:
        for record in records:
            writer.write(record)
    truncated = (tmp_path / "part-3.tfrecord").read_bytes()[:offsets[3][15] + 40]
    (tmp_path / "part-3.tfrecord").write_bytes(truncated)
    return paths, {paths[1]: [offsets[1][10]], paths[2]: [offsets[2][k] for k in (5, 20, 23)],
                   paths[3]: [offsets[3][15]]}


def test_tfrecord_dataset_gives_up_on_a_file_at_its_first_framing_error(corrupt_files):
    """Property (of TensorFlow, which the skipping relies on): after a bad CRC, TFRecordDataset
    with ignore_errors yields nothing more of that file, and goes on with the next file."""
    paths, _ = corrupt_files
    dataset = tf.data.TFRecordDataset(paths[1:2] + paths[:1]).ignore_errors()
    ids = [tf.train.Example.FromString(r.numpy()).features.feature["input_ids"].int64_list.value[0]
           for r in dataset]
    assert ids == list(range(24, 34)) + list(range(24))


def test_skip_corrupt_records_leaves_out_exactly_the_bad_ones_and_counts_them(corrupt_files):
    """Property: with skip_corrupt_records training batches hold every good record and no bad
    one; the per-file counts in the batches are exact for records that do not parse (3), one
    for a bad CRC or truncation, whose byte offset stops the reading of that file."""
    paths, bad = corrupt_files
    dataset = input_pipeline.train_dataset(paths, 8, SEQ, PRED, seed=1, shuffle_buffer=8,
                                           skip_corrupt_records=True)
    batches = list(dataset.take(40))
    seen = {i for batch in batches for i in batch["input_ids"][:, 0].numpy().tolist()}
    good = set(range(24)) | set(range(24, 34)) | (set(range(48, 72)) - {53, 68, 71}) | \
        set(range(72, 87))
    assert seen == good
    last = batches[-1]
    assert last[input_pipeline.SKIPPED_RECORDS].numpy().tolist() == [0, 1, 3, 1]
    assert last[input_pipeline.SKIPPED_FROM_BYTE].numpy().tolist() == [
        -1, bad[paths[1]][0], -1, bad[paths[3]][0]]
    assert last["input_ids"].dtype == tf.int32 and last["input_ids"].shape == (8, SEQ)


def test_skipping_pipeline_state_saves_and_restores_to_the_same_batches(corrupt_files):
    """Property: the skipping training pipeline has only TensorFlow ops: its iterator state saves
    (tf.train.Checkpoint) and a restored iterator gives the batches the saved one would."""
    paths, _ = corrupt_files
    dataset = input_pipeline.train_dataset(paths, 8, SEQ, PRED, seed=2,
                                           skip_corrupt_records=True)
    iterator = iter(dataset)
    for _ in range(3):
        next(iterator)
    saved = tf.train.Checkpoint(iterator=iterator).save(str(paths[0]) + ".state")
    expected = [next(iterator)["input_ids"][:, 0].numpy().tolist() for _ in range(6)]
    restored = iter(dataset)
    tf.train.Checkpoint(iterator=restored).restore(saved)
    assert [next(restored)["input_ids"][:, 0].numpy().tolist() for _ in range(6)] == expected


def first_error(dataset):
    try:
        for _ in dataset:
            pass
    except (tf.errors.OpError, UnicodeDecodeError) as error:
        return error
    raise AssertionError("no error")


@pytest.mark.parametrize("shard, index, problem", [
    (1, 10, "bad CRC: the record's data is corrupt"),
    (2, 5, "not a tf.train.Example"),
    (3, 15, "truncated: the record needs"),
])
def test_corrupt_record_error_names_the_file_record_offset_and_fix(corrupt_files, shard, index,
                                                                   problem):
    """Property: TensorFlow's error of reading a corrupt file (without a file name) becomes one
    InputError line naming the file, the record index and byte offset, the problem and the fix,
    whichever of the files the error came from."""
    paths, _ = corrupt_files
    error = first_error(input_pipeline.eval_dataset([paths[shard]], 4, SEQ, PRED))
    found = input_pipeline.corrupt_record_error(error, paths[::-1], SEQ, PRED)
    offset = record_offsets(paths[0])[index]  # the records before are the same size
    assert isinstance(found, input_pipeline.InputError)
    assert "\n" not in str(found)
    assert str(found).startswith(f"corrupt input record: {paths[shard]}: record {index} (byte "
                                 f"offset {offset}): {problem}")
    assert str(found).endswith("regenerate the file, delete it, or pass --skip_corrupt_records")


def test_corrupt_record_error_finds_a_wrong_length_and_ignores_other_errors(files, tmp_path):
    """Property: a parse error of a wrong feature length in the middle of a file is traced to
    its record; errors that do not come from the input (a failed numerics check, a corrupt
    checkpoint) give None."""
    path = str(tmp_path / "short.tfrecord")
    write_records(path, 0, RECORDS_PER_FILE)
    records = [record for _, _, record, _ in input_pipeline.read_records(path)]
    records[20] = short_input_ids_record(20)
    with tfrecord.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    error = first_error(input_pipeline.train_dataset([path], 4, SEQ, PRED, seed=1).take(100))
    found = input_pipeline.corrupt_record_error(error, [*files, path], SEQ, PRED)
    assert str(found).startswith(f"corrupt input record: {path}: record 20 (byte offset "
                                 f"{record_offsets(path)[20]}): wrong feature length: input_ids "
                                 f"has {SEQ - 1} values (--max_seq_length={SEQ})")
    error = first_error(tf.data.Dataset.from_tensors(float("nan")).map(
        lambda x: tf.debugging.check_numerics(x, "loss")))
    assert input_pipeline.corrupt_record_error(error, files, SEQ, PRED) is None
    data_loss = tf.errors.DataLossError(None, None, "not an sstable (bad magic number)")
    assert input_pipeline.corrupt_record_error(data_loss, files, SEQ, PRED) is None


def test_eval_skipping_reads_on_after_a_bad_crc_and_counts_per_file(corrupt_files):
    """Property: evaluation with a SkippedRecords reads every good record (those after a bad
    CRC too, the length being intact) in order, and counts the bad ones per file."""
    paths, bad = corrupt_files
    skipped = input_pipeline.SkippedRecords(paths, "eval")
    batches = indices(input_pipeline.eval_dataset(paths, 10, SEQ, PRED, skipped=skipped), 100)
    expected = [i for i in range(87) if i not in (34, 53, 68, 71)]
    assert flat(batches) == expected
    assert skipped.counts == {path: len(offsets) for path, offsets in bad.items()}
    assert skipped.summary() == {"eval_corrupt_records_skipped": 5,
                                 "eval_files_with_corrupt_records": 3}


def test_likely_reading_order_follows_the_training_file_order(files):
    """Property: the file likeliest to hold the record the training pipeline read after N
    records is the file it was reading then (one file at a time, in its seeded order)."""
    dataset = input_pipeline.train_dataset(files, 1, SEQ, PRED, seed=7, cycle_length=1,
                                           shuffle_buffer=1)
    order = [i[0] // RECORDS_PER_FILE for i in indices(dataset, 6 * RECORDS_PER_FILE)]
    for read in (0, 30, 50, 100, 130):
        likely = input_pipeline.likely_reading_order(files, 7, records_read=read)
        assert likely[0] == files[order[read]], read
        assert sorted(likely) == sorted(files)
