"""Horovod data parallelism, proven with real `mpirun`/`horovodrun` jobs of 2 processes on CPU.

The library-level tests run tests/distributed_worker.py (tiny BERT, dropout off, the real runner,
optimizer, allreduce and broadcast hook); the CLI tests run run_pretraining.py --horovod.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO
from distributed_worker import CONFIGS
from test_run_pretraining import PRED, SEQ, TINY_CONFIG, args, checkpoint_step, step_records

import tfrecord

MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2"]
HOROVODRUN = os.path.join(os.path.dirname(sys.executable), "horovodrun")
WORKER = os.path.join(REPO, "tests", "distributed_worker.py")
JOB_TIMEOUT = 300  # seconds; only a hung job gets near it


def run(command, **kwargs):
    """Runs `command` from the repo root; returns the CompletedProcess, failing on exit != 0."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=JOB_TIMEOUT, check=False, **kwargs)
    assert result.returncode == 0, f"{command[:6]} failed:\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Synthetic records (the layout args() expects): 2 training files, 1 eval file, tiny.json."""
    root = tmp_path_factory.mktemp("records")
    rng = np.random.default_rng(0)
    for path in ("train/a.tfrecord", "train/b.tfrecord", "eval/e.tfrecord"):
        (root / path).parent.mkdir(exist_ok=True)
        with tfrecord.TFRecordWriter(str(root / path)) as writer:
            for _ in range(64):
                writer.write(tfrecord.encode_example({
                    "input_ids": rng.integers(1000, 2000, SEQ), "input_mask": np.ones(SEQ, int),
                    "segment_ids": np.repeat([0, 1], SEQ // 2),
                    "masked_lm_positions": rng.choice(SEQ, PRED, replace=False),
                    "masked_lm_ids": rng.integers(1000, 2000, PRED),
                    "masked_lm_weights": np.ones(PRED, np.float32),
                    "next_sentence_labels": rng.integers(0, 2, 1)}))
    (root / "tiny.json").write_text(json.dumps(TINY_CONFIG))
    return root


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    """Final variables of every worker config: 1 process x micro-batch 2b, 2 ranks x b."""
    root = tmp_path_factory.mktemp("worker")
    run([sys.executable, WORKER, str(root)])
    run([*MPIRUN, sys.executable, WORKER, str(root), "--horovod"])

    def load(name, size, rank):
        values = np.load(root / f"{name}.size{size}.rank{rank}.npz")
        # With post-accumulation allreduce the accumulators hold each rank's own sums.
        return {key: values[key] for key in values.files if not key.endswith("/accum")}

    return load


@pytest.mark.parametrize("name", CONFIGS)
def test_every_variable_is_identical_on_both_ranks(dumps, name):
    """Property: after several updates (ranks initialised from different seeds), every variable
    (weights, Adam moments, global step) is bit-identical on both ranks."""
    rank0, rank1 = dumps(name, 2, 0), dumps(name, 2, 1)
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        np.testing.assert_array_equal(rank0[key], rank1[key], err_msg=key)


@pytest.mark.parametrize("name", CONFIGS)
def test_two_ranks_match_one_rank_with_the_double_batch(dumps, name):
    """Property: 2 ranks x batch b train the same weights as 1 rank x batch 2b on the same
    examples (dropout off, fp32 tolerance), per micro-batch and with (post-)accumulation."""
    two, one = dumps(name, 2, 0), dumps(name, 1, 0)
    assert int(two["global_step"]) == int(one["global_step"]) > 1
    for key in one:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-6, err_msg=key)


def written_paths(trace_file, directory):
    """Paths under `directory` that a process traced by strace created, opened for writing,
    renamed, removed or made."""
    written = set()
    with open(trace_file, encoding="utf-8", errors="replace") as f:
        for line in f:
            if directory not in line or "= -1" in line:
                continue
            opens_to_write = "open" in line and any(
                flag in line for flag in ("O_WRONLY", "O_RDWR", "O_CREAT"))
            if opens_to_write or any(call in line for call in ("rename", "unlink", "mkdir")):
                written.add(line.split('"')[1])
    return written


def test_only_rank_0_writes_to_output_dir_and_rates_scale_with_ranks(data, tmp_path):
    """Property: under mpiexec with 2 ranks, rank 1 (traced by strace) writes nothing under
    --output_dir but its heartbeat (.heartbeat/rank-1.json) and its own input position
    (input_state/rank-1/) while rank 0 writes checkpoints, one log record per step and one
    TensorBoard file; the peak learning rate is --learning_rate x 2 (per-rank rate, as NVIDIA)."""
    out = tmp_path / "run"
    cli = [sys.executable, *args(data, out, "--do_train", "--do_eval", "--horovod", steps=4)]
    trace = tmp_path / "rank1.strace"
    run(["mpiexec", "--allow-run-as-root", "--oversubscribe", "-np", "1", *cli, ":",
         "-np", "1", "strace", "-f", "-qq", "-e", "trace=%file", "-o", str(trace), *cli])
    assert os.path.getsize(trace) > 0  # strace ran rank 1
    heartbeat = os.path.join(str(out), ".heartbeat")
    input_state = os.path.join(str(out), "input_state")
    written = {path for path in written_paths(trace, str(out))
               if not path.startswith(os.path.join(input_state, "rank-1") + os.sep)}
    assert written <= {str(out), heartbeat, input_state, os.path.join(input_state, "rank-1"),
                       os.path.join(heartbeat, "rank-1.json.tmp"),
                       os.path.join(heartbeat, "rank-1.json")}
    assert os.listdir(os.path.join(input_state, "rank-1"))
    assert checkpoint_step(out) == 4 and (out / "eval_results.txt").exists()
    assert [r["step"] for r in step_records(out)] == [1, 2, 3, 4]
    assert len([f for f in os.listdir(out) if f.startswith("events.out.tfevents")]) == 1
    peak = max(r["data"]["learning_rate"] for r in step_records(out))
    assert peak == pytest.approx(2 * 1e-3, rel=1e-4)


def rank_pid(launcher_pid, rank):
    """Pid of the child process of `launcher_pid` that has OMPI_COMM_WORLD_RANK=`rank`."""
    with open(f"/proc/{launcher_pid}/task/{launcher_pid}/children", encoding="utf-8") as f:
        children = f.read().split()
    for pid in children:
        with open(f"/proc/{pid}/environ", "rb") as f:
            if f"OMPI_COMM_WORLD_RANK={rank}".encode() in f.read().split(b"\0"):
                return int(pid)
    raise AssertionError(f"no rank {rank} among the children {children} of mpirun")


def test_a_killed_rank_ends_the_job_and_keeps_the_last_checkpoint(data, tmp_path):
    """Property: SIGKILL of rank 1 mid-run makes mpirun exit non-zero (no hang), and the latest
    checkpoint in --output_dir is complete: every tensor of it reads back."""
    out = tmp_path / "run"
    cli = [sys.executable, *args(data, out, "--do_train", "--horovod", steps=100000)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    job = subprocess.Popen([*MPIRUN, *cli], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        while tf.train.latest_checkpoint(str(out)) is None or checkpoint_step(out) < 5:
            assert job.poll() is None, "the job ended before its first checkpoint"
            time.sleep(0.2)
        os.kill(rank_pid(job.pid, 1), signal.SIGKILL)
        returncode = job.wait(timeout=JOB_TIMEOUT)
    finally:
        job.kill()
        job.wait()
    assert returncode != 0
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(out)))
    for name in reader.get_variable_to_shape_map():
        reader.get_tensor(name)
    assert checkpoint_step(out) >= 5


def test_horovodrun_with_gloo_trains(data, tmp_path):
    """Property: `horovodrun --gloo -np 2` (no MPI) runs the CLI to num_train_steps."""
    out = tmp_path / "run"
    run([HOROVODRUN, "--gloo", "-np", "2", sys.executable,
         *args(data, out, "--do_train", "--horovod", steps=3)])
    assert checkpoint_step(out) == 3
