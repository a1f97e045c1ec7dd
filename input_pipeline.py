"""tf.data input of BERT pre-training: TFRecord files of the features in DESIGN.md -> batches.

Training (`train_dataset`): this rank's shard of the files, shuffled per epoch, read
`cycle_length` at a time interleaved, records shuffled in a buffer, repeated forever, batched with
`drop_remainder`, parsed per batch, prefetched. Every shuffle is seeded, so the order of batches
is a function of the files and the seed alone; a resumed run skips the records it has already
consumed (`skip_batches`) and sees the same batches an uninterrupted run would.

Evaluation (`eval_dataset`): the files in the given order, one pass, the last batch kept short.

Features: int64 in the files; every int64 feature is cast to int32 for the model.
"""

import glob
import os
import struct

import tensorflow as tf
from google.protobuf.message import DecodeError

INT_FEATURES = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids",
                "next_sentence_labels")
SEQUENCE_FEATURES = ("input_ids", "input_mask", "segment_ids")
PREDICTION_FEATURES = ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights")

SHUFFLE_BUFFER = 1024  # records; NVIDIA uses 100, a larger buffer mixes shards better


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


def parse_batch(serialized, max_seq_length, max_predictions_per_seq):
    """[B] serialized records -> dict of [B, ...] features, integers as int32."""
    features = tf.io.parse_example(serialized,
                                   feature_spec(max_seq_length, max_predictions_per_seq))
    return {name: tf.cast(value, tf.int32) if name in INT_FEATURES else value
            for name, value in features.items()}


def train_dataset(files, batch_size, max_seq_length, max_predictions_per_seq, seed,
                  rank=0, num_ranks=1, skip_batches=0, cycle_length=4,
                  shuffle_buffer=SHUFFLE_BUFFER):
    """Endless shuffled batches of this rank's share of `files` (see the module docstring).

    Args:
      files: list of TFRecord paths, the same list on every rank.
      batch_size: records per batch on this rank.
      seed: seeds the file and record shuffles (the same order for the same seed).
      rank, num_ranks: this rank takes files rank, rank + num_ranks, ...
      skip_batches: batches to leave out at the start (those a resumed run already consumed).
      cycle_length: files read at the same time.
    Raises:
      InputError: fewer files than ranks.
    """
    if len(files) < num_ranks:
        raise InputError(f"{len(files)} input files for {num_ranks} ranks: every rank needs at "
                         "least one file; write more shards with create_pretraining_data.py")
    d = tf.data.Dataset.from_tensor_slices(files).shard(num_ranks, rank)
    d = d.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
    d = d.interleave(tf.data.TFRecordDataset, cycle_length=min(cycle_length, len(files)),
                     block_length=1, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    d = d.shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
    if skip_batches:
        d = d.skip(skip_batches * batch_size)
    d = d.batch(batch_size, drop_remainder=True)
    d = d.map(lambda s: parse_batch(s, max_seq_length, max_predictions_per_seq),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return d.prefetch(tf.data.AUTOTUNE)


def eval_dataset(files, batch_size, max_seq_length, max_predictions_per_seq):
    """One deterministic pass over `files` in order; the last batch may be smaller."""
    d = tf.data.TFRecordDataset(files).batch(batch_size)
    d = d.map(lambda s: parse_batch(s, max_seq_length, max_predictions_per_seq),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return d.prefetch(tf.data.AUTOTUNE)
