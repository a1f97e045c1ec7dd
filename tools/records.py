"""Pre-training records as numpy arrays: read and write TFRecord and MLPerf HDF5 files.

A *batch* is a dict of numpy arrays, one row per instance, with the TFRecord feature names of
DESIGN.md: `input_ids`, `input_mask`, `segment_ids` [N, seq] int32, `masked_lm_positions`,
`masked_lm_ids` [N, pred] int32, `masked_lm_weights` [N, pred] float32, `next_sentence_labels`
[N] int32.

HDF5 files follow the MLPerf NVIDIA PyTorch BERT layout (NVIDIA's `create_pretraining_data.py`
and MLPerf's `chop_hdf5_files.py`): datasets `input_ids` i4 [N, seq], `input_mask` i1 [N, seq],
`segment_ids` i1 [N, seq], `masked_lm_positions` i4 [N, pred] and `masked_lm_ids` i4 [N, pred]
zero-padded, `next_sentence_labels` i1 [N]; no `masked_lm_weights` — it is 1.0 exactly where a
position is non-zero (position 0 is [CLS], never masked), so it is rebuilt on reading and checked
on writing.

TFRecord files are read with TensorFlow (eager, in batches) and written with `tfrecord.py`, the
deterministic serialization create_pretraining_data.py uses, so TFRecord -> HDF5 -> TFRecord
gives back the same bytes. Every output is written to `<path>.tmp-<pid>` and renamed when
complete.
"""

import contextlib
import os
import struct

import h5py
import numpy as np

import tfrecord

HDF5_SUFFIXES = (".hdf5", ".h5")
HDF5_DTYPES = {"input_ids": "i4", "input_mask": "i1", "segment_ids": "i1",
               "masked_lm_positions": "i4", "masked_lm_ids": "i4", "next_sentence_labels": "i1"}
FEATURES = (*HDF5_DTYPES, "masked_lm_weights")
_PARSE_BATCH = 1024


class DataError(ValueError):
    """A data file that cannot be read or written as asked; the message names file and fix."""


def is_hdf5(path):
    return path.endswith(HDF5_SUFFIXES)


def num_instances(batch):
    return len(batch["next_sentence_labels"])


def take(batch, index):
    """The rows `index` (slice, index array or boolean mask) of every feature."""
    return {name: values[index] for name, values in batch.items()}


def concatenate(batches):
    return {name: np.concatenate([batch[name] for batch in batches]) for name in FEATURES}


@contextlib.contextmanager
def atomic_output(path):
    """Yields a temporary path beside `path`; renames it to `path` when the block succeeds."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def iter_tfrecords(path):
    """The serialized records of a TFRecord file, in order (framing checked, CRCs not)."""
    with open(path, "rb") as f:
        while header := f.read(12):
            if len(header) < 12:
                raise DataError(f"{path}: truncated TFRecord file; regenerate it")
            (length,) = struct.unpack("<Q", header[:8])
            data = f.read(length + 4)
            if len(data) < length + 4:
                raise DataError(f"{path}: truncated TFRecord file; regenerate it")
            yield data[:length]


def _record_shapes(path, record):
    # TensorFlow is imported only when TFRecords are read: HDF5 work does not wait for it.
    import tensorflow as tf

    features = tf.train.Example.FromString(record).features.feature
    missing = [name for name in FEATURES if name not in features]
    if missing:
        raise DataError(f"{path}: records lack features {missing}; write the data with "
                        "create_pretraining_data.py")
    return (len(features["input_ids"].int64_list.value),
            len(features["masked_lm_ids"].int64_list.value))


def parse_tfrecords(path, records):
    """Serialized pre-training records -> batch (shapes taken from the first record)."""
    import tensorflow as tf

    if not records:
        return empty_batch(0, 0)
    seq, pred = _record_shapes(path, records[0])
    spec = {name: tf.io.FixedLenFeature([seq], tf.int64)
            for name in ("input_ids", "input_mask", "segment_ids")}
    spec.update({name: tf.io.FixedLenFeature([pred], tf.int64)
                 for name in ("masked_lm_positions", "masked_lm_ids")})
    spec["masked_lm_weights"] = tf.io.FixedLenFeature([pred], tf.float32)
    spec["next_sentence_labels"] = tf.io.FixedLenFeature([1], tf.int64)
    parts = []
    for start in range(0, len(records), _PARSE_BATCH):
        try:
            parsed = tf.io.parse_example(records[start:start + _PARSE_BATCH], spec)
        except tf.errors.InvalidArgumentError as error:
            raise DataError(f"{path}: records of different shapes or features "
                            f"({error.message.splitlines()[0]}); regenerate the file") from None
        part = {name: value.numpy().astype(np.float32 if name == "masked_lm_weights" else np.int32)
                for name, value in parsed.items()}
        part["next_sentence_labels"] = part["next_sentence_labels"][:, 0]
        parts.append(part)
    return concatenate(parts)


def empty_batch(seq, pred):
    batch = {name: np.zeros((0, seq), np.int32)
             for name in ("input_ids", "input_mask", "segment_ids")}
    batch.update({name: np.zeros((0, pred), np.int32)
                  for name in ("masked_lm_positions", "masked_lm_ids")})
    batch["masked_lm_weights"] = np.zeros((0, pred), np.float32)
    batch["next_sentence_labels"] = np.zeros((0,), np.int32)
    return batch


def read_hdf5(path):
    try:
        with h5py.File(path, "r") as f:
            missing = [name for name in HDF5_DTYPES if name not in f]
            if missing:
                raise DataError(f"{path}: HDF5 file lacks datasets {missing}; it is not in the "
                                "MLPerf NVIDIA layout")
            batch = {name: f[name][()].astype(np.int32) for name in HDF5_DTYPES}
    except OSError as error:
        raise DataError(f"{path}: cannot read as HDF5 ({error})") from None
    batch["masked_lm_weights"] = (batch["masked_lm_positions"] != 0).astype(np.float32)
    return batch


def read_file(path):
    """The whole file (TFRecord, or HDF5 when named *.hdf5/*.h5) as a batch."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    if is_hdf5(path):
        return read_hdf5(path)
    return parse_tfrecords(path, list(iter_tfrecords(path)))


def write_tfrecord(path, batch):
    with atomic_output(path) as tmp, tfrecord.TFRecordWriter(tmp) as writer:
        ints = {name: batch[name].astype(np.int64) for name in HDF5_DTYPES}
        ints["next_sentence_labels"] = ints["next_sentence_labels"].reshape(-1, 1)
        weights = batch["masked_lm_weights"].astype(np.float32)
        for i in range(num_instances(batch)):
            features = {name: values[i] for name, values in ints.items()}
            features["masked_lm_weights"] = weights[i]
            writer.write(tfrecord.encode_example(features))


def write_hdf5(path, batch, compression="gzip"):
    weights = (batch["masked_lm_positions"] != 0).astype(np.float32)
    if not np.array_equal(weights, batch["masked_lm_weights"]):
        raise DataError(f"{path}: masked_lm_weights is not 1.0 exactly at the non-zero "
                        "masked_lm_positions, so the HDF5 layout (which has no weights) would "
                        "lose it; keep these records as TFRecord")
    for name in ("input_mask", "segment_ids", "next_sentence_labels"):
        values = batch[name]
        if values.size and (values.min() < -128 or values.max() > 127):
            raise DataError(f"{path}: {name} values outside int8, which the HDF5 layout uses")
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        for name, dtype in HDF5_DTYPES.items():
            f.create_dataset(name, data=batch[name].astype(dtype), dtype=dtype,
                             compression=compression)


def write_file(path, batch, compression="gzip"):
    """Writes a batch as HDF5 (path *.hdf5/*.h5) or TFRecord (any other name)."""
    if is_hdf5(path):
        write_hdf5(path, batch, compression)
    else:
        write_tfrecord(path, batch)
