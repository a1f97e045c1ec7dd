"""An Estimator-style runner on `tf.compat.v1.train.MonitoredTrainingSession` (TF 2.21 has no
`tf.estimator`).

Contract (tf.estimator's):
  model_fn(features, labels, mode, params) -> `Spec`
  input_fn(params) -> tf.data.Dataset of `features` dicts; `params["global_step"]` is the step the
    run starts from (the restored checkpoint's, 0 on a fresh run), so that a deterministic input
    can skip the batches already consumed.

`Estimator.train` builds a fresh graph, restores the latest checkpoint of `model_dir` (or, when
there is none, runs `warm_start`, e.g. loading an init checkpoint), then runs `train_op` once per
micro-batch until `global_step` reaches `max_steps`. Built-in hooks: `StepLoggingHook` (stops
at `max_steps`; losses, learning rate, sequences/s to a `train_logging.RunLogger`) and, on the chief only,
`CheckpointHook`. Extra hooks come in through `hooks`; the Horovod variable broadcast goes there
(it must run after restore and warm start, which `after_create_session` hooks do).

Checkpoints: TF1 Saver; a checkpoint becomes the latest only when `Saver.save` has written it
completely (the `checkpoint` state file is replaced atomically as its last step), and a resumed
run never rewrites the checkpoint it restored from.
"""

import os
import time
from typing import NamedTuple

import tensorflow as tf

from distributed import SingleProcess
from train_logging import RunLogger

tf1 = tf.compat.v1


class ModeKeys:
    TRAIN = "train"
    EVAL = "eval"


class Spec(NamedTuple):
    """What `model_fn` returns.

    loss: scalar float32 tensor.
    train_op: the op run once per micro-batch (TRAIN).
    eval_metric_ops: {name: (value_tensor, update_op)} as from tf.compat.v1.metrics (EVAL).
    logged_tensors: {name: scalar tensor} fetched every step for the logging hook, e.g.
      "mlm_loss", "learning_rate", "loss_scale".
    predictions: {name: tensor}, optional.
    """

    loss: tf.Tensor
    train_op: tf.Operation | None = None
    eval_metric_ops: dict | None = None
    logged_tensors: dict | None = None
    predictions: dict | None = None


class RunConfig(NamedTuple):
    """Where and how a run saves, logs and computes.

    sequences_per_run: sequences one run of train_op consumes over all ranks (micro-batch x
      ranks), for throughput.
    warmup_steps: micro-batch runs at the start left out of the sequences/s figures.
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

    def _build(self, input_fn, mode, global_step):
        """Builds input, model and warm start in the current graph; returns (spec, features)."""
        if self.config.seed is not None:
            tf1.set_random_seed(self.config.seed)
        dataset = input_fn(dict(self.params, global_step=global_step))
        features = tf1.data.make_one_shot_iterator(dataset).get_next()
        spec = self.model_fn(features, None, mode, self.params)
        if self.warm_start and self.is_chief and self.latest_checkpoint() is None:
            self.warm_start()
        return spec, features

    def train(self, input_fn, max_steps, hooks=()):
        """Trains until global_step == max_steps, resuming from `model_dir`; returns the step.

        Returns at once when the latest checkpoint is already at `max_steps`.
        """
        start_step = self.checkpoint_step()
        if start_step >= max_steps:
            self.logger.summary("train", {"global_step": start_step, "note": "already trained"})
            return start_step
        with tf.Graph().as_default():
            spec, _ = self._build(input_fn, ModeKeys.TRAIN, start_step)
            global_step = tf1.train.get_global_step()
            if global_step is None or spec.train_op is None:
                raise ValueError("model_fn in TRAIN mode must return a train_op and create the "
                                 "global step (optimization.create_optimizer does)")
            with tf.control_dependencies([spec.train_op]):
                step_after = tf.identity(global_step.read_value(), name="global_step_after")
            saver = tf1.train.Saver(max_to_keep=self.config.keep_checkpoint_max,
                                    save_relative_paths=True)
            logging_hook = StepLoggingHook(
                step_after, dict(spec.logged_tensors or {}, total_loss=spec.loss), max_steps,
                self.config, self.logger)
            all_hooks = [*hooks, logging_hook]  # extra hooks (a broadcast) see the session first
            if self.is_chief:
                all_hooks.append(CheckpointHook(saver, self.config.model_dir, step_after,
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
        return summary["global_step"]

    def evaluate(self, input_fn, steps=None, checkpoint_path=None):
        """Evaluates the latest checkpoint (or `checkpoint_path`, or the warm start) over at most
        `steps` batches or one pass of the input; returns {metric: value, "loss", "global_step"}.

        Raises ValueError when there is nothing to evaluate.
        """
        checkpoint_path = checkpoint_path or self.latest_checkpoint()
        if checkpoint_path is None and self.warm_start is None:
            raise ValueError(f"no checkpoint to evaluate in {self.config.model_dir}: train first "
                             "(--do_train) or pass --init_checkpoint")
        with tf.Graph().as_default():
            spec, features = self._build(input_fn, ModeKeys.EVAL, 0)
            global_step = tf1.train.get_or_create_global_step()
            metrics = dict(spec.eval_metric_ops or {})
            metrics["loss"] = tf1.metrics.mean(spec.loss)
            values = {name: value for name, (value, _) in metrics.items()}
            values["global_step"] = global_step
            updates = tf.group([update for _, update in metrics.values()])
            batch_size = tf.shape(tf.nest.flatten(features)[0])[0]
            creator = tf1.train.ChiefSessionCreator(
                scaffold=tf1.train.Scaffold(saver=tf1.train.Saver() if checkpoint_path else None),
                checkpoint_filename_with_path=checkpoint_path, config=self.config.session_config)
            final = _FinalValuesHook(values)
            batches = sequences = 0
            start = time.monotonic()
            with tf1.train.MonitoredSession(session_creator=creator, hooks=[final]) as session:
                while not session.should_stop() and (steps is None or batches < steps):
                    sequences += int(session.run([updates, batch_size])[1])
                    batches += 1
            seconds = time.monotonic() - start
        results = {name: _plain(value) for name, value in final.values.items()}
        self.logger.summary("eval", dict(results, eval_batches=batches, eval_sequences=sequences,
                                         eval_seconds=round(seconds, 2)))
        return results


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
        self._loss_sum[0] += float(values["total_loss"])
        self._loss_sum[1] += 1
        step = int(values["step"])
        updated, self._last_step = step != self._last_step, step
        if step >= self._max_steps:
            run_context.request_stop()
        if updated and (step % self._config.log_every_steps == 0 or step == self._start_step + 1
                        or step >= self._max_steps):
            self._report(step, values)

    def _report(self, step, values):
        metrics = {name: float(value) for name, value in values.items() if name != "step"}
        metrics["avg_loss_step"] = self._loss_sum[0] / self._loss_sum[1]
        runs, seconds = self._interval
        if runs:
            metrics["throughput_train"] = self._sequences_per_second(runs, seconds)
        self._logger.step(step, metrics)
        self._interval = [0, 0.0]
        self._loss_sum = [0.0, 0]

    def _sequences_per_second(self, runs, seconds):
        """Sequences/s over all ranks of `runs` runs of train_op taking `seconds`."""
        return runs * self._config.sequences_per_run / max(seconds, 1e-9)

    def summary(self):
        """{global_step, steps, wall_seconds, timed sequences/s} of this process's run."""
        result = {"global_step": self._last_step, "steps": self._last_step - self._start_step,
                  "wall_seconds": round(time.monotonic() - self._wall_start, 2)}
        if self._timed_runs:
            result["throughput_train"] = round(
                self._sequences_per_second(self._timed_runs, self._timed_seconds), 2)
        return result


class CheckpointHook(tf1.train.SessionRunHook):
    """Saves every `save_steps` updates and at the end, on the chief, to `model_dir/model.ckpt`.

    Never saves at the step the session started from: that checkpoint exists already (a resumed
    run must not rewrite the file it restored), or the run has not trained yet.
    """

    def __init__(self, saver, model_dir, step_after, save_steps):
        self._saver = saver
        self._prefix = os.path.join(model_dir, "model.ckpt")
        self._step_after = step_after
        self._save_steps = save_steps

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
        self._saver.save(session, self._prefix, global_step=self._step)
        self._saved_step = self._step


class _FinalValuesHook(tf1.train.SessionRunHook):
    """Evaluates `tensors` once when the session ends (after the last metric update)."""

    def __init__(self, tensors):
        self._tensors = tensors
        self.values = {}

    def end(self, session):
        self.values = session.run(self._tensors)


def _plain(value):
    """numpy scalar -> Python int or float."""
    return value.item() if hasattr(value, "item") else value
