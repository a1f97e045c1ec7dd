"""tf.data input of BERT pre-training: TFRecord files of the features in DESIGN.md -> batches.

Training (`train_dataset`): this rank's shard of the files, shuffled per epoch, read
`cycle_length` at a time interleaved, records shuffled in a buffer, repeated forever, batched with
`drop_remainder`, parsed per batch, prefetched. Every shuffle is seeded, so the order of batches
is a function of the files and the seed alone; a resumed run skips the records it has already
consumed (`skip_batches`) and sees the same batches an uninterrupted run would.

Evaluation (`eval_dataset`): the files in the given order, one pass, the last batch kept short.

Features: int64 in the files; every int64 feature is cast to int32 for the model.

Corrupt records (a truncated file, a bad CRC, bytes that are not a tf.train.Example, wrong feature
lengths) cost nothing on the normal path: TensorFlow's error is turned into one line naming the
file, the record and the fix by `corrupt_record_error`, which re-reads the candidate files in
Python only after the failure. With `skip_corrupt_records` the pipelines leave such records out
instead: training in TensorFlow ops alone (serializable, deterministic), its counts per file riding
along in every batch (`SKIPPED_FEATURES`, followed by `SkippedRecords`); evaluation through the
Python reader, which counts and logs them itself.
"""

import glob
import os
import re
import struct

import google_crc32c
import numpy as np
import tensorflow as tf
from absl import logging
from google.protobuf.message import DecodeError

INT_FEATURES = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids",
                "next_sentence_labels")
SEQUENCE_FEATURES = ("input_ids", "input_mask", "segment_ids")
PREDICTION_FEATURES = ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights")

SHUFFLE_BUFFER = 1024  # records; NVIDIA uses 100, a larger buffer mixes shards better

# Extra features of the training batches with skip_corrupt_records, int64 [files of this rank]:
# corrupt records left out per file so far, and the byte offset at which a corrupt or truncated
# record stopped the reading of the file (-1: none). The model ignores them (see SkippedRecords).
SKIPPED_RECORDS = "skipped_corrupt_records"
SKIPPED_FROM_BYTE = "skipped_corrupt_from_byte"
SKIPPED_FEATURES = (SKIPPED_RECORDS, SKIPPED_FROM_BYTE)
CORRUPT_RECORD_FIX = "regenerate the file, delete it, or pass --skip_corrupt_records"


class InputError(ValueError):
    """Input files missing or not matching the flags; the message names the fix."""


def feature_spec(max_seq_length, max_predictions_per_seq):
    """The `tf.io.parse_example` spec of a pre-training record."""
    spec = {name: tf.io.FixedLenFeature([max_seq_length], tf.int64) for name in SEQUENCE_FEATURES}
    spec["masked_lm_positions"] = tf.io.FixedLenFeature([max_predictions_per_seq], tf.int64)
    spec["masked_lm_ids"] = tf.io.FixedLenFeature([max_predictions_per_seq], tf.int64)
    spec["masked_lm_weights"] = tf.io.FixedLenFeature([max_predictions_per_seq], tf.float32)
    spec["next_sentence_labels"] = tf.io.FixedLenFeature([1], tf.int64)
    return spec


def list_input_files(files_dirs=None, patterns=None, flag="--input_files_dir"):
    """Sorted data files from comma-separated directories (NVIDIA) or globs (Google).

    Raises InputError when a directory is missing or nothing matches.
    """
    files = []
    for directory in filter(None, (files_dirs or "").split(",")):
        if not os.path.isdir(directory):
            raise InputError(f"{flag}={directory}: no such directory; pass the directory holding "
                             "the TFRecord files written by create_pretraining_data.py")
        files += [path for path in glob.glob(os.path.join(directory, "*"))
                  if os.path.isfile(path)]
    for pattern in filter(None, (patterns or "").split(",")):
        matched = glob.glob(pattern)
        if not matched:
            raise InputError(f"--input_file={pattern}: no file matches; check the path or glob")
        files += matched
    if not files:
        raise InputError(f"{flag}: no input files found in {files_dirs or patterns!r}; write them "
                         "with create_pretraining_data.py")
    return sorted(set(files))


def first_record(path):
    """The first record of a TFRecord file as bytes, or None when the file is empty."""
    with open(path, "rb") as f:
        header = f.read(12)
        if not header:
            return None
        if len(header) < 12:
            raise InputError(f"{path}: not a TFRecord file (truncated header); regenerate it")
        (length,) = struct.unpack("<Q", header[:8])
        data = f.read(length)
    if len(data) != length:
        raise InputError(f"{path}: truncated TFRecord file; regenerate it")
    return data


def check_files(files, max_seq_length, max_predictions_per_seq):
    """Check that every file has records and the first one has the shapes the flags promise.

    Reads one record per file, so it is cheap before a long run. Raises InputError naming the
    file and the flag to change.
    """
    for path in files:
        record = first_record(path)
        if record is None:
            raise InputError(f"{path}: empty TFRecord file; delete it or regenerate the data")
        try:
            example = tf.train.Example.FromString(record)
        except DecodeError as error:
            raise InputError(f"{path}: not a TFRecord file of tf.train.Example ({error})") from None
        features = example.features.feature
        missing = [name for name in feature_spec(1, 1) if name not in features]
        if missing:
            raise InputError(f"{path}: records lack features {missing}; write the data with "
                             "create_pretraining_data.py")
        for names, flag, expected in ((SEQUENCE_FEATURES, "max_seq_length", max_seq_length),
                                      (PREDICTION_FEATURES, "max_predictions_per_seq",
                                       max_predictions_per_seq)):
            feature = features[names[0]]
            found = len(feature.int64_list.value) or len(feature.float_list.value)
            if found != expected:
                raise InputError(f"--{flag}={expected} but the records of {path} have {found}; "
                                 f"pass --{flag}={found} or regenerate the data")


_HEADER_BYTES = 12  # uint64 length + masked CRC-32C of the length
_FRAME_BYTES = 16  # header + masked CRC-32C of the data


def _masked_crc(data):
    """TFRecord's masked CRC-32C (as tfrecord.py writes it)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _frame_problem(f, offset, size):
    """(data or None, problem or None, record bytes) of the record framed at `offset` of the open
    file `f` of `size` bytes: problem names what is wrong with the framing; the record bytes are
    None when its length cannot be trusted (bad length CRC) or it runs past the end."""
    f.seek(offset)
    header = f.read(_HEADER_BYTES)
    if len(header) < _HEADER_BYTES:
        return None, (f"truncated: the file ends {len(header)} bytes into the record's "
                      f"{_HEADER_BYTES}-byte header"), None
    length, length_crc = struct.unpack("<QI", header)
    if _masked_crc(header[:8]) != length_crc:
        return None, "corrupt header: the CRC of the record's length does not match", None
    if offset + _FRAME_BYTES + length > size:
        return None, (f"truncated: the record needs {_FRAME_BYTES + length} bytes but the file "
                      f"ends {size - offset} bytes after its start"), None
    data = f.read(length)
    (data_crc,) = struct.unpack("<I", f.read(4))
    if _masked_crc(data) != data_crc:
        return None, "bad CRC: the record's data is corrupt", _FRAME_BYTES + length
    return data, None, _FRAME_BYTES + length


def read_records(path, offset=0):
    """Yields (index, byte offset, data, problem) for every record of a TFRecord file in order
    (from the record at `offset`, counting from there).

    `data` is the record's bytes, or None with `problem` saying what is wrong with its framing.
    A bad CRC of the data leaves the length trustworthy (its own CRC passed), so reading goes on
    with the next record; a bad length CRC or a truncated record ends the file.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        index = 0
        while offset < size:
            data, problem, framed = _frame_problem(f, offset, size)
            yield index, offset, data, problem
            if framed is None:
                return
            index += 1
            offset += framed


def example_problem(record, max_seq_length, max_predictions_per_seq):
    """What makes `record` (bytes) not a pre-training record of these flags, or None."""
    try:
        example = tf.train.Example.FromString(record)
    except DecodeError:
        return "not a tf.train.Example (protobuf cannot parse its bytes)"
    features = example.features.feature
    for name, spec in feature_spec(max_seq_length, max_predictions_per_seq).items():
        if name not in features:
            return f"not a pre-training record: it lacks the feature {name}"
        kind = "float_list" if spec.dtype == tf.float32 else "int64_list"
        found = features[name].WhichOneof("kind")
        if found != kind:
            return f"its feature {name} is a {found or 'empty'} where a {kind} belongs"
        count, expected = len(getattr(features[name], kind).value), spec.shape[0]
        if count != expected:
            flag = ("--max_seq_length" if name in SEQUENCE_FEATURES else
                    "--max_predictions_per_seq" if name in PREDICTION_FEATURES else None)
            where = f"{flag}={expected}" if flag else f"{expected} expected"
            return f"wrong feature length: {name} has {count} values ({where})"
    return None


def scan_records(path, max_seq_length, max_predictions_per_seq):
    """Yields (index, byte offset, data, problem) for every record of `path`, as `read_records`,
    with records that frame correctly but do not parse to these flags' features given a
    problem (and no data) too."""
    for index, offset, data, problem in read_records(path):
        if data is not None:
            problem = example_problem(data, max_seq_length, max_predictions_per_seq)
            if problem:
                data = None
        yield index, offset, data, problem


def _record_index(path, offset):
    """Index of the record starting at byte `offset` of `path` (walking the headers from the
    start), or None when no record starts there."""
    size = os.path.getsize(path)
    index = position = 0
    with open(path, "rb") as f:
        while position < offset:
            header = f.read(_HEADER_BYTES)
            if len(header) < _HEADER_BYTES:
                return None
            length, length_crc = struct.unpack("<QI", header)
            if _masked_crc(header[:8]) != length_crc:
                return None
            position += _FRAME_BYTES + length
            index += 1
            if position > size:
                return None
            f.seek(position)
    return index if position == offset else None


def _starts_a_record(path, offset, window=1 << 20):
    """Whether a record with a valid header ends exactly at byte `offset` of `path` (or `offset`
    is 0): the cheap test that a record may start there, without walking the file. Looks back
    up to `window` bytes."""
    if offset == 0:
        return True
    start = max(0, offset - window)
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(offset - start)
    count = len(data) - _FRAME_BYTES + 1  # header positions p with p + 16 <= offset
    if count <= 0:
        return False
    buffer = np.frombuffer(data, np.uint8)
    lengths = np.zeros(count, np.uint64)
    for byte in range(8):  # little-endian uint64 at every position
        lengths |= buffer[byte:byte + count].astype(np.uint64) << np.uint64(8 * byte)
    positions = np.arange(count, dtype=np.uint64)
    hits = np.flatnonzero(positions + np.uint64(_FRAME_BYTES) + lengths == np.uint64(len(data)))
    return any(_masked_crc(data[p:p + 8]) == struct.unpack_from("<I", data, p + 8)[0]
               for p in hits.tolist())


def _find_framing_problem(files, offset):
    """(path, index, offset, problem) of the record whose framing TensorFlow reported at byte
    `offset` ("corrupted record at N": N is the record's start, or its data's for a bad data
    CRC), looking at `offset` in every file (a few reads each) before walking the one found."""
    strong, weak = [], []
    for path in files:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            for start in (offset - _HEADER_BYTES, offset):
                if not 0 <= start < size:
                    continue
                _, problem, framed = _frame_problem(f, start, size)
                if problem is None:
                    continue
                if framed is not None or problem.startswith("truncated"):
                    # A valid header with bad data (or data past the end): a random position
                    # has a valid header once in 2**32. A header cut off by the end of the file
                    # needs the file to end within 12 bytes of `start`.
                    strong.append((path, start, problem))
                elif start == offset:  # a bad length CRC: a record must end at `start`
                    weak.append((path, start, problem))
    weak = [candidate for candidate in weak if _starts_a_record(*candidate[:2])]
    for path, start, problem in strong + weak:
        index = _record_index(path, start)
        if index is not None:
            return path, index, start, problem
    return None


def _find_unparsable_record(files, max_seq_length, max_predictions_per_seq):
    """(path, index, offset, problem) of the first record of `files` (in order) that frames
    correctly but is not a pre-training Example of these flags, or None."""
    for path in files:
        for index, offset, data, _ in read_records(path):
            problem = data is not None and example_problem(data, max_seq_length,
                                                           max_predictions_per_seq)
            if problem:
                return path, index, offset, problem
    return None


def likely_reading_order(files, seed, rank=0, num_ranks=1, records_read=0):
    """This rank's `files`, those `train_dataset` was most likely reading after `records_read`
    records first (the files read together are neighbours in its order): the file order of its
    seeded shuffle, epoch after epoch, with each file's record count estimated from its size
    and first record. Guides `corrupt_record_error`."""
    mine = rank_files(files, rank, num_ranks)
    per_file = {path: os.path.getsize(path) / (len(first_record(path) or b"") + _FRAME_BYTES)
                for path in mine}
    epochs = 1 + int(records_read // max(sum(per_file.values()), 1))
    with tf.Graph().as_default():
        d = tf.data.Dataset.from_tensor_slices(files).shard(num_ranks, rank)
        d = d.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat(epochs)
        names = tf.compat.v1.data.make_one_shot_iterator(d.batch(len(mine) * epochs)).get_next()
        with tf.compat.v1.Session() as session:
            order = [name.decode() for name in session.run(names)]
    reached = np.cumsum([per_file[path] for path in order])
    position = min(int(np.searchsorted(reached, records_read)), len(order) - 1)
    nearest = sorted(range(len(order)), key=lambda k: (abs(k - position), k))
    return list(dict.fromkeys(order[k] for k in nearest))


_FRAMING_ERROR = re.compile(r"(corrupted|truncated) record at (\d+)")


def _input_failure(error):
    """("framing", byte offset), ("parse", None) when `error` (raised by session.run) comes from
    reading or parsing records, else None."""
    if isinstance(error, UnicodeDecodeError):
        # TensorFlow quotes an unparsable record in its error message; when the record is not
        # UTF-8, decoding that message fails before an OpError can be raised.
        return "parse", None
    if isinstance(error, tf.errors.DataLossError):
        match = _FRAMING_ERROR.search(error.message)
        return ("framing", int(match.group(2))) if match else None
    if isinstance(error, tf.errors.InvalidArgumentError) and (
            "ParseExample" in error.message or "Could not parse example" in error.message):
        return "parse", None
    return None


def corrupt_record_error(error, files, max_seq_length, max_predictions_per_seq):
    """The InputError naming the corrupt record behind `error`, an exception session.run raised
    while reading `files` (DataLossError, InvalidArgumentError of the parse, UnicodeDecodeError),
    or None when `error` does not come from the input.

    Finds the record by re-reading in Python: for a framing error (bad CRC, truncation) a few
    bytes at TensorFlow's offset in each file, then the headers of the one that matches; for a
    record that does not parse, the records of `files` in order until the first bad one, so pass
    the files most likely to hold it first (see `likely_reading_order`).
    """
    failure = _input_failure(error)
    if failure is None:
        return None
    kind, offset = failure
    if kind == "framing":
        found = _find_framing_problem(files, offset)
    else:
        found = _find_unparsable_record(files, max_seq_length, max_predictions_per_seq)
    if found:
        path, index, start, problem = found
        return InputError(f"corrupt input record: {path}: record {index} (byte offset {start}): "
                          f"{problem}; {CORRUPT_RECORD_FIX}")
    if isinstance(error, UnicodeDecodeError):
        return None  # not ours after all
    message = error.message.strip().splitlines()[-1] if error.message.strip() else ""
    where = f" at byte {offset} of one of the input files" if kind == "framing" else ""
    return InputError(f"corrupt input record{where} ({message[:200]}), but reading the "
                      f"{len(files)} files again found none: the storage may be returning bad "
                      "data or the files changed; check them, or pass --skip_corrupt_records")


def parse_batch(serialized, max_seq_length, max_predictions_per_seq):
    """[B] serialized records -> dict of [B, ...] features, integers as int32."""
    features = tf.io.parse_example(serialized,
                                   feature_spec(max_seq_length, max_predictions_per_seq))
    return {name: tf.cast(value, tf.int32) if name in INT_FEATURES else value
            for name, value in features.items()}


def without_autotune_model(dataset):
    """`dataset` without tf.data's autotuning model thread.

    That thread re-optimises at intervals that double up to 60 s, and destroying the iterator
    waits for its current interval to end: after a few minutes of training, closing the session
    (end of training, of an evaluation) hung for up to a minute (51.6 s measured in TF 2.21,
    0.0 s without it). AUTOTUNE parallelism then stays at the number of cores, and AUTOTUNE
    prefetch buffers keep their own (legacy) tuner.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def train_dataset(files, batch_size, max_seq_length, max_predictions_per_seq, seed,
                  rank=0, num_ranks=1, skip_batches=0, cycle_length=4,
                  shuffle_buffer=SHUFFLE_BUFFER, skip_corrupt_records=False):
    """Endless shuffled batches of this rank's share of `files` (see the module docstring).

    Args:
      files: list of TFRecord paths, the same list on every rank.
      batch_size: records per batch on this rank.
      seed: seeds the file and record shuffles (the same order for the same seed).
      rank, num_ranks: this rank takes files rank, rank + num_ranks, ...
      skip_batches: batches to leave out at the start (those a resumed run already consumed).
      cycle_length: files read at the same time.
      skip_corrupt_records: leave out records that are corrupt (bad CRC, truncated, not an
        Example, wrong feature lengths) instead of failing; the batches then carry
        SKIPPED_FEATURES (see `_checked_records`).
    Raises:
      InputError: fewer files than ranks.
    """
    if len(files) < num_ranks:
        raise InputError(f"{len(files)} input files for {num_ranks} ranks: every rank needs at "
                         "least one file; write more shards with create_pretraining_data.py")
    cycle_length = min(cycle_length, len(files))
    if skip_corrupt_records:
        d = _checked_records(rank_files(files, rank, num_ranks), seed, cycle_length,
                             max_seq_length, max_predictions_per_seq)
    else:
        d = tf.data.Dataset.from_tensor_slices(files).shard(num_ranks, rank)
        d = d.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
        d = d.interleave(tf.data.TFRecordDataset, cycle_length=cycle_length, block_length=1,
                         num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    d = d.shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
    if skip_batches:
        d = d.skip(skip_batches * batch_size)
    d = d.batch(batch_size, drop_remainder=True)
    if skip_corrupt_records:
        d = d.map(_latest_skip_counts, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        d = d.map(lambda s: parse_batch(s, max_seq_length, max_predictions_per_seq),
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return without_autotune_model(d.prefetch(tf.data.AUTOTUNE))


def rank_files(files, rank=0, num_ranks=1):
    """The files `rank` reads (as `Dataset.shard` picks them)."""
    return list(files)[rank::num_ranks]


def _checked_records(files, seed, cycle_length, max_seq_length, max_predictions_per_seq):
    """Endless parsed records of `files` (shuffled per epoch, interleaved) without the corrupt
    ones, each with the per-file counts of SKIPPED_FEATURES so far. TensorFlow ops only: the
    iterator's state can be saved.

    Per file: TFRecordDataset with ignore_errors (a bad CRC or truncation ends the file: its
    reader gives up on the file there), records numbered and their bytes summed, parsed one by
    one with ignore_errors (a record that does not parse is dropped, leaving a gap in the
    numbers), and an end marker that counts the records after the last good one and compares
    the bytes read with the file's size. The counts are exact for records that frame correctly
    and do not parse; a framing error counts as one record, and the records after it in that
    file are not read (SkippedRecords logs how many).
    """
    spec = feature_spec(max_seq_length, max_predictions_per_seq)
    paths = tf.constant(files)
    sizes = tf.constant([os.path.getsize(path) for path in files], tf.int64)
    blank = {name: tf.zeros(value.shape, tf.int32 if name in INT_FEATURES else value.dtype)
             for name, value in spec.items()}

    def number(state, element):
        index, offset = state
        record, end = element
        framed = tf.where(end, tf.constant(0, tf.int64),
                          tf.cast(tf.strings.length(record), tf.int64) + _FRAME_BYTES)
        state = (index + tf.where(end, tf.constant(0, tf.int64), tf.constant(1, tf.int64)),
                 offset + framed)
        return state, (record, end, index, offset + framed)

    def parse_one(record):
        features = tf.io.parse_single_example(record, spec)
        return {name: tf.cast(value, tf.int32) if name in INT_FEATURES else value
                for name, value in features.items()}

    def parse(record, end, index, offset):  # int32 before the shuffle buffer: half the state
        return tf.cond(end, lambda: blank, lambda: parse_one(record)), end, index, offset

    def one_file(file_id):
        records = tf.data.TFRecordDataset(tf.gather(paths, file_id)).ignore_errors()
        d = tf.data.Dataset.zip((records, tf.data.Dataset.from_tensors(False).repeat()))
        d = d.concatenate(tf.data.Dataset.from_tensors((tf.constant(b""), True)))
        d = d.scan((tf.constant(0, tf.int64), tf.constant(0, tf.int64)), number)
        d = d.map(parse).ignore_errors()
        size = tf.gather(sizes, file_id)

        def count(state, element):
            last, skipped = state
            features, end, index, offset = element
            stopped = end & (offset < size)  # a framing error ended the reading
            skipped += index - last - 1 + tf.cast(stopped, tf.int64)
            from_byte = tf.where(stopped, offset, tf.constant(-1, tf.int64))
            return (index, skipped), (features, end, file_id, skipped, from_byte)

        return d.scan((tf.constant(-1, tf.int64), tf.constant(0, tf.int64)), count)

    def gather_counts(state, element):
        counts, from_bytes = state
        features, end, file_id, skipped, from_byte = element
        where = tf.reshape(file_id, [1, 1])
        counts = tf.tensor_scatter_nd_max(counts, where, tf.reshape(skipped, [1]))
        from_bytes = tf.tensor_scatter_nd_max(from_bytes, where, tf.reshape(from_byte, [1]))
        return (counts, from_bytes), (dict(features, **{SKIPPED_RECORDS: counts,
                                                          SKIPPED_FROM_BYTE: from_bytes}), end)

    d = tf.data.Dataset.range(len(files))
    d = d.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
    d = d.interleave(one_file, cycle_length=cycle_length, block_length=1,
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    d = d.scan((tf.zeros([len(files)], tf.int64), tf.fill([len(files)], tf.constant(-1, tf.int64))),
               gather_counts)
    return d.filter(_not_an_end_marker).map(_features_of)


def _not_an_end_marker(features, end):
    del features
    return tf.logical_not(end)


def _features_of(features, end):
    del end
    return features


def _latest_skip_counts(features):
    """A batch of `_checked_records` with the skip counts of its latest record (the largest:
    they only grow)."""
    return {name: tf.reduce_max(value, axis=0) if name in SKIPPED_FEATURES else value
            for name, value in features.items()}


def eval_dataset(files, batch_size, max_seq_length, max_predictions_per_seq, skipped=None):
    """One deterministic pass over `files` in order; the last batch may be smaller.

    skipped: a SkippedRecords to leave out corrupt records instead of failing: the records are
      then read and checked in Python (evaluation needs no saved iterator state), which resumes
      after a record with a bad CRC, and each one left out is logged and counted there.
    """
    if skipped is None:
        d = tf.data.TFRecordDataset(files)
    else:
        def good_records():
            for path in files:
                for index, offset, data, problem in scan_records(path, max_seq_length,
                                                                 max_predictions_per_seq):
                    if problem:
                        skipped.record(path, index, offset, problem)
                    else:
                        yield data

        d = tf.data.Dataset.from_generator(good_records,
                                           output_signature=tf.TensorSpec([], tf.string))
    d = d.batch(batch_size)
    d = d.map(lambda s: parse_batch(s, max_seq_length, max_predictions_per_seq),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return without_autotune_model(d.prefetch(tf.data.AUTOTUNE))


class SkippedRecords:
    """The corrupt records `skip_corrupt_records` left out, per file: logs (absl) each file's
    count as it grows and gives the total for the run summary (`summary()`).

    Training: wrap the model_fn with `model_fn(fn)` (it takes SKIPPED_FEATURES out of the
    features, so the model never sees them) and run `hook()`, which fetches them with every step.
    Evaluation: pass it to `eval_dataset`, whose reader calls `record` for each record left out.
    """

    def __init__(self, files, phase):
        self.files = list(files)
        self.phase = phase
        self.counts = {}  # path -> corrupt records left out
        self._stopped = {}  # path -> byte offset where a framing error stopped the reading
        self.tensors = None

    @property
    def total(self):
        return sum(self.counts.values())

    def summary(self):
        """{PHASE_corrupt_records_skipped: total, PHASE_files_with_corrupt_records: files}."""
        return {f"{self.phase}_corrupt_records_skipped": self.total,
                f"{self.phase}_files_with_corrupt_records": len(self.counts)}

    def record(self, path, index, offset, problem):
        """One record left out by the Python reader."""
        self.counts[path] = self.counts.get(path, 0) + 1
        logging.warning("%s: skipped corrupt record %d (byte offset %d): %s; %d skipped in "
                        "this file so far (%s)", path, index, offset, problem, self.counts[path],
                        self.phase)

    def update(self, counts, from_bytes):
        """The per-file counts of a training batch (SKIPPED_FEATURES, in `files` order)."""
        for file_id in np.flatnonzero(from_bytes >= 0).tolist():
            path = self.files[file_id]
            if path not in self._stopped:
                self._stopped[path] = int(from_bytes[file_id])
                logging.warning("%s", self._stop_message(path, self._stopped[path]))
        for file_id in np.flatnonzero(counts).tolist():
            path, count = self.files[file_id], int(counts[file_id])
            if count > self.counts.get(path, 0):
                self.counts[path] = count
                logging.warning("%s: corrupt records skipped so far: %d (%s)", path, count,
                                self.phase)

    def log_counts(self):
        """Logs the count of every file that had corrupt records, and the total."""
        for path in sorted(self.counts):
            logging.warning("%s: corrupt records skipped: %d (%s)", path, self.counts[path],
                            self.phase)
        logging.log(logging.WARNING if self.total else logging.INFO,
                    "%s: corrupt records skipped: %d in %d files", self.phase, self.total,
                    len(self.counts))

    @staticmethod
    def _stop_message(path, offset):
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                _, problem, framed = _frame_problem(f, offset, size)
            after = ""
            if framed is not None:  # a bad data CRC: the records after it are intact but unread
                later = sum(1 for _ in read_records(path, offset + framed))
                after = f", the record and {later} after it"
        except OSError as error:
            return f"{path}: reading stopped at byte offset {offset}; the file cannot be read " \
                   f"({error.strerror or error})"
        return (f"{path}: record at byte offset {offset}: {problem or 'unreadable'}; TensorFlow's "
                f"reader stops the file there, so its last {size - offset} bytes{after}, are "
                "not read; regenerate the file to use them")

    def model_fn(self, model_fn):
        """`model_fn` with the SKIPPED_FEATURES of the batches taken out (kept for `hook`)."""

        def wrapped(features, labels, mode, params):
            if SKIPPED_RECORDS in features:
                self.tensors = (features[SKIPPED_RECORDS], features[SKIPPED_FROM_BYTE])
                features = {name: value for name, value in features.items()
                            if name not in SKIPPED_FEATURES}
            return model_fn(features, labels, mode, params)

        return wrapped

    def hook(self):
        """A SessionRunHook fetching the counts with every step and logging them at the end."""
        return _SkippedRecordsHook(self)


class _SkippedRecordsHook(tf.compat.v1.train.SessionRunHook):
    def __init__(self, skipped):
        self._skipped = skipped

    def before_run(self, run_context):
        return tf.compat.v1.train.SessionRunArgs(self._skipped.tensors)

    def after_run(self, run_context, run_values):
        if run_values.results is not None:
            self._skipped.update(*run_values.results)

    def end(self, session):
        self._skipped.log_counts()
