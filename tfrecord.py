"""TFRecord files of `tf.train.Example`s, written without importing TensorFlow.

`encode_example` produces the bytes protobuf's deterministic serialization
(`SerializeToString(deterministic=True)`) gives for an Example of int64 and float features: map
entries sorted by key, packed repeated values. `TFRecordWriter` frames records as TensorFlow does
(little-endian uint64 length, masked CRC-32C of the length, data, masked CRC-32C of the data).
Tests check both against TensorFlow's own implementation.
"""

import struct

import google_crc32c
import numpy as np

_SMALL_VARINTS = 1 << 16


def _varint(value):
    """Protobuf base-128 varint of an int64 (negative values as 10-byte two's complement)."""
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_VARINT_TABLE = [_varint(value) for value in range(_SMALL_VARINTS)]


def packed_varints(values):
    """The packed encoding of a list of int64 values (a repeated int64 field's payload)."""
    try:
        return b"".join(map(_VARINT_TABLE.__getitem__, values))
    except IndexError:  # a value outside [0, 65536): the general path
        return b"".join(map(_varint, values))


def _length_delimited(field_tag, payload):
    size = len(payload)
    return field_tag + (_VARINT_TABLE[size] if size < _SMALL_VARINTS else _varint(size)) + payload


def encode_packed_example(features):
    """Serializes a `tf.train.Example` from already packed values.

    `features` maps each name to (kind, payload): kind "int64" with `packed_varints(values)`, or
    "float" with the values as little-endian float32 bytes.
    """
    entries = []
    for name in sorted(features):
        kind, payload = features[name]
        values = _length_delimited(b"\x0a", payload) if payload else b""
        # Feature.float_list = 2, Feature.int64_list = 3.
        feature = _length_delimited(b"\x12" if kind == "float" else b"\x1a", values)
        entry = (_length_delimited(b"\x0a", name.encode("utf-8"))  # map key = 1
                 + _length_delimited(b"\x12", feature))  # map value = 2
        entries.append(_length_delimited(b"\x0a", entry))  # Features.feature = 1
    return _length_delimited(b"\x0a", b"".join(entries))  # Example.features = 1


def encode_example(features):
    """Serializes {name: 1-D numpy array (float32 or integer)} as a `tf.train.Example`."""
    return encode_packed_example({
        name: ("float", values.astype("<f4").tobytes()) if values.dtype == np.float32
        else ("int64", packed_varints(values.tolist()))
        for name, values in features.items()
    })


def _masked_crc(data):
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class TFRecordWriter:
    """Writes records to a TFRecord file (no compression). Use as a context manager."""

    def __init__(self, path):
        self._file = open(path, "wb")  # noqa: SIM115 (closed by close() or __exit__)

    def write(self, record):
        length = struct.pack("<Q", len(record))
        self._file.write(length + struct.pack("<I", _masked_crc(length)) + record
                         + struct.pack("<I", _masked_crc(record)))

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
