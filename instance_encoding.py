"""Pre-training instances -> framed TFRecord records: the writer side of create_pretraining_data.

`create_pretraining_data.InstanceMaker` makes every random decision (spans, masked positions and
what replaces each) and records them in an `InstanceBatch`; `encode_batch` turns a batch into
records. Encoding draws nothing at random, so batches can be encoded in worker processes, in
parallel with the making of the next ones, without changing the output. No TensorFlow here: a
spawned worker imports only this module, tfrecord.py, NumPy and google_crc32c.
"""

import array

import numpy as np

import tfrecord

# A masked position's replacement meaning "keep the original token" (Google's 10% case).
KEEP = -1

class InstanceBatch:
    """Consecutive instances held in flat arrays (cheap to send to a worker process).

    input_ids: every instance's "[CLS] A [SEP] B [SEP]" ids, before masking, back to back;
    lengths / num_segment_a_ids: per instance, its id count and the length of "[CLS] A [SEP]";
    is_random_next: per instance, 1 if B comes from another document (Google's label 1);
    masked_positions / replacements: per masked position, in the order the masking chose them,
    the position and the id written there (or KEEP); masked_counts: per instance, how many.
    """

    def __init__(self):
        self.input_ids = array.array("i")
        self.lengths = array.array("i")
        self.num_segment_a_ids = array.array("i")
        self.is_random_next = bytearray()
        self.masked_positions = array.array("i")
        self.replacements = array.array("i")
        self.masked_counts = array.array("i")

    def __len__(self):
        return len(self.lengths)


def encode_batch(batch, max_seq_length, max_predictions_per_seq):
    """The framed TFRecord record (length, CRCs and serialized `tf.train.Example`) of every
    instance of `batch`, in order: masks applied, features as DESIGN.md, zero-padded.

    Masking, sorting, padding and varint packing run on the whole batch at once (NumPy); only
    the assembly of each record from its slices is per instance.
    """
    num_instances = len(batch)
    lengths = np.frombuffer(batch.lengths, np.int32)
    if num_instances and lengths.max() > max_seq_length:
        raise AssertionError(f"an instance of {lengths.max()} ids exceeds max_seq_length "
                             f"{max_seq_length}")
    # One row per instance, zero-padded: ids [N, max_seq_length], predictions
    # [N, max_predictions_per_seq].
    id_row, id_column = _rows_and_columns(lengths)
    input_ids = np.zeros((num_instances, max_seq_length), np.int64)
    input_ids[id_row, id_column] = np.frombuffer(batch.input_ids, np.int32)
    mask_row, mask_column = _rows_and_columns(np.frombuffer(batch.masked_counts, np.int32))
    chosen = np.frombuffer(batch.masked_positions, np.int32)
    # Sorting row * max_seq_length + position orders each row's positions, rows kept in order.
    positions = np.sort(mask_row * max_seq_length + chosen) - mask_row * max_seq_length
    masked_positions = np.zeros((num_instances, max_predictions_per_seq), np.int64)
    masked_positions[mask_row, mask_column] = positions
    masked_ids = np.zeros_like(masked_positions)
    masked_ids[mask_row, mask_column] = input_ids[mask_row, positions]
    replacements = np.frombuffer(batch.replacements, np.int32)
    replaced = replacements != KEEP
    input_ids[mask_row[replaced], chosen[replaced]] = replacements[replaced]
    columns = np.arange(max_seq_length)
    input_mask = (columns < lengths[:, None]).astype(np.uint8)  # 0/1 varints are single bytes
    num_segment_a_ids = np.frombuffer(batch.num_segment_a_ids, np.int32)
    segment_ids = input_mask & (columns >= num_segment_a_ids[:, None])
    weights = np.zeros((num_instances, max_predictions_per_seq), "<f4")
    weights[mask_row, mask_column] = 1.0

    packed_ids, id_offsets = _packed_rows(input_ids)
    packed_positions, position_offsets = _packed_rows(masked_positions)
    packed_labels, label_offsets = _packed_rows(masked_ids)
    input_mask, segment_ids, weights = (rows.tobytes()
                                        for rows in (input_mask, segment_ids, weights))
    prefix = tfrecord.feature_entry_prefix
    mask_prefix = prefix("input_mask", "int64", max_seq_length)
    weights_prefix = prefix("masked_lm_weights", "float", 4 * max_predictions_per_seq)
    label_prefix = prefix("next_sentence_labels", "int64", 1)
    segment_prefix = prefix("segment_ids", "int64", max_seq_length)
    weight_bytes = 4 * max_predictions_per_seq
    records = []
    for index in range(num_instances):
        ids = packed_ids[id_offsets[index]:id_offsets[index + 1]]
        labels = packed_labels[label_offsets[index]:label_offsets[index + 1]]
        positions = packed_positions[position_offsets[index]:position_offsets[index + 1]]
        row_start = index * max_seq_length
        weight_start = index * weight_bytes
        example = tfrecord.example_from_entries(b"".join((  # the features in name order
            prefix("input_ids", "int64", len(ids)), ids,
            mask_prefix, input_mask[row_start:row_start + max_seq_length],
            prefix("masked_lm_ids", "int64", len(labels)), labels,
            prefix("masked_lm_positions", "int64", len(positions)), positions,
            weights_prefix, weights[weight_start:weight_start + weight_bytes],
            label_prefix, b"\x01" if batch.is_random_next[index] else b"\x00",
            segment_prefix, segment_ids[row_start:row_start + max_seq_length],
        )))
        records.append(tfrecord.frame_record(example))
    return records


def _rows_and_columns(counts):
    """Row and column of each item when row k holds the next `counts[k]` items from the left."""
    rows = np.repeat(np.arange(counts.size), counts)
    row_starts = np.zeros(counts.size, np.int64)
    np.cumsum(counts[:-1], out=row_starts[1:])
    return rows, np.arange(rows.size) - row_starts[rows]


def _packed_rows(matrix):
    """The varint-packed bytes of every row of an integer matrix, back to back, and the
    [rows + 1] byte offsets where each begins and ends."""
    rows, width = matrix.shape
    return tfrecord.packed_varint_segments(matrix.reshape(-1), np.arange(rows + 1) * width)
