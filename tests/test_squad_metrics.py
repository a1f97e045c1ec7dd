"""squad_metrics: the official SQuAD v1.1 EM/F1 on hand-made cases, on the real dev set, and the
command line with its errors."""

import json
import os

import pytest
from conftest import REPO, run_cli

import squad_metrics
from squad_metrics import (
    evaluate,
    evaluate_counts,
    exact_match_score,
    f1_score,
    metric_max_over_ground_truths,
    normalize_answer,
)

DEV = os.path.join(REPO, "data", "squad", "dev-v1.1.json")


@pytest.mark.parametrize("text, normalized", [
    ("The Cat", "cat"),                     # case folded, leading article dropped
    ("an apple a day", "apple day"),        # every article, as whole words
    ("theater Anna", "theater anna"),       # articles inside words stay
    ("Hello, world!", "hello world"),       # ASCII punctuation removed
    ("a-team", "ateam"),                    # punctuation goes before articles: "a" is no word
    ("U.S.", "us"),
    ("  new\t york \n", "new york"),        # whitespace collapsed and trimmed
    ("\u201cquoted\u201d", "\u201cquoted\u201d"),  # only string.punctuation (ASCII) is removed
    ("the", ""),
])
def test_normalize_answer(text, normalized):
    assert normalize_answer(text) == normalized


def test_exact_match_ignores_case_punctuation_articles_and_spacing():
    assert exact_match_score("The  Eiffel Tower.", "eiffel tower")
    assert not exact_match_score("Eiffel", "eiffel tower")


def test_f1_by_hand():
    # [big, red, dog] vs [red, dog, barked]: 2 common, precision = recall = 2/3.
    assert f1_score("the big red dog", "a red dog barked") == pytest.approx(2 / 3)
    # [red, dog] vs 5 tokens: precision 1, recall 2/5, F1 = 2 * 0.4 / 1.4 = 4/7.
    assert f1_score("red dog", "big red dog barked loudly") == pytest.approx(4 / 7)
    # Tokens count with multiplicity: 1 common of 3 predicted, precision 1/3, recall 1.
    assert f1_score("dog dog dog", "dog") == pytest.approx(0.5)
    assert f1_score("cat", "dog") == 0
    assert f1_score("The Dog!", "dog") == 1.0


def test_empty_prediction():
    assert not exact_match_score("", "Paris")
    assert f1_score("", "Paris") == 0
    # A ground truth that normalizes to "" is matched exactly by "", but v1.1's F1 is still 0
    # (no common tokens; only the v2.0 script scores empty vs empty as 1).
    assert exact_match_score("", "the")
    assert f1_score("", "the") == 0


def test_max_over_ground_truths():
    ground_truths = ["Denver Broncos", "the Broncos"]
    assert metric_max_over_ground_truths(exact_match_score, "Broncos", ground_truths)
    assert metric_max_over_ground_truths(f1_score, "Broncos", ground_truths) == 1.0
    # F1 2/3 against the first, 1/2 against the second: the larger one counts.
    assert metric_max_over_ground_truths(
        f1_score, "Denver", ["Denver Broncos", "Broncos of Denver"]) == pytest.approx(2 / 3)


def _dataset(version="1.1"):
    qas = [
        {"id": "q1", "answers": [{"text": "Santa Clara"}, {"text": "Levi's Stadium"}]},
        {"id": "q2", "answers": [{"text": "red dog barked"}]},
        {"id": "q3", "answers": [{"text": "1966"}]},
        {"id": "q4", "answers": [{"text": "Peyton Manning"}]},
    ]
    return {"version": version,
            "data": [{"title": "t", "paragraphs": [{"context": "c", "qas": qas[:2]},
                                                   {"context": "c", "qas": qas[2:]}]}]}


PREDICTIONS = {"q1": "levi's stadium", "q2": "the big red dog", "q3": "1967"}  # q4 unanswered


def test_evaluate_averages_in_percent_and_counts_unanswered_as_zero(capsys):
    scores = evaluate(_dataset()["data"], PREDICTIONS)
    # EM: q1 only; F1: q1 1, q2 2/3 ([big, red, dog] vs [red, dog, barked]), q3 0, q4 0.
    assert scores == {"exact_match": 25.0, "f1": pytest.approx(100 * (1 + 2 / 3) / 4)}
    assert list(scores) == ["exact_match", "f1"]
    assert capsys.readouterr().err == "Unanswered question q4 will receive score 0.\n"
    counts = evaluate_counts(_dataset()["data"], PREDICTIONS)
    assert counts["total"] == 4 and counts["exact_match"] == 1
    assert counts["unanswered"] == ["q4"]


def test_evaluate_dev_set_ground_truths():
    with open(DEV, encoding="utf-8") as f:
        data = json.load(f)["data"]
    # The last ground truth of each question: EM and F1 are maxima over all of them, so EM is
    # 100; F1 misses one question, 57340d124776f419006617bf, whose last answer is "." (normalized
    # to "": an exact match with F1 0).
    predictions = {qa["id"]: qa["answers"][-1]["text"]
                   for article in data for paragraph in article["paragraphs"]
                   for qa in paragraph["qas"]}
    assert len(predictions) == 10570 and predictions["57340d124776f419006617bf"] == "."
    assert evaluate(data, predictions) == {"exact_match": 100.0, "f1": 100.0 * 10569 / 10570}


def _write(path, obj):
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return str(path)


def test_cli_prints_the_scores_as_json(tmp_path):
    dataset = _write(tmp_path / "dev.json", _dataset())
    predictions = _write(tmp_path / "predictions.json", PREDICTIONS)
    result = run_cli(["squad_metrics.py", dataset, predictions])
    assert json.loads(result.stdout) == evaluate(_dataset()["data"], PREDICTIONS)
    assert result.stdout.startswith('{"exact_match": 25.0, "f1": ')
    assert "Unanswered question q4 will receive score 0." in result.stderr


def test_cli_warns_on_another_version(tmp_path):
    dataset = _write(tmp_path / "dev.json", _dataset(version="v2.0"))
    predictions = _write(tmp_path / "predictions.json", PREDICTIONS)
    result = run_cli(["squad_metrics.py", dataset, predictions])
    assert "Evaluation expects v-1.1, but got dataset with v-v2.0" in result.stderr
    assert json.loads(result.stdout)["exact_match"] == 25.0


@pytest.mark.parametrize("dataset, predictions, message", [
    (None, PREDICTIONS, "dataset {dir}/missing.json not found"),
    ("{not json", PREDICTIONS, "is not readable JSON"),
    ({"version": "1.1"}, PREDICTIONS, 'has no "data" list'),
    (_dataset(), ["q1"], "is not a JSON object of question id -> answer text"),
    (_dataset(), {"q1": 3}, "is not a JSON object of question id -> answer text"),
    ({"version": "1.1", "data": [{"paragraphs": [{"qas": [{"id": "q1", "answers": []}]}]}]},
     PREDICTIONS, "question q1 has no answers"),
    ({"version": "1.1", "data": [{"title": "no paragraphs"}]}, PREDICTIONS,
     "is not SQuAD JSON (KeyError"),
])
def test_cli_errors_are_one_line(tmp_path, dataset, predictions, message):
    dataset_path = (str(tmp_path / "missing.json") if dataset is None
                    else _write(tmp_path / "dev.json", dataset))
    predictions_path = _write(tmp_path / "predictions.json", predictions)
    result = run_cli(["squad_metrics.py", dataset_path, predictions_path], check=False)
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("squad_metrics.py: ")
    assert message.format(dir=tmp_path) in lines[0]


def test_main_usage():
    with pytest.raises(SystemExit, match="usage: python squad_metrics.py DATASET_JSON"):
        squad_metrics.main(["squad_metrics.py", DEV])
