"""The official SQuAD v1.1 evaluation (evaluate-v1.1.py): exact match and token F1 of each
prediction against its best-matching ground truth, averaged over all questions, in percent.

  python squad_metrics.py DATASET_JSON PREDICTIONS_JSON
      -> {"exact_match": ..., "f1": ...} on stdout, as the official script prints it

A question without a prediction scores 0 (with a note on stderr, as officially).
"""

import collections
import json
import re
import string
import sys

EXPECTED_VERSION = "1.1"
_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text):
    """Lower case, punctuation removed, articles removed, whitespace collapsed (in that order)."""
    text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction, ground_truth):
    """Whether the two answers are equal once normalized."""
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def f1_score(prediction, ground_truth):
    """F1 of the normalized answers' tokens (counted with multiplicity); 0 without common ones."""
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    """The best score of `prediction` over the ground truths."""
    return max(metric_fn(prediction, ground_truth) for ground_truth in ground_truths)


def evaluate_counts(dataset, predictions):
    """Sums over the questions of `dataset` (SQuAD JSON's "data" list): {"total": questions,
    "exact_match": sum of EM, "f1": sum of F1, "unanswered": ids without a prediction}."""
    total, exact_match, f1, unanswered = 0, 0, 0, []
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    unanswered.append(qa["id"])
                    continue
                ground_truths = [answer["text"] for answer in qa["answers"]]
                if not ground_truths:
                    raise ValueError(f"question {qa['id']} has no answers: SQuAD v1.1 "
                                     "evaluation needs at least one per question")
                prediction = predictions[qa["id"]]
                exact_match += metric_max_over_ground_truths(exact_match_score, prediction,
                                                             ground_truths)
                f1 += metric_max_over_ground_truths(f1_score, prediction, ground_truths)
    return {"total": total, "exact_match": exact_match, "f1": f1, "unanswered": unanswered}


def evaluate(dataset, predictions):
    """{"exact_match": %, "f1": %} of `predictions` (qas_id -> text) on `dataset` (SQuAD JSON's
    "data" list); unanswered questions score 0 and are named on stderr."""
    counts = evaluate_counts(dataset, predictions)
    if not counts["total"]:
        raise ValueError("the dataset has no questions")
    for qas_id in counts["unanswered"]:
        print(f"Unanswered question {qas_id} will receive score 0.", file=sys.stderr)
    return {"exact_match": 100.0 * counts["exact_match"] / counts["total"],
            "f1": 100.0 * counts["f1"] / counts["total"]}


def _fail(message):
    raise SystemExit(f"squad_metrics.py: {message}")


def _load_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        _fail(f"{what} {path} not found")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        _fail(f"{what} {path} is not readable JSON ({error})")


def main(argv):
    """`squad_metrics.py DATASET_JSON PREDICTIONS_JSON`: prints the scores as JSON."""
    if len(argv) != 3:
        _fail("usage: python squad_metrics.py DATASET_JSON PREDICTIONS_JSON")
    dataset_file, prediction_file = argv[1:]
    dataset_json = _load_json(dataset_file, "dataset")
    if not isinstance(dataset_json, dict) or not isinstance(dataset_json.get("data"), list):
        _fail(f"dataset {dataset_file} has no \"data\" list: pass a SQuAD JSON file such as "
              "dev-v1.1.json")
    version = str(dataset_json.get("version"))
    if not version.startswith("1."):
        print(f"Evaluation expects v-{EXPECTED_VERSION}, but got dataset with v-{version}",
              file=sys.stderr)
    predictions = _load_json(prediction_file, "predictions")
    if not isinstance(predictions, dict) or not all(
            isinstance(text, str) for text in predictions.values()):
        _fail(f"predictions {prediction_file} is not a JSON object of question id -> answer "
              "text (a predictions.json)")
    try:
        scores = evaluate(dataset_json["data"], predictions)
    except ValueError as error:
        _fail(f"dataset {dataset_file}: {error}")
    except (KeyError, TypeError, AttributeError) as error:
        _fail(f"dataset {dataset_file} is not SQuAD JSON ({type(error).__name__}: {error})")
    print(json.dumps(scores))


if __name__ == "__main__":
    main(sys.argv)
