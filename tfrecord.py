"""TFRecord files of `tf.train.Example`s, written without importing TensorFlow.

`encode_example` produces the bytes protobuf's deterministic serialization
(`SerializeToString(deterministic=True)`) gives for an Example of int64 and float features: map
entries sorted by key, packed repeated values; its parts (`packed_varints`, the batch-wise
`packed_varint_segments`, `feature_entry_prefix`, `example_from_entries`) serve callers that
assemble many records of one layout fast. `frame_record` / `TFRecordWriter` frame records as
TensorFlow does (little-endian uint64 length, masked CRC-32C of the length, data, masked CRC-32C
of the data). Tests check both against TensorFlow's own implementation.
"""

import functools
import struct

import google_crc32c
import numpy as np

_SMALL_VARINTS = 1 << 16
# 2**7, 2**14, ..., 2**63 (a varint needs one byte more than the number of these its value
# reaches), and the shift of each byte's 7 bits.
_VARINT_LIMITS = np.left_shift(np.uint64(1), np.arange(7, 64, 7, dtype=np.uint64))
_SEVEN_BIT_SHIFTS = np.arange(0, 70, 7, dtype=np.uint64)


def _varint(value):
    """Protobuf base-128 varint of an int64 (negative values as 10-byte two's complement)."""
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _varint_bytes(values):
    """Varints of uint64 values (two's complement for negatives) as a [N, width] uint8 matrix,
    each row's unused bytes last, and the byte count of each."""
    sizes = 1 + np.searchsorted(_VARINT_LIMITS, values, side="right")
    width = int(sizes.max(initial=1))
    seven_bits = (values[:, None] >> _SEVEN_BIT_SHIFTS[:width]) & np.uint64(0x7F)
    has_more = np.arange(width) + 1 < sizes[:, None]
    return (seven_bits | (has_more.astype(np.uint64) << np.uint64(7))).astype(np.uint8), sizes


def _small_varint_table():
    """The varints of [0, 65536) (at most 3 bytes) as little-endian uint32 words, zero-padded,
    and their sizes in bytes."""
    encoded, sizes = _varint_bytes(np.arange(_SMALL_VARINTS, dtype=np.uint64))
    words = np.zeros((_SMALL_VARINTS, 4), np.uint8)
    words[:, :encoded.shape[1]] = encoded
    return words.reshape(-1).view("<u4"), sizes.astype(np.uint8)


_SMALL_VARINT_WORDS, _SMALL_VARINT_SIZES = _small_varint_table()


@functools.cache
def _varint_table():
    """The varints of [0, 65536) as bytes objects, indexed by value (built on first use)."""
    data = _SMALL_VARINT_WORDS.tobytes()
    return [data[4 * value:4 * value + size]
            for value, size in enumerate(_SMALL_VARINT_SIZES.tolist())]


def packed_varints(values):
    """The packed encoding of a list of int64 values (a repeated int64 field's payload)."""
    if not values or min(values) >= 0:  # (a negative index would wrap around the table)
        try:
            return b"".join(map(_varint_table().__getitem__, values))
        except IndexError:  # a value of 65536 or more
            pass
    return b"".join(map(_varint, values))


def packed_varint_segments(values, segment_starts):
    """The packed encodings of many lists at once: `values` (1-D integer array) holds the lists
    back to back, list k being values[segment_starts[k]:segment_starts[k + 1]]. Returns the bytes
    of all encodings back to back and the [K + 1] byte offsets where each begins and ends."""
    values = np.asarray(values)
    if values.size and 0 <= values.min() and values.max() < _SMALL_VARINTS:
        sizes = _SMALL_VARINT_SIZES[values]
        encoded = _SMALL_VARINT_WORDS[values].view(np.uint8).reshape(-1, 4)
    else:
        encoded, sizes = _varint_bytes(values.astype(np.int64).view(np.uint64))
    value_offsets = np.zeros(values.size + 1, np.int64)
    np.cumsum(sizes, out=value_offsets[1:])
    used = np.stack([sizes > index for index in range(encoded.shape[1])], axis=1)
    data = np.compress(used.reshape(-1), encoded.reshape(-1)).tobytes()  # row-major: in order
    return data, value_offsets[np.asarray(segment_starts, np.int64)]


def _length_delimited(field_tag, payload):
    return field_tag + _varint(len(payload)) + payload


_feature_entry_prefixes = {}


def feature_entry_prefix(name, kind, payload_size):
    """The bytes of a feature's entry in a serialized Example that precede its packed payload
    (see `encode_packed_example`); they depend only on the name, the kind ("int64" or "float")
    and the payload's size, so they are computed once per combination."""
    key = (name, kind, payload_size)
    prefix = _feature_entry_prefixes.get(key)
    if prefix is None:
        # Example > Features.feature (map entry) > key = 1, value = 2 > Feature.float_list = 2 or
        # int64_list = 3 > packed value = 1 (left out when empty).
        list_header = b"\x0a" + _varint(payload_size) if payload_size else b""
        feature_size = len(list_header) + payload_size
        feature_header = (b"\x12" if kind == "float" else b"\x1a") + _varint(feature_size)
        value_size = len(feature_header) + feature_size
        head = _length_delimited(b"\x0a", name.encode("utf-8")) + b"\x12" + _varint(value_size)
        entry_size = len(head) + value_size
        prefix = b"\x0a" + _varint(entry_size) + head + feature_header + list_header
        _feature_entry_prefixes[key] = prefix
    return prefix


def encode_packed_example(features):
    """Serializes a `tf.train.Example` from already packed values.

    `features` maps each name to (kind, payload): kind "int64" with `packed_varints(values)`, or
    "float" with the values as little-endian float32 bytes.
    """
    return example_from_entries(b"".join([
        feature_entry_prefix(name, kind, len(payload)) + payload
        for name, (kind, payload) in sorted(features.items())
    ]))


def example_from_entries(entries):
    """A serialized Example from its feature entries (`feature_entry_prefix` + payload each),
    concatenated in the order of their names, as deterministic serialization sorts them."""
    return _length_delimited(b"\x0a", entries)  # Example.features = 1


def encode_example(features):
    """Serializes {name: 1-D numpy array} as a `tf.train.Example`: float arrays as float32
    lists, integer arrays as int64 lists."""
    return encode_packed_example({
        name: ("float", values.astype("<f4").tobytes()) if values.dtype.kind == "f"
        else ("int64", packed_varints(values.tolist()))
        for name, values in features.items()
    })


def _masked_crc(data):
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(record):
    """One record as it is stored in a TFRecord file: length, its CRC, data, the data's CRC."""
    length = struct.pack("<Q", len(record))
    return (length + struct.pack("<I", _masked_crc(length)) + record
            + struct.pack("<I", _masked_crc(record)))


class TFRecordWriter:
    """Writes records to a TFRecord file (no compression). Use as a context manager."""

    def __init__(self, path):
        self._file = open(path, "wb")  # noqa: SIM115 (closed by close() or __exit__)

    def write(self, record):
        self._file.write(frame_record(record))

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
