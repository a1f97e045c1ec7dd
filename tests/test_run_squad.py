"""run_squad.py end to end, as a user runs it: fine-tune (the loss falls), resume, predict,
score, export; a 2-rank Horovod run under real mpirun; one-line errors for bad input."""

import json
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, VOCAB, run_cli
from test_squad import DEV, TRAIN, subset

import modeling

TINY = {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 128,
        "type_vocab_size": 2, "initializer_range": 0.02}
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny BERT config and small train (every 40th paragraph) and dev subsets."""
    directory = tmp_path_factory.mktemp("squad_inputs")
    config = directory / "bert_config.json"
    config.write_text(json.dumps(TINY))
    return {"config": str(config), "train": subset(TRAIN, directory / "train.json", 40),
            "dev": subset(DEV, directory / "dev.json", 60)}


def squad_args(inputs, output_dir, *extra, epochs=1.0):
    return ["run_squad.py", f"--vocab_file={VOCAB}", f"--bert_config_file={inputs['config']}",
            f"--output_dir={output_dir}", f"--train_file={inputs['train']}",
            f"--predict_file={inputs['dev']}", "--max_seq_length=128", "--doc_stride=64",
            "--max_query_length=32", "--train_batch_size=16", "--predict_batch_size=32",
            "--learning_rate=3e-3", f"--num_train_epochs={epochs}", "--save_checkpoints_steps=5",
            "--display_loss_steps=1", *extra]


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def log_records(output_dir):
    with open(os.path.join(output_dir, "train_log.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def summaries(output_dir, name):
    return [r["data"] for r in log_records(output_dir) if r["type"] == name]


def assert_same_predictions(theirs_dir, ours_dir):
    """The same predictions.json, and nbest_predictions.json with the same texts in the same
    order and the same probabilities and logits to float32 round-off."""
    assert (read_json(theirs_dir / "predictions.json")
            == read_json(ours_dir / "predictions.json"))
    theirs, ours = (read_json(path / "nbest_predictions.json") for path in (theirs_dir, ours_dir))
    assert list(theirs) == list(ours)
    for qid, entries in ours.items():
        assert [e["text"] for e in entries] == [e["text"] for e in theirs[qid]], qid
        for key in ("probability", "start_logit", "end_logit"):
            np.testing.assert_allclose([e[key] for e in entries],
                                       [e[key] for e in theirs[qid]], rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def trained(inputs, tmp_path_factory):
    """One epoch of fine-tuning, then a second run of the same output_dir to two epochs that
    predicts, scores and exports a SavedModel."""
    output = tmp_path_factory.mktemp("squad_run")
    run_cli(squad_args(inputs, output, "--do_train"))
    first = summaries(output, "train")[-1]
    run_cli(squad_args(inputs, output, "--do_train", "--do_predict",
                       f"--export_dir={output / 'saved_model'}", epochs=2.0))
    return output, first


def test_fine_tuning_lowers_the_loss_and_resumes(trained):
    """The loss of the last logged steps is below the first's; the second run resumes at the
    first run's final step and trains only the remaining updates."""
    output, first = trained
    questions = sum(1 for article in read_json(TRAIN)["data"]
                    for paragraph in article["paragraphs"][::40] for _ in paragraph["qas"])
    assert first["global_step"] == int(questions / 16)
    second = summaries(output, "train")[-1]
    assert second["global_step"] == int(2 * questions / 16)
    assert second["steps"] == second["global_step"] - first["global_step"]  # resumed
    losses = [r["data"]["total_loss"] for r in log_records(output) if r["type"] == "step"]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.5, losses


def test_prediction_files_and_scores(trained, inputs):
    """predictions.json answers every dev question with a span of its context (words joined
    by single spaces, as Google's mapping back gives them);
    nbest_predictions.json has Google's fields; eval_results.txt holds EM/F1 that
    squad_metrics.py gives for the same files, and the inference throughput."""
    output, _ = trained
    dataset = read_json(inputs["dev"])["data"]
    contexts = {qa["id"]: " ".join(paragraph["context"].split()) for article in dataset
                for paragraph in article["paragraphs"] for qa in paragraph["qas"]}
    predictions = read_json(output / "predictions.json")
    assert list(predictions) == list(contexts)
    assert all(text in contexts[qid] for qid, text in predictions.items())
    nbest = read_json(output / "nbest_predictions.json")
    first = nbest[next(iter(contexts))]
    assert list(first[0]) == ["text", "probability", "start_logit", "end_logit"]
    assert 1 <= len(first) <= 20 and first[0]["text"] == predictions[next(iter(contexts))]
    results = dict(line.split(" = ") for line in
                   (output / "eval_results.txt").read_text().splitlines())
    standalone = json.loads(run_cli(["squad_metrics.py", inputs["dev"],
                                     str(output / "predictions.json")]).stdout)
    assert float(results["exact_match"]) == pytest.approx(standalone["exact_match"])
    assert float(results["f1"]) == pytest.approx(standalone["f1"])
    for key in ("throughput_predict", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms"):
        assert float(results[key]) > 0


def test_predictions_identical_to_google_for_the_same_checkpoint(trained, inputs, tmp_path):
    """Google's run_squad (its features, model restored from our final checkpoint, its
    write_predictions) writes the same predictions.json and nbest_predictions.json (texts,
    order; logits to float32 round-off)."""
    output, _ = trained
    checkpoint = tf.compat.v1.train.latest_checkpoint(str(output))
    run_cli([os.path.join("tests", "google_squad.py"), "predict_checkpoint", inputs["dev"], VOCAB,
             inputs["config"], checkpoint, str(tmp_path), "--max_seq_length=128",
             "--doc_stride=64", "--max_query_length=32"])
    assert_same_predictions(tmp_path, output)


def test_predict_alone_from_a_fine_tuned_init_checkpoint(trained, inputs, tmp_path):
    """--do_predict alone with --init_checkpoint of a fine-tuned model (a fresh output_dir)
    writes the predictions of that checkpoint: those of the run that trained it, which
    trimmed the padding of its batches (this one computes every position of every window)."""
    output, _ = trained
    checkpoint = tf.compat.v1.train.latest_checkpoint(str(output))
    run_cli(squad_args(inputs, tmp_path / "predict_only", "--do_predict",
                       f"--init_checkpoint={checkpoint}", "--nopredict_trim_padding"))
    assert_same_predictions(tmp_path / "predict_only", output)


def test_saved_model_gives_the_checkpoint_logits(trained, inputs):
    """The exported SavedModel's serving signature returns the logits that the final
    checkpoint gives in our graph, on real windows with padding."""
    output, _ = trained
    records = list(tf.data.TFRecordDataset(str(output / "eval.tf_record"))
                   .take(4).as_numpy_iterator())
    parsed = [tf.train.Example.FromString(r).features.feature for r in records]
    batch = {name: np.array([list(p[name].int64_list.value) for p in parsed], np.int32)
             for name in ("input_ids", "input_mask", "segment_ids")}
    assert batch["input_mask"].min() == 0  # some padding
    config = modeling.BertConfig.from_dict(TINY)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        model = modeling.BertModel(config, False, *(tf.constant(batch[name]) for name in
                                                    ("input_ids", "input_mask", "segment_ids")))
        logits = modeling.get_squad_output(config, model.get_sequence_output())
        tf.compat.v1.train.Saver().restore(session,
                                           tf.compat.v1.train.latest_checkpoint(str(output)))
        expected = session.run(logits)
    loaded = tf.saved_model.load(str(output / "saved_model"))
    outputs = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in
                                                      batch.items()})
    np.testing.assert_allclose(outputs["start_logits"].numpy(), expected[0], atol=1e-5)
    np.testing.assert_allclose(outputs["end_logits"].numpy(), expected[1], atol=1e-5)


def test_two_horovod_ranks_fine_tune_and_rank_0_predicts(inputs, tmp_path):
    """mpirun -np 2 --horovod: each rank trains on its half of the windows (disjoint files),
    the global batch doubles (half the updates), and rank 0 alone writes the predictions."""
    output = tmp_path / "hvd"
    command = [*MPIRUN, os.path.join(os.path.dirname(os.sys.executable), "python"),
               *squad_args(inputs, output, "--do_train", "--do_predict", "--horovod",
                           "--intra_op_threads=1", "--inter_op_threads=1")]
    result = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    sizes = [sum(1 for _ in tf.data.TFRecordDataset(str(output / f"train.rank-{r}.tf_record")))
             for r in (0, 1)]
    train_data = summaries(output, "train_data")
    assert len(train_data) == 1 and abs(sizes[0] - sizes[1]) <= 1
    questions = train_data[0]["examples"]
    assert summaries(output, "train")[-1]["global_step"] == int(questions / 32)
    assert len(read_json(output / "predictions.json")) > 0
    assert len(summaries(output, "predict")) == 1


@pytest.mark.parametrize("case, message", [
    ("not_squad", "not a SQuAD JSON file"),
    ("vocab", "pass the vocab.txt the model was trained with"),
    ("no_head", "has no SQuAD head"),
])
def test_bad_input_is_one_line_error(inputs, tmp_path, case, message):
    """A predict file that is not SQuAD JSON, a vocab that does not match the config, and
    --do_predict alone with a checkpoint without cls/squad: exit non-zero, one line."""
    extra = ["--do_predict"]
    if case == "not_squad":
        bad = tmp_path / "bad.json"
        bad.write_text("[1, 2, 3]")
        extra.append(f"--predict_file={bad}")
    elif case == "vocab":
        vocab = tmp_path / "vocab.txt"
        vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\n")
        extra.append(f"--vocab_file={vocab}")
    else:
        prefix = str(tmp_path / "pretrained" / "bert_model.ckpt")
        with tf.Graph().as_default(), tf.compat.v1.Session() as session:
            modeling.BertModel(modeling.BertConfig.from_dict(TINY), False,
                               tf.zeros([1, 8], tf.int32))
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver().save(session, prefix)
        extra.append(f"--init_checkpoint={prefix}")
    result = run_cli(squad_args(inputs, tmp_path / "out", *extra), check=False)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("run_squad.py: error:") and message in last, result.stderr[-2000:]
