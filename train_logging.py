"""The one logging interface of a training run: `RunLogger` fans records out to sinks.

Sinks shipped here: the terminal (absl logging), one JSON object per line in the output directory
(dllogger style, for machines) and TensorBoard scalars. Other outputs plug in by implementing
`Sink`; the MLPerf log (mlperf_log.py) and the progress line (progress.py) have their own events
and are driven by the training code directly.

Records:
  step(step, metrics)    periodic training metrics at a global step (loss, learning rate, seq/s)
  summary(name, values)  end-of-phase results ("train" summary, "eval" results)
"""

import json
import os
import time

from absl import logging


class Sink:
    """Receives every record; subclasses override what they handle."""

    def step(self, step, metrics):
        """Periodic metrics at global step `step` ({name: number})."""

    def summary(self, name, values):
        """Results of a finished phase `name` ({name: number or string})."""

    def close(self):
        """Flush and release files."""


class TerminalSink(Sink):
    """Human-readable lines through absl logging."""

    def step(self, step, metrics):
        logging.info("step %d: %s", step, _format(metrics))

    def summary(self, name, values):
        logging.info("%s summary: %s", name, _format(values))


class JsonLinesSink(Sink):
    """Appends one JSON object per record to `path` (dllogger style: a "step" and a "data" dict)."""

    def __init__(self, path):
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def _write(self, record):
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()

    def step(self, step, metrics):
        self._write({"timestamp": time.time(), "type": "step", "step": step, "data": metrics})

    def summary(self, name, values):
        self._write({"timestamp": time.time(), "type": name, "step": [], "data": values})

    def close(self):
        self._file.close()


class TensorBoardSink(Sink):
    """Scalars of every step record, and of every evaluation ("eval" summary with its
    global_step) under `eval/`, as TensorBoard summaries in `logdir` (graph mode writer)."""

    def __init__(self, logdir):
        import tensorflow as tf  # only this sink needs TensorFlow

        self._tf = tf
        self._writer = tf.compat.v1.summary.FileWriterCache.get(logdir)

    def step(self, step, metrics):
        self._write(step, metrics)

    def summary(self, name, values):
        if name == "eval" and "global_step" in values:
            self._write(values["global_step"], {
                f"eval/{key}": value for key, value in values.items()
                if key != "global_step" and isinstance(value, (int, float))})

    def _write(self, step, scalars):
        summary = self._tf.compat.v1.Summary(value=[
            self._tf.compat.v1.Summary.Value(tag=name, simple_value=float(value))
            for name, value in scalars.items()])
        self._writer.add_summary(summary, step)

    def close(self):
        self._writer.flush()


class RunLogger:
    """Sends each record to every sink. A logger with no sinks (non-chief ranks) drops them."""

    def __init__(self, sinks=()):
        self.sinks = list(sinks)

    def step(self, step, metrics):
        for sink in self.sinks:
            sink.step(step, metrics)

    def summary(self, name, values):
        for sink in self.sinks:
            sink.summary(name, values)

    def close(self):
        for sink in self.sinks:
            sink.close()


def run_logger(output_dir, json_path, is_chief):
    """The logger of a run: terminal, JSON lines in `json_path` and TensorBoard in `output_dir`
    on the chief; nothing on other ranks."""
    if not is_chief:
        return RunLogger()
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    return RunLogger([TerminalSink(), JsonLinesSink(json_path), TensorBoardSink(output_dir)])


def _format(values):
    return ", ".join(f"{name} {_number(value)}" for name, value in values.items())


def _number(value):
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)
