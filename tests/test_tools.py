"""tools/: TFRecord <-> HDF5, length bins and shards, eval picking, md5 check — run as CLIs on
records written by create_pretraining_data.py from the sample corpus."""

import hashlib
import os

import h5py
import numpy as np
import pytest
from conftest import run_cli

from tools import records
from tools.pick_eval_samples import pick_indices


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, vocab_file, sample_corpus):
    """Two TFRecord files, seq 512 / 76 predictions, lengths spread over all four bins."""
    directory = tmp_path_factory.mktemp("tools")
    with open(sample_corpus, encoding="utf-8") as f:
        text = f.read().split("\n\n")[:40]
    corpus = directory / "corpus.txt"
    corpus.write_text("\n\n".join(text), encoding="utf-8")
    run_cli(["create_pretraining_data.py", f"--input_file={corpus}", f"--vocab_file={vocab_file}",
             f"--output_file={directory / 'a.tfrecord'},{directory / 'b.tfrecord'}",
             "--max_seq_length=512", "--max_predictions_per_seq=76", "--dupe_factor=2",
             "--short_seq_prob=0.5"])
    return directory


def rows(batch):
    """Each instance as one bytes string of all its features (for multiset comparisons)."""
    return [b"".join(batch[name][i].tobytes() for name in records.FEATURES)
            for i in range(records.num_instances(batch))]


def test_tfrecord_hdf5_tfrecord_gives_back_the_same_bytes(data_dir):
    """TFRecord -> HDF5 -> TFRecord is byte-identical, and the HDF5 file has MLPerf NVIDIA
    PyTorch's datasets, dtypes and shapes with zero-padded masked positions."""
    source, h5, back = data_dir / "a.tfrecord", data_dir / "a.hdf5", data_dir / "a_back.tfrecord"
    run_cli(["-m", "tools.convert_data", "--input", str(source), "--output", str(h5)])
    run_cli(["-m", "tools.convert_data", "--input", str(h5), "--output", str(back)])
    assert back.read_bytes() == source.read_bytes()

    parsed = records.read_file(str(source))
    n = records.num_instances(parsed)
    with h5py.File(h5, "r") as f:
        assert sorted(f) == sorted(records.HDF5_DTYPES)
        for name, dtype in records.HDF5_DTYPES.items():
            assert f[name].dtype == np.dtype(dtype), name
        assert f["input_ids"].shape == (n, 512) and f["segment_ids"].shape == (n, 512)
        assert f["masked_lm_positions"].shape == (n, 76) and f["masked_lm_ids"].shape == (n, 76)
        assert f["next_sentence_labels"].shape == (n,)
        for name in records.HDF5_DTYPES:
            np.testing.assert_array_equal(f[name][()], parsed[name])
        padding = parsed["masked_lm_weights"] == 0
        assert padding.any() and not f["masked_lm_positions"][()][padding].any()


def test_hdf5_tfrecord_hdf5_keeps_every_dataset(data_dir):
    """HDF5 -> TFRecord -> HDF5 (uncompressed) keeps every dataset value and dtype."""
    h5, tf_file, back = data_dir / "b.hdf5", data_dir / "b.tfrecord2", data_dir / "b_back.h5"
    run_cli(["-m", "tools.convert_data", "--input", str(data_dir / "b.tfrecord"),
             "--output", str(h5)])
    run_cli(["-m", "tools.convert_data", "--input", str(h5), "--output", str(tf_file)])
    run_cli(["-m", "tools.convert_data", "--input", str(tf_file), "--output", str(back),
             "--compression", "none"])
    with h5py.File(h5, "r") as first, h5py.File(back, "r") as second:
        for name in records.HDF5_DTYPES:
            assert second[name].dtype == first[name].dtype
            np.testing.assert_array_equal(second[name][()], first[name][()])


def test_hdf5_refuses_weights_it_cannot_store(tmp_path, data_dir):
    """Weights that are not 1.0 exactly at non-zero positions are refused, not silently lost."""
    batch = records.read_file(str(data_dir / "a.tfrecord"))
    batch["masked_lm_weights"][0, 0] = 0.5
    with pytest.raises(records.DataError, match="masked_lm_weights"):
        records.write_hdf5(str(tmp_path / "x.hdf5"), batch)
    assert not os.listdir(tmp_path)


def test_convert_errors_are_one_line(tmp_path):
    """A missing input and a same-format conversion end with one `convert_data: error:` line."""
    missing = run_cli(["-m", "tools.convert_data", "--input", str(tmp_path / "nope.tfrecord"),
                       "--output", str(tmp_path / "x.hdf5")], check=False)
    same = run_cli(["-m", "tools.convert_data", "--input", "a.tfrecord",
                    "--output", "b.tfrecord"], check=False)
    for result, message in ((missing, "nope.tfrecord: no such file"), (same, "both HDF5 or both")):
        assert result.returncode == 2
        assert message in result.stderr.splitlines()[-1]
        assert result.stderr.splitlines()[-1].startswith("convert_data: error:")


def test_bins_lose_nothing_and_respect_their_bounds(tmp_path, data_dir):
    """4 bins x 3 shards: every instance lands in exactly one shard of the bin its length
    belongs to (0-128, 129-256, 257-384, 385-512), in input order, shards within one in size."""
    inputs = [data_dir / "a.tfrecord", data_dir / "b.tfrecord"]
    run_cli(["-m", "tools.shard_data", "--input", ",".join(map(str, inputs)),
             "--output_dir", str(tmp_path), "--num_shards", "3", "--bins", "128,256,384,512",
             "--output_format", "hdf5"])
    source = records.concatenate([records.read_file(str(path)) for path in inputs])
    lengths = source["input_mask"].sum(axis=1)
    lower = 0
    for bound in (128, 256, 384, 512):
        shards = [records.read_file(str(tmp_path / str(bound) / f"part_{i}_of_3.hdf5"))
                  for i in range(3)]
        sizes = [records.num_instances(shard) for shard in shards]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes)
        merged = records.concatenate(shards)
        shard_lengths = merged["input_mask"].sum(axis=1)
        assert ((shard_lengths > lower) & (shard_lengths <= bound)).all()
        in_bin = (lengths > lower) & (lengths <= bound)
        assert in_bin.sum() > 0
        assert rows(merged) == rows(records.take(source, in_bin))  # same instances, same order
        lower = bound
    assert sorted(os.listdir(tmp_path)) == ["128", "256", "384", "512"]


def test_shards_without_bins_concatenate_to_the_input(tmp_path, data_dir):
    """Chopping into 4 TFRecord shards without bins keeps every record, in order, bytes equal."""
    source = data_dir / "a.tfrecord"
    run_cli(["-m", "tools.shard_data", "--input", str(source), "--output_dir", str(tmp_path),
             "--num_shards", "4"])
    shards = [tmp_path / f"part_{i}_of_4.tfrecord" for i in range(4)]
    assert sorted(os.listdir(tmp_path)) == sorted(path.name for path in shards)
    chopped = [record for path in shards for record in records.iter_tfrecords(str(path))]
    assert chopped == list(records.iter_tfrecords(str(source)))


def test_pick_eval_samples_is_deterministic_and_spreads_like_mlperf(tmp_path, data_dir):
    """Two runs give identical files; the picks are records int(i * M/N) of the inputs in the
    order given, copied byte for byte; an HDF5 output holds the same instances."""
    inputs = f"{data_dir / 'a.tfrecord'},{data_dir / 'b.tfrecord'}"
    outputs = [tmp_path / "one.tfrecord", tmp_path / "two.tfrecord"]
    for output in outputs:
        run_cli(["-m", "tools.pick_eval_samples", "--input", inputs, "--output", str(output),
                 "--num_examples_to_pick", "100"])
    assert outputs[0].read_bytes() == outputs[1].read_bytes()
    source = [record for path in inputs.split(",") for record in records.iter_tfrecords(path)]
    expected = [source[i] for i in pick_indices(len(source), 100)]
    assert list(records.iter_tfrecords(str(outputs[0]))) == expected
    assert len(set(pick_indices(len(source), 100))) == 100
    run_cli(["-m", "tools.pick_eval_samples", "--input", inputs, "--output",
             str(tmp_path / "picked.hdf5"), "--num_examples_to_pick", "100"])
    assert rows(records.read_file(str(tmp_path / "picked.hdf5"))) == rows(
        records.read_file(str(outputs[0])))


def test_pick_more_than_available_fails_with_one_line(tmp_path, data_dir):
    result = run_cli(["-m", "tools.pick_eval_samples", "--input", str(data_dir / "a.tfrecord"),
                      "--output", str(tmp_path / "x.tfrecord"), "--num_examples_to_pick",
                      "10000"], check=False)
    assert result.returncode == 2
    assert "pick_eval_samples: error: --num_examples_to_pick=10000" in result.stderr
    assert not os.listdir(tmp_path)


def test_check_md5_names_each_bad_file(tmp_path):
    """A matching directory passes; a changed file and a missing file are each reported by
    name on their own line, exit code 1."""
    corpus = tmp_path / "results4"
    corpus.mkdir()
    lines = []
    for i in range(3):
        path = corpus / f"part-{i:05d}-of-00003"
        path.write_text(f"document {i}\n", encoding="utf-8")
        lines.append(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {path.name}\n")
    md5_file = tmp_path / "md5.txt"
    md5_file.write_text("".join(lines), encoding="utf-8")
    ok = run_cli(["-m", "tools.check_md5", "--md5_file", str(md5_file), "--dir", str(corpus)])
    assert "3 files OK" in ok.stdout

    (corpus / "part-00001-of-00003").write_text("tampered\n", encoding="utf-8")
    (corpus / "part-00002-of-00003").unlink()
    bad = run_cli(["-m", "tools.check_md5", "--md5_file", str(md5_file), "--dir", str(corpus)],
                  check=False)
    assert bad.returncode == 1
    errors = bad.stderr.splitlines()
    assert errors[0].startswith(f"check_md5: {corpus / 'part-00001-of-00003'}: FAILED (md5 ")
    assert errors[1] == f"check_md5: {corpus / 'part-00002-of-00003'}: missing"
    assert "2 of 3 files failed" in errors[2]
