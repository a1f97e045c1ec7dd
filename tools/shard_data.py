"""Shard pre-training data into N files, optionally split into bins by sequence length first.

    # MLPerf's 4 bins (Samsung's run): OUT/128, OUT/256, OUT/384, OUT/512, N shards each
    python -m tools.shard_data --input 'hdf5/part-*' --output_dir OUT --num_shards 2048 \
        --bins 128,256,384,512 --output_format hdf5
    # chop into N shards, no bins (MLPerf's chop_hdf5_files.py)
    python -m tools.shard_data --input 'tfrecords/*' --output_dir OUT --num_shards 16

The sequence length of an instance is the sum of its `input_mask`; with `--bins 128,256,384,512`
an instance of length L goes to the first bin with L <= bound (0-128, 129-256, 257-384,
385-512), directory named by the bound. Instances keep their input order (input files in sorted
name order); each bin is cut into contiguous shards whose sizes differ by at most one, the
smaller ones first, named `part_{i}_of_{N}.{hdf5|tfrecord}`. A bin with fewer than N instances
gets one shard per instance; an empty bin, no directory. Memory: one input file plus one shard
per bin.
"""

import argparse
import glob
import os

import numpy as np

from tools import records


def expand_inputs(spec):
    """Comma-separated files or globs -> files (each glob sorted by name); DataError if none."""
    paths = []
    for pattern in filter(None, spec.split(",")):
        matched = sorted(path for path in glob.glob(pattern) if os.path.isfile(path))
        if not matched:
            raise records.DataError(f"--input {pattern}: no file matches; check the path or glob")
        paths += matched
    if not paths:
        raise records.DataError("--input is empty; pass files or globs")
    return paths


def shard_sizes(total, num_shards):
    """Sizes of min(total, num_shards) contiguous shards, differing by at most one, small first."""
    count = min(total, num_shards)
    if count == 0:
        return []
    big, excess = -(-total // count), -total % count
    return [big - 1] * excess + [big] * (count - excess)


def bin_index(lengths, bounds):
    """Index of the first bound >= each length; DataError for a length above every bound."""
    index = np.searchsorted(np.asarray(bounds), lengths, side="left")
    if len(lengths) and index.max() >= len(bounds):
        raise records.DataError(f"an instance of length {int(lengths[index.argmax()])} exceeds "
                                f"the largest bin bound {bounds[-1]}; add a larger bound")
    return index


class ShardWriter:
    """Writes the instances given to `add`, in order, as shards of `shard_sizes(total, N)`."""

    def __init__(self, directory, total, num_shards, suffix, compression):
        self.directory, self.suffix, self.compression = directory, suffix, compression
        self.sizes = shard_sizes(total, num_shards)
        self.pending, self.written = [], 0

    def add(self, batch):
        self.pending.append(batch)
        buffered = sum(map(records.num_instances, self.pending))
        while self.written < len(self.sizes) and buffered >= self.sizes[self.written]:
            merged = records.concatenate(self.pending)
            size = self.sizes[self.written]
            name = f"part_{self.written}_of_{len(self.sizes)}.{self.suffix}"
            records.write_file(os.path.join(self.directory, name), records.take(merged, slice(size)),
                               compression=self.compression)
            self.pending = [records.take(merged, slice(size, None))]
            buffered -= size
            self.written += 1


def main(argv=None):
    parser = argparse.ArgumentParser(prog="shard_data", description=__doc__.split("\n")[1])
    parser.add_argument("--input", required=True,
                        help="comma-separated TFRecord/HDF5 files or globs")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_shards", type=int, required=True, help="shards per bin")
    parser.add_argument("--bins", default="",
                        help="comma-separated upper bounds of sequence length, e.g. "
                             "128,256,384,512 (MLPerf's 4 bins); none: one set of shards")
    parser.add_argument("--output_format", choices=("tfrecord", "hdf5"), default="tfrecord")
    parser.add_argument("--compression", choices=("gzip", "none"), default="none",
                        help="HDF5 compression (MLPerf's shards: none)")
    args = parser.parse_args(argv)
    if args.num_shards < 1:
        parser.error("--num_shards must be at least 1")
    try:
        bounds = sorted({int(bound) for bound in args.bins.split(",") if bound.strip()})
    except ValueError:
        parser.error(f"--bins={args.bins}: give comma-separated integers, e.g. 128,256,384,512")
    try:
        paths = expand_inputs(args.input)
        # Pass 1: how many instances each bin gets, so shard sizes are known before writing.
        totals = np.zeros(max(len(bounds), 1), np.int64)
        for path in paths:
            lengths = records.read_file(path)["input_mask"].sum(axis=1)
            index = bin_index(lengths, bounds) if bounds else np.zeros(len(lengths), np.int64)
            totals += np.bincount(index, minlength=len(totals))
        directories = ([os.path.join(args.output_dir, str(bound)) for bound in bounds]
                       if bounds else [args.output_dir])
        compression = None if args.compression == "none" else "gzip"
        writers = [ShardWriter(directory, int(total), args.num_shards, args.output_format,
                               compression) for directory, total in zip(directories, totals)]
        # Pass 2: route each file's instances to their bin's writer, in order.
        for path in paths:
            batch = records.read_file(path)
            index = (bin_index(batch["input_mask"].sum(axis=1), bounds) if bounds
                     else np.zeros(records.num_instances(batch), np.int64))
            for i, writer in enumerate(writers):
                writer.add(records.take(batch, index == i))
    except records.DataError as error:
        parser.error(str(error))
    for directory, total, writer in zip(directories, totals, writers):
        print(f"shard_data: {directory}: {total} instances in {len(writer.sizes)} shards")


if __name__ == "__main__":
    main()
