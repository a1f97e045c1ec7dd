"""Convert BERT checkpoints between TF1, Hugging Face and MLPerf PyTorch, tensor for tensor.

    python convert_checkpoint.py --input SRC --output DST [--bert_config_file JSON]
        [--input_format tf|hf|pt] [--output_format tf|hf|pt]

Formats and their naming:
  tf  A TF1 Saver checkpoint prefix (`model.ckpt-N` with `.index` and `.data-*` beside it) and
      `bert_config.json` beside it (or --bert_config_file). Google's variable names
      (`bert/encoder/layer_0/attention/self/query/kernel`, LayerNorm `beta`/`gamma`,
      `cls/predictions/output_bias`, `cls/seq_relationship/output_weights`, run_squad.py's
      `cls/squad/output_weights`); dense kernels are [in, out]. Optimizer slots, global_step,
      loss scale and other non-model variables in the input are skipped.
  hf  A Hugging Face directory: `config.json` and `model.safetensors` (`pytorch_model.bin` is
      read too). Names of transformers' `BertForPreTraining`: `bert.embeddings.word_embeddings.
      weight`, `bert.encoder.layer.0.attention.self.query.weight`, LayerNorm `weight` (gamma) and
      `bias` (beta), `bert.pooler.dense.*`, `cls.predictions.transform.dense.*`,
      `cls.predictions.bias`, `cls.seq_relationship.weight`. Dense weights are [out, in] (the
      transposed kernel); `cls.seq_relationship.weight` is Google's `output_weights` unchanged
      ([2, H] in both). The tied decoder weights are not stored. On input, heads are optional and
      names may lack the `bert.` prefix (a saved `BertModel`). A checkpoint with the SQuAD head
      `cls/squad/output_{weights,bias}` is transformers' `BertForQuestionAnswering`:
      `qa_outputs.weight` (Google's [2, H] `output_weights` unchanged; row 0 start, 1 end) and
      `qa_outputs.bias`, and no pooler, so the pooler is dropped on output; one read without a
      pooler gets a zero one (SQuAD never reads it; BertModel builds it, so it must be there).
  pt  A `torch.save`d `{"model": state_dict}` as MLPerf's NVIDIA PyTorch BERT
      `convert_tf_checkpoint.py` writes it: the hf names plus the tied
      `cls.predictions.decoder.weight`, with the vocabulary zero-padded to a multiple of 8
      (30522 -> 30528) as that model pads it; the SQuAD head is `qa_outputs.*` beside the whole
      encoder, as in that code's BertForQuestionAnswering. Needs torch. On input, a plain state
      dict is read too and padding rows beyond the config's vocab_size are dropped.

The activations map so that the converted model computes the same function: our `gelu` (Google's
tanh approximation) is Hugging Face's `gelu_new`, our `gelu_exact` is Hugging Face's `gelu`.

Formats are inferred when not given: an input with `.index` beside it is tf, a directory with
config.json is hf, a `.pt` file is pt; an output ending in `.pt` is pt, one whose name contains
`ckpt` is tf, anything else is an hf directory. A tf output gets `bert_config.json` beside it.
"""

import tf_startup  # noqa: F401  (first: TensorFlow with oneDNN kernels on, without Keras)

# isort: split
import json
import os

import numpy as np
import tensorflow as tf
from absl import app, flags

import modeling

# Our hidden_act -> Hugging Face's, and back (gelu_pytorch_tanh is HF's other tanh GELU).
_HF_ACT = {"gelu": "gelu_new", "gelu_exact": "gelu", "relu": "relu", "tanh": "tanh",
           "linear": "linear"}
_ACT_FROM_HF = {hf: ours for ours, hf in _HF_ACT.items()} | {"gelu_pytorch_tanh": "gelu"}
_CONFIG_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "hidden_act", "hidden_dropout_prob",
                "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
                "initializer_range")
# Tensors that Hugging Face/PyTorch files may hold but that are not weights of their own.
_DERIVED_KEYS = ("embeddings.position_ids", "cls.predictions.decoder.weight",
                 "cls.predictions.decoder.bias")
def _dense(tf_scope, hf_scope, units_in, units_out):
    return [(f"{tf_scope}/kernel", f"{hf_scope}.weight", True, [units_in, units_out]),
            (f"{tf_scope}/bias", f"{hf_scope}.bias", False, [units_out])]


def _norm(tf_scope, hf_scope, size):
    return [(f"{tf_scope}/gamma", f"{hf_scope}.weight", False, [size]),
            (f"{tf_scope}/beta", f"{hf_scope}.bias", False, [size])]


def variable_specs(config):
    """Returns (encoder, pre-training heads, SQuAD head) for `config` (a dict of bert_config.json
    keys): lists of (Google name, Hugging Face name, whether HF stores it transposed, shape)."""
    h, inner = config["hidden_size"], config["intermediate_size"]
    encoder = [(f"bert/embeddings/{table}", f"bert.embeddings.{table}.weight", False, [rows, h])
               for table, rows in (("word_embeddings", config["vocab_size"]),
                                   ("token_type_embeddings", config["type_vocab_size"]),
                                   ("position_embeddings", config["max_position_embeddings"]))]
    encoder += _norm("bert/embeddings/LayerNorm", "bert.embeddings.LayerNorm", h)
    for i in range(config["num_hidden_layers"]):
        tf_layer, hf_layer = f"bert/encoder/layer_{i}", f"bert.encoder.layer.{i}"
        for name in ("query", "key", "value"):
            encoder += _dense(f"{tf_layer}/attention/self/{name}",
                              f"{hf_layer}.attention.self.{name}", h, h)
        encoder += _dense(f"{tf_layer}/attention/output/dense",
                          f"{hf_layer}.attention.output.dense", h, h)
        encoder += _norm(f"{tf_layer}/attention/output/LayerNorm",
                         f"{hf_layer}.attention.output.LayerNorm", h)
        encoder += _dense(f"{tf_layer}/intermediate/dense", f"{hf_layer}.intermediate.dense",
                          h, inner)
        encoder += _dense(f"{tf_layer}/output/dense", f"{hf_layer}.output.dense", inner, h)
        encoder += _norm(f"{tf_layer}/output/LayerNorm", f"{hf_layer}.output.LayerNorm", h)
    encoder += _dense("bert/pooler/dense", "bert.pooler.dense", h, h)
    pretraining = (
        _dense("cls/predictions/transform/dense", "cls.predictions.transform.dense", h, h)
        + _norm("cls/predictions/transform/LayerNorm", "cls.predictions.transform.LayerNorm", h)
        + [("cls/predictions/output_bias", "cls.predictions.bias", False, [config["vocab_size"]]),
           ("cls/seq_relationship/output_weights", "cls.seq_relationship.weight", False, [2, h]),
           ("cls/seq_relationship/output_bias", "cls.seq_relationship.bias", False, [2])])
    squad = [("cls/squad/output_weights", "qa_outputs.weight", False, [2, h]),
             ("cls/squad/output_bias", "qa_outputs.bias", False, [2])]
    return encoder, pretraining, squad


def _all_specs(config):
    return [spec for specs in variable_specs(config) for spec in specs]


def _check_tensors(tensors, config, source):
    """Raises ValueError unless `tensors` holds the full encoder (each head all or none) in
    shape."""
    encoder, *heads = variable_specs(config)
    missing = [spec[0] for spec in encoder if spec[0] not in tensors]
    for head in heads:
        if any(spec[0] in tensors for spec in head):
            missing += [spec[0] for spec in head if spec[0] not in tensors]
    if missing:
        raise ValueError(
            f"{source} is not a BERT checkpoint for its config: {len(missing)} weights missing "
            f"({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}); check "
            "num_hidden_layers in the config and that the checkpoint is a BERT one")
    shapes = {name: shape for name, _, _, shape in _all_specs(config)}
    wrong = [f"{name} {list(value.shape)} vs config {shapes[name]}"
             for name, value in tensors.items() if list(value.shape) != shapes[name]]
    if wrong:
        raise ValueError(f"{source} does not match its config: {'; '.join(wrong[:3])}; "
                         "pass the bert_config.json the checkpoint was trained with")


def _config_dict(config_file):
    if not os.path.isfile(config_file):
        raise ValueError(f"no bert config at {config_file}: pass --bert_config_file")
    config = modeling.BertConfig.from_json_file(config_file).to_dict()
    missing = [key for key in _CONFIG_KEYS if key not in config]
    if missing:
        raise ValueError(f"{config_file} lacks {', '.join(missing)}: not a bert_config.json")
    modeling.get_activation(config["hidden_act"])
    return {key: config[key] for key in _CONFIG_KEYS}


def read_tf(prefix, config_file=None):
    """Reads a TF1 checkpoint: returns (config dict, {Google name: array}), model weights only."""
    if not tf.io.gfile.exists(prefix + ".index"):
        raise ValueError(f"no TF1 checkpoint at {prefix} (no {prefix}.index): pass the "
                         "checkpoint prefix, e.g. model.ckpt-28252")
    config = _config_dict(config_file or os.path.join(os.path.dirname(prefix),
                                                      "bert_config.json"))
    reader = tf.train.load_checkpoint(prefix)
    names = reader.get_variable_to_shape_map()
    tensors = {spec[0]: reader.get_tensor(spec[0]) for spec in _all_specs(config)
               if spec[0] in names}
    _check_tensors(tensors, config, prefix)
    return config, tensors


def write_tf(config, tensors, prefix):
    """Writes `tensors` with tf.compat.v1.train.Saver at `prefix`, bert_config.json beside it."""
    directory = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(directory, exist_ok=True)
    with tf.Graph().as_default():
        feeds, variables = {}, []
        for name, value in tensors.items():
            placeholder = tf.compat.v1.placeholder(tf.as_dtype(value.dtype), value.shape)
            variables.append(tf.compat.v1.Variable(placeholder, name=name))
            feeds[placeholder] = value
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as session:
            session.run([v.initializer for v in variables], feeds)
            saver.save(session, prefix, write_meta_graph=False)
    with open(os.path.join(directory, "bert_config.json"), "w") as f:
        f.write(modeling.BertConfig.from_dict(config).to_json_string())


def _from_state_dict(state_dict, config, source, vocab_rows=None):
    """Hugging Face names -> Google names; `vocab_rows` trims padded vocabulary rows, a missing
    pooler becomes zeros."""
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in state_dict else ""
    if prefix + "embeddings.word_embeddings.weight" not in state_dict:
        raise ValueError(f"{source} holds no BERT weights (no "
                         "bert.embeddings.word_embeddings.weight): not a BERT checkpoint")
    specs = _all_specs(config)
    tensors, used = {}, set()
    for tf_name, hf_name, transposed, _ in specs:
        key = prefix + hf_name[len("bert."):] if hf_name.startswith("bert.") else hf_name
        if key in state_dict:
            value = np.asarray(state_dict[key])
            tensors[tf_name] = np.ascontiguousarray(value.T) if transposed else value
            used.add(key)
    for tf_name, _, _, shape in specs:
        if tf_name.startswith("bert/pooler/") and tf_name not in tensors:
            tensors[tf_name] = np.zeros(shape, tensors["bert/embeddings/word_embeddings"].dtype)
    if vocab_rows is not None:
        for name in ("bert/embeddings/word_embeddings", "cls/predictions/output_bias"):
            if name in tensors:
                tensors[name] = tensors[name][:vocab_rows]
    decoder = state_dict.get("cls.predictions.decoder.weight")
    if decoder is not None and not np.array_equal(
            np.asarray(decoder)[:vocab_rows], tensors["bert/embeddings/word_embeddings"]):
        raise ValueError(f"{source} has MLM decoder weights that differ from the word "
                         "embeddings; BERT ties them: convert a model with tied weights")
    unused = [key for key in state_dict
              if key not in used and not key.endswith(_DERIVED_KEYS)]
    if unused:
        raise ValueError(f"{source} has weights outside BERT and its pre-training and SQuAD "
                         f"heads ({', '.join(unused[:3])}{' ...' if len(unused) > 3 else ''}): "
                         "convert a BertModel, BertForPreTraining or BertForQuestionAnswering "
                         "checkpoint")
    _check_tensors(tensors, config, source)
    return tensors


def _to_state_dict(tensors, config):
    """Google names -> Hugging Face names (dense kernels transposed)."""
    return {hf_name: np.ascontiguousarray(tensors[tf_name].T) if transposed else tensors[tf_name]
            for tf_name, hf_name, transposed, _ in _all_specs(config)
            if tf_name in tensors}


def read_hf(directory):
    """Reads a Hugging Face BERT directory: returns (config dict, {Google name: array})."""
    config_file = os.path.join(directory, "config.json")
    if not os.path.isfile(config_file):
        raise ValueError(f"no Hugging Face model at {directory} (no config.json)")
    with open(config_file) as f:
        hf_config = json.load(f)
    if hf_config.get("model_type") != "bert":
        raise ValueError(f"{config_file} has model_type {hf_config.get('model_type')!r}, "
                         "not 'bert': only BERT checkpoints convert")
    if hf_config.get("layer_norm_eps", 1e-12) != modeling.LAYER_NORM_EPSILON:
        raise ValueError(f"{config_file} has layer_norm_eps {hf_config['layer_norm_eps']}; "
                         "Google's BERT uses 1e-12: this model cannot convert exactly")
    if hf_config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{config_file} uses position_embedding_type "
                         f"{hf_config['position_embedding_type']!r}; only 'absolute' converts")
    if hf_config.get("hidden_act") not in _ACT_FROM_HF:
        raise ValueError(f"{config_file} has hidden_act {hf_config.get('hidden_act')!r}; "
                         f"convertible: {', '.join(sorted(_ACT_FROM_HF))}")
    config = {key: hf_config[key] for key in _CONFIG_KEYS}
    config["hidden_act"] = _ACT_FROM_HF[hf_config["hidden_act"]]
    safetensors_file = os.path.join(directory, "model.safetensors")
    torch_file = os.path.join(directory, "pytorch_model.bin")
    if os.path.isfile(safetensors_file):
        from safetensors.numpy import load_file
        state_dict = load_file(safetensors_file)
    elif os.path.isfile(torch_file):
        state_dict = _torch_load(torch_file)
    else:
        raise ValueError(f"no model.safetensors or pytorch_model.bin in {directory}")
    return config, _from_state_dict(state_dict, config, directory)


def write_hf(config, tensors, directory):
    """Writes config.json and model.safetensors loadable by transformers' BertForPreTraining,
    BertForQuestionAnswering (SQuAD head; the pooler is dropped) or BertModel (no head)."""
    from safetensors.numpy import save_file

    pretraining = "cls/predictions/output_bias" in tensors
    squad = "cls/squad/output_weights" in tensors
    if pretraining and squad:
        raise ValueError("the checkpoint has both pre-training and SQuAD heads, which no "
                         "transformers class holds: convert it to tf or pt instead")
    if squad:
        tensors = {name: value for name, value in tensors.items()
                   if not name.startswith("bert/pooler/")}
    architecture = ("BertForQuestionAnswering" if squad else
                    "BertForPreTraining" if pretraining else "BertModel")
    os.makedirs(directory, exist_ok=True)
    hf_config = {key: config[key] for key in _CONFIG_KEYS}
    hf_config.update(
        architectures=[architecture], model_type="bert",
        hidden_act=_HF_ACT[config["hidden_act"]], layer_norm_eps=modeling.LAYER_NORM_EPSILON,
        pad_token_id=0, position_embedding_type="absolute")
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2, sort_keys=True)
        f.write("\n")
    save_file(_to_state_dict(tensors, config),
              os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})


def _torch_load(path):
    import torch

    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if "model" in state_dict:
        state_dict = state_dict["model"]
    return {key: value.numpy() for key, value in state_dict.items()}


def read_pt(path, config_file=None):
    """Reads a PyTorch state dict in MLPerf naming: returns (config dict, {Google name: array})."""
    if not os.path.isfile(path):
        raise ValueError(f"no PyTorch checkpoint at {path}")
    config = _config_dict(config_file or os.path.join(os.path.dirname(path), "bert_config.json"))
    return config, _from_state_dict(_torch_load(path), config, path,
                                    vocab_rows=config["vocab_size"])


def write_pt(config, tensors, path):
    """Writes {"model": state_dict} as MLPerf's NVIDIA PyTorch BERT converter does (vocab % 8)."""
    import torch

    state_dict = _to_state_dict(tensors, config)
    pad = -config["vocab_size"] % 8
    for key in ("bert.embeddings.word_embeddings.weight", "cls.predictions.bias"):
        if key in state_dict:
            value = state_dict[key]
            state_dict[key] = np.pad(value, [(0, pad)] + [(0, 0)] * (value.ndim - 1))
    if "cls.predictions.bias" in state_dict:
        state_dict["cls.predictions.decoder.weight"] = state_dict[
            "bert.embeddings.word_embeddings.weight"]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save({"model": {key: torch.from_numpy(value) for key, value in state_dict.items()}},
               path)


def infer_input_format(path):
    """tf for a checkpoint prefix, hf for a directory with config.json, pt for a .pt file."""
    if tf.io.gfile.exists(path + ".index"):
        return "tf"
    if os.path.isfile(os.path.join(path, "config.json")):
        return "hf"
    if path.endswith(".pt"):
        return "pt"
    raise ValueError(f"cannot tell the format of {path}: not a TF1 checkpoint prefix (no "
                     f"{path}.index), Hugging Face directory or .pt file; check the path or "
                     "pass --input_format")


def infer_output_format(path):
    """pt for a .pt file, tf for a name containing "ckpt", hf (a directory) otherwise."""
    if path.endswith(".pt"):
        return "pt"
    return "tf" if "ckpt" in os.path.basename(path.rstrip("/")) else "hf"


def convert(input_path, output_path, input_format=None, output_format=None,
            bert_config_file=None):
    """Converts `input_path` to `output_path`; formats are inferred when None."""
    input_format = input_format or infer_input_format(input_path)
    output_format = output_format or infer_output_format(output_path)
    if input_format == output_format:
        raise ValueError(f"input and output are both {input_format}: pick another "
                         "--output_format")
    if input_format == "tf":
        config, tensors = read_tf(input_path, bert_config_file)
    elif input_format == "hf":
        config, tensors = read_hf(input_path)
    else:
        config, tensors = read_pt(input_path, bert_config_file)
    {"tf": write_tf, "hf": write_hf, "pt": write_pt}[output_format](config, tensors, output_path)


def main(argv):
    del argv
    tf.compat.v1.disable_eager_execution()
    options = flags.FLAGS
    try:
        convert(options.input, options.output, options.input_format, options.output_format,
                options.bert_config_file)
    except ValueError as error:
        raise SystemExit(f"convert_checkpoint.py: {error}") from None


if __name__ == "__main__":
    flags.DEFINE_string("input", None, "Checkpoint to convert: TF1 prefix, HF directory or .pt.")
    flags.DEFINE_string("output", None, "Where to write the converted checkpoint.")
    flags.DEFINE_string("bert_config_file", None,
                        "bert_config.json of a tf or pt input without one beside it.")
    flags.DEFINE_enum("input_format", None, ["tf", "hf", "pt"], "Default: inferred.")
    flags.DEFINE_enum("output_format", None, ["tf", "hf", "pt"], "Default: inferred.")
    flags.mark_flags_as_required(["input", "output"])
    app.run(main)
