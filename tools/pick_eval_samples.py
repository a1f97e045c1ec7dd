"""Pick N evaluation instances, evenly spread, as MLPerf's `pick_eval_samples.py` does.

    python -m tools.pick_eval_samples --input eval_intermediate.tfrecord \
        --output eval_10k.tfrecord --num_examples_to_pick 10000

Of the M instances of the inputs (files in the order given), instance `int(i * (M / N))` is
picked for i = 0..N-1 — MLPerf's rule, float arithmetic included, so the same input gives the
same 10,000 as the reference. TFRecord records are copied byte for byte; an HDF5 input or output
(*.hdf5/*.h5) is converted (tools/records.py).
"""

import argparse

import tfrecord
from tools import records
from tools.shard_data import expand_inputs


def pick_indices(total, count):
    """MLPerf's picks: `int(i * (total / count))` for i in range(count)."""
    ratio = total / count
    return [int(i * ratio) for i in range(count)]


def _pieces(paths, wanted):
    """(path, raw records or batch) of the picked instances of each file, in input order."""
    offset = 0
    for path in paths:
        if records.is_hdf5(path):
            batch = records.read_hdf5(path)
            size = records.num_instances(batch)
            rows = [i - offset for i in wanted if offset <= i < offset + size]
            yield path, records.take(batch, rows)
        else:
            picked, size = [], 0
            for size, record in enumerate(records.iter_tfrecords(path), 1):
                if offset + size - 1 in wanted:
                    picked.append(record)
            yield path, picked
        offset += size


def count_instances(path):
    if records.is_hdf5(path):
        return records.num_instances(records.read_hdf5(path))
    return sum(1 for _ in records.iter_tfrecords(path))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="pick_eval_samples", description=__doc__.split("\n")[1])
    parser.add_argument("--input", required=True,
                        help="comma-separated TFRecord/HDF5 files or globs, read in this order")
    parser.add_argument("--output", required=True, help="TFRecord or HDF5 (*.hdf5, *.h5) file")
    parser.add_argument("--num_examples_to_pick", type=int, default=10000)
    args = parser.parse_args(argv)
    if args.num_examples_to_pick < 1:
        parser.error("--num_examples_to_pick must be at least 1")
    try:
        paths = expand_inputs(args.input)
        total = sum(map(count_instances, paths))
        if total < args.num_examples_to_pick:
            parser.error(f"--num_examples_to_pick={args.num_examples_to_pick} but the inputs hold "
                         f"only {total} instances; pick fewer or generate more (--dupe_factor)")
        wanted = set(pick_indices(total, args.num_examples_to_pick))
        pieces = list(_pieces(paths, wanted))
        if not records.is_hdf5(args.output) and all(isinstance(p, list) for _, p in pieces):
            with records.atomic_output(args.output) as tmp, \
                    tfrecord.TFRecordWriter(tmp) as writer:
                for _, raw in pieces:
                    for record in raw:
                        writer.write(record)
        else:
            batches = [records.parse_tfrecords(path, p) if isinstance(p, list) else p
                       for path, p in pieces]
            batches = [batch for batch in batches if records.num_instances(batch)]
            records.write_file(args.output, records.concatenate(batches))
    except records.DataError as error:
        parser.error(str(error))
    print(f"pick_eval_samples: picked {args.num_examples_to_pick} of {total} instances "
          f"-> {args.output}")


if __name__ == "__main__":
    main()
