"""Plot a training run and summarize it in Markdown, from its JSON-lines log.

    python tools/plot_run.py OUTPUT_DIR [--json_log PATH]    (or python -m tools.plot_run)

Reads OUTPUT_DIR/train_log.jsonl (or --json_log, e.g. run_pretraining.py's --dllog_path) and
writes, each file atomically:
  OUTPUT_DIR/run_summary.png  against the global step: losses, eval masked-LM accuracy, learning
                              rate, loss scale, sequences/s; a panel only when the log has its data
  OUTPUT_DIR/run_summary.md   steps, wall time, sequences/s, final losses and eval metrics, the
                              time to train (of a run towards a target accuracy), and the picture
run_pretraining.py and run_squad.py logs both work. A step logged twice (a resumed run redid it)
is plotted with its latest value.
"""

import argparse
import json
import os
import sys

if not __package__:  # run as a file (python tools/plot_run.py): the repository on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools import records

LOSSES = ("total_loss", "mlm_loss", "nsp_loss", "start_loss", "end_loss")
PLOT_NAME, SUMMARY_NAME = "run_summary.png", "run_summary.md"


class LogError(ValueError):
    """A log that cannot be plotted; the message names the file, the problem and the fix."""


def read_log(path):
    """The records (dicts) of the JSON-lines log `path`, in order; LogError when there are none
    to plot."""
    if not os.path.isfile(path):
        raise LogError(f"{path}: no such log; pass the run's JSON-lines log with --json_log "
                       "(run_pretraining.py --dllog_path)")
    try:
        with open(path, encoding="utf-8") as f:
            lines = list(enumerate(f, 1))
    except (OSError, UnicodeDecodeError) as error:
        raise LogError(f"cannot read {path}: {error}; check the path and its permissions") from None
    log = []
    for number, line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise LogError(f"{path}:{number}: not a JSON record: {line.strip()[:80]!r}; fix or "
                           "delete that line")
        log.append(record)
    if not log:
        raise LogError(f"{path} is empty: the run has logged nothing yet; plot it after its "
                       "first logged step")
    if not step_metrics(log):
        raise LogError(f"{path} has no \"step\" records: the run stopped before its first logged "
                       "step, or this is not a training log; train for at least "
                       "--display_loss_steps steps")
    return log


def _data(record):
    data = record.get("data")
    return data if isinstance(data, dict) else {}


def _numbers(data):
    return {name: value for name, value in data.items()
            if isinstance(value, int | float) and not isinstance(value, bool)}


def _last(log, kind):
    """The data of the last record of type `kind`, or None."""
    return next((_data(record) for record in reversed(log) if record.get("type") == kind), None)


def step_metrics(log):
    """{global step: {metric: number}} of the "step" records, in step order; a step logged twice
    keeps its last record."""
    by_step = {record["step"]: _numbers(_data(record)) for record in log
               if record.get("type") == "step" and isinstance(record.get("step"), int)}
    return dict(sorted(by_step.items()))


def eval_metrics(log):
    """{global step: {metric: number}} of the "eval" records (x: the top-level step when it is an
    int, else data["global_step"])."""
    by_step = {}
    for record in log:
        if record.get("type") != "eval":
            continue
        data = _numbers(_data(record))
        step = record.get("step") if isinstance(record.get("step"), int) else data.get(
            "global_step")
        if step is not None:
            by_step[step] = data
    return dict(sorted(by_step.items()))


def panels(log):
    """[(title, {line label: (steps, values)})] of the panels that have data, top to bottom."""
    steps, evals = step_metrics(log), eval_metrics(log)

    def series(by_step, name):
        points = [(step, values[name]) for step, values in by_step.items() if name in values]
        return tuple(map(list, zip(*points))) if points else None

    wanted = [("loss", [(name, series(steps, name)) for name in LOSSES]),
              ("eval masked-LM accuracy",
               [("masked_lm_accuracy", series(evals, "masked_lm_accuracy"))]),
              ("learning rate", [("learning_rate", series(steps, "learning_rate"))]),
              ("loss scale", [("loss_scaler", series(steps, "loss_scaler"))]),
              ("sequences/s", [("throughput_train", series(steps, "throughput_train"))])]
    return [(title, {label: points for label, points in lines if points})
            for title, lines in wanted if any(points for _, points in lines)]


def plot(log, path):
    """Writes the panels of `log` to the PNG `path`, one above the other, sharing the step axis."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    shown = panels(log)
    figure, axes = plt.subplots(len(shown), 1, sharex=True, squeeze=False,
                                figsize=(8, 2.2 * len(shown)))
    for axis, (title, lines) in zip(axes[:, 0], shown):
        for label, (steps, values) in lines.items():
            axis.plot(steps, values, marker="o" if len(steps) <= 50 else None, markersize=3,
                      label=label)
        axis.set_title(title, fontsize="medium")
        axis.grid(alpha=0.3)
        if title == "loss scale":
            axis.set_yscale("log", base=2)
        if len(lines) > 1:
            axis.legend(fontsize="small")
    axes[-1, 0].set_xlabel("global step")
    figure.tight_layout()
    with records.atomic_output(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)


def _format(values):
    return ", ".join(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
                     for name, value in values.items())


def _duration(seconds):
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{seconds:.0f} s ({minutes // 60}:{minutes % 60:02d}:{secs:02d})"


def summary_markdown(log, log_path):
    """The Markdown summary of `log` (read from `log_path`), embedding the picture."""
    lines = ["# Run summary", "", f"Log: `{log_path}`", ""]
    steps = step_metrics(log)
    final_step = max(steps)
    trains = [_data(record) for record in log if record.get("type") == "train"]
    train = trains[-1] if trains else None
    if train is None:
        lines.append(f"- steps: {final_step} (the last logged step; no \"train\" summary: the "
                     "run did not finish)")
    else:
        lines.append(f"- steps: {train.get('global_step', final_step)}")
    wall = [data["wall_seconds"] for data in trains if "wall_seconds" in data]
    if wall:
        sessions = f" over {len(wall)} sessions" if len(wall) > 1 else ""
        lines.append(f"- wall time: {_duration(sum(wall))}{sessions}")
    if train and "throughput_train" in train:
        lines.append(f"- sequences/s: {train['throughput_train']:.4g}")
    losses = {name: steps[final_step][name] for name in LOSSES if name in steps[final_step]}
    if losses:
        lines.append(f"- final losses (step {final_step}): {_format(losses)}")
    evaluation = _last(log, "eval")
    if evaluation:
        metrics = {name: value for name, value in _numbers(evaluation).items()
                   if name not in ("global_step", "training_samples")
                   and not name.startswith("eval_")}
        if "loss" in metrics:
            metrics["loss"] = metrics.pop("loss")  # the total after its parts
        lines.append(f"- eval (step {evaluation.get('global_step', '?')}): {_format(metrics)}")
    squad = _last(log, "squad_v1.1")
    if squad:
        lines.append(f"- SQuAD v1.1: {_format(_numbers(squad))}")
    target = _last(log, "time_to_train")
    if target:
        seconds = target.get("time_to_train_seconds")
        details = _format({name: target[name] for name in (
            "status", "final_masked_lm_accuracy", "final_loss", "steps", "throughput_train")
            if name in target})
        lines.append(f"- time to train: {_duration(seconds) if seconds is not None else '?'}"
                     f"; {details}")
    lines += ["", f"![run summary]({PLOT_NAME})", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="plot_run", description=__doc__.split("\n")[0])
    parser.add_argument("output_dir", help="the run's --output_dir; the outputs go there")
    parser.add_argument("--json_log",
                        help="the JSON-lines log (default OUTPUT_DIR/train_log.jsonl)")
    args = parser.parse_args(argv)
    log_path = args.json_log or os.path.join(args.output_dir, "train_log.jsonl")
    plot_path = os.path.join(args.output_dir, PLOT_NAME)
    summary_path = os.path.join(args.output_dir, SUMMARY_NAME)
    try:
        if not os.path.isdir(args.output_dir):
            raise LogError(f"{args.output_dir}: no such directory; pass the --output_dir of a "
                           "run_pretraining.py or run_squad.py run")
        log = read_log(log_path)
        summary = summary_markdown(log, log_path)
        try:
            plot(log, plot_path)
            with records.atomic_output(summary_path) as tmp, \
                    open(tmp, "w", encoding="utf-8") as f:
                f.write(summary)
        except OSError as error:
            raise LogError(f"cannot write to {args.output_dir}: {error}; free space or fix its "
                           "permissions") from None
    except LogError as error:
        print(f"plot_run: error: {error}", file=sys.stderr)
        sys.exit(1)
    print(f"plot: {plot_path}")
    print(f"summary: {summary_path}")


if __name__ == "__main__":
    main()
