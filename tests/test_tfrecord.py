"""tfrecord.py: bytes identical to TensorFlow's Example serialization and TFRecord framing."""

import numpy as np
import tensorflow as tf

import tfrecord


def tf_example(features):
    return tf.train.Example(features=tf.train.Features(feature={
        name: tf.train.Feature(float_list=tf.train.FloatList(value=values))
        if values.dtype == np.float32 else
        tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        for name, values in features.items()
    }))


def sample_features(rng):
    return {
        "input_ids": rng.integers(0, 30522, 128).astype(np.int64),
        "masked_lm_positions": rng.integers(0, 128, 20).astype(np.int64),
        "masked_lm_weights": rng.random(20).astype(np.float32),
        "next_sentence_labels": np.array([1], np.int64),
        "big_and_negative": np.array([0, 127, 128, 2**16, 2**40, -1, -(2**63)], np.int64),
        "empty": np.zeros(0, np.int64),
    }


def test_encode_example_equals_deterministic_protobuf():
    """encode_example gives the bytes of SerializeToString(deterministic=True), incl. large,
    negative and empty int64 lists."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        features = sample_features(rng)
        expected = tf_example(features).SerializeToString(deterministic=True)
        assert tfrecord.encode_example(features) == expected


def test_writer_file_equals_tensorflow_writer(tmp_path):
    """TFRecordWriter writes the same file as tf.io.TFRecordWriter, and TF reads it back."""
    rng = np.random.default_rng(1)
    records = [tfrecord.encode_example(sample_features(rng)) for _ in range(50)]
    with tfrecord.TFRecordWriter(str(tmp_path / "ours")) as writer:
        for record in records:
            writer.write(record)
    with tf.io.TFRecordWriter(str(tmp_path / "tf")) as writer:
        for record in records:
            writer.write(record)
    assert (tmp_path / "ours").read_bytes() == (tmp_path / "tf").read_bytes()
    read_back = list(tf.data.TFRecordDataset(str(tmp_path / "ours")).as_numpy_iterator())
    assert read_back == records


def tf_int64_payload(values):
    """The packed payload protobuf writes for an int64 list (the Int64List's field 1)."""
    serialized = tf.train.Int64List(value=values).SerializeToString()
    if not values:
        return b""
    length_end = 1  # after the tag byte, the payload length: a varint
    while serialized[length_end] & 0x80:
        length_end += 1
    return serialized[length_end + 1:]


def test_packed_varints_equal_protobuf():
    """packed_varints and the batch-wise packed_varint_segments give protobuf's packed bytes for
    lists of small ids, of large and negative values, and for empty lists."""
    rng = np.random.default_rng(2)
    lists = [[], [0], [-1], [-1, 5], [127, 128, 16383, 16384, 65535], [65536, 2**40, -(2**63)]]
    lists += [rng.integers(0, 30522, int(rng.integers(0, 130))).tolist() for _ in range(40)]
    for values in lists:
        assert tfrecord.packed_varints(values) == tf_int64_payload(values), values
    for group in (lists, lists[6:]):  # the general path, and the table path (all < 65536)
        starts = np.cumsum([0] + [len(values) for values in group])
        data, offsets = tfrecord.packed_varint_segments(
            np.array([value for values in group for value in values], np.int64), starts)
        assert [data[offsets[k]:offsets[k + 1]] for k in range(len(group))] == [
            tf_int64_payload(values) for values in group]
