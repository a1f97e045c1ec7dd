"""Tests of modeling.py: Google's variable names, masking, heads and init from checkpoints."""

import math

import numpy as np
import pytest
import tensorflow as tf
from conftest import require_mixed_precision_rewrite

import modeling

TINY = {
    "vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 37, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 64, "type_vocab_size": 2,
    "initializer_range": 0.02,
}


def build_pretraining(config, batch_size=2, seq_length=None, num_predictions=3,
                      is_training=False):
    """Placeholders, BertModel and both heads, as run_pretraining's model_fn builds them."""
    ids = tf.compat.v1.placeholder(tf.int64, [batch_size, seq_length], "input_ids")
    mask = tf.compat.v1.placeholder(tf.int64, [batch_size, seq_length], "input_mask")
    types = tf.compat.v1.placeholder(tf.int64, [batch_size, seq_length], "segment_ids")
    positions = tf.compat.v1.placeholder(tf.int64, [batch_size, num_predictions], "positions")
    labels = tf.compat.v1.placeholder(tf.int64, [batch_size, num_predictions], "labels")
    weights = tf.compat.v1.placeholder(tf.float32, [batch_size, num_predictions], "weights")
    nsp_labels = tf.compat.v1.placeholder(tf.int64, [batch_size], "next_sentence_labels")
    model = modeling.BertModel(config, is_training, ids, mask, types)
    mlm = modeling.get_masked_lm_output(config, model.get_sequence_output(),
                                        model.get_embedding_table(), positions, labels, weights)
    nsp = modeling.get_next_sentence_output(config, model.get_pooled_output(), nsp_labels)
    inputs = {"ids": ids, "mask": mask, "types": types, "positions": positions, "labels": labels,
              "weights": weights, "nsp_labels": nsp_labels}
    return inputs, model, mlm, nsp


def randomize(session, scale=0.2, seed=0):
    """Gives every trainable variable random values (so beta/gamma/biases are not 0 or 1)."""
    rng = np.random.default_rng(seed)
    values = {}
    for var in tf.compat.v1.trainable_variables():
        value = rng.normal(0.0, scale, var.shape.as_list()).astype(np.float32)
        var.load(value, session)
        values[var.op.name] = value
    return values


def random_batch(rng, batch_size, seq_length, vocab_size, num_predictions=3):
    return {"ids": rng.integers(0, vocab_size, [batch_size, seq_length]),
            "mask": np.ones([batch_size, seq_length], np.int64),
            "types": rng.integers(0, 2, [batch_size, seq_length]),
            "positions": np.stack([rng.choice(seq_length, num_predictions, replace=False)
                                   for _ in range(batch_size)]),
            "labels": rng.integers(0, vocab_size, [batch_size, num_predictions]),
            "weights": np.array([[1.0] * num_predictions,
                                 [1.0] * (num_predictions - 1) + [0.0]], np.float32),
            "nsp_labels": rng.integers(0, 2, [batch_size])}


def feed(inputs, batch):
    return {inputs[key]: batch[key] for key in inputs}


def google_bert_base_shapes(vocab_size=30522, hidden=768, inner=3072, layers=12):
    """The variable list of DESIGN.md §2 with the shapes of Google's BERT-base checkpoint."""
    shapes = {"bert/embeddings/word_embeddings": [vocab_size, hidden],
              "bert/embeddings/token_type_embeddings": [2, hidden],
              "bert/embeddings/position_embeddings": [512, hidden],
              "bert/embeddings/LayerNorm/beta": [hidden],
              "bert/embeddings/LayerNorm/gamma": [hidden]}
    for i in range(layers):
        layer = f"bert/encoder/layer_{i}"
        for name in ("query", "key", "value"):
            shapes[f"{layer}/attention/self/{name}/kernel"] = [hidden, hidden]
            shapes[f"{layer}/attention/self/{name}/bias"] = [hidden]
        shapes[f"{layer}/attention/output/dense/kernel"] = [hidden, hidden]
        shapes[f"{layer}/attention/output/dense/bias"] = [hidden]
        shapes[f"{layer}/intermediate/dense/kernel"] = [hidden, inner]
        shapes[f"{layer}/intermediate/dense/bias"] = [inner]
        shapes[f"{layer}/output/dense/kernel"] = [inner, hidden]
        shapes[f"{layer}/output/dense/bias"] = [hidden]
        for norm in ("attention/output/LayerNorm", "output/LayerNorm"):
            shapes[f"{layer}/{norm}/beta"] = [hidden]
            shapes[f"{layer}/{norm}/gamma"] = [hidden]
    shapes.update({"bert/pooler/dense/kernel": [hidden, hidden],
                   "bert/pooler/dense/bias": [hidden],
                   "cls/predictions/transform/dense/kernel": [hidden, hidden],
                   "cls/predictions/transform/dense/bias": [hidden],
                   "cls/predictions/transform/LayerNorm/beta": [hidden],
                   "cls/predictions/transform/LayerNorm/gamma": [hidden],
                   "cls/predictions/output_bias": [vocab_size],
                   "cls/seq_relationship/output_weights": [2, hidden],
                   "cls/seq_relationship/output_bias": [2]})
    return shapes


def test_bert_base_variables_are_googles_names_and_shapes():
    """BERT-base with both heads has exactly Google's 206 variables, names and shapes."""
    config = modeling.BertConfig(vocab_size=30522, type_vocab_size=2)
    with tf.Graph().as_default():
        build_pretraining(config, seq_length=128, num_predictions=20)
        ours = {var.op.name: var.shape.as_list() for var in tf.compat.v1.global_variables()}
    expected = google_bert_base_shapes()
    assert len(expected) == 5 + 12 * 16 + 2 + 7 == 206
    assert ours == expected


def test_padding_does_not_change_outputs_at_real_positions():
    """Appending padding (mask 0, arbitrary ids and types) leaves every real position's
    encoder outputs and the pooled output unchanged."""
    config = modeling.BertConfig.from_dict(TINY)
    rng = np.random.default_rng(1)
    with tf.Graph().as_default():
        ids = tf.compat.v1.placeholder(tf.int32, [None, None])
        mask = tf.compat.v1.placeholder(tf.int32, [None, None])
        types = tf.compat.v1.placeholder(tf.int32, [None, None])
        model = modeling.BertModel(config, False, ids, mask, types)
        outputs = model.get_all_encoder_layers() + [model.get_pooled_output()]
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            randomize(session)
            short = {"ids": rng.integers(0, 99, [2, 5]), "types": rng.integers(0, 2, [2, 5])}
            short_out = session.run(outputs, {ids: short["ids"], types: short["types"],
                                              mask: np.ones([2, 5])})
            long_out = session.run(outputs, {
                ids: np.concatenate([short["ids"], rng.integers(0, 99, [2, 4])], axis=1),
                types: np.concatenate([short["types"], rng.integers(0, 2, [2, 4])], axis=1),
                mask: np.concatenate([np.ones([2, 5]), np.zeros([2, 4])], axis=1)})
    for layer_short, layer_long in zip(short_out[:-1], long_out[:-1]):
        np.testing.assert_allclose(layer_long[:, :5], layer_short, atol=1e-5)
    np.testing.assert_allclose(long_out[-1], short_out[-1], atol=1e-5)


def test_dropout_applies_only_when_training():
    """Two runs agree exactly in inference mode and differ in training mode."""
    config = modeling.BertConfig.from_dict(TINY)
    batch = random_batch(np.random.default_rng(2), 2, 8, 99)
    for is_training in (False, True):
        with tf.Graph().as_default():
            inputs, model, _, _ = build_pretraining(config, is_training=is_training)
            with tf.compat.v1.Session() as session:
                session.run(tf.compat.v1.global_variables_initializer())
                first, second = (session.run(model.get_sequence_output(), feed(inputs, batch))
                                 for _ in range(2))
        assert np.array_equal(first, second) != is_training


@pytest.mark.parametrize("rate,shape", [(0.1, [8, 12, 33, 33]), (0.5, [3, 7]), (0.9, [1001])])
def test_stateless_dropout_drops_at_the_rate_and_keeps_the_expectation(rate, shape):
    """Training (stateless) dropout, any shape, odd sizes included: units are zero or x/P(keep)
    with P(keep) = 1 - rate to 1/65536 (dropout_unscaled: zero or x, and the factor 1/P(keep));
    the dropped fraction is `rate` within 5 standard errors (so the expectation is x); the same
    seed draws the same mask, another seed a different one."""
    x = np.random.default_rng(3).uniform(1.0, 2.0, shape).astype(np.float32)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        seed = tf.compat.v1.placeholder(tf.int64, [2])
        with modeling.stateless_dropout(seed):
            dropped = modeling.dropout(tf.constant(x), rate)
        with modeling.stateless_dropout(seed):  # the same op index: the same mask
            zeroed, scale = modeling.dropout_unscaled(tf.constant(x), rate)
        first, again, other = (session.run(dropped, {seed: s}) for s in ([1, 2], [1, 2], [1, 3]))
        unscaled = session.run(zeroed, {seed: [1, 2]})
    keep_probability = 1 - round(rate * 65536) / 65536
    assert abs(keep_probability - (1 - rate)) <= 0.5 / 65536
    kept = first != 0
    np.testing.assert_allclose(first[kept], x[kept] / keep_probability, rtol=1e-6)
    np.testing.assert_array_equal(unscaled, np.where(kept, x, 0))
    assert scale == 1 / keep_probability
    standard_error = np.sqrt(rate * (1 - rate) / x.size)
    assert abs((1 - kept.mean()) - rate) < 5 * standard_error
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    with (pytest.raises(ValueError, match="dropout rate must be in"), tf.Graph().as_default(),
          modeling.stateless_dropout(tf.constant([1, 2]))):
        modeling.dropout(tf.constant(x), 1.0)


def test_dropout_of_varying_sizes_draws_the_same_mask_at_a_few_sizes():
    """dropout_unscaled(sizes_vary=True) (a sequence's attention probabilities, one size per
    length) zeroes exactly the units the plain one does, for sizes of every kind, while its
    random bits are drawn at the next size 2^k or 3 * 2^k: less than half more, and 2 sizes per
    doubling, so that a run compiles a few XLA kernels instead of one per length."""
    shapes = [[2, 3, 3], [12, 37, 37], [1, 1], [5, 0, 4], [4, 1000]]
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        pairs = []
        for shape in shapes:
            x = tf.ones(shape)
            masks = []
            for sizes_vary in (False, True):
                with modeling.stateless_dropout(tf.constant([4, 5])):
                    masks.append(modeling.dropout_unscaled(x, 0.3, sizes_vary)[0])
            pairs.append(masks)
        sizes = list(range(1, 200)) + [3 * 2**20, 3 * 2**20 + 1, 12 * 512 * 512]
        buckets = session.run([modeling._size_bucket(tf.constant(n)) for n in sizes])
        pairs = session.run(pairs)
    for shape, (plain, varying) in zip(shapes, pairs, strict=True):
        assert plain.shape == tuple(shape)
        np.testing.assert_array_equal(varying, plain)
    for n, bucket in zip(sizes, buckets, strict=True):
        power = 1 << max(int(bucket).bit_length() - 1, 0)
        assert n <= bucket < 1.5 * n + 1 and bucket in (power, 3 * power // 2), (n, bucket)
    assert len(set(buckets[:128])) == 14  # 1, 2, 3, 4, 6, 8, ..., 96, 128


def test_stateless_dropout_masks_are_uncorrelated():
    """The keep masks of two dropout ops in one block, of two seeds, and of neighbouring units
    (next element, next row) are uncorrelated: each sample correlation is within 5 standard
    errors (1/sqrt(n)) of 0."""
    shape = [256, 1024]
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        seed = tf.compat.v1.placeholder(tf.int64, [2])
        with modeling.stateless_dropout(seed):
            ones = tf.ones(shape)
            first, second = modeling.dropout(ones, 0.5), modeling.dropout(ones, 0.5)
        (a, b), (c, _) = (session.run([first, second], {seed: s}) for s in ([7, 0], [7, 1]))
    a, b, c = (m != 0 for m in (a, b, c))
    pairs = {"two ops": (a, b), "two seeds": (a, c), "next element": (a[:, :-1], a[:, 1:]),
             "next row": (a[:-1], a[1:])}
    for name, (x, y) in pairs.items():
        correlation = np.corrcoef(x.ravel(), y.ravel())[0, 1]
        assert abs(correlation) < 5 / np.sqrt(x.size), (name, correlation)


def test_heads_compute_googles_losses_from_gathered_positions():
    """The MLM head projects only the B*P gathered positions (no [B, S, V] tensor), uses the
    word embeddings as output weights, and its losses are the weighted cross-entropies."""
    config = modeling.BertConfig.from_dict(TINY)
    batch = random_batch(np.random.default_rng(3), 2, 11, 99)
    with tf.Graph().as_default():
        inputs, _model, mlm, nsp = build_pretraining(config, seq_length=11)
        vocab_shaped = [op.name for op in tf.compat.v1.get_default_graph().get_operations()
                        for out in op.outputs
                        if out.shape.rank and out.shape.as_list()[-1] == 99
                        and out.shape.as_list()[0] in (2, 22)]
        cls_variables = [v.op.name for v in tf.compat.v1.trainable_variables()
                         if v.op.name.startswith("cls/predictions")]
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            randomize(session)
            (mlm_loss, mlm_per_example, log_probs), (nsp_loss, nsp_per_example, nsp_log_probs) = (
                session.run([mlm, nsp], feed(inputs, batch)))
    assert vocab_shaped == []
    assert "cls/predictions/output_weights" not in cls_variables
    assert log_probs.shape == (6, 99) and nsp_log_probs.shape == (2, 2)
    expected = -log_probs[np.arange(6), batch["labels"].reshape(-1)]
    np.testing.assert_allclose(mlm_per_example, expected, rtol=1e-5)
    weights = batch["weights"].reshape(-1)
    np.testing.assert_allclose(mlm_loss, (weights * expected).sum() / (weights.sum() + 1e-5),
                               rtol=1e-5)
    nsp_expected = -nsp_log_probs[np.arange(2), batch["nsp_labels"]]
    np.testing.assert_allclose(nsp_per_example, nsp_expected, rtol=1e-5)
    np.testing.assert_allclose(nsp_loss, nsp_expected.mean(), rtol=1e-5)


def test_activations_have_googles_and_exact_gelu_meanings():
    """`gelu` is Google's tanh approximation, `gelu_exact` the erf GELU; unknown names fail."""
    x = np.linspace(-4.0, 4.0, 41).astype(np.float32)
    tanh_gelu = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    erf_gelu = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        got = session.run({name: modeling.get_activation(name)(tf.constant(x))
                           for name in ("gelu", "gelu_exact", "relu", "tanh")})
    np.testing.assert_allclose(got["gelu"], tanh_gelu, atol=1e-6)
    np.testing.assert_allclose(got["gelu_exact"], erf_gelu, atol=1e-6)
    assert np.abs(got["gelu"] - got["gelu_exact"]).max() > 1e-4
    np.testing.assert_array_equal(got["relu"], np.maximum(x, 0))
    np.testing.assert_allclose(got["tanh"], np.tanh(x), atol=1e-6)
    assert modeling.get_activation("linear") is None
    with pytest.raises(ValueError, match="unsupported hidden_act 'swish'"):
        modeling.get_activation("swish")


@pytest.mark.parametrize("name", ["gelu", "gelu_exact"])
def test_training_gelus_have_the_formulas_values_and_gradients(name):
    """The training variant of each GELU (XLA-compiled, gradient from the input alone) gives the
    formula's values and the gradient TensorFlow derives from the formula, over [-8, 8], within
    float32 rounding (XLA's tanh and erf are not Eigen's, bit for bit)."""
    x = np.linspace(-8.0, 8.0, 321).astype(np.float32)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        inputs = tf.constant(x)
        plain = modeling.get_activation(name)(inputs)
        lean = modeling.get_activation(name, training=True)(inputs)
        assert modeling.get_activation(name, training=True) is not modeling.get_activation(name)
        got = session.run({"plain": plain, "lean": lean,
                           "plain_grad": tf.gradients(plain, inputs)[0],
                           "lean_grad": tf.gradients(lean, inputs)[0]})
    np.testing.assert_allclose(got["lean"], got["plain"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["lean_grad"], got["plain_grad"], rtol=1e-5, atol=1e-6)
    assert modeling.get_activation("relu", training=True) is tf.nn.relu


@pytest.mark.parametrize("rewrite", ["float32", "bfloat16"])
@pytest.mark.parametrize("hidden_act,fused", [("gelu", b"GeluApproximate"),
                                              ("gelu_exact", b"GeluExact")])
def test_intermediate_dense_and_gelu_run_as_one_fused_op(rewrite, hidden_act, fused):
    """Grappler's oneDNN remapper turns each layer's intermediate MatMul + BiasAdd + GELU into
    one fused op, in float32 and under the bfloat16 mixed-precision rewrite (tf.nn.gelu's
    forms stay unfused under it: separate Erfc, Pow and Mul ops at up to 25% of a step)."""
    config = modeling.BertConfig.from_dict(dict(TINY, hidden_act=hidden_act))
    session_config = tf.compat.v1.ConfigProto()
    if rewrite == "bfloat16":
        session_config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = 1
        require_mixed_precision_rewrite(session_config)
    with tf.Graph().as_default(), tf.compat.v1.Session(config=session_config) as session:
        inputs, model, _, _ = build_pretraining(config, seq_length=8)
        session.run(tf.compat.v1.global_variables_initializer())
        metadata = tf.compat.v1.RunMetadata()
        session.run(model.get_sequence_output(),
                    {inputs["ids"]: np.ones((2, 8)), inputs["mask"]: np.ones((2, 8)),
                     inputs["types"]: np.zeros((2, 8))},
                    options=tf.compat.v1.RunOptions(output_partition_graphs=True),
                    run_metadata=metadata)
    fused_ops = [list(node.attr["fused_ops"].list.s) for graph in metadata.partition_graphs
                 for node in graph.node if "intermediate" in node.name
                 and "fused_ops" in node.attr]
    assert fused_ops == [[b"BiasAdd", fused]] * TINY["num_hidden_layers"], fused_ops


def test_config_json_round_trip(tmp_path):
    """to_json_string and from_json_file give back the same config."""
    path = tmp_path / "bert_config.json"
    path.write_text(modeling.BertConfig.from_dict(TINY).to_json_string())
    assert modeling.BertConfig.from_json_file(str(path)).to_dict() == TINY


def write_google_checkpoint(prefix, config, with_optimizer_slots=True):
    """Saves a randomized pre-training model with tf.compat.v1.train.Saver, as Google's and
    MLPerf's runs do (optionally with Adam and LAMB slots and global_step). Returns values."""
    with tf.Graph().as_default():
        build_pretraining(config)
        if with_optimizer_slots:
            tf.compat.v1.train.get_or_create_global_step()
            for var in tf.compat.v1.trainable_variables():
                for slot in ("adam_m", "adam_v", "LAMB", "LAMB_1"):
                    tf.compat.v1.get_variable(f"{var.op.name}/{slot}", var.shape,
                                              trainable=False)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            values = randomize(session)
            tf.compat.v1.train.Saver().save(session, prefix)
    return values


def test_init_from_checkpoint_restores_every_model_variable(tmp_path):
    """Every model variable gets the checkpoint's value; optimizer slots are skipped."""
    prefix = str(tmp_path / "model.ckpt-28252")
    config = modeling.BertConfig.from_dict(TINY)
    saved = write_google_checkpoint(prefix, config)
    with tf.Graph().as_default():
        build_pretraining(config)
        tvars = tf.compat.v1.trainable_variables()
        assignment_map, initialized = modeling.get_assignment_map_from_checkpoint(tvars, prefix)
        modeling.init_from_checkpoint(prefix)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            restored = {var.op.name: session.run(var) for var in tvars}
    assert set(assignment_map) == set(saved) == set(restored)
    assert len(initialized) == 2 * len(saved)
    for name, value in saved.items():
        np.testing.assert_array_equal(restored[name], value, err_msg=name)


def test_init_from_checkpoint_lists_missing_and_mismatched_variables(tmp_path):
    """A checkpoint without heads, with another vocab and fewer positions fails with one line
    naming the missing variables and the config keys of the mismatched shapes."""
    prefix = str(tmp_path / "model.ckpt")
    with tf.Graph().as_default():
        ids = tf.compat.v1.placeholder(tf.int32, [2, 8])
        modeling.BertModel(modeling.BertConfig.from_dict(TINY), False, ids)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver().save(session, prefix)
    config = modeling.BertConfig.from_dict(
        dict(TINY, vocab_size=104, max_position_embeddings=128))
    with tf.Graph().as_default():
        build_pretraining(config)
        with pytest.raises(ValueError) as error:
            modeling.init_from_checkpoint(prefix)
    message = str(error.value)
    assert "\n" not in message
    assert "7 model variables missing (cls/predictions/transform/dense/kernel" in message
    assert ("bert/embeddings/word_embeddings [99, 32] in checkpoint vs [104, 32] in model "
            "(vocab_size)") in message
    assert "[64, 32] in checkpoint vs [128, 32] in model (max_position_embeddings)" in message


def test_init_from_missing_checkpoint_fails_clearly(tmp_path):
    """A prefix with no checkpoint behind it gives a one-line error naming the prefix."""
    with tf.Graph().as_default():
        build_pretraining(modeling.BertConfig.from_dict(TINY))
        with pytest.raises(ValueError, match="no TF1 checkpoint there"):
            modeling.init_from_checkpoint(str(tmp_path / "model.ckpt-1"))


def test_sequence_longer_than_position_table_fails_clearly():
    """max_seq_length above max_position_embeddings is refused when the graph is built."""
    with tf.Graph().as_default():
        ids = tf.compat.v1.placeholder(tf.int32, [2, 65])
        with pytest.raises(ValueError, match="sequence length 65 exceeds max_position_emb"):
            modeling.BertModel(modeling.BertConfig.from_dict(TINY), True, ids)


@pytest.mark.parametrize("batch_size", [None, 3], ids=["dynamic-batch", "static-batch"])
def test_last_rows_only_and_skipped_padding_give_the_full_models_values_and_gradients(batch_size):
    """BertModel(output_positions=P), whose last layer computes only [CLS] and the rows at P,
    and BertModel(skip_padding=True), which computes only the real tokens (rounded up to 64
    rows: here 93 real tokens of 192 positions, 35 padding rows computed, 64 skipped), alone
    and together, give the full model's rows at P, its first layer's output at every real
    token, its pooled output, both heads' losses and every variable's gradient (repeated
    positions, a padding prediction [1, 3], a sequence without padding and dynamic shapes
    included), with the same variables. With the batch size known when the graph is built,
    skip_padding's attention runs per sequence over its real tokens; otherwise over the padded
    batch, masked."""
    config = modeling.BertConfig.from_dict(TINY)
    rng = np.random.default_rng(5)
    batch = random_batch(rng, 3, 64, 99, num_predictions=4)
    batch["mask"][0, 20:] = batch["mask"][1, 9:] = 0  # the third sequence has no padding
    batch["positions"] = np.array([[3, 17, 17, 5], [8, 1, 2, 0], [63, 0, 9, 40]])
    batch["weights"] = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]], np.float32)
    with tf.Graph().as_default():
        inputs = {name: tf.compat.v1.placeholder(tf.int32, [batch_size, None]) for name in
                  ("ids", "mask", "types", "positions", "labels")}
        inputs["weights"] = tf.compat.v1.placeholder(tf.float32, [batch_size, None])
        inputs["nsp_labels"] = tf.compat.v1.placeholder(tf.int32, [batch_size])
        outputs = []
        variants = [(None, False), (inputs["positions"], False), (inputs["positions"], True),
                    (None, True)]
        for output_positions, skip_padding in variants:
            with tf.compat.v1.variable_scope("", reuse=bool(outputs)):
                model = modeling.BertModel(config, False, inputs["ids"], inputs["mask"],
                                           inputs["types"], scope="bert",
                                           output_positions=output_positions,
                                           skip_padding=skip_padding)
                sequence = model.get_sequence_output()
                rows = sequence
                if output_positions is None:
                    rows = tf.gather(sequence, inputs["positions"], batch_dims=1)
                mlm_loss = modeling.get_masked_lm_output(
                    config, sequence, model.get_embedding_table(),
                    inputs["positions"] if output_positions is None else None,
                    inputs["labels"], inputs["weights"])[0]
                nsp_loss = modeling.get_next_sentence_output(
                    config, model.get_pooled_output(), inputs["nsp_labels"])[0]
            variables = tf.compat.v1.trainable_variables()
            real_tokens = tf.boolean_mask(
                model.get_all_encoder_layers()[0], tf.cast(inputs["mask"], tf.bool))
            outputs.append([rows, real_tokens, model.get_pooled_output(), mlm_loss, nsp_loss]
                           + [tf.convert_to_tensor(gradient) for gradient in
                              tf.gradients(mlm_loss + nsp_loss, variables)])
        assert len(variables) == 5 + 2 * 16 + 2 + 5 + 2  # the same 46 variables
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            randomize(session)
            full, *others = session.run(outputs, feed(inputs, batch))
    assert full[0].shape == (3, 4, 32) and full[1].shape == (93, 32)
    for variant, values in zip(variants[1:], others, strict=True):
        for ours, reference in zip(values, full, strict=True):
            np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6,
                                       err_msg=str(variant))


def test_skipped_padding_rows_are_real_tokens_then_padding_in_multiples():
    """EncoderRows with a mask computes the real tokens in order, then the first padding
    positions up to a multiple of `multiple` (never more than B*S), and restores [B, S, W] with
    zeros at the skipped positions; rows at positions are zeros where skipped."""
    mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    with tf.Graph().as_default():
        rows = modeling.EncoderRows(2, 5, tf.constant(mask), multiple=3)
        everything = modeling.EncoderRows(2, 5, tf.constant(mask), multiple=12)
        values = tf.reshape(tf.range(1, 11), [2, 5, 1])
        with tf.compat.v1.Session() as session:
            taken, restored, rows_at, all_rows = session.run(
                [rows.take(values)[:, 0], rows.restore(rows.take(values))[..., 0],
                 rows.at(rows.take(values), tf.constant([[1, 4], [2, 0]]))[:, 0],
                 everything.take(values)[:, 0]])
    np.testing.assert_array_equal(taken, [1, 2, 6, 7, 8, 3])  # 5 real + 1 padding = 2 x 3
    np.testing.assert_array_equal(restored, [[1, 2, 3, 0, 0], [6, 7, 8, 0, 0]])
    np.testing.assert_array_equal(rows_at, [2, 0, 8, 6])  # position 4 of sequence 0: skipped
    np.testing.assert_array_equal(all_rows, [1, 2, 6, 7, 8, 3, 4, 5, 9, 10])  # min(12, 10) rows


def test_one_hot_embedding_lookup_equals_gather():
    """use_one_hot_embeddings=True (TPU style) computes the same outputs as the gather."""
    config = modeling.BertConfig.from_dict(TINY)
    ids = np.random.default_rng(4).integers(0, 99, [2, 6])
    with tf.Graph().as_default():
        gathered = modeling.BertModel(config, False, tf.constant(ids), scope="bert")
        with tf.compat.v1.variable_scope("", reuse=True):
            one_hot = modeling.BertModel(config, False, tf.constant(ids),
                                         use_one_hot_embeddings=True, scope="bert")
        assert len(tf.compat.v1.global_variables()) == 5 + 2 * 16 + 2
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            randomize(session)
            first, second = session.run([gathered.get_sequence_output(),
                                         one_hot.get_sequence_output()])
    np.testing.assert_allclose(second, first, atol=1e-5)
