"""Faults during training end run_pretraining.py with one line and exit != 0, never with a bad or
lost checkpoint: non-finite updates (fp32 divergence, float16 overflow) and a checkpoint save
that fails on a genuinely full (tmpfs) or read-only file system."""

import contextlib
import os
import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli
from test_run_pretraining import args, checkpoint_step, data  # noqa: F401 (fixture)


def variables(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def listed_checkpoints(out):
    return list(tf.train.get_checkpoint_state(str(out)).all_model_checkpoint_paths)


def last_line(result):
    return result.stderr.strip().splitlines()[-1]


def assert_every_checkpoint_finite(out):
    for prefix in listed_checkpoints(out):
        for name, value in variables(prefix).items():
            if np.issubdtype(value.dtype, np.floating):
                assert np.all(np.isfinite(value)), f"{prefix}: {name} is not finite"


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):  # noqa: F811 (fixture argument)
    """A good 10-step run (checkpoints at 5 and 10)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    run_cli(args(data, out, "--do_train", steps=10))
    return out


def test_divergence_stops_at_the_first_non_finite_update_and_keeps_the_good_checkpoints(
        data, trained, tmp_path):  # noqa: F811
    """Property: resumed with --learning_rate=1e4 (fp32), the run stops at the first update whose
    gradients are not finite, exits 1 with one line naming the step, the losses, the latest good
    checkpoint and the fixes; the update is not applied, every listed checkpoint is finite and
    the good ones are still there (keep_checkpoint_max=2 deleted none of them for bad ones)."""
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    result = run_cli(args(data, out, "--do_train", "--learning_rate=1e4",
                          "--keep_checkpoint_max=2", steps=200), check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    line = last_line(result)
    assert line.startswith("run_pretraining.py: error: stopped at step "), line
    assert "after a non-finite update" in line and "the update was not applied" in line
    assert "total_loss" in line and "Lower --learning_rate" in line
    assert "Traceback" not in result.stderr
    latest = tf.train.latest_checkpoint(str(out))
    assert f"Latest good checkpoint: {latest}." in line
    stopped_at = int(line.split("stopped at step ")[1].split()[0])
    assert checkpoint_step(out) <= stopped_at < 200
    assert_every_checkpoint_finite(out)
    assert len(listed_checkpoints(out)) == 2


def test_float16_overflow_stops_after_max_consecutive_skips(data, tmp_path):  # noqa: F811
    """Property: under float16 --amp with loss scale 2**32 the first updates overflow and are
    skipped (the scale halves at each); with --max_consecutive_skips=3 the run stops after the
    third in a row, at step 0, exits 1 naming the skips and the loss scale, and saves nothing."""
    out = tmp_path / "run"
    result = run_cli(args(data, out, "--do_train", "--amp", "--max_consecutive_skips=3",
                          steps=10), check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    line = last_line(result)
    assert line.startswith("run_pretraining.py: error: stopped at step 0 after 3 non-finite "
                           "updates in a row (--max_consecutive_skips)"), line
    assert "loss_scaler 5.369e+08" in line  # 2**32 halved three times
    assert "nothing was saved yet" in line
    assert tf.train.latest_checkpoint(str(out)) is None


@contextlib.contextmanager
def small_file_system(path, megabytes):
    """A tmpfs of `megabytes` MB mounted at `path` (root only)."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs",
                              str(path)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_full_disk_save_fails_with_one_line_and_keeps_the_previous_checkpoint(
        data, tmp_path):  # noqa: F811
    """Property: on a 20 MB tmpfs the step-5 checkpoint (about 12 MB with Adam's moments) fits
    and the step-10 one does not: the run exits 1 with one line naming the directory, the space
    a checkpoint needs and the space free; model.ckpt-5 is intact and still the one `checkpoint`
    names, and no partial files of step 10 are left."""
    with small_file_system(tmp_path / "small", 20) as small:
        out = small / "run"
        result = run_cli(args(data, out, "--do_train", steps=12), check=False)
        assert result.returncode == 1, result.stderr[-2000:]
        line = last_line(result)
        assert line.startswith(f"run_pretraining.py: error: cannot save the checkpoint of step "
                               f"10 in {out}: "), line
        assert "No space left on device. A checkpoint needs about" in line and "MB free" in line
        assert f"The latest complete checkpoint, {out}/model.ckpt-5, is intact" in line
        assert "Traceback" not in result.stderr
        assert tf.train.latest_checkpoint(str(out)) == f"{out}/model.ckpt-5"
        assert variables(f"{out}/model.ckpt-5")["global_step"] == 5
        assert not [name for name in os.listdir(out) if name.startswith("model.ckpt-10")]


def test_read_only_output_fails_with_one_line_and_keeps_the_checkpoint(
        data, tmp_path):  # noqa: F811
    """Property: a resume into an --output_dir that became read-only exits 1 with one line
    naming the file it cannot write and the fix; the checkpoint is untouched."""
    with small_file_system(tmp_path / "small", 40) as small:
        out = small / "run"
        run_cli(args(data, out, "--do_train", steps=5))
        before = variables(tf.train.latest_checkpoint(str(out)))
        subprocess.run(["mount", "-o", "remount,ro", str(small)], check=True)
        result = run_cli(args(data, out, "--do_train", steps=10), check=False)
        assert result.returncode == 1, result.stderr[-2000:]
        line = last_line(result)
        assert line.startswith("run_pretraining.py: error: cannot write "), line
        assert "Read-only file system" in line and "--output_dir" in line
        assert "Traceback" not in result.stderr
        after = variables(tf.train.latest_checkpoint(str(out)))
        assert all(np.array_equal(before[name], after[name]) for name in before)
