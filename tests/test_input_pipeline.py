"""input_pipeline.py on small synthetic TFRecords whose records carry their own index."""

import os

import numpy as np
import pytest

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
