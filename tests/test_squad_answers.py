"""squad_answers: predictions and n-best files byte for byte equal to google-research/bert's
`write_predictions` (run by tests/google_squad.py) for seeded logits on a SQuAD dev subset, in
v1.1 and v2 mode; `get_final_text` on hand-made cases; our answers where Google has none."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from conftest import REPO, VOCAB

from squad_answers import RawResult, compute_predictions, get_final_text, write_predictions

DEV = os.path.join(REPO, "data", "squad", "dev-v1.1.json")
MAX_SEQ_LENGTH = 128
WINDOW_FLAGS = [f"--max_seq_length={MAX_SEQ_LENGTH}", "--doc_stride=32", "--max_query_length=32"]
N_BEST_SIZE = 20
MAX_ANSWER_LENGTH = 30
NULL_SCORE_DIFF_THRESHOLD = 1.5
# More results than the subset has features (checked): the logits are drawn before the features
# are known, so that the three oracle runs can go at once. Results without a feature are unused.
NUM_RESULTS = 200
FIRST_UNIQUE_ID = 1_000_000_000


def _subset(path):
    """Normans (a 49-word paragraph first, then a 226-word one) and Warsaw (87 and 283 words):
    at max_seq_length 128 and doc_stride 32 the long paragraphs give up to 9 windows."""
    with open(DEV, encoding="utf-8") as f:
        articles = json.load(f)["data"]
    data = [dict(articles[2], paragraphs=[articles[2]["paragraphs"][i] for i in (2, 1)]),
            dict(articles[1], paragraphs=[articles[1]["paragraphs"][i] for i in (0, 1)])]
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"version": "1.1", "data": data}, f)


def _logits(path, version_2):
    """Seeded float32 logits; every third result holds small integers (many exact ties, in the
    n-best positions and in span scores). In v1 the first feature's start logits rise to the
    end of the sequence, so its best starts are all padding: the question gets Google's "empty".
    In v2 every other result favours the null answer at position 0."""
    rng = np.random.default_rng(2024 + version_2)
    start = rng.normal(0.0, 2.0, (NUM_RESULTS, MAX_SEQ_LENGTH)).astype(np.float32)
    end = rng.normal(0.0, 2.0, (NUM_RESULTS, MAX_SEQ_LENGTH)).astype(np.float32)
    start[::3] = rng.integers(-3, 4, (len(start[::3]), MAX_SEQ_LENGTH))
    end[::3] = rng.integers(-3, 4, (len(end[::3]), MAX_SEQ_LENGTH))
    if version_2:
        start[1::2, 0] += 4.0
        end[1::2, 0] += 4.0
    else:
        start[0] = np.arange(MAX_SEQ_LENGTH)
    np.savez(path, unique_ids=FIRST_UNIQUE_ID + np.arange(NUM_RESULTS), start_logits=start,
             end_logits=end)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """Google's features (JSON) and its prediction files for the v1 and v2 logits."""
    tmp = tmp_path_factory.mktemp("squad_answers")
    squad_json = str(tmp / "dev_subset.json")
    _subset(squad_json)
    paths = {"squad_json": squad_json, "features": str(tmp / "features.json")}
    commands = [["features", squad_json, VOCAB, paths["features"], *WINDOW_FLAGS]]
    for version_2 in (False, True):
        name = "v2" if version_2 else "v1"
        paths[f"{name}_logits"] = str(tmp / f"{name}_logits.npz")
        paths[f"{name}_google"] = str(tmp / f"{name}_google")
        _logits(paths[f"{name}_logits"], version_2)
        commands.append(["predictions", squad_json, VOCAB, paths[f"{name}_logits"],
                         paths[f"{name}_google"], *WINDOW_FLAGS, f"--n_best_size={N_BEST_SIZE}",
                         f"--max_answer_length={MAX_ANSWER_LENGTH}", "--do_lower_case=true",
                         *(["--version_2_with_negative",
                            f"--null_score_diff_threshold={NULL_SCORE_DIFF_THRESHOLD}"]
                           if version_2 else [])])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    processes = [subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "google_squad.py"),
                                   *command], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
                 for command in commands]
    for command, process in zip(commands, processes, strict=True):
        _, stderr = process.communicate()
        assert process.returncode == 0, f"google_squad.py {command[0]} failed:\n{stderr[-3000:]}"
    return paths


def _inputs(oracle, name):
    """Google's examples and features as the duck-typed objects squad_answers reads, and the
    results (float32 rows, as a model gives them)."""
    with open(oracle["features"], encoding="utf-8") as f:
        dumped = json.load(f)
    examples = [types.SimpleNamespace(**example) for example in dumped["examples"]]
    features = [types.SimpleNamespace(**{
        **feature,
        "token_to_orig_map": {int(k): v for k, v in feature["token_to_orig_map"]},
        "token_is_max_context": {int(k): v for k, v in feature["token_is_max_context"]}})
        for feature in dumped["features"]]
    logits = np.load(oracle[f"{name}_logits"])
    results = [RawResult(int(unique_id), start, end) for unique_id, start, end in
               zip(logits["unique_ids"], logits["start_logits"], logits["end_logits"],
                   strict=True)]
    assert len(features) <= NUM_RESULTS
    return examples, features, results


def _read(directory, name):
    with open(os.path.join(directory, name), "rb") as f:
        return f.read()


def test_subset_covers_windows_ties_and_the_nonce(oracle):
    """The data exercise what the equality tests are meant to catch."""
    examples, features, results = _inputs(oracle, "v1")
    windows = [sum(f.example_index == i for f in features) for i in range(len(examples))]
    assert len(examples) == 15 and max(windows) >= 9 and windows[0] == 1
    assert len(features[0].tokens) <= MAX_SEQ_LENGTH - N_BEST_SIZE  # the ramp's best: padding
    # Ties among the n-best start logits of a window.
    top = np.sort(np.asarray(results[3].start_logits))[::-1][:N_BEST_SIZE]  # integers
    assert len(set(top.tolist())) < N_BEST_SIZE
    predictions = json.loads(_read(oracle["v1_google"], "predictions.json"))
    assert predictions[examples[0].qas_id] == "empty"
    v2 = json.loads(_read(oracle["v2_google"], "predictions.json"))
    assert "" in v2.values() and any(v2.values())


@pytest.mark.parametrize("version_2", [False, True], ids=["v1", "v2"])
def test_files_equal_googles(oracle, tmp_path, version_2):
    name = "v2" if version_2 else "v1"
    examples, features, results = _inputs(oracle, name)
    predictions, nbest, null_odds = compute_predictions(
        examples, features, results, N_BEST_SIZE, MAX_ANSWER_LENGTH, do_lower_case=True,
        version_2_with_negative=version_2,
        null_score_diff_threshold=NULL_SCORE_DIFF_THRESHOLD)
    assert list(predictions) == [example.qas_id for example in examples]
    paths = write_predictions(str(tmp_path), predictions, nbest,
                              null_odds if version_2 else None)
    names = ["predictions.json", "nbest_predictions.json"] + (["null_odds.json"] * version_2)
    assert paths == {n: os.path.join(str(tmp_path), n) for n in names}
    assert sorted(os.listdir(tmp_path)) == sorted(names)  # no temporary file left
    for n in names:
        assert _read(tmp_path, n) == _read(oracle[f"{name}_google"], n), n
    assert bool(null_odds) == version_2


@pytest.mark.parametrize("pred_text, orig_text, do_lower_case, final_text", [
    ("steve smith", "Steve Smith's", True, "Steve Smith"),  # the trailing "'s" is cut
    ("u . s", "the U.S. army", True, "U.S"),                # spaces of the tokenization ignored
    ("cafe", "Café noir", True, "Café"),                    # accents back, one char each
    ("Smith", "Steve Smith's", False, "Smith"),             # cased
    ("john", "Steve Smith's", True, "Steve Smith's"),       # not found: orig_text
    # The tokenizer drops the combining accent: the lengths differ, no alignment: orig_text.
    ("cafe", "Cafe\u0301 noir", True, "Cafe\u0301 noir"),
])
def test_get_final_text(pred_text, orig_text, do_lower_case, final_text):
    assert get_final_text(pred_text, orig_text, do_lower_case) == final_text


def _one_window(start_logits, end_logits):
    """One question on "Paris is big", one window: [CLS] q [SEP] paris is big [SEP]."""
    example = types.SimpleNamespace(qas_id="q", doc_tokens=["Paris", "is", "big"])
    feature = types.SimpleNamespace(
        unique_id=7, example_index=0, tokens=["[CLS]", "q", "[SEP]", "paris", "is", "big", "[SEP]"],
        token_to_orig_map={3: 0, 4: 1, 5: 2}, token_is_max_context={3: True, 4: True, 5: True})
    return [example], [feature], [RawResult(7, start_logits, end_logits)]


def test_v2_without_a_non_null_span_gets_the_nonce_first():
    """Google's v2 code fails here (no non-null answer); ours, like Hugging Face's, puts an
    "empty" answer with logits 0 first and compares the null score with 0."""
    # The best end (position 3) is before the best start (5): no span survives n_best_size 1.
    inputs = _one_window([1.0, 0, 0, 0, 0, 3.0, 0], [0.5, 0, 0, 2.0, 0, 0, 0])
    for threshold, answer in ((1.0, ""), (2.0, "empty")):
        predictions, nbest, null_odds = compute_predictions(
            *inputs, n_best_size=1, max_answer_length=30, do_lower_case=True,
            version_2_with_negative=True, null_score_diff_threshold=threshold)
        assert predictions == {"q": answer} and null_odds == {"q": 1.5}
        assert [(e["text"], e["start_logit"], e["end_logit"]) for e in nbest["q"]] == [
            ("empty", 0.0, 0.0), ("", 1.0, 0.5)]


def test_padding_logits_at_minus_infinity_are_accepted():
    """run_squad.py reports padding positions it did not compute as -inf: the answer is the
    one of the finite logits."""
    predictions, _, _ = compute_predictions(
        *_one_window([0, 0, 0, 0, 2.0, 0, 0, float("-inf")], [0, 0, 0, 0, 0, 2.0, 0, float("-inf")]),
        20, 30, True)
    assert predictions == {"q": "is big"}


def test_one_line_errors():
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="start_logits of the result with unique_id 7 hold "
                                             r"NaN or \+inf"):
            compute_predictions(*_one_window([0, 0, 0, bad, 0, 0, 0], [0] * 7), 20, 30, True)
    examples, features, _ = _one_window([0] * 7, [0] * 7)
    with pytest.raises(ValueError, match="no result for the feature with unique_id 7 "
                                         r"\(question q\)"):
        compute_predictions(examples, features, [], 20, 30, True)
