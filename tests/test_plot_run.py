"""tools/plot_run.py on the log of a real (tiny) run_pretraining.py train+eval run: the picture,
the Markdown summary, and one-line errors that leave nothing behind."""

import json
import os
import re
import shutil

import matplotlib.image
import pytest
from conftest import run_cli
from test_run_pretraining import args, data  # noqa: F401 (fixture)

from tools import plot_run as tool

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIME_TO_TRAIN = {"status": "success", "time_to_train_seconds": 3725.4,
              "final_masked_lm_accuracy": 0.7213, "final_loss": 1.93, "steps": 6,
              "throughput_train": 136.4}


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):  # noqa: F811 (fixture argument)
    """The output directory of a 6-step train+eval run, with its train_log.jsonl."""
    out = tmp_path_factory.mktemp("plot_run") / "run"
    run_cli(args(data, out, "--do_train", "--do_eval", steps=6))
    return out


def read_records(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def write_records(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def plot(*argv, check=True):
    return run_cli([os.path.join("tools", "plot_run.py"), *map(str, argv)], check=check)


def summary_copy(run, tmp_path, extra_records=()):
    """Runs the tool on a copy of the run's log with `extra_records` appended; the Markdown."""
    out = tmp_path / "copy"
    write_records(out / "train_log.jsonl", read_records(run / "train_log.jsonl")
                  + list(extra_records))
    plot(out)
    return (out / "run_summary.md").read_text()


def test_plot_is_a_png_of_the_panels_with_data(run):
    """Property: the tool prints both paths and writes a real PNG with one panel each for the
    losses, eval accuracy, learning rate and sequences/s; no loss-scale panel without AMP."""
    result = plot(run)
    assert result.stdout.splitlines() == [f"plot: {run / 'run_summary.png'}",
                                          f"summary: {run / 'run_summary.md'}"]
    assert (run / "run_summary.png").read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(run / "run_summary.png")
    assert image.shape[:2] == (4 * 220, 800)  # 4 panels of 2.2 x 8 inches at 100 dpi
    assert [title for title, _ in tool.panels(read_records(run / "train_log.jsonl"))] == [
        "loss", "eval masked-LM accuracy", "learning rate", "sequences/s"]


def test_summary_has_the_final_step_eval_accuracy_and_picture(run):
    """Property: the Markdown names the final global step of the "train" record, the eval
    masked-LM accuracy the log holds, the final losses, and embeds the picture; no time-to-train
    line without a "time_to_train" record."""
    plot(run)
    summary = (run / "run_summary.md").read_text()
    records = read_records(run / "train_log.jsonl")
    train = [r["data"] for r in records if r["type"] == "train"][-1]
    accuracy = [r["data"] for r in records if r["type"] == "eval"][-1]["masked_lm_accuracy"]
    assert f"- steps: {train['global_step']}\n" in summary and train["global_step"] == 6
    shown = re.search(r"masked_lm_accuracy ([0-9.e-]+)", summary).group(1)
    assert float(shown) == pytest.approx(accuracy, rel=1e-3)
    assert "- final losses (step 6): total_loss " in summary
    assert "![run summary](run_summary.png)" in summary
    assert "time to train" not in summary


def test_time_to_train_record_gives_the_time_to_train(run, tmp_path):
    """Property: a log with a "time_to_train" record (run_pretraining.py with --stop_threshold or --mlperf_log_file) gets a time-to-train line with its status,
    final accuracy and steps."""
    summary = summary_copy(run, tmp_path, [
        {"data": TIME_TO_TRAIN, "step": [], "timestamp": 0.0, "type": "time_to_train"}])
    assert ("- time to train: 3725 s (1:02:05); status success, final_masked_lm_accuracy 0.7213, "
            "final_loss 1.93, steps 6, throughput_train 136.4\n") in summary


def test_resumed_log_plots_each_step_once_and_sums_wall_time(run, tmp_path):
    """Property: a log holding two sessions (a resumed run logging its steps again) gives one
    point per step, the latest, and the wall time of both sessions."""
    records = read_records(run / "train_log.jsonl")
    summary = summary_copy(run, tmp_path, records)
    steps = [r["step"] for r in records if r["type"] == "step"]
    assert list(tool.step_metrics(records + records)) == sorted(set(steps))
    wall = [r["data"]["wall_seconds"] for r in records if r["type"] == "train"][-1]
    shown = re.search(r"- wall time: ([0-9.]+) s.* over 2 sessions\n", summary).group(1)
    assert float(shown) == pytest.approx(2 * wall, abs=0.5)


def test_json_log_option_reads_a_log_elsewhere(run, tmp_path):
    """Property: --json_log reads the log from another path; the outputs still go to OUTPUT_DIR."""
    shutil.copy(run / "train_log.jsonl", tmp_path / "dllog.jsonl")
    out = tmp_path / "out"
    out.mkdir()
    plot(out, "--json_log", tmp_path / "dllog.jsonl")
    assert (out / "run_summary.png").read_bytes()[:8] == PNG_MAGIC
    assert str(tmp_path / "dllog.jsonl") in (out / "run_summary.md").read_text()


def no_step_records(run, out):
    write_records(out / "train_log.jsonl", [
        r for r in read_records(run / "train_log.jsonl") if r["type"] != "step"])


@pytest.mark.parametrize("setup, problem", [
    (lambda run, out: None, "no such directory"),
    (lambda run, out: out.mkdir(), "no such log"),
    (lambda run, out: (out.mkdir(), (out / "train_log.jsonl").write_text("")), "is empty"),
    (no_step_records, 'has no "step" records'),
    (lambda run, out: write_records(out / "train_log.jsonl", [{"type": "step"}, [1]]),
     "train_log.jsonl:2: not a JSON record"),
], ids=["missing directory", "missing log", "empty log", "no step records", "bad line"])
def test_bad_input_fails_in_one_line_and_writes_nothing(run, tmp_path, setup, problem):
    """Property: a missing directory or log, an empty log, a log without step records or with a
    line that is not a record make the tool exit non-zero with one line naming the problem, and
    leave no run_summary.* file."""
    out = tmp_path / "run"
    setup(run, out)
    result = plot(out, check=False)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("plot_run: error: ") and problem in result.stderr
    assert result.stdout == ""
    assert not list(tmp_path.rglob("run_summary*"))
