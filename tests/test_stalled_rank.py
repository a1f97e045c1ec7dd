"""A stuck or dead rank ends the whole Horovod job, in bounded time, naming the rank.

Real `mpirun -np 2` jobs of the CLI (SIGSTOP of a rank) and of tests/distributed_worker.py (a rank
hung inside its step, slow work outside the steps); the decision rule of distributed.Watchdog
alone in plain unit tests.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf
from conftest import REPO
from test_distributed import JOB_TIMEOUT, MPIRUN, WORKER, data, rank_pid  # noqa: F401
from test_run_pretraining import args, checkpoint_step

import distributed

# The jobs' watchdog deadlines are seconds of wall time: scripts/test.sh runs these tests alone.
pytestmark = pytest.mark.serial

TIMEOUT = 20  # --rank_timeout_seconds of the CLI jobs
MARGIN = 15  # seconds past the timeout for the check period, the exit and mpirun's teardown


def beat(age, phase="step", step=7):
    return {"age": age, "phase": phase, "step": step}


def test_a_peer_whose_heartbeat_stopped_is_named_whatever_this_rank_waits_in():
    """Property: a rank (not finished) whose heartbeat is older than the timeout is named
    "stopped", even in the first step and while another rank is busy saving."""
    peers = {1: beat(25), 2: beat(1, "between"), 3: beat(99, "done")}
    assert distributed.stalled_ranks(0, "first", 21, 7, 20, peers) == ([1], "stopped")
    assert distributed.stalled_ranks(0, "step", 21, 7, 20, {1: beat(19)}) is None


def test_a_busy_rank_excuses_the_wait_and_the_first_step_has_more_time():
    """Property: while any rank is alive outside its steps (restoring, saving, evaluating) the
    others wait without limit; the first step of a session may take FIRST_STEP_FACTOR x."""
    assert distributed.stalled_ranks(0, "step", 500, 7, 20, {1: beat(2, "between")}) is None
    assert distributed.stalled_ranks(0, "step", 500, 7, 20, {1: beat(2, "starting")}) is None
    first_limit = 20 * distributed.FIRST_STEP_FACTOR
    assert distributed.stalled_ranks(0, "first", first_limit - 1, None, 20, {1: beat(2)}) is None
    assert distributed.stalled_ranks(0, "first", first_limit + 1, None, 20,
                                     {1: beat(2, "first", None)}) == ([0, 1], "stuck")


def test_alive_ranks_stuck_in_their_steps_name_the_ranks_behind():
    """Property: when every rank is alive and inside a step past the timeout, the ranks with the
    lowest step are named ("stuck"); ranks without a heartbeat file are not blamed."""
    peers = {1: beat(1, step=6), 2: beat(1), 3: None}
    assert distributed.stalled_ranks(0, "step", 21, 7, 20, peers) == ([1], "stuck")
    assert distributed.stalled_ranks(0, "step", 21, 7, 20, {1: beat(1), 2: None}) == (
        [0, 1], "stuck")


def popen(command, log):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def running(pid):
    """Whether process `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("stopped", [1, 0])
def test_a_stopped_rank_ends_every_rank_naming_it(data, tmp_path, stopped):  # noqa: F811
    """Property: SIGSTOP of one rank (1, or 0, Horovod's coordinator) after its first checkpoint
    makes mpirun exit with code 75 within --rank_timeout_seconds + MARGIN, every rank's process
    gone (the stopped one too), the output has one line naming the stopped rank and the latest
    checkpoint at that moment to restart from, and that checkpoint reads back complete."""
    out = tmp_path / "run"
    cli = [sys.executable, *args(data, out, "--do_train", "--horovod",
                                 f"--rank_timeout_seconds={TIMEOUT}", steps=100000)]
    log_path = tmp_path / "job.log"
    with open(log_path, "w", encoding="utf-8") as log:
        job = popen([*MPIRUN, *cli], log)
        pids = []
        try:
            while tf.train.latest_checkpoint(str(out)) is None or checkpoint_step(out) < 5:
                assert job.poll() is None, "the job ended before its first checkpoint"
                time.sleep(0.2)
            pids = [rank_pid(job.pid, rank) for rank in (0, 1)]
            os.kill(pids[stopped], signal.SIGSTOP)
            start = time.monotonic()
            returncode = job.wait(timeout=JOB_TIMEOUT)
            seconds = time.monotonic() - start
            time.sleep(0.5)  # mpirun's last signals
            alive = [pid for pid in pids if running(pid)]
        finally:
            job.kill()
            job.wait()
            for pid in pids:  # never leave a stopped process behind
                if running(pid):
                    os.kill(pid, signal.SIGKILL)
    output = log_path.read_text(encoding="utf-8", errors="replace")
    print(f"SIGSTOP of rank {stopped} -> mpirun exit {returncode} after {seconds:.1f} s")
    assert returncode == distributed.EXIT_STALLED, output[-3000:]
    assert seconds < TIMEOUT + MARGIN
    assert alive == []
    lines = [line for line in output.splitlines() if "made no progress" in line]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"run_pretraining.py: error: rank {stopped} made no progress for ")
    assert "its heartbeat stopped" in lines[0]
    # The line names the latest checkpoint at the time it is written. A save the stopped chief
    # had in progress may still complete after it (mpirun sends SIGCONT before SIGTERM), so the
    # named checkpoint is the newest one or an older one that is still kept.
    restart = re.search(r"Restart from the last checkpoint \((\S+)\)", lines[0])
    assert restart, lines[0]
    named = restart.group(1)
    state = tf.train.get_checkpoint_state(str(out))
    assert named in state.all_model_checkpoint_paths, (named, state)
    reader = tf.train.load_checkpoint(named)
    for name in reader.get_variable_to_shape_map():
        reader.get_tensor(name)
    # The heartbeats sit apart from checkpoints and data: a hidden directory of small JSON files.
    assert all(os.path.basename(p).startswith("model.ckpt-")
               for p in state.all_model_checkpoint_paths)
    assert sorted(os.listdir(out / ".heartbeat")) == ["rank-0.json", "rank-1.json"]
    assert json.loads((out / ".heartbeat" / "rank-1.json").read_text())["rank"] == 1


def run_worker(tmp_path, *extra):
    """Runs a 2-rank job of tests/distributed_worker.py (config "plain", 4 steps); returns
    (exit code, output, seconds)."""
    log_path = tmp_path / "job.log"
    start = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        job = popen([*MPIRUN, sys.executable, WORKER, str(tmp_path), "--horovod",
                     "--configs=plain", *extra], log)
        try:
            returncode = job.wait(timeout=JOB_TIMEOUT)
        finally:
            job.kill()
            job.wait()
    return returncode, log_path.read_text(encoding="utf-8", errors="replace"), (
        time.monotonic() - start)


def test_a_rank_hung_inside_its_step_ends_every_rank(tmp_path):
    """Property: a rank that stays alive but hangs inside a training step (600 s) ends the job
    with code 75 within a few timeouts; the message says every rank is alive and the step hangs,
    and Horovod's stall warning before it names the rank missing from the collective."""
    returncode, output, seconds = run_worker(tmp_path, "--rank_timeout_seconds=5",
                                             "--pause=1:3:600:inside")
    print(f"hung rank -> mpirun exit {returncode} after {seconds:.1f} s (whole job)")
    assert returncode == distributed.EXIT_STALLED, output[-3000:]
    assert seconds < 120
    lines = [line for line in output.splitlines() if "made no progress" in line]
    assert lines and all("every rank is alive" in line for line in lines), lines
    assert "rank 1 made no progress" in lines[0]
    assert "Missing ranks:" in output and "1: [" in output


def test_slow_work_outside_the_steps_and_a_slow_first_step_do_not_stop_the_job(tmp_path):
    """Property: with --rank_timeout_seconds=5, rank 0 spending 8 s in its first step (graph
    optimisation, within FIRST_STEP_FACTOR x) and rank 1 spending 8 s after its second step (as
    in a slow checkpoint save or evaluation, while rank 0 waits in its next step) end normally,
    with no stall message; both ranks' heartbeats say "done" at step 4."""
    returncode, output, seconds = run_worker(tmp_path, "--rank_timeout_seconds=5",
                                             "--pause=0:1:8:inside", "--pause=1:2:8:after")
    print(f"slow but healthy job: exit {returncode} after {seconds:.1f} s")
    assert returncode == 0, output[-3000:]
    assert "made no progress" not in output
    for rank in (0, 1):
        with open(distributed.heartbeat_path(str(tmp_path), rank), encoding="utf-8") as f:
            heartbeat = json.load(f)
        assert (heartbeat["phase"], heartbeat["step"]) == ("done", 4)
