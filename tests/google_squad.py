"""google-research/bert's run_squad.py (the bert-tensorflow package) as a test oracle, run as a
separate process (its absl flags would clash with the other oracle modules in the test process).

  python tests/google_squad.py features|train_features SQUAD_JSON VOCAB OUT_JSON \
      --max_seq_length=384 --doc_stride=128 --max_query_length=64
      -> {"examples": [...], "features": [...]} in Google's field names, in prediction or
         training mode
  python tests/google_squad.py predictions SQUAD_JSON VOCAB LOGITS_NPZ OUT_DIR \
      --max_seq_length=384 ... --n_best_size=20 --max_answer_length=30
      -> Google's predictions.json and nbest_predictions.json in OUT_DIR, for the logits in
         LOGITS_NPZ (arrays unique_ids, start_logits, end_logits)
  python tests/google_squad.py predict_checkpoint SQUAD_JSON VOCAB BERT_CONFIG CHECKPOINT OUT_DIR
      --max_seq_length=.. ... -> the same files from Google's model (create_model) restored
         from CHECKPOINT

The shim: bert.modeling imports `tensorflow.contrib.layers` (gone in TF 2); a module standing in
for it, with TF1's `layer_norm`, is registered before the import.
"""

import json
import os
import sys
import types

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow.compat.v1 as tf


def _layer_norm(inputs, begin_norm_axis=-1, begin_params_axis=-1, scope=None):
    """tf.contrib.layers.layer_norm as bert.modeling calls it (last axis, epsilon 1e-12)."""
    del begin_norm_axis, begin_params_axis
    with tf.variable_scope(scope, "LayerNorm"):
        size = inputs.shape[-1]
        beta = tf.get_variable("beta", [size], initializer=tf.zeros_initializer())
        gamma = tf.get_variable("gamma", [size], initializer=tf.ones_initializer())
        mean, variance = tf.nn.moments(inputs, [-1], keep_dims=True)
        return tf.nn.batch_normalization(inputs, mean, variance, beta, gamma, 1e-12)


def import_run_squad():
    """bert.run_squad, importable on TF 2.21."""
    contrib = types.ModuleType("tensorflow.contrib")
    contrib.layers = types.ModuleType("tensorflow.contrib.layers")
    contrib.layers.layer_norm = _layer_norm
    sys.modules.setdefault("tensorflow.contrib", contrib)
    sys.modules.setdefault("tensorflow.contrib.layers", contrib.layers)
    from bert import run_squad

    return run_squad


def _examples_and_features(run_squad, squad_json, vocab, is_training):
    from bert import tokenization

    flags = run_squad.FLAGS
    examples = run_squad.read_squad_examples(squad_json, is_training=is_training)
    tokenizer = tokenization.FullTokenizer(vocab, do_lower_case=flags.do_lower_case)
    features = []
    run_squad.convert_examples_to_features(
        examples, tokenizer, flags.max_seq_length, flags.doc_stride, flags.max_query_length,
        is_training, features.append)
    return examples, features


def _google_logits(run_squad, features, config_file, checkpoint):
    """Google's create_model (BertModel + cls/squad) restored from `checkpoint`, run on the
    features in batches of 8: {"unique_ids", "start_logits", "end_logits"} arrays."""
    from bert import modeling

    config = modeling.BertConfig.from_json_file(config_file)
    columns = {name: np.array([getattr(f, name) for f in features], np.int32)
               for name in ("input_ids", "input_mask", "segment_ids")}
    with tf.Graph().as_default(), tf.Session() as session:
        inputs = {name: tf.placeholder(tf.int32, [None, value.shape[1]], name)
                  for name, value in columns.items()}
        start, end = run_squad.create_model(config, False, inputs["input_ids"],
                                            inputs["input_mask"], inputs["segment_ids"], False)
        tf.train.Saver().restore(session, checkpoint)
        starts, ends = [], []
        for first in range(0, len(features), 8):
            feed = {inputs[name]: value[first:first + 8] for name, value in columns.items()}
            batch_start, batch_end = session.run([start, end], feed)
            starts.append(batch_start)
            ends.append(batch_end)
    return {"unique_ids": np.array([f.unique_id for f in features]),
            "start_logits": np.concatenate(starts), "end_logits": np.concatenate(ends)}


def main(argv):
    run_squad = import_run_squad()
    command, *positional = [arg for arg in argv[1:] if not arg.startswith("--")]
    run_squad.FLAGS([argv[0], *[arg for arg in argv[1:] if arg.startswith("--")]])
    tf.logging.set_verbosity(tf.logging.ERROR)
    if command in ("features", "train_features"):
        squad_json, vocab, out_json = positional
        is_training = command == "train_features"
        examples, features = _examples_and_features(run_squad, squad_json, vocab, is_training)
        with open(out_json, "w", encoding="utf-8") as f:
            json.dump({"examples": [vars(e) for e in examples],
                       "features": [{**vars(x),
                                     "token_to_orig_map": sorted(x.token_to_orig_map.items()),
                                     "token_is_max_context":
                                         sorted(x.token_is_max_context.items())}
                                    for x in features]}, f)
    elif command in ("predictions", "predict_checkpoint"):
        if command == "predictions":
            squad_json, vocab, logits_npz, out_dir = positional
            examples, features = _examples_and_features(run_squad, squad_json, vocab, False)
            logits = dict(np.load(logits_npz))
        else:
            squad_json, vocab, config, checkpoint, out_dir = positional
            examples, features = _examples_and_features(run_squad, squad_json, vocab, False)
            logits = _google_logits(run_squad, features, config, checkpoint)
        results = [run_squad.RawResult(int(u), [float(x) for x in s], [float(x) for x in e])
                   for u, s, e in zip(logits["unique_ids"], logits["start_logits"],
                                      logits["end_logits"], strict=True)]
        os.makedirs(out_dir, exist_ok=True)
        run_squad.write_predictions(
            examples, features, results, run_squad.FLAGS.n_best_size,
            run_squad.FLAGS.max_answer_length, run_squad.FLAGS.do_lower_case,
            os.path.join(out_dir, "predictions.json"),
            os.path.join(out_dir, "nbest_predictions.json"),
            os.path.join(out_dir, "null_odds.json"))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv)
