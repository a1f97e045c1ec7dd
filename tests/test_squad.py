"""squad.py: the same examples, windows and records as google-research/bert's run_squad.py
(tests/google_squad.py runs it as the oracle), and one-line errors for files that are not SQuAD."""

import json
import os
import random
import subprocess
import sys

import pytest
import tensorflow as tf
from conftest import REPO, VOCAB

import squad
import tokenization

TRAIN = os.path.join(REPO, "data", "squad", "train-v1.1-slice.json")
DEV = os.path.join(REPO, "data", "squad", "dev-v1.1.json")
# The two window settings: (max_seq_length, doc_stride, max_query_length).
SETTINGS = {"384-128-64": (384, 128, 64), "256-64-32": (256, 64, 32)}


def subset(source, destination, every):
    """Every `every`-th paragraph of each article of SQuAD file `source`, written to
    `destination`: all articles, long and short contexts, non-ASCII text."""
    with open(source, encoding="utf-8") as f:
        data = json.load(f)["data"]
    articles = [{"title": a["title"], "paragraphs": a["paragraphs"][::every]} for a in data]
    with open(destination, "w", encoding="utf-8") as f:
        json.dump({"version": "1.1", "data": articles}, f, ensure_ascii=False)
    return str(destination)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """Google's examples and features for both settings, prediction mode on a dev subset and
    training mode on a train subset, computed by four concurrent oracle processes."""
    directory = tmp_path_factory.mktemp("squad_oracle")
    files = {"predict": subset(DEV, directory / "dev.json", 12),
             "train": subset(TRAIN, directory / "train.json", 6)}
    processes = {}
    for name, (seq, stride, query) in SETTINGS.items():
        for mode, command in (("predict", "features"), ("train", "train_features")):
            output = directory / f"{mode}-{name}.json"
            args = [sys.executable, os.path.join(REPO, "tests", "google_squad.py"), command,
                    files[mode], VOCAB, str(output), f"--max_seq_length={seq}",
                    f"--doc_stride={stride}", f"--max_query_length={query}"]
            processes[mode, name] = (output, subprocess.Popen(args, stderr=subprocess.PIPE,
                                                              text=True))
    results = {}
    for key, (output, process) in processes.items():
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-2000:]
        with open(output, encoding="utf-8") as f:
            results[key] = json.load(f)
    return files, results


def ours_as_json(features):
    """Our features in the oracle's JSON form (maps as sorted [key, value] pairs)."""
    return [dict(f._asdict(), token_to_orig_map=[list(item) for item in
                                                  sorted(f.token_to_orig_map.items())],
                 token_is_max_context=[list(item) for item in
                                       sorted(f.token_is_max_context.items())])
            for f in features]


@pytest.mark.parametrize("mode", ["predict", "train"])
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_features_identical_to_google(oracle, mode, setting):
    """Every example (words, answer word span) and every window (tokens, token-to-word map,
    max-context flags, ids, mask, segments, answer positions, ids and indexes) equals Google's,
    in order."""
    files, results = oracle
    reference = results[mode, setting]
    is_training = mode == "train"
    examples, skipped = squad.read_squad_examples(files[mode], is_training)
    assert [e._asdict() for e in examples] == reference["examples"]
    assert skipped == 0
    seq, stride, query = SETTINGS[setting]
    tokenizer = tokenization.FullTokenizer(VOCAB, do_lower_case=True)
    ours = ours_as_json(squad.convert_examples_to_features(examples, tokenizer, seq, stride,
                                                           query, is_training))
    theirs = reference["features"]
    assert len(ours) == len(theirs) > len(examples)  # long contexts give several windows
    for index, (mine, google) in enumerate(zip(ours, theirs, strict=True)):
        assert mine == google, f"window {index} differs"
    if is_training:  # some windows hold the answer, some do not
        assert {f["start_position"] > 0 for f in ours} == {True, False}


def test_training_records_identical_to_google_writer(oracle, tmp_path):
    """The training TFRecord (examples shuffled as Google's main does, Random(12345)) parses to
    the same features as Google's FeatureWriter would write for the same windows."""
    files, results = oracle
    seq, stride, query = SETTINGS["256-64-32"]
    tokenizer = tokenization.FullTokenizer(VOCAB, do_lower_case=True)
    examples, _ = squad.read_squad_examples(files["train"], True)
    random.Random(12345).shuffle(examples)
    path = str(tmp_path / "train.tf_record")
    written = squad.write_features(
        squad.convert_examples_to_features(examples, tokenizer, seq, stride, query, True),
        path, True)
    records = [tf.train.Example.FromString(r).features.feature
               for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]
    assert len(records) == len(written) == len(results["train", "256-64-32"]["features"])
    for record, feature in zip(records, written, strict=True):
        values = {name: list(value.int64_list.value) for name, value in record.items()}
        assert values == {"unique_ids": [feature.unique_id], "input_ids": feature.input_ids,
                          "input_mask": feature.input_mask,
                          "segment_ids": feature.segment_ids,
                          "start_positions": [feature.start_position],
                          "end_positions": [feature.end_position], "is_impossible": [0]}
    assert sorted(values) == sorted(["unique_ids", "input_ids", "input_mask", "segment_ids",
                                     "start_positions", "end_positions", "is_impossible"])


def test_answer_not_in_context_is_skipped_and_counted(tmp_path):
    """A training answer whose text is not at its offset is skipped (as Google does), counted."""
    path = tmp_path / "bad_answer.json"
    qas = [{"id": "good", "question": "Who?", "answers": [{"text": "Ada", "answer_start": 0}]},
           {"id": "bad", "question": "What?",
            "answers": [{"text": "Babbage", "answer_start": 4}]}]
    path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [
        {"context": "Ada wrote notes.", "qas": qas}]}]}))
    examples, skipped = squad.read_squad_examples(str(path), True)
    assert [e.qas_id for e in examples] == ["good"] and skipped == 1


@pytest.mark.parametrize("content, message", [
    ("not json {", "not a SQuAD JSON file"),
    ('{"version": "1.1"}', 'no "data" list'),
    ('{"data": [{"title": "t", "paragraphs": [{"qas": []}]}]}', "lacks 'context'"),
])
def test_not_squad_json_is_one_line_error(tmp_path, content, message):
    """A file that is not SQuAD JSON: SquadError naming the file and what is wrong."""
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(squad.SquadError, match=message) as error:
        squad.read_squad_examples(str(path), False)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
