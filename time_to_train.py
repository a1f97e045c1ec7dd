"""Training to a target: the evaluations during training (logged to the run's JSON log,
TensorBoard and, in MLPerf mode, the MLPerf log), the stop at a masked-LM accuracy threshold and
the time-to-train summary (seed 000's columns: time to train, final loss and accuracy, steps,
sequences/s).

run_pretraining.py passes `on_result` to `estimator.Evaluation` and `hook()` to the training
hooks, and calls `finish` with the training summary.
"""

import time

import tensorflow as tf

tf1 = tf.compat.v1


class TimeToTrain:
    """One training run towards `threshold` (None: no early stop).

    Args:
      logger: the run's `train_logging.RunLogger`.
      mlperf: an `mlperf_log.MlperfLog` (rank 0 in MLPerf mode) or None.
      threshold: masked-LM accuracy that ends the run, or None.
      global_batch_size: training samples per update over all ranks.
      max_steps: --num_train_steps.
    """

    def __init__(self, logger, mlperf, threshold, global_batch_size, max_steps):
        self._logger = logger
        self._mlperf = mlperf
        self._threshold = threshold
        self._global_batch_size = global_batch_size
        self._max_steps = max_steps
        self._run_start = None
        self.reached = False
        self.last = None  # (step, results) of the latest evaluation

    def hook(self):
        """A session hook marking the run's start once the model is restored or initialised."""
        return _RunStartHook(self._started)

    def _started(self, step):
        self._run_start = time.monotonic()
        if self._mlperf:
            self._mlperf.run_started(step * self._global_batch_size)

    def on_result(self, step, results):
        """Logs one evaluation after update `step`; True when it reached the threshold."""
        samples = step * self._global_batch_size
        self._logger.summary("eval", dict(results, global_step=step, training_samples=samples))
        accuracy = results["masked_lm_accuracy"]
        self.reached = self._threshold is not None and accuracy >= self._threshold
        self.last = (step, results)
        if self._mlperf:
            self._mlperf.evaluated(samples, accuracy, results["eval_sequences"],
                                   last=self.reached or step >= self._max_steps)
        return self.reached

    def finish(self, train_summary):
        """Ends the run after training: run_stop (MLPerf), and the summary record "time_to_train"
        {status, time_to_train_seconds, final_loss, final_masked_lm_accuracy, steps,
        throughput_train}; returns it."""
        step = train_summary["global_step"]
        status = "success" if self.reached else "aborted"
        if self._mlperf:
            self._mlperf.stopped(step * self._global_batch_size, self.reached)
            self._mlperf.close()
        summary = {"status": status, "steps": step,
                   "training_samples": step * self._global_batch_size}
        if self._run_start is not None:
            summary["time_to_train_seconds"] = round(time.monotonic() - self._run_start, 2)
        if "final_loss" in train_summary:
            summary["final_loss"] = train_summary["final_loss"]
        if self.last:
            summary["final_masked_lm_accuracy"] = self.last[1]["masked_lm_accuracy"]
        if "throughput_train" in train_summary:
            summary["throughput_train"] = train_summary["throughput_train"]
        self._logger.summary("time_to_train", summary)
        return summary


class _RunStartHook(tf1.train.SessionRunHook):
    def __init__(self, started):
        self._started = started

    def after_create_session(self, session, coord):
        self._started(int(session.run(tf1.train.get_global_step())))
