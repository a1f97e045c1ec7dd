"""The distributed handle: the one interface through which training code talks to other ranks.

Library code (optimization, input pipeline, runner) never imports Horovod. It receives a handle
and uses only the contract below; `SingleProcess` is the handle for a run on one process and
`Horovod` (this is the only module that imports `horovod`) the handle of a data-parallel run
launched with `mpiexec`/`mpirun` or `horovodrun`. `create` picks one.

Contract of a handle:
  rank, size, local_rank   ints: this process's global rank, the number of ranks, and the rank
                           within its machine (used to pin a device).
  local_size               int: ranks on this machine (they share its cores).
  is_chief                 True on exactly one rank (rank 0): it loads the init checkpoint,
                           saves, logs and evaluates.
  allreduce(tensor, name)  a graph tensor holding the average of `tensor` over all ranks, same
                           shape and dtype. Every rank must build the same allreduces in the same
                           order. A Horovod implementation may compress to fp16 on the wire.
  allreduce_gradients(gs)  `allreduce` applied to each tensor of a list; None entries (variables
                           without a gradient) stay None and are not communicated.
  training_hooks()         SessionRunHooks every rank adds to its training session (Horovod: the
                           broadcast of rank 0's variables after restore or initialisation, and
                           the heartbeat of the stalled-rank watchdog).

A stalled rank (stopped, swapped out, hung in its input or an op) would leave the others blocked
in a collective forever; Horovod's own stall check cannot see it when the stopped rank is the
coordinator (rank 0) or when the coordinator itself is blocked in MPI. So each rank of a Horovod
job runs a `Watchdog` thread (`create(..., rank_timeout_seconds, output_dir)`): it writes this
rank's heartbeat file (OUTPUT_DIR/.heartbeat/rank-R.json) every few seconds, and when this rank
has been inside one training step (a session run) for longer than the timeout it reads the
others' heartbeats, names the rank(s) that stopped, prints one line and ends the process with
`os._exit(EXIT_STALLED)`; the launcher (mpirun) then ends the other ranks. Time outside the
training steps (building, restoring, saving, evaluating) never counts, and a rank waits as long
as another rank is alive and busy outside its steps.
"""

import json
import os
import socket
import sys
import threading
import time

import tensorflow as tf


class SingleProcess:
    """The handle for a run on one process: rank 0 of 1, every allreduce is the identity."""

    rank = 0
    size = 1
    local_rank = 0
    local_size = 1
    is_chief = True

    def allreduce(self, tensor, name=None):
        """Return the average of `tensor` over the one rank: `tensor` itself."""
        del name  # Only a Horovod implementation names its collective ops.
        return tensor

    def allreduce_gradients(self, grads):
        """Return `[allreduce(g) for g in grads]`, passing None entries through."""
        return [None if g is None else self.allreduce(g) for g in grads]

    def training_hooks(self):
        """No hooks: a single process has nothing to synchronise."""
        return []


class Horovod(SingleProcess):
    """The handle of one rank of a Horovod job (MPI or Gloo); calls `hvd.init()`.

    Args:
      fp16_compression: cast float32 tensors to float16 for the allreduce (half the bytes on
        the wire), back to float32 after.
      rank_timeout_seconds: a rank stuck this long inside one training step ends the job (see
        `Watchdog`); 0 turns the watchdog off.
      output_dir: the run's output directory: heartbeats go to OUTPUT_DIR/.heartbeat, and the
        stall message names its latest checkpoint. None: no heartbeat files (a stall is still
        detected, but the stalled rank is not named).
    """

    def __init__(self, fp16_compression=False, rank_timeout_seconds=0, output_dir=None):
        import horovod.tensorflow as hvd  # only a --horovod run needs (and pays for) Horovod

        # Open MPI's waits busy-poll a core by default. Under Horovod they run beside the
        # training threads on the same cores and slow them down (CPU training scales far worse
        # with polling: BENCHMARKS.md, Horovod scaling). Read at MPI_Init; a user's value wins.
        os.environ.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
        if rank_timeout_seconds > 0:
            # Horovod's coordinator warns, naming the ranks missing from a collective (within 2x
            # its check time: before the watchdog's message when the check is timeout/3), and as a
            # backstop for a hang in the time the watchdog excuses (a save that never returns)
            # shuts Horovod down. Read at hvd.init(); a user's values win.
            os.environ.setdefault("HOROVOD_STALL_CHECK_TIME_SECONDS",
                                  str(max(1, min(60, rank_timeout_seconds // 3))))
            os.environ.setdefault("HOROVOD_STALL_SHUTDOWN_TIME_SECONDS",
                                  str(HOROVOD_SHUTDOWN_FACTOR * rank_timeout_seconds))
        hvd.init()
        self._hvd = hvd
        self._compression = hvd.Compression.fp16 if fp16_compression else hvd.Compression.none
        self.rank, self.size = hvd.rank(), hvd.size()
        self.local_rank, self.local_size = hvd.local_rank(), hvd.local_size()
        self.is_chief = self.rank == 0
        self._watchdog = None
        if rank_timeout_seconds > 0 and self.size > 1:
            self._watchdog = Watchdog(self.rank, self.size, rank_timeout_seconds, output_dir)
            self._watchdog.start()

    def allreduce(self, tensor, name=None):
        """The average of `tensor` over all ranks (Horovod allreduce, fp16 on the wire if set)."""
        return self._hvd.allreduce(tensor, op=self._hvd.Average, compression=self._compression,
                                   name=name)

    def training_hooks(self):
        """The watchdog's heartbeat (first, so that the broadcast counts as a wait of the first
        step) and the broadcast of rank 0's variables, so that every rank starts alike."""
        heartbeat = [HeartbeatHook(self._watchdog)] if self._watchdog else []
        return [*heartbeat, BroadcastVariablesHook(self._hvd)]


class BroadcastVariablesHook(tf.compat.v1.train.SessionRunHook):
    """Sets every global variable of every rank to rank 0's values once the session exists.

    Runs after the chief restored its checkpoint or warm-started, so a resumed run continues on
    all ranks from the checkpoint (`hvd.BroadcastGlobalVariablesHook` needed tf.estimator and is
    not in Horovod builds for TF 2.21).
    """

    def __init__(self, hvd, root_rank=0):
        self._hvd = hvd
        self._root_rank = root_rank

    def begin(self):
        self._broadcast = self._hvd.broadcast_global_variables(self._root_rank)

    def after_create_session(self, session, coord):
        session.run(self._broadcast)


def create(use_horovod, fp16_compression=False, rank_timeout_seconds=0, output_dir=None):
    """The handle of this process: `Horovod(...)` (arguments: see there) or `SingleProcess()`."""
    if use_horovod:
        return Horovod(fp16_compression, rank_timeout_seconds, output_dir)
    return SingleProcess()


HEARTBEAT_DIR = ".heartbeat"  # under the output dir; hidden: no data listing or glob takes it
EXIT_STALLED = 75  # sysexits' EX_TEMPFAIL: a temporary failure, re-running resumes
FIRST_STEP_FACTOR = 3  # the first step of a session (graph optimisation, XLA) may take this x
HOROVOD_SHUTDOWN_FACTOR = 4  # Horovod's stall shutdown, after this x the timeout
COUNTED_PHASES = ("first", "step")  # inside a training session run: waiting counts
BUSY_PHASES = ("starting", "between")  # local work (build, restore, save, eval): never a stall


def heartbeat_path(output_dir, rank):
    """OUTPUT_DIR/.heartbeat/rank-R.json: rank R's heartbeat (one JSON object, replaced whole)."""
    return os.path.join(output_dir, HEARTBEAT_DIR, f"rank-{rank}.json")


def stalled_ranks(rank, phase, waited, step, timeout, peers):
    """Decides, for rank `rank` that has waited `waited` s inside its training step (`phase`
    "first" or "step"; `step` its last completed global step), whether the job is stalled.

    `peers` maps every other rank to its heartbeat: a dict with `age` (seconds since its file
    was last written, by the file system's clock), `phase`, `step`, or None when it has none.
    Returns None to keep waiting, or (ranks to blame, why) with why "stopped" (their heartbeats
    stopped: the process is stopped, dead or starved) or "stuck" (every rank is alive and inside
    its step, which does not finish: an input, an op or a collective hangs). "stuck" names the
    ranks with the lowest step (all of them when the steps are equal) and needs every heartbeat
    fresh (younger than timeout / 2).
    """
    stopped = [r for r, p in sorted(peers.items())
               if p is not None and p["phase"] != "done" and p["age"] > timeout]
    if stopped:
        return stopped, "stopped"
    limit = timeout * (FIRST_STEP_FACTOR if phase == "first" else 1)
    if waited <= limit:
        return None
    if any(p is not None and p["phase"] in BUSY_PHASES for p in peers.values()):
        return None  # a rank is restoring, saving or evaluating: the others wait for it
    if any(p is not None and p["phase"] != "done" and p["age"] > timeout / 2
           for p in peers.values()):
        return None  # a heartbeat is late (beats come every timeout/5 at most): soon "stopped"
    steps = {rank: step, **{r: p["step"] for r, p in peers.items()
                            if p is not None and p["phase"] in COUNTED_PHASES}}
    behind = min(-1 if s is None else s for s in steps.values())
    return sorted(r for r, s in steps.items() if (-1 if s is None else s) == behind), "stuck"


class Watchdog:
    """Ends this process when its training step stalls; see the module docstring.

    The training thread reports through `HeartbeatHook`; a daemon thread writes the heartbeat
    every `period` seconds and checks the timeout. Thread-safe.
    """

    def __init__(self, rank, size, timeout, output_dir=None):
        self.rank, self.size, self.timeout = rank, size, float(timeout)
        self.output_dir = output_dir
        # Heartbeats are local files (a shared file system between machines); none for URLs.
        self._files = bool(output_dir) and "://" not in output_dir
        self.period = min(5.0, max(0.5, self.timeout / 5))
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one writer of the heartbeat file at a time
        self._phase, self._since = "starting", time.monotonic()
        self._session = None
        self._step = self._step_time = None
        self._beats = 0
        self._warned = False
        self._thread = threading.Thread(target=self._run, name="rank-watchdog", daemon=True)

    def start(self):
        self._write_heartbeat()
        self._thread.start()

    # Reports of the training thread (HeartbeatHook).
    def session_created(self, session):
        with self._lock:
            self._phase, self._since, self._session = "first", time.monotonic(), session

    def step_started(self):
        with self._lock:
            if self._phase != "first":
                self._phase, self._since = "step", time.monotonic()

    def step_finished(self, step):
        with self._lock:
            self._phase, self._since = "between", time.monotonic()
            if step is not None:
                self._step = int(step)
            self._step_time = time.time()

    def session_ended(self):
        with self._lock:
            self._phase, self._since, self._session = "done", time.monotonic(), None
        self._write_heartbeat()  # now: the process may exit before the next beat

    # The watchdog thread.
    def _run(self):
        tick = time.monotonic()
        while True:
            time.sleep(self.period)
            last_tick, tick = tick, time.monotonic()
            with self._lock:
                session = self._session
                if session is not None and getattr(session, "_closed", False):
                    # The session ended by an exception (hooks' end() did not run).
                    self._phase, self._since, self._session = "done", tick, None
                if tick - last_tick > 2 * self.period + 1:
                    # This process itself was stopped (SIGSTOP, suspended VM) or starved: the
                    # wait is not the others' fault. Count it afresh.
                    self._since = tick
                phase, waited, step = self._phase, tick - self._since, self._step
            self._write_heartbeat()
            if phase in COUNTED_PHASES and waited > self.timeout:
                verdict = stalled_ranks(self.rank, phase, waited, step, self.timeout,
                                        self._read_peers())
                if verdict:
                    self._stop(*verdict, waited)

    def _write_heartbeat(self):
        if not self._files:
            return
        with self._lock:
            self._beats += 1
            record = {"rank": self.rank, "beat": self._beats, "phase": self._phase,
                      "step": self._step, "step_time": self._step_time,
                      "host": socket.gethostname(), "pid": os.getpid()}
        path = heartbeat_path(self.output_dir, self.rank)
        try:
            with self._write_lock:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path + ".tmp", "w", encoding="utf-8") as f:
                    json.dump(record, f)
                os.replace(path + ".tmp", path)
        except OSError as error:
            if not self._warned:
                self._warned = True
                tf.get_logger().warning("rank %d cannot write its heartbeat %s (%s): a stalled "
                                        "rank will not be named", self.rank, path, error)

    def _read_peers(self):
        """{rank: heartbeat dict with "age", or None} of the other ranks."""
        if not self._files:
            return dict.fromkeys(r for r in range(self.size) if r != self.rank)
        try:  # this rank's file was just written: its time is "now" by the file system's clock
            now = os.stat(heartbeat_path(self.output_dir, self.rank)).st_mtime
        except OSError:
            now = time.time()
        peers = {}
        for r in range(self.size):
            if r == self.rank:
                continue
            path = heartbeat_path(self.output_dir, r)
            try:
                mtime = os.stat(path).st_mtime
                with open(path, encoding="utf-8") as f:
                    peers[r] = dict(json.load(f), age=now - mtime)
            except (OSError, ValueError):
                peers[r] = None
        return peers

    def _stop(self, ranks, why, waited):
        """Prints the one-line diagnosis and ends the process (a thread cannot raise into a
        process blocked in a C++ collective)."""
        peers = self._read_peers()
        with self._lock:
            own = {"step": self._step, "step_time": self._step_time}
        now = time.time()

        def describe(r):
            beat = peers.get(r) or {}
            if r == self.rank or why == "stopped" or beat.get("step") is None:
                # Steps are synchronous: a rank that stopped finished the step this one did
                # (its heartbeat, written every few seconds, may be older than that).
                beat = own
            last, idle = "no step yet", waited
            if beat.get("step") is not None and beat.get("step_time"):
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(beat["step_time"]))
                last, idle = f"last step {beat['step']} at {stamp}", now - beat["step_time"]
            return f"rank {r} made no progress for {idle:.0f} s ({last})"

        if why == "stopped":
            cause = ("its heartbeat stopped: the process is stopped, dead or starved" if
                     len(ranks) == 1 else "their heartbeats stopped: stopped, dead or starved")
        else:
            cause = (f"every rank is alive; rank {self.rank} waited {waited:.0f} s inside one "
                     "step: an input, an op or a collective hangs (Horovod's stall warning "
                     "above names the ranks missing from the collective)")
        try:
            latest = tf.train.latest_checkpoint(self.output_dir) if self.output_dir else None
        except Exception:  # noqa: BLE001 - the diagnosis must get out whatever the file system
            latest = None
        restart = (f"Restart from the last checkpoint ({latest}): run the same command again"
                   if latest else "No checkpoint was saved yet: re-running starts over")
        message = (f"{os.path.basename(sys.argv[0] or 'python')}: error: "
                   f"{', '.join(describe(r) for r in ranks)}; {cause} "
                   f"(--rank_timeout_seconds={self.timeout:g}); every rank stops. {restart}.\n")
        try:
            sys.stderr.write(message)
            sys.stderr.flush()
        finally:
            os._exit(EXIT_STALLED)


class HeartbeatHook(tf.compat.v1.train.SessionRunHook):
    """Tells the `Watchdog` when this rank's training steps (session runs) start and finish."""

    def __init__(self, watchdog):
        self._watchdog = watchdog

    def begin(self):
        graph = tf.compat.v1.get_default_graph()
        try:  # the step after the update, as estimator.Estimator.train names it
            self._step = graph.get_tensor_by_name("global_step_after:0")
        except KeyError:
            self._step = tf.compat.v1.train.get_global_step()

    def after_create_session(self, session, coord):
        self._watchdog.session_created(session)

    def before_run(self, run_context):
        self._watchdog.step_started()
        return tf.compat.v1.train.SessionRunArgs(self._step) if self._step is not None else None

    def after_run(self, run_context, run_values):
        self._watchdog.step_finished(run_values.results)

    def end(self, session):
        self._watchdog.session_ended()
