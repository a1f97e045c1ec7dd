"""Google's BERT (google-research/bert) for TensorFlow 2 in `tf.compat.v1` graph mode.

The public API and every variable name are Google's, so Google's released checkpoints and MLPerf's
`model.ckpt-28252` load unchanged. Variables come from `tf.compat.v1.get_variable` (no Keras).

Shapes use B = batch size, S = sequence length, H = hidden size, N = attention heads,
D = H / N, P = masked positions per sequence, V = vocabulary size.

Lean graph for speed and for the grappler auto_mixed_precision rewrite: dense layers work on 2-D
[B*S, H] matrices, the attention mask is built once per model, the masked-LM head gathers the P
masked positions before the vocabulary projection, and the only casts are the ones of integer
masks and weights to float.
"""

import collections
import contextlib
import copy
import json
import math
import re

import tensorflow as tf

LAYER_NORM_EPSILON = 1e-12


class BertConfig:
    """Configuration of a `BertModel` (the keys of Google's bert_config.json)."""

    def __init__(
        self,
        vocab_size,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=512,
        type_vocab_size=16,
        initializer_range=0.02,
    ):
        """Args as in Google's BertConfig; `hidden_act` is a name accepted by `get_activation`."""
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.hidden_act = hidden_act
        self.intermediate_size = intermediate_size
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range

    @classmethod
    def from_dict(cls, json_object):
        """Builds a config from a dict; keys other than Google's are kept as attributes."""
        config = cls(vocab_size=None)
        for key, value in json_object.items():
            config.__dict__[key] = value
        return config

    @classmethod
    def from_json_file(cls, json_file):
        """Builds a config from a bert_config.json file."""
        with tf.io.gfile.GFile(json_file, "r") as reader:
            return cls.from_dict(json.loads(reader.read()))

    def to_dict(self):
        """Returns the config as a dict."""
        return copy.deepcopy(self.__dict__)

    def to_json_string(self):
        """Returns the config as a JSON string (bert_config.json format)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


class BertModel:
    """BERT encoder: embeddings, `num_hidden_layers` Transformer layers and the pooler.

    Example:
        model = BertModel(config, is_training, input_ids, input_mask, token_type_ids)
        pooled = model.get_pooled_output()      # [B, H]
        sequence = model.get_sequence_output()  # [B, S, H]
    """

    def __init__(
        self,
        config,
        is_training,
        input_ids,
        input_mask=None,
        token_type_ids=None,
        use_one_hot_embeddings=False,
        scope=None,
        output_positions=None,
        skip_padding=False,
    ):
        """Builds the model under variable scope `scope` (default "bert").

        Args:
            config: `BertConfig`.
            is_training: bool; dropout is applied only when True.
            input_ids: int32/int64 [B, S] word-piece ids.
            input_mask: int [B, S], 1 for real tokens and 0 for padding (default all ones).
            token_type_ids: int [B, S] segment ids (default all zeros).
            use_one_hot_embeddings: look word embeddings up with a one-hot matmul (TPU style)
                instead of a gather.
            scope: variable scope name.
            output_positions: optional int [B, P]: the last Transformer layer then computes its
                output only at [CLS] and these positions (keys and values still from every
                position), and `get_sequence_output()` (the last of `get_all_encoder_layers()`
                too) is the [B, P, H] rows at these positions: all the masked-LM head reads.
                The pooler still reads [CLS].
            skip_padding: compute the embeddings and every Transformer layer only at the real
                tokens (`input_mask` 1), plus a few padding positions to round their count up
                to a multiple of `PADDING_ROWS_MULTIPLE` (`EncoderRows`); with the batch size
                known when the graph is built and at most PER_SEQUENCE_ATTENTION_MAX_BATCH, each
                sequence attends over its own real tokens only. Real tokens' values and every
                loss and gradient are the full model's within a rounding; the sequence outputs
                are 0 at the skipped padding positions. Shapes then change with every batch's
                real tokens: XLA would compile each anew.

        Raises:
            ValueError: S is larger than `config.max_position_embeddings`, or the config is bad.
        """
        config = copy.deepcopy(config)
        if not is_training:
            config.hidden_dropout_prob = 0.0
            config.attention_probs_dropout_prob = 0.0
        batch_size, seq_length = get_shape_list(input_ids, expected_rank=2)
        if isinstance(seq_length, int) and seq_length > config.max_position_embeddings:
            raise ValueError(
                f"sequence length {seq_length} exceeds max_position_embeddings "
                f"{config.max_position_embeddings} of bert_config.json: use a shorter "
                "max_seq_length or a config and checkpoint with more positions"
            )
        if input_mask is None:
            input_mask = tf.ones([batch_size, seq_length], dtype=tf.int32)
        if token_type_ids is None:
            token_type_ids = tf.zeros([batch_size, seq_length], dtype=tf.int32)
        initializer = create_initializer(config.initializer_range)

        rows = EncoderRows(batch_size, seq_length, input_mask if skip_padding else None)
        with tf.compat.v1.variable_scope(scope, default_name="bert"):
            with tf.compat.v1.variable_scope("embeddings"):
                self.embedding_table = tf.compat.v1.get_variable(
                    "word_embeddings", [config.vocab_size, config.hidden_size],
                    initializer=initializer)
                row_ids = rows.take(input_ids)
                if use_one_hot_embeddings:
                    words = tf.matmul(tf.one_hot(row_ids, depth=config.vocab_size),
                                      self.embedding_table)
                else:
                    words = tf.gather(self.embedding_table, row_ids)
                token_type_table = tf.compat.v1.get_variable(
                    "token_type_embeddings", [config.type_vocab_size, config.hidden_size],
                    initializer=initializer)
                position_table = tf.compat.v1.get_variable(
                    "position_embeddings", [config.max_position_embeddings, config.hidden_size],
                    initializer=initializer)
                position_ids = tf.broadcast_to(tf.range(seq_length), [batch_size, seq_length])
                embeddings = (words + tf.gather(token_type_table, rows.take(token_type_ids))
                              + tf.gather(position_table, rows.take(position_ids)))
                embedding_rows = dropout(
                    layer_norm(embeddings, "LayerNorm"), config.hidden_dropout_prob)
                self.embedding_output = rows.restore(embedding_rows)

            with tf.compat.v1.variable_scope("encoder"):
                layer_rows = transformer_model(
                    embedding_rows,
                    attention_mask_adder(input_mask),
                    hidden_size=config.hidden_size,
                    num_hidden_layers=config.num_hidden_layers,
                    num_attention_heads=config.num_attention_heads,
                    intermediate_size=config.intermediate_size,
                    intermediate_act_fn=get_activation(config.hidden_act, is_training),
                    hidden_dropout_prob=config.hidden_dropout_prob,
                    attention_probs_dropout_prob=config.attention_probs_dropout_prob,
                    initializer_range=config.initializer_range,
                    output_positions=output_positions,
                    rows=rows,
                )
            self.all_encoder_layers = [rows.restore(layer) for layer in layer_rows[:-1]]
            if output_positions is None:
                first_token = rows.at(layer_rows[-1], tf.zeros_like(input_ids[:, :1]))
                self.all_encoder_layers.append(rows.restore(layer_rows[-1]))
            else:  # [B*(1+P), H]: [CLS] and the P positions of each sequence
                last = tf.reshape(layer_rows[-1], [batch_size, -1, config.hidden_size])
                first_token = last[:, 0]
                self.all_encoder_layers.append(last[:, 1:])
            self.sequence_output = self.all_encoder_layers[-1]

            with tf.compat.v1.variable_scope("pooler"):
                self.pooled_output = dense(
                    first_token, config.hidden_size, "dense", initializer, activation=tf.tanh)

    def get_pooled_output(self):
        """[B, H] tanh-projected hidden state of the first ([CLS]) token."""
        return self.pooled_output

    def get_sequence_output(self):
        """[B, S, H] output of the last Transformer layer ([B, P, H] with `output_positions`)."""
        return self.sequence_output

    def get_all_encoder_layers(self):
        """List of num_hidden_layers tensors [B, S, H], one per Transformer layer."""
        return self.all_encoder_layers

    def get_embedding_output(self):
        """[B, S, H] embeddings after LayerNorm and dropout (the encoder input)."""
        return self.embedding_output

    def get_embedding_table(self):
        """[V, H] word embedding table (also the masked-LM output weights)."""
        return self.embedding_table


# Both GELUs are written in the forms grappler's oneDNN remapper fuses into the preceding
# MatMul + BiasAdd in float32 and, after the bfloat16 rewrite, in bfloat16 too (tf.nn.gelu's
# erfc and pow forms lose that fusion under the rewrite: the exact one cost 25% of a bfloat16
# MiniLM prediction step as separate Erfc/Mul ops).


# The tanh GELU's constants: sqrt(2/pi) and the cubic term's coefficient.
_GELU_C, _GELU_K = math.sqrt(2.0 / math.pi), 0.044715


def gelu(x):
    """Google's GELU: the tanh approximation 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3)))."""
    return 0.5 * x * (1.0 + tf.tanh(_GELU_C * (x + _GELU_K * x * x * x)))


def gelu_exact(x):
    """Exact GELU x * Phi(x) = 0.5x(1 + erf(x / sqrt(2))) (Hugging Face's "gelu")."""
    return 0.5 * x * (1.0 + tf.math.erf(x * (1.0 / math.sqrt(2.0))))


def _derivative_of_gelu(x):
    """d gelu(x) / dx for the tanh approximation: with t = tanh(c (x + k x^3)),
    0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 k x^2)."""
    t = tf.tanh(_GELU_C * (x + _GELU_K * x * x * x))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _GELU_C * (1.0 + 3.0 * _GELU_K * x * x)


def _derivative_of_gelu_exact(x):
    """d gelu_exact(x) / dx = Phi(x) + x phi(x)."""
    return (0.5 * (1.0 + tf.math.erf(x * (1.0 / math.sqrt(2.0))))
            + x * tf.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi)))


def _fused_for_training(activation, derivative):
    """`activation` for training graphs: its value and its gradient are each one XLA-compiled
    elementwise loop, where TensorFlow runs the formula as ~20 separate ops, each a pass over the
    FFN activations (BERT-base, 2,048 tokens, float32: 28 ms -> 6 ms per layer for forward and
    gradient). The gradient is computed from the input alone, so the backward pass keeps one
    tensor rather than the formula's intermediates (x*x, tanh, 0.5x, 1 + tanh, ...)."""
    value = tf.function(activation, jit_compile=True, autograph=False)
    gradient = tf.function(lambda x, upstream: upstream * derivative(x), jit_compile=True,
                           autograph=False)

    @tf.custom_gradient
    def fused(x):
        return value(x), lambda upstream: gradient(x, upstream)

    return fused


_ACTIVATIONS = {
    "gelu": gelu,
    "gelu_exact": gelu_exact,
    "relu": tf.nn.relu,
    "tanh": tf.tanh,
    "linear": None,
}
# Training graphs use these: the same formulas, faster and with less memory (inference keeps the
# plain ones, which oneDNN fuses into the preceding MatMul + BiasAdd).
_TRAINING_ACTIVATIONS = {
    "gelu": _fused_for_training(gelu, _derivative_of_gelu),
    "gelu_exact": _fused_for_training(gelu_exact, _derivative_of_gelu_exact),
}


def get_activation(activation_string, training=False):
    """Maps a `hidden_act` name to a function (None for "linear"); callables pass through.

    Names: "gelu" (Google's tanh approximation), "gelu_exact" (erf), "relu", "tanh", "linear".
    With `training`, the GELUs and their gradients run as XLA-compiled loops and the gradient is
    computed from the input alone (the same formulas; faster, less memory kept for backward).
    """
    if not isinstance(activation_string, str):
        return activation_string
    name = activation_string.lower()
    if name not in _ACTIVATIONS:
        raise ValueError(
            f"unsupported hidden_act {activation_string!r} in bert_config.json: use one of "
            "gelu (tanh approximation, Google's), gelu_exact (erf), relu, tanh, linear"
        )
    if training and name in _TRAINING_ACTIVATIONS:
        return _TRAINING_ACTIVATIONS[name]
    return _ACTIVATIONS[name]


def create_initializer(initializer_range=0.02):
    """Truncated normal initializer with standard deviation `initializer_range`."""
    return tf.compat.v1.truncated_normal_initializer(stddev=initializer_range)


# Seeds of the `stateless_dropout` blocks being built: [seed tensor, dropout ops created so far].
_DROPOUT_SEEDS = []


@contextlib.contextmanager
def stateless_dropout(seed):
    """Within this block, `dropout` draws stateless random bits keyed by `seed` (an int32 or
    int64 [2] tensor) and by the dropout op's place in the order of creation, so that the masks
    are a function of `seed` alone: a run that passes, e.g., a seed made of (global step,
    micro-batch, rank) draws the same masks after a restart. Each unit is dropped with
    probability `rate` rounded to a multiple of 1/65536, kept ones scaled by 1/P(keep). Outside
    such a block dropout is TensorFlow's stateful `tf.nn.dropout`, as in Google's code.
    """
    _DROPOUT_SEEDS.append([tf.cast(seed, tf.int64), 0])
    try:
        yield
    finally:
        _DROPOUT_SEEDS.pop()


def dropout(x, rate):
    """Dropout with drop probability `rate`; the identity when `rate` is 0."""
    kept, scale = dropout_unscaled(x, rate)
    return kept if scale == 1.0 else kept * scale


def dropout_unscaled(x, rate, sizes_vary=False):
    """(x with the dropped units zeroed, the factor the caller applies to the kept ones): the
    same dropout, for callers that can apply the factor to a smaller tensor downstream (the
    attention context rather than the [B, N, S, S] probabilities). The factor is 1.0 outside a
    `stateless_dropout` block, where this is TensorFlow's stateful `tf.nn.dropout` as in
    Google's code, and when `rate` is 0. `sizes_vary`: x takes many sizes in a run (a
    sequence's [N, L, L] attention probabilities), so that the mask is drawn at one of a few
    sizes and cut (the same mask, without an XLA compilation per size)."""
    if not rate:
        return x, 1.0
    if not _DROPOUT_SEEDS:
        return tf.nn.dropout(x, rate=rate), 1.0
    block = _DROPOUT_SEEDS[-1]
    seed = tf.random.experimental.stateless_fold_in(block[0], block[1])
    block[1] += 1
    keep, keep_probability = _stateless_keep_mask(tf.shape(x), rate, seed, sizes_vary)
    # A scalar zero: a zeros_like(x) is a tensor of x's size (cast again under the bf16 rewrite).
    return tf.where(keep, x, tf.zeros([], x.dtype)), 1.0 / keep_probability


def _stateless_keep_mask(shape, rate, seed, sizes_vary=False):
    """(bool mask of `shape`, the probability of True): each element is True unless its 16 random
    bits fall below t = round(65536 * rate), so it is kept with probability 1 - t/65536 (rate 0.1:
    0.899994). The bits are the top 16 of SplitMix64 at the element's index, from a start that
    `seed` (int32 [2], as stateless_fold_in returns) determines (`_splitmix64_keep_mask`).
    With `sizes_vary` the bits are drawn for the next size of the form 2^k or 3 * 2^k (less
    than half more) and the first ones kept: the same mask, one compilation per such size."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    dropped = min(round(rate * 65536), 65535)
    threshold = tf.constant(dropped, tf.uint64)
    shape = tf.cast(shape, tf.int32)
    if sizes_vary:
        size = tf.reduce_prod(shape)
        drawn = _splitmix64_keep_mask(_size_bucket(size)[tf.newaxis], seed, threshold)
        keep = tf.reshape(drawn[:size], shape)
    else:
        keep = _splitmix64_keep_mask(shape, seed, threshold)
    return keep, 1.0 - dropped / 65536


def _size_bucket(size):
    """The least number of the form 2^k or 3 * 2^k that is >= int32 scalar `size` (1 for 0)."""
    size = tf.maximum(size, 1)
    power = tf.cast(tf.bitwise.left_shift(tf.constant(1, tf.int64), tf.cast(
        tf.math.ceil(tf.math.log(tf.cast(size, tf.float64)) / math.log(2.0)), tf.int64)), tf.int32)
    power = tf.where(power < size, 2 * power, power)  # a rounding of the logarithm
    three_quarters = power // 4 * 3
    return tf.where((three_quarters >= size) & (power >= 4), three_quarters, power)


_SPLITMIX64_GAMMA = 0x9E3779B97F4A7C15


def _splitmix64_finalize(z):
    """SplitMix64's output function (Steele, Lea and Flood 2014) on a uint64 tensor."""
    for shift, multiplier in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, tf.constant(shift, tf.uint64)))
        z = z * tf.constant(multiplier, tf.uint64)
    return tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, tf.constant(31, tf.uint64)))


@tf.function(jit_compile=True, autograph=False)
def _splitmix64_keep_mask(shape, seed, threshold):
    """bool mask of `shape`: element i is True when the top 16 bits of SplitMix64's i-th output
    from a state that `seed` determines are >= `threshold`. One elementwise XLA loop (a shape is
    a compile-time constant: one compilation per shape); ten times faster than Philox through
    tf.random.stateless_uniform (a 12.6M mask: 1.9 ms against 18.4), and, unlike a stateful
    generator, a function of `seed` alone."""
    start = _splitmix64_finalize(tf.bitcast(seed, tf.uint64))
    index = tf.bitcast(tf.range(tf.reduce_prod(shape), dtype=tf.int64), tf.uint64)
    bits = _splitmix64_finalize(start + index * tf.constant(_SPLITMIX64_GAMMA, tf.uint64))
    return tf.reshape(tf.bitwise.right_shift(bits, tf.constant(48, tf.uint64)) >= threshold, shape)


def layer_norm(x, name):
    """LayerNorm over the last axis with variables `name/beta`, `name/gamma` (epsilon 1e-12).

    Computed as a per-row FusedBatchNormV3 (rows as NCHW channels) followed by gamma and beta:
    the form oneDNN's graph rewrite turns into one _MklLayerNorm kernel for inference; training
    runs the fused batch-norm kernel and its gradient.
    """
    with tf.compat.v1.variable_scope(name):
        size = x.shape[-1]
        beta = tf.compat.v1.get_variable("beta", [size], initializer=tf.zeros_initializer())
        gamma = tf.compat.v1.get_variable("gamma", [size], initializer=tf.ones_initializer())
        shape = tf.shape(x)
        rows = tf.reduce_prod(shape[:-1])
        ones = tf.ones([rows], x.dtype)
        zeros = tf.zeros([rows], x.dtype)
        normalized, _, _ = tf.compat.v1.nn.fused_batch_norm(
            tf.reshape(x, [1, rows, size, 1]), ones, zeros, epsilon=LAYER_NORM_EPSILON,
            data_format="NCHW")
        return tf.reshape(normalized, shape) * gamma + beta


def dense(x, units, name, initializer, activation=None):
    """[M, in] -> [M, units] with variables `name/kernel` [in, units] and `name/bias` [units]."""
    with tf.compat.v1.variable_scope(name):
        kernel = tf.compat.v1.get_variable("kernel", [x.shape[-1], units], initializer=initializer)
        bias = tf.compat.v1.get_variable("bias", [units], initializer=tf.zeros_initializer())
        y = tf.nn.bias_add(tf.matmul(x, kernel), bias)
        return y if activation is None else activation(y)


def attention_mask_adder(input_mask):
    """[B, S] 0/1 input mask -> [B, 1, 1, S] additive mask: 0 to attend, -10000 for padding."""
    mask = tf.cast(input_mask[:, tf.newaxis, tf.newaxis, :], tf.float32)
    return (1.0 - mask) * -10000.0


PADDING_ROWS_MULTIPLE = 64
# Largest batch whose attention runs per sequence (unrolled: ~30 ops per sequence and layer,
# forward and backward); larger batches, which GPUs run, attend over the padded batch, masked.
PER_SEQUENCE_ATTENTION_MAX_BATCH = 16


class EncoderRows:
    """The positions of a [B, S] batch that the encoder computes, as the rows of its [rows, H]
    matrices.

    By default every position, in order: B*S rows. With `input_mask`, the real tokens (mask 1)
    in order, then the first padding positions, as many as make the count a multiple of
    `multiple` (at most B*S): a batch whose sequences are 65% real tokens costs ~65% of the
    token-wise products, and a run sees at most B*S / `multiple` distinct row counts (each
    compiles its own oneDNN and XLA kernels once). A padding position never changes a real
    token's value (the attention mask gives it probability 0) and no loss reads it, so skipping
    it changes no loss or gradient.
    """

    def __init__(self, batch_size, seq_length, input_mask=None, multiple=PADDING_ROWS_MULTIPLE):
        self.batch_size, self.seq_length = batch_size, seq_length
        self.indices = self.slots = self.lengths = self.padding_rows = None
        if input_mask is not None:
            mask = tf.cast(input_mask, tf.int32)
            self.lengths = tf.reduce_sum(mask, axis=1)  # real tokens of each sequence
            real = tf.reduce_sum(self.lengths)
            mask = tf.reshape(mask, [-1])
            order = tf.argsort(1 - mask, stable=True)  # real tokens first, each group in order
            count = tf.minimum(tf.size(mask), -(-real // multiple) * multiple)
            self.padding_rows = count - real
            self.indices = order[:count]  # the flat position of each row
            self.slots = tf.minimum(tf.math.invert_permutation(order), count)  # count: skipped

    @property
    def sequences_apart(self):
        """Whether attention runs per sequence on its real tokens: the rows hold each
        sequence's real tokens apart (sequence after sequence, then padding rows) and B is
        known and at most `PER_SEQUENCE_ATTENTION_MAX_BATCH`."""
        return (self.lengths is not None and isinstance(self.batch_size, int)
                and self.batch_size <= PER_SEQUENCE_ATTENTION_MAX_BATCH)

    def split(self, matrix):
        """[rows, W] -> B matrices [L_b, W], sequence b's real tokens (`sequences_apart`)."""
        sizes = tf.concat([self.lengths, self.padding_rows[tf.newaxis]], 0)
        return tf.split(matrix, sizes, num=self.batch_size + 1)[:-1]

    def join(self, matrices):
        """B matrices [L_b, W] (as `split` gives) -> [rows, W], zeros in the padding rows."""
        width = matrices[0].shape[-1]
        zeros = tf.zeros(tf.stack([self.padding_rows, width]), matrices[0].dtype)
        return tf.concat([*matrices, zeros], 0)

    def take(self, tensor):
        """[B, S, ...] -> [rows, ...]: the computed positions' entries."""
        flat = tf.reshape(tensor, tf.concat([[-1], tf.shape(tensor)[2:]], 0))
        return flat if self.indices is None else tf.gather(flat, self.indices)

    def restore(self, rows):
        """[rows, W] -> [B, S, W], zeros at the skipped positions."""
        if self.indices is not None:
            rows = tf.gather(tf.concat([rows, tf.zeros_like(rows[:1])], 0), self.slots)
        return tf.reshape(rows, [self.batch_size, self.seq_length, rows.shape[-1]])

    def at(self, matrix, positions):
        """The [B*P, W] rows of the [rows, W] `matrix` at int [B, P] `positions`; zeros at the
        skipped ones (a padded prediction slot may point into padding)."""
        starts = self.seq_length * tf.range(self.batch_size)
        flat = tf.reshape(tf.cast(positions, tf.int32) + starts[:, tf.newaxis], [-1])
        if self.slots is None:
            return tf.gather(matrix, flat)
        return tf.gather(tf.concat([matrix, tf.zeros_like(matrix[:1])], 0),
                         tf.gather(self.slots, flat))


def attention_layer(
    x, mask_adder, rows, num_attention_heads, size_per_head, attention_probs_dropout_prob,
    initializer, query_rows=None,
):
    """Multi-head self-attention with variables `query`, `key`, `value` (kernel and bias).

    Args:
        x: [rows, H] layer input at `rows` (an `EncoderRows`).
        mask_adder: [B, 1, 1, S] from `attention_mask_adder` (not needed where `rows` holds
            the sequences apart: each attends over its own real tokens).
        query_rows: optional [B*Q, H]: Q rows of each sequence that attend (default all of
            `rows`).
    Returns:
        [rows, N*D] context vectors ([B*Q, N*D] with `query_rows`).
    """
    width = num_attention_heads * size_per_head
    query = dense(x if query_rows is None else query_rows, width, "query", initializer)
    key, value = dense(x, width, "key", initializer), dense(x, width, "value", initializer)

    def heads(y, batch_size):  # [B*L, N*D] or [B, L, N*D] -> [B, N, L, D]
        y = tf.reshape(y, [batch_size, -1, num_attention_heads, size_per_head])
        return tf.transpose(y, [0, 2, 1, 3])

    def attend(query, key, value, adder, batch_size, sizes_vary):  # -> [B*Q, N*D]
        # Scaling the [B, N, Q, D] query rather than the [B, N, Q, S] scores: S/D times fewer
        # multiplications forward and backward; the same scores when 1/sqrt(D) is a power of
        # two (D = 64 in every published BERT), within a rounding otherwise.
        scores = tf.matmul(heads(query, batch_size) * (1.0 / math.sqrt(size_per_head)),
                           heads(key, batch_size), transpose_b=True)
        probs = tf.nn.softmax(scores if adder is None else scores + adder)
        # Dropout's 1/P(keep) on the [B, N, Q, D] context, not on the [B, N, Q, S] probabilities.
        probs, keep_scale = dropout_unscaled(probs, attention_probs_dropout_prob, sizes_vary)
        context = tf.matmul(probs, heads(value, batch_size))
        if keep_scale != 1.0:
            context *= keep_scale
        return tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [-1, width])

    if rows.sequences_apart:
        # Each sequence attends over its own real tokens: no [B, N, S, S] products over padding
        # (at seq 512 with 65% real tokens, about half of the attention's work) and no mask.
        queries = rows.split(query) if query_rows is None else tf.split(query, rows.batch_size)
        contexts = [attend(*parts, None, 1, True)
                    for parts in zip(queries, rows.split(key), rows.split(value), strict=True)]
        if query_rows is None:
            return rows.join(contexts)
        return tf.concat(contexts, 0)
    # Otherwise over [B, S] positions, padding masked: keys and values (and queries) restored.
    keys_values = [rows.restore(key), rows.restore(value)]
    if query_rows is not None:
        return attend(query, *keys_values, mask_adder, rows.batch_size, False)
    context = attend(rows.restore(query), *keys_values, mask_adder, rows.batch_size, False)
    return rows.take(tf.reshape(context, [rows.batch_size, rows.seq_length, width]))


def transformer_model(
    input_tensor, mask_adder, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, intermediate_act_fn=gelu, hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1, initializer_range=0.02, output_positions=None, rows=None,
):
    """Post-LayerNorm Transformer encoder ("Attention is All You Need"), scopes `layer_N`.

    Args:
        input_tensor: [B, S, H]; or, with `rows`, the [rows, H] matrix at its positions.
        mask_adder: [B, 1, 1, S] from `attention_mask_adder`.
        output_positions: optional int [B, P]: the last layer computes only the rows at [CLS]
            and these positions. Its keys and values still come from all positions, but the
            query, the attention output, the feed-forward products and their gradients cover
            1+P rows per sequence instead of S (BERT-base pre-training at seq 128 with 20
            predictions: about 5% of the step's products). Each row is what the full layer
            computes, within a rounding.
        rows: optional `EncoderRows`: the positions computed (default all of them).
    Returns:
        List of num_hidden_layers tensors: without `rows` [B, S, H] (the last one [B, 1+P, H]
        with `output_positions`), with it the [rows, H] matrices (the last one [B*(1+P), H]).
    """
    if hidden_size % num_attention_heads:
        raise ValueError(
            f"hidden_size {hidden_size} is not a multiple of num_attention_heads "
            f"{num_attention_heads} in bert_config.json: fix one of them"
        )
    layer_output = input_tensor
    all_rows = rows is None
    if all_rows:
        rows = EncoderRows(*get_shape_list(input_tensor, expected_rank=3)[:2])
        layer_output = rows.take(input_tensor)
    initializer = create_initializer(initializer_range)
    all_layer_outputs = []
    for layer_idx in range(num_hidden_layers):
        layer_input = query_rows = layer_output
        last_rows_only = output_positions is not None and layer_idx == num_hidden_layers - 1
        if last_rows_only:
            first_and_positions = tf.concat(
                [tf.zeros_like(output_positions[:, :1]), output_positions], axis=1)
            query_rows = rows.at(layer_input, first_and_positions)
        with tf.compat.v1.variable_scope(f"layer_{layer_idx}"):
            with tf.compat.v1.variable_scope("attention"):
                with tf.compat.v1.variable_scope("self"):
                    context = attention_layer(
                        layer_input, mask_adder, rows, num_attention_heads,
                        hidden_size // num_attention_heads, attention_probs_dropout_prob,
                        initializer, query_rows if last_rows_only else None)
                with tf.compat.v1.variable_scope("output"):
                    attention_output = dense(context, hidden_size, "dense", initializer)
                    attention_output = layer_norm(
                        dropout(attention_output, hidden_dropout_prob) + query_rows, "LayerNorm")
            with tf.compat.v1.variable_scope("intermediate"):
                intermediate = dense(attention_output, intermediate_size, "dense", initializer,
                                     activation=intermediate_act_fn)
            with tf.compat.v1.variable_scope("output"):
                layer_output = dense(intermediate, hidden_size, "dense", initializer)
                layer_output = layer_norm(
                    dropout(layer_output, hidden_dropout_prob) + attention_output, "LayerNorm")
        all_layer_outputs.append(layer_output)
    if all_rows:
        all_layer_outputs = [
            tf.reshape(output, [rows.batch_size, -1, hidden_size]) for output in all_layer_outputs]
    return all_layer_outputs


def gather_indexes(sequence_tensor, positions):
    """Rows of [B, S, H] `sequence_tensor` at [B, P] `positions`, as a [B*P, H] matrix."""
    gathered = tf.gather(sequence_tensor, positions, batch_dims=1)
    return tf.reshape(gathered, [-1, sequence_tensor.shape[-1]])


def get_masked_lm_output(bert_config, input_tensor, output_weights, positions, label_ids,
                         label_weights):
    """Masked-LM head `cls/predictions`, with output weights tied to the word embeddings.

    Args:
        bert_config: `BertConfig`.
        input_tensor: [B, S, H] sequence output.
        output_weights: [V, H] word embedding table (`BertModel.get_embedding_table()`).
        positions: int [B, P] masked positions; None when `input_tensor` is already the
            [B, P, H] rows at them (`BertModel(..., output_positions=positions)`).
        label_ids: int [B, P] original ids at those positions.
        label_weights: float [B, P], 1.0 for real predictions and 0.0 for padding.
    Returns:
        (loss: scalar weighted mean, per_example_loss: [B*P], log_probs: [B*P, V]).
    """
    if positions is None:
        x = tf.reshape(input_tensor, [-1, input_tensor.shape[-1]])
    else:
        x = gather_indexes(input_tensor, positions)
    initializer = create_initializer(bert_config.initializer_range)
    with tf.compat.v1.variable_scope("cls/predictions"):
        with tf.compat.v1.variable_scope("transform"):
            x = dense(x, bert_config.hidden_size, "dense", initializer,
                      activation=get_activation(bert_config.hidden_act))
            x = layer_norm(x, "LayerNorm")
        output_bias = tf.compat.v1.get_variable(
            "output_bias", [bert_config.vocab_size], initializer=tf.zeros_initializer())
        logits = tf.nn.bias_add(tf.matmul(x, output_weights, transpose_b=True), output_bias)
        log_probs = tf.nn.log_softmax(logits, axis=-1)
        per_example_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.reshape(label_ids, [-1]), logits=logits)
        label_weights = tf.reshape(label_weights, [-1])
        loss = tf.reduce_sum(label_weights * per_example_loss) / (
            tf.reduce_sum(label_weights) + 1e-5)
    return loss, per_example_loss, log_probs


def _two_way_output_variables(bert_config):
    """`output_weights` [2, hidden] (truncated normal) and `output_bias` [2] (zeros) in the
    current variable scope: the next-sentence and SQuAD heads' variables."""
    output_weights = tf.compat.v1.get_variable(
        "output_weights", [2, bert_config.hidden_size],
        initializer=create_initializer(bert_config.initializer_range))
    output_bias = tf.compat.v1.get_variable(
        "output_bias", [2], initializer=tf.zeros_initializer())
    return output_weights, output_bias


def get_next_sentence_output(bert_config, input_tensor, labels):
    """Next-sentence head `cls/seq_relationship` (label 1 means "B is random").

    Args:
        bert_config: `BertConfig`.
        input_tensor: [B, H] pooled output.
        labels: int [B] or [B, 1].
    Returns:
        (loss: scalar mean, per_example_loss: [B], log_probs: [B, 2]).
    """
    with tf.compat.v1.variable_scope("cls/seq_relationship"):
        output_weights, output_bias = _two_way_output_variables(bert_config)
        logits = tf.nn.bias_add(tf.matmul(input_tensor, output_weights, transpose_b=True),
                                output_bias)
        log_probs = tf.nn.log_softmax(logits, axis=-1)
        per_example_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.reshape(labels, [-1]), logits=logits)
        loss = tf.reduce_mean(per_example_loss)
    return loss, per_example_loss, log_probs


def get_squad_output(bert_config, sequence_output):
    """SQuAD span head `cls/squad` (google-research/bert's run_squad names and initialisers).

    Args:
        bert_config: `BertConfig`.
        sequence_output: [B, S, H] `BertModel.get_sequence_output()`.
    Returns:
        (start_logits: [B, S], end_logits: [B, S]), float32.
    """
    with tf.compat.v1.variable_scope("cls/squad"):
        output_weights, output_bias = _two_way_output_variables(bert_config)
    logits = tf.nn.bias_add(
        tf.einsum("bsh,nh->bsn", sequence_output, output_weights), output_bias)
    return logits[:, :, 0], logits[:, :, 1]


def get_shape_list(tensor, expected_rank=None):
    """Shape of `tensor` as a list: Python ints where static, scalar tensors where dynamic."""
    shape = tensor.shape.as_list()
    if expected_rank is not None and len(shape) != expected_rank:
        raise ValueError(f"tensor {tensor.name} has rank {len(shape)}, expected {expected_rank}")
    dynamic = tf.shape(tensor)
    return [dim if dim is not None else dynamic[i] for i, dim in enumerate(shape)]


def _variable_name(var):
    return re.sub(r":\d+$", "", var.name)


def get_assignment_map_from_checkpoint(tvars, init_checkpoint):
    """Google's helper: map the variables of `tvars` present in `init_checkpoint` to themselves.

    Returns:
        (assignment_map: OrderedDict checkpoint name -> variable name, for
        `tf.compat.v1.train.init_from_checkpoint`; initialized_variable_names: dict with both
        "name" and "name:0" keys).
    """
    names = {_variable_name(var) for var in tvars}
    assignment_map = collections.OrderedDict()
    initialized_variable_names = {}
    for name, _ in tf.train.list_variables(init_checkpoint):
        if name in names:
            assignment_map[name] = name
            initialized_variable_names[name] = 1
            initialized_variable_names[name + ":0"] = 1
    return assignment_map, initialized_variable_names


_CONFIG_KEY_OF_TABLE = {
    "bert/embeddings/word_embeddings": "vocab_size",
    "cls/predictions/output_bias": "vocab_size",
    "bert/embeddings/position_embeddings": "max_position_embeddings",
    "bert/embeddings/token_type_embeddings": "type_vocab_size",
}

_WORD_EMBEDDINGS = "bert/embeddings/word_embeddings"


def checkpoint_config_mismatches(init_checkpoint, bert_config):
    """How the architecture of a checkpoint with Google's names differs from `bert_config`, read
    from its variables' shapes alone (no graph): vocab_size, hidden_size (word embeddings),
    max_position_embeddings, type_vocab_size, num_hidden_layers (the encoder's layer_N scopes),
    intermediate_size (layer 0's intermediate kernel). num_attention_heads shows in no shape.

    Returns:
        [(config key, value in the checkpoint, value in bert_config, evidence)], [] when the
        shapes fit; evidence names the variable and its shape.
    Raises:
        ValueError: the checkpoint has no bert/embeddings/word_embeddings (not a BERT checkpoint
            with Google's variable names).
    """
    shapes = {name: list(shape) for name, shape in tf.train.list_variables(init_checkpoint)}
    if _WORD_EMBEDDINGS not in shapes:
        raise ValueError(f"{init_checkpoint} has no {_WORD_EMBEDDINGS}: not a BERT checkpoint "
                         "with Google's variable names (convert it with convert_checkpoint.py)")
    found = {}  # config key -> (value, evidence)

    def from_shape(name, key, axis):
        if name in shapes and len(shapes[name]) > axis:
            found[key] = (shapes[name][axis], f"{name} {shapes[name]}")

    from_shape(_WORD_EMBEDDINGS, "vocab_size", 0)
    from_shape(_WORD_EMBEDDINGS, "hidden_size", 1)
    from_shape("bert/embeddings/position_embeddings", "max_position_embeddings", 0)
    from_shape("bert/embeddings/token_type_embeddings", "type_vocab_size", 0)
    layers = {int(match.group(1)) for match in
              (re.match(r"bert/encoder/layer_(\d+)/", name) for name in shapes) if match}
    if layers:
        found["num_hidden_layers"] = (max(layers) + 1,
                                      f"bert/encoder/layer_0 .. layer_{max(layers)}")
    from_shape("bert/encoder/layer_0/intermediate/dense/kernel", "intermediate_size", 1)
    return [(key, value, getattr(bert_config, key), evidence)
            for key, (value, evidence) in found.items() if value != getattr(bert_config, key)]


def init_from_checkpoint(init_checkpoint, tvars=None):
    """Initialises every variable of `tvars` from a checkpoint with Google's variable names.

    Optimizer slots in the checkpoint (adam_m, adam_v, LAMB's, global_step, loss scale) are
    ignored. Call before the session is created; the variables' initializers read the checkpoint.

    Args:
        init_checkpoint: checkpoint prefix, e.g. ".../model.ckpt-28252".
        tvars: variables to load; default `tf.compat.v1.trainable_variables()` (the model).
    Raises:
        ValueError: no checkpoint at the prefix, or model variables missing from it or with a
            different shape (one message listing all of them).
    """
    if tvars is None:
        tvars = tf.compat.v1.trainable_variables()
    if not tf.io.gfile.exists(init_checkpoint + ".index"):
        raise ValueError(
            f"init_checkpoint {init_checkpoint}: no TF1 checkpoint there (no "
            f"{init_checkpoint}.index); pass a checkpoint prefix such as model.ckpt-28252")
    checkpoint_shapes = dict(tf.train.list_variables(init_checkpoint))
    missing, mismatched = [], []
    for var in tvars:
        name = _variable_name(var)
        if name not in checkpoint_shapes:
            missing.append(name)
        elif list(checkpoint_shapes[name]) != var.shape.as_list():
            hint = _CONFIG_KEY_OF_TABLE.get(name)
            mismatched.append(
                f"{name} {list(checkpoint_shapes[name])} in checkpoint vs "
                f"{var.shape.as_list()} in model" + (f" ({hint})" if hint else ""))
    if missing or mismatched:
        problems = []
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more"
                                              if len(missing) > 5 else "")
            problems.append(f"{len(missing)} model variables missing ({shown})")
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatches ({'; '.join(mismatched)})")
        raise ValueError(
            f"init_checkpoint {init_checkpoint} does not fit the model: {'; '.join(problems)}; "
            "use the bert_config.json the checkpoint was trained with and a checkpoint with "
            "Google's variable names")
    assignment_map, _ = get_assignment_map_from_checkpoint(tvars, init_checkpoint)
    tf.compat.v1.train.init_from_checkpoint(init_checkpoint, assignment_map)
