"""Convert pre-training data between TFRecord and the MLPerf NVIDIA PyTorch HDF5 layout.

    python -m tools.convert_data --input train-0.tfrecord --output train-0.hdf5
    python -m tools.convert_data --input train-0.hdf5 --output train-0.tfrecord

The direction follows the names: *.hdf5/*.h5 is HDF5, anything else TFRecord (layouts in
tools/records.py). TFRecord -> HDF5 -> TFRecord gives back the bytes create_pretraining_data.py
wrote.
"""

import argparse

from tools import records


def main(argv=None):
    parser = argparse.ArgumentParser(prog="convert_data", description=__doc__.split("\n")[1])
    parser.add_argument("--input", required=True, help="TFRecord or HDF5 (*.hdf5, *.h5) file")
    parser.add_argument("--output", required=True, help="TFRecord or HDF5 (*.hdf5, *.h5) file")
    parser.add_argument("--compression", choices=("gzip", "none"), default="gzip",
                        help="HDF5 dataset compression (NVIDIA's generator: gzip; MLPerf's "
                             "2048 training shards: none)")
    args = parser.parse_args(argv)
    if records.is_hdf5(args.input) == records.is_hdf5(args.output):
        parser.error("--input and --output are both HDF5 or both TFRecord; name the HDF5 side "
                     "*.hdf5 or *.h5")
    try:
        batch = records.read_file(args.input)
        records.write_file(args.output, batch,
                           compression=None if args.compression == "none" else "gzip")
    except records.DataError as error:
        parser.error(str(error))
    print(f"convert_data: {records.num_instances(batch)} instances {args.input} -> {args.output}")


if __name__ == "__main__":
    main()
