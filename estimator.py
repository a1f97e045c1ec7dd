"""An Estimator-style runner on `tf.compat.v1.train.MonitoredTrainingSession` (TF 2.21 has no
`tf.estimator`).

Contract (tf.estimator's):
  model_fn(features, labels, mode, params) -> `Spec`
  input_fn(params) -> tf.data.Dataset of `features` dicts; `params["skip_steps"]` is the number of
    updates whose input the dataset must leave out (skip) at its start: 0 on a fresh run and on a
    resume that restores the saved input position, the checkpoint's step on a resume without one.

`Estimator.train` builds a fresh graph, restores the latest checkpoint of `model_dir` (or, when
there is none, runs `warm_start`, e.g. loading an init checkpoint), then runs `train_op` once per
micro-batch until `global_step` reaches `max_steps`. Built-in hooks: `StepLoggingHook` (stops
at `max_steps`; losses, learning rate, sequences/s to a `train_logging.RunLogger`; on the chief
a `progress.Progress` line with steps, loss, seq/s and ETA, as evaluation has one for batches),
`EvaluationHook` (an `Evaluation` during training) and, on the chief only, `CheckpointHook`.
Extra hooks come in through `hooks`; the Horovod variable broadcast goes there (it must run
after restore and warm start, which `after_create_session` hooks do).

Checkpoints: TF1 Saver; a checkpoint becomes the latest only when `Saver.save` has written it
completely (the `checkpoint` state file is replaced atomically as its last step), and a resumed
run never rewrites the checkpoint it restored from. Beside each checkpoint every rank saves its
input position (the tf.data iterator's state, `InputState`), first, so that a resume restores the
position in constant time and sees exactly the batches an uninterrupted run would.

Faults end the run with `TrainingError` (one line naming the problem, the latest complete
checkpoint and the fix), never with a bad checkpoint: an update with non-finite gradients is not
applied (optimization.py) and `NonFiniteUpdateHook` stops the run after
`max_consecutive_skips` of them in a row; weights holding NaN/Inf are never saved; a save that
fails (full disk, permissions) removes its partial files and leaves the previous checkpoint the
latest.
"""

import glob
import os
import shutil
import time
from typing import NamedTuple

import tensorflow as tf
from absl import logging

from distributed import SingleProcess
from progress import Progress
from train_logging import RunLogger

tf1 = tf.compat.v1


class TrainingError(RuntimeError):
    """A training run cannot go on (non-finite updates, a failed save); the message says why, which
    checkpoint is the latest complete one, and what to do."""


class ModeKeys:
    TRAIN = "train"
    EVAL = "eval"
    PREDICT = "infer"


class PredictedBatch(NamedTuple):
    """One batch of `Estimator.predict`: {name: numpy array} and the seconds its run took."""

    values: dict
    seconds: float


class Spec(NamedTuple):
    """What `model_fn` returns.

    loss: scalar float32 tensor.
    train_op: the op run once per micro-batch (TRAIN).
    eval_metric_ops: {name: (value_tensor, update_op)} as from tf.compat.v1.metrics (EVAL).
    logged_tensors: {name: scalar tensor} fetched every step for the logging hook, e.g.
      "mlm_loss", "learning_rate", "loss_scale".
    predictions: {name: tensor}, optional.
    skipped_steps: int64 variable counting updates skipped for non-finite gradients (TRAIN), as
      `optimization.create_optimizer` returns it; None: nothing is ever skipped.
    """

    loss: tf.Tensor
    train_op: tf.Operation | None = None
    eval_metric_ops: dict | None = None
    logged_tensors: dict | None = None
    predictions: dict | None = None
    skipped_steps: tf.Variable | None = None


class RunConfig(NamedTuple):
    """Where and how a run saves, logs and computes.

    sequences_per_run: sequences one run of train_op consumes over all ranks (micro-batch x
      ranks), for throughput.
    warmup_steps: micro-batch runs at the start left out of the sequences/s figures.
    max_consecutive_skips: the run stops (TrainingError) when this many updates in a row were
      skipped for non-finite gradients; 1 stops at the first (right without loss scaling, where
      a non-finite update does not fix itself).
    """

    model_dir: str
    save_checkpoints_steps: int = 1000
    keep_checkpoint_max: int = 5
    log_every_steps: int = 10
    sequences_per_run: int = 1
    warmup_steps: int = 3
    session_config: tf1.ConfigProto | None = None
    seed: int | None = None
    distributed: object = SingleProcess()
    max_consecutive_skips: int = 1


class Evaluation(NamedTuple):
    """Evaluation during training, in the training session (every rank runs it on the same
    weights and data, so every rank takes the same decision).

    input_fn: the eval input_fn (called with params).
    every_steps: evaluate whenever the global step reaches a multiple of this, and at the last
      step of the run.
    max_batches: at most this many batches per evaluation (None: one pass of the input).
    on_result: callable(step, results) with results = {metric: value, "loss", "eval_batches",
      "eval_sequences", "eval_seconds"}; returns True to stop training at this step.
    """

    input_fn: object
    every_steps: int
    max_batches: int | None
    on_result: object


class Estimator:
    """Trains and evaluates `model_fn` (see the module docstring)."""

    def __init__(self, model_fn, config, params=None, warm_start=None, logger=None):
        """Args:
          warm_start: callable run in TRAIN graphs (and EVAL graphs without a checkpoint) after
            model_fn when `model_dir` has no checkpoint, on the chief; it sets initializers, e.g.
            `modeling.init_from_checkpoint(path)`.
          logger: `train_logging.RunLogger` (default: none, nothing is reported).
        """
        self.model_fn = model_fn
        self.config = config
        self.params = dict(params or {})
        self.warm_start = warm_start
        self.logger = logger or RunLogger()

    @property
    def is_chief(self):
        return self.config.distributed.is_chief

    def latest_checkpoint(self):
        """Prefix of the newest complete checkpoint in `model_dir`, or None."""
        return tf1.train.latest_checkpoint(self.config.model_dir)

    def checkpoint_step(self):
        """Global step of the latest checkpoint in `model_dir` (0 without one)."""
        latest = self.latest_checkpoint()
        return int(tf.train.load_variable(latest, "global_step")) if latest else 0

    def _checkpoint_to_use(self, checkpoint_path, purpose):
        """`checkpoint_path`, else the latest of `model_dir`; None means the warm start.
        ValueError when there is neither."""
        checkpoint_path = checkpoint_path or self.latest_checkpoint()
        if checkpoint_path is None and self.warm_start is None:
            raise ValueError(f"no checkpoint to {purpose} in {self.config.model_dir}: train "
                             "first (--do_train) or pass --init_checkpoint")
        return checkpoint_path

    def _session_creator(self, checkpoint_path):
        """A chief session creator restoring `checkpoint_path` (None: the initializers)."""
        return tf1.train.ChiefSessionCreator(
            scaffold=tf1.train.Scaffold(saver=tf1.train.Saver() if checkpoint_path else None),
            checkpoint_filename_with_path=checkpoint_path, config=self.config.session_config)

    def _build(self, input_fn, mode, skip_steps):
        """Builds input, model and warm start in the current graph; returns (spec, features,
        iterator)."""
        if self.config.seed is not None:
            tf1.set_random_seed(self.config.seed)
        dataset = input_fn(dict(self.params, skip_steps=skip_steps))
        iterator = tf1.data.make_one_shot_iterator(dataset)
        features = iterator.get_next()
        spec = self.model_fn(features, None, mode, self.params)
        if self.warm_start and self.is_chief and self.latest_checkpoint() is None:
            self.warm_start()
        return spec, features, iterator

    def train(self, input_fn, max_steps, hooks=(), input_fingerprint="", evaluation=None):
        """Trains until global_step == max_steps (or `evaluation.on_result` says stop), resuming
        from `model_dir`; returns the run's summary ({global_step, steps, wall_seconds,
        throughput_train, final_loss}, as logged).

        `input_fingerprint` describes what `input_fn` reads (files, sizes, batch, seed): a saved
        input position is restored only into a pipeline of the same fingerprint; otherwise the
        resume skips the consumed records. Returns at once when the latest checkpoint is already
        at `max_steps`. Raises TrainingError when the run cannot go on (module docstring).
        """
        start_step = self.checkpoint_step()
        if start_step >= max_steps:
            summary = {"global_step": start_step, "note": "already trained"}
            self.logger.summary("train", summary)
            return summary
        distributed = self.config.distributed
        restore_input = start_step > 0 and InputState.exists(
            self.config.model_dir, distributed.rank, start_step, input_fingerprint)
        if start_step > 0 and not restore_input:
            logging.warning("no saved input position for step %d on rank %d with this input "
                            "(files, batch size, seed): reaching it by reading and skipping the "
                            "records of %d updates", start_step, distributed.rank, start_step)
        with tf.Graph().as_default():
            spec, _, iterator = self._build(input_fn, ModeKeys.TRAIN,
                                            0 if restore_input else start_step)
            global_step = tf1.train.get_global_step()
            if global_step is None or spec.train_op is None:
                raise ValueError("model_fn in TRAIN mode must return a train_op and create the "
                                 "global step (optimization.create_optimizer does)")
            with tf.control_dependencies([spec.train_op]):
                step_after = tf.identity(global_step.read_value(), name="global_step_after")
                skipped_after = (None if spec.skipped_steps is None
                                 else tf.identity(spec.skipped_steps.read_value()))
            input_state = InputState(self.config.model_dir, distributed.rank, iterator,
                                     self.config.keep_checkpoint_max, input_fingerprint)
            saver = tf1.train.Saver(max_to_keep=self.config.keep_checkpoint_max,
                                    save_relative_paths=True)
            state = tf1.train.get_checkpoint_state(self.config.model_dir)
            if state:  # keep_checkpoint_max counts the checkpoints of earlier runs too
                saver.recover_last_checkpoints(list(state.all_model_checkpoint_paths))
            logged = dict(spec.logged_tensors or {}, total_loss=spec.loss)
            logging_hook = StepLoggingHook(step_after, logged, max_steps, self.config,
                                           self.logger)
            all_hooks = [*hooks]  # extra hooks (a broadcast) see the session first
            if restore_input:
                all_hooks.append(_RestoreInputHook(input_state, start_step))
            all_hooks.append(logging_hook)
            if evaluation is not None:
                all_hooks.append(self._evaluation_hook(evaluation, step_after, max_steps))
            if skipped_after is not None:
                all_hooks.append(NonFiniteUpdateHook(
                    step_after, skipped_after, logged, self.config.max_consecutive_skips,
                    self.config.model_dir))
            all_hooks.append(CheckpointHook(saver if self.is_chief else None, input_state,
                                            self.config.model_dir, step_after,
                                            self.config.save_checkpoints_steps))
            with tf1.train.MonitoredTrainingSession(
                    checkpoint_dir=self.config.model_dir if self.is_chief else None,
                    scaffold=tf1.train.Scaffold(saver=saver), hooks=all_hooks,
                    config=self.config.session_config, save_checkpoint_secs=None,
                    save_checkpoint_steps=None, save_summaries_steps=None,
                    save_summaries_secs=None, log_step_count_steps=None) as session:
                while not session.should_stop():
                    session.run(spec.train_op)
        summary = logging_hook.summary()
        if self.is_chief:
            summary["checkpoints"] = self.config.model_dir
        self.logger.summary("train", summary)
        return summary

    def _evaluation_hook(self, evaluation, step_after, max_steps):
        """Builds the EVAL model on the training graph's variables (model_fn must name its
        variable scopes, not rely on default names) and returns the hook running it."""
        dataset = evaluation.input_fn(dict(self.params, skip_steps=0))
        iterator = tf1.data.make_initializable_iterator(dataset)
        features = iterator.get_next()
        known = set(tf1.get_collection(tf1.GraphKeys.METRIC_VARIABLES))
        with tf1.variable_scope(tf1.get_variable_scope(), reuse=True), \
                tf1.name_scope("evaluation"):
            spec = self.model_fn(features, None, ModeKeys.EVAL, self.params)
            values, updates, batch_size = _eval_ops(spec, features)
        fresh = [v for v in tf1.get_collection(tf1.GraphKeys.METRIC_VARIABLES) if v not in known]
        return EvaluationHook(
            evaluation, step_after, max_steps,
            start=tf.group(iterator.initializer, tf1.variables_initializer(fresh)),
            update=(updates, batch_size), values=values, show_progress=self.is_chief)

    def evaluate(self, input_fn, steps=None, checkpoint_path=None):
        """Evaluates the latest checkpoint (or `checkpoint_path`, or the warm start) over at most
        `steps` batches or one pass of the input; returns {metric: value, "loss", "global_step"}.

        Raises ValueError when there is nothing to evaluate.
        """
        checkpoint_path = self._checkpoint_to_use(checkpoint_path, "evaluate")
        with tf.Graph().as_default():
            spec, features, _ = self._build(input_fn, ModeKeys.EVAL, 0)
            global_step = tf1.train.get_or_create_global_step()
            values, updates, batch_size = _eval_ops(spec, features)
            values["global_step"] = global_step
            creator = self._session_creator(checkpoint_path)
            final = _FinalValuesHook(values)
            batches = sequences = 0
            start = time.monotonic()
            progress = Progress("eval", steps, unit="batches") if self.is_chief else None
            with tf1.train.MonitoredSession(session_creator=creator, hooks=[final]) as session:
                while not session.should_stop() and (steps is None or batches < steps):
                    sequences += int(session.run([updates, batch_size])[1])
                    batches += 1
                    if progress:
                        progress.update(1)
            if progress:
                progress.close()
            seconds = time.monotonic() - start
        results = {name: _plain(value) for name, value in final.values.items()}
        self.logger.summary("eval", dict(results, eval_batches=batches, eval_sequences=sequences,
                                         eval_seconds=round(seconds, 2)))
        return results


    def predict(self, input_fn, checkpoint_path=None):
        """Yields a `PredictedBatch` of model_fn's PREDICT-mode `predictions` for every batch of
        one pass of the input, from the latest checkpoint (or `checkpoint_path`, or the warm
        start).

        Raises ValueError when there is no checkpoint and no warm start.
        """
        checkpoint_path = self._checkpoint_to_use(checkpoint_path, "predict with")
        with tf.Graph().as_default():
            spec, _, _ = self._build(input_fn, ModeKeys.PREDICT, 0)
            if not spec.predictions:
                raise ValueError("model_fn in PREDICT mode must return predictions")
            creator = self._session_creator(checkpoint_path)
            with tf1.train.MonitoredSession(session_creator=creator) as session:
                while not session.should_stop():
                    start = time.monotonic()
                    values = session.run(spec.predictions)
                    yield PredictedBatch(values, time.monotonic() - start)


def train_and_evaluate(estimator, train_input_fn, eval_input_fn, max_steps, eval_steps=None,
                       hooks=()):
    """Trains to `max_steps`, then evaluates the final checkpoint; returns the eval results."""
    estimator.train(train_input_fn, max_steps, hooks=hooks)
    return estimator.evaluate(eval_input_fn, steps=eval_steps)


class StepLoggingHook(tf1.train.SessionRunHook):
    """Stops the run at `max_steps`; every `log_every_steps` updates reports the step's losses,
    learning rate, loss scale and the sequences/s of the interval; at the end `summary()` gives
    the run's totals.

    Timing covers the session runs only (not checkpoint saving or hooks after this one), leaving
    out the first `warmup_steps` runs of the process.
    """

    def __init__(self, step_after, tensors, max_steps, config, logger):
        self._fetches = {"step": step_after, **tensors}
        self._max_steps = max_steps
        self._config = config
        self._logger = logger
        self._runs = 0
        self._timed_runs = 0
        self._timed_seconds = 0.0
        self._interval = [0, 0.0]  # timed runs, seconds since the last report
        self._loss_sum = [0.0, 0]  # total loss sum, runs since the last report

    def after_create_session(self, session, coord):
        self._start_step = self._last_step = int(session.run(tf1.train.get_global_step()))
        self._wall_start = time.monotonic()
        self._progress = (Progress("train", self._max_steps - self._start_step, unit="steps")
                          if self._config.distributed.is_chief else None)

    def before_run(self, run_context):
        self._t0 = time.monotonic()
        return tf1.train.SessionRunArgs(self._fetches)

    def after_run(self, run_context, run_values):
        seconds = time.monotonic() - self._t0
        values = run_values.results
        self._runs += 1
        if self._runs > self._config.warmup_steps:
            self._timed_runs += 1
            self._timed_seconds += seconds
            self._interval[0] += 1
            self._interval[1] += seconds
        self._last_loss = float(values["total_loss"])
        self._loss_sum[0] += self._last_loss
        self._loss_sum[1] += 1
        step = int(values["step"])
        updated, self._last_step = step != self._last_step, step
        if step >= self._max_steps:
            run_context.request_stop()
        if updated and self._progress:
            detail = f"loss {float(values['total_loss']):.4g}"
            if self._timed_runs:
                rate = self._sequences_per_second(self._timed_runs, self._timed_seconds)
                detail += f", {rate:.1f} seq/s"
            self._progress.update(1, detail)
        if updated and (step % self._config.log_every_steps == 0 or step == self._start_step + 1
                        or step >= self._max_steps):
            self._report(step, values)

    def end(self, session):
        if self._progress:
            self._progress.close()

    def _report(self, step, values):
        metrics = {name: float(value) for name, value in values.items() if name != "step"}
        metrics["avg_loss_step"] = self._loss_sum[0] / self._loss_sum[1]
        runs, seconds = self._interval
        if runs:
            metrics["throughput_train"] = self._sequences_per_second(runs, seconds)
        if self._progress:
            self._progress.clear()
        self._logger.step(step, metrics)
        self._interval = [0, 0.0]
        self._loss_sum = [0.0, 0]

    def _sequences_per_second(self, runs, seconds):
        """Sequences/s over all ranks of `runs` runs of train_op taking `seconds`."""
        return runs * self._config.sequences_per_run / max(seconds, 1e-9)

    def summary(self):
        """{global_step, steps, wall_seconds, timed sequences/s, final_loss (the last
        micro-batch's total loss)} of this process's run."""
        result = {"global_step": self._last_step, "steps": self._last_step - self._start_step,
                  "wall_seconds": round(time.monotonic() - self._wall_start, 2)}
        if self._runs:
            result["final_loss"] = round(self._last_loss, 6)
        if self._timed_runs:
            result["throughput_train"] = round(
                self._sequences_per_second(self._timed_runs, self._timed_seconds), 2)
        return result


class EvaluationHook(tf1.train.SessionRunHook):
    """Runs an `Evaluation` in the training session after the updates that reach its interval
    or the run's last step; stops the run when `on_result` returns True."""

    def __init__(self, evaluation, step_after, max_steps, start, update, values,
                 show_progress):
        self._evaluation = evaluation
        self._step_after = step_after
        self._max_steps = max_steps
        self._start, self._update, self._values = start, update, values
        self._show_progress = show_progress

    def after_create_session(self, session, coord):
        self._last_step = int(session.run(tf1.train.get_global_step()))

    def before_run(self, run_context):
        return tf1.train.SessionRunArgs(self._step_after)

    def after_run(self, run_context, run_values):
        step = int(run_values.results)
        updated, self._last_step = step != self._last_step, step
        due = updated and (step % self._evaluation.every_steps == 0 or step >= self._max_steps)
        if due and self._evaluation.on_result(step, self.evaluate(run_context.session)):
            run_context.request_stop()

    def evaluate(self, session):
        """One evaluation in `session`: {metric: value, "loss", eval_batches, eval_sequences,
        eval_seconds}."""
        limit = self._evaluation.max_batches
        progress = Progress("eval", limit, unit="batches") if self._show_progress else None
        start = time.monotonic()
        session.run(self._start)
        batches = sequences = 0
        while limit is None or batches < limit:
            try:
                sequences += int(session.run(self._update)[1])
            except tf.errors.OutOfRangeError:
                break
            batches += 1
            if progress:
                progress.update(1)
        if progress:
            progress.close()
        results = {name: _plain(value) for name, value in session.run(self._values).items()}
        return dict(results, eval_batches=batches, eval_sequences=sequences,
                    eval_seconds=round(time.monotonic() - start, 2))


class InputState:
    """This rank's input position: the state of the training tf.data iterator (file order,
    offsets, shuffle buffer, prefetched batches), saved in `model_dir/input_state/rank-R/` at
    every checkpoint step, so that a resume restores it instead of reading the consumed records.

    Its size does not grow with the step; the pipeline must be serializable (no Python functions
    or stateful ops in it: saving fails loudly otherwise). The directory's `fingerprint` file
    names the input the states belong to; a run on other input starts the directory afresh.
    """

    def __init__(self, model_dir, rank, iterator, keep, fingerprint=""):
        self.directory = self.directory_of(model_dir, rank)
        self._fingerprint = fingerprint
        saveable = tf1.data.experimental.make_saveable_from_iterator(iterator)
        # One more than the model checkpoints kept: the input state of a step is written first,
        # so the oldest kept checkpoint keeps its input state until the newer model save is done.
        self._saver = tf1.train.Saver([saveable], max_to_keep=keep + 1,
                                      save_relative_paths=True)
        state = tf1.train.get_checkpoint_state(self.directory)
        if state:
            self._saver.recover_last_checkpoints(list(state.all_model_checkpoint_paths))

    @staticmethod
    def directory_of(model_dir, rank):
        return os.path.join(model_dir, "input_state", f"rank-{rank}")

    @staticmethod
    def step_prefix(directory, step):
        """The checkpoint prefix of the input position of `step` in `directory`."""
        return os.path.join(directory, f"input.ckpt-{step}")

    @classmethod
    def exists(cls, model_dir, rank, step, fingerprint=""):
        """Whether the input position of `step` was saved completely on `rank`, for the input
        that `fingerprint` describes."""
        directory = cls.directory_of(model_dir, rank)
        return (cls._stored_fingerprint(directory) == fingerprint
                and tf.io.gfile.exists(cls.step_prefix(directory, step) + ".index"))

    @staticmethod
    def _stored_fingerprint(directory):
        try:
            with open(os.path.join(directory, "fingerprint"), encoding="utf-8") as f:
                return f.read()
        except OSError:
            return None

    def save(self, session, step):
        if self._stored_fingerprint(self.directory) != self._fingerprint:
            shutil.rmtree(self.directory, ignore_errors=True)  # states of another input
            os.makedirs(self.directory)
            path = os.path.join(self.directory, "fingerprint")
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                f.write(self._fingerprint)
            os.replace(path + ".tmp", path)
        self._saver.save(session, os.path.join(self.directory, "input.ckpt"), global_step=step,
                         write_meta_graph=False)

    def restore(self, session, step):
        self._saver.restore(session, self.step_prefix(self.directory, step))


class _RestoreInputHook(tf1.train.SessionRunHook):
    """Restores the saved input position of `step` once the session exists."""

    def __init__(self, input_state, step):
        self._input_state = input_state
        self._step = step

    def after_create_session(self, session, coord):
        start = time.monotonic()
        try:
            self._input_state.restore(session, self._step)
        except tf.errors.OpError as error:
            raise TrainingError(
                f"cannot restore the input position of step {self._step} from "
                f"{self._input_state.directory} "
                f"({op_error_reason(error)}); delete that directory to resume by "
                "re-reading the input (slower, the same batches)") from None
        logging.info("restored the input position of step %d in %.2f s", self._step,
                     time.monotonic() - start)


class NonFiniteUpdateHook(tf1.train.SessionRunHook):
    """Stops the run (TrainingError) after `max_consecutive` updates in a row were skipped for
    non-finite gradients, naming the step, the losses and the latest complete checkpoint.

    The skipped updates changed nothing, so nothing is lost beyond them; nothing is saved at the
    end of a run stopped this way (CheckpointHook.end does not run after an exception).
    """

    def __init__(self, step_after, skipped_after, losses, max_consecutive, model_dir):
        self._fetches = {"step": step_after, "skipped": skipped_after, **losses}
        self._max_consecutive = max_consecutive
        self._model_dir = model_dir
        self._in_a_row = 0

    def after_create_session(self, session, coord):
        self._skipped = None

    def before_run(self, run_context):
        return tf1.train.SessionRunArgs(self._fetches)

    def after_run(self, run_context, run_values):
        values = run_values.results
        skipped = int(values["skipped"])
        if self._skipped is not None and skipped > self._skipped:
            self._in_a_row += skipped - self._skipped
        elif self._skipped is not None and int(values["step"]) > self._last_step:
            self._in_a_row = 0
        self._skipped, self._last_step = skipped, int(values["step"])
        if self._in_a_row >= self._max_consecutive:
            raise TrainingError(self._message(values))

    def _message(self, values):
        losses = ", ".join(f"{name} {float(value):.4g}" for name, value in sorted(values.items())
                           if name.endswith("loss") or name == "loss_scaler")
        what = ("a non-finite update" if self._max_consecutive == 1 else
                f"{self._in_a_row} non-finite updates in a row (--max_consecutive_skips)")
        return (f"stopped at step {int(values['step'])} after {what}: gradients hold NaN or Inf "
                f"({losses}); the update was not applied. Latest good checkpoint: "
                f"{_latest_checkpoint(self._model_dir)}. {NON_FINITE_FIXES}")


class CheckpointHook(tf1.train.SessionRunHook):
    """Saves every `save_steps` updates and at the end: every rank its `InputState`, then the
    chief (the one with a `saver`) the model to `model_dir/model.ckpt-STEP`.

    Never saves at the step the session started from: that checkpoint exists already (a resumed
    run must not rewrite the file it restored), or the run has not trained yet. Never saves
    weights holding NaN or Inf. A failed save (full disk, permissions) removes its partial files
    and raises TrainingError; the previous checkpoint stays the latest.
    """

    def __init__(self, saver, input_state, model_dir, step_after, save_steps):
        self._saver = saver
        self._input_state = input_state
        self._model_dir = model_dir
        self._prefix = os.path.join(model_dir, "model.ckpt")
        self._step_after = step_after
        self._save_steps = save_steps

    def begin(self):
        floating = [v for v in tf1.global_variables() if v.dtype.base_dtype.is_floating]
        self._all_finite = tf.reduce_all(
            [tf.reduce_all(tf.math.is_finite(v.read_value())) for v in floating])
        self._checkpoint_bytes = sum(
            v.shape.num_elements() * v.dtype.base_dtype.size for v in tf1.global_variables()
            if v.shape.is_fully_defined())

    def after_create_session(self, session, coord):
        self._saved_step = self._step = int(session.run(tf1.train.get_global_step()))

    def before_run(self, run_context):
        return tf1.train.SessionRunArgs(self._step_after)

    def after_run(self, run_context, run_values):
        self._step = int(run_values.results)
        if self._step // self._save_steps != self._saved_step // self._save_steps:
            self._save(run_context.session)

    def end(self, session):
        if self._step != self._saved_step:
            self._save(session)

    def _save(self, session):
        if self._saver is not None and not session.run(self._all_finite):
            raise TrainingError(
                f"weights hold NaN or Inf at step {self._step}: not saved. Latest good "
                f"checkpoint: {_latest_checkpoint(self._model_dir)}. {NON_FINITE_FIXES}")
        try:
            self._input_state.save(session, self._step)
            if self._saver is not None:
                self._saver.save(session, self._prefix, global_step=self._step,
                                 write_meta_graph=False)
        except (tf.errors.OpError, OSError) as error:
            self._remove_partial_files()
            raise TrainingError(self._save_failure(error)) from None
        self._saved_step = self._step

    def _remove_partial_files(self):
        """Deletes what the failed save of this step wrote, unless it became the latest."""
        prefix = f"{self._prefix}-{self._step}"
        partial = []
        if tf1.train.latest_checkpoint(self._model_dir) != prefix:
            partial += glob.glob(glob.escape(prefix) + ".*") + glob.glob(glob.escape(prefix)
                                                                         + "_temp*")
        state_prefix = InputState.step_prefix(self._input_state.directory, self._step)
        if tf1.train.latest_checkpoint(self._input_state.directory) != state_prefix:
            partial += glob.glob(glob.escape(state_prefix) + ".*")
        for directory in (self._model_dir, self._input_state.directory):
            partial += glob.glob(os.path.join(glob.escape(directory), "checkpoint.tmp*"))
        for path in partial:
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                _unlink(path)

    def _save_failure(self, error):
        reason = op_error_reason(error) if isinstance(error, tf.errors.OpError) else str(error)
        try:
            free = f"{shutil.disk_usage(self._model_dir).free / 2**20:.1f} MB free"
        except OSError:
            free = "free space unknown"
        return (f"cannot save the checkpoint of step {self._step} in {self._model_dir}: "
                f"{reason}. A checkpoint needs about "
                f"{self._checkpoint_bytes / 2**20:.1f} MB ({free}); free space or fix the "
                "permissions there, or pass another --output_dir. The latest complete "
                f"checkpoint, {_latest_checkpoint(self._model_dir)}, is intact: re-running "
                "resumes from it")


NON_FINITE_FIXES = "Lower --learning_rate, use --amp loss scaling, or check the data"


def _latest_checkpoint(model_dir):
    """The latest complete checkpoint of `model_dir`, or a phrase saying there is none."""
    return tf1.train.latest_checkpoint(model_dir) or "none (nothing was saved yet)"


def op_error_reason(error):
    """The line of a TensorFlow OpError's message that says what went wrong (not the "Graph
    execution error" header, nor the Python stack of the failing node)."""
    lines = [line.strip() for line in error.message.splitlines()]
    noise = ("Graph execution error", "Detected at node", "File ", "Node:", "[[", "Hint:")
    reasons = [line for line in lines if line and not line.startswith(noise)]
    return reasons[0] if reasons else lines[0]


def _unlink(path):
    try:
        os.remove(path)
    except OSError:
        pass


class _FinalValuesHook(tf1.train.SessionRunHook):
    """Evaluates `tensors` once when the session ends (after the last metric update)."""

    def __init__(self, tensors):
        self._tensors = tensors
        self.values = {}

    def end(self, session):
        self.values = session.run(self._tensors)


def _eval_ops(spec, features):
    """An EVAL spec's metrics plus the mean loss: ({name: value tensor}, the op updating them
    all, the batch's size)."""
    metrics = dict(spec.eval_metric_ops or {})
    metrics["loss"] = tf1.metrics.mean(spec.loss)
    return ({name: value for name, (value, _) in metrics.items()},
            tf.group([update for _, update in metrics.values()]),
            tf.shape(tf.nest.flatten(features)[0])[0])


def _plain(value):
    """numpy scalar -> Python int or float."""
    return value.item() if hasattr(value, "item") else value
