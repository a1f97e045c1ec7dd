"""SQuAD fine-tuning, prediction and scoring, as google-research/bert's and NVIDIA's
`run_squad.py` do them, on TensorFlow 2.21 `tf.compat.v1` graph mode with the Estimator-style
runner of estimator.py.

  python run_squad.py --vocab_file=data/vocab.txt --bert_config_file=BERT/bert_config.json \\
    --init_checkpoint=BERT/bert_model.ckpt --do_train --train_file=data/squad/train-v1.1.json \\
    --do_predict --predict_file=data/squad/dev-v1.1.json --train_batch_size=12 \\
    --learning_rate=3e-5 --num_train_epochs=2.0 --max_seq_length=384 --doc_stride=128 \\
    --output_dir=output/squad

Training: the examples are shuffled (seeded), cut into windows (squad.py), written once to
OUTPUT_DIR/train.tf_record and trained on for `--num_train_epochs` x examples / global batch
updates (Google counts examples, not windows) with Adam, linear warm-up over
`--warmup_proportion` of them and linear decay. Prediction writes `predictions.json`,
`nbest_predictions.json` (and `null_odds.json` with `--version_2_with_negative`) and, when the
predict file has answers, EM/F1 to `eval_results.txt`. Under Horovod (`mpiexec ... --horovod`)
each rank trains on every size-th window; rank 0 alone predicts and writes.
"""

import tf_startup  # noqa: F401  (first: TensorFlow with oneDNN kernels on, without Keras)

# isort: split
import json
import os
import random
import sys

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

import estimator
import input_pipeline
import modeling
import optimization
import session_setup
import squad
import squad_answers
import squad_metrics
import tokenization
import train_logging

tf1 = tf.compat.v1
FLAGS = flags.FLAGS

# Google's flags, names, meanings and defaults.
flags.DEFINE_string("bert_config_file", None, "bert_config.json of the model architecture.")
flags.DEFINE_string("vocab_file", None, "The vocabulary the model was trained with.")
flags.DEFINE_string("output_dir", None, "Checkpoints, features, predictions and results.")
flags.DEFINE_string("train_file", None, "SQuAD JSON for training, e.g. train-v1.1.json.")
flags.DEFINE_string("predict_file", None, "SQuAD JSON to predict, e.g. dev-v1.1.json.")
flags.DEFINE_string("init_checkpoint", None, "Checkpoint (Google's variable names) to start "
                    "from, used only when --output_dir has no checkpoint.")
flags.DEFINE_bool("do_lower_case", True, "Lower-case the input (uncased models).")
flags.DEFINE_integer("max_seq_length", 384, "Tokens per window (question + context).")
flags.DEFINE_integer("doc_stride", 128, "Tokens between the starts of a context's windows.")
flags.DEFINE_integer("max_query_length", 64, "Question tokens kept.")
flags.DEFINE_bool("do_train", False, "Fine-tune on --train_file.")
flags.DEFINE_bool("do_predict", False, "Predict --predict_file (and score it if it has answers).")
flags.DEFINE_integer("train_batch_size", 32, "Windows per micro-batch on each rank.")
flags.DEFINE_integer("predict_batch_size", 8, "Windows per prediction batch.")
flags.DEFINE_float("learning_rate", 5e-5, "Peak Adam learning rate (per rank under Horovod).")
flags.DEFINE_float("num_train_epochs", 3.0, "Passes over the training examples.")
flags.DEFINE_float("warmup_proportion", 0.1, "Share of the updates with linear warm-up.")
flags.DEFINE_integer("save_checkpoints_steps", 1000, "Save a checkpoint every this many updates.")
flags.DEFINE_integer("n_best_size", 20, "Candidates per example in nbest_predictions.json.")
flags.DEFINE_integer("max_answer_length", 30, "Longest answer, in WordPiece tokens.")
flags.DEFINE_bool("verbose_logging", False, "Log where an answer could not be mapped back.")
flags.DEFINE_bool("version_2_with_negative", False, "SQuAD 2.0: questions may have no answer.")
flags.DEFINE_float("null_score_diff_threshold", 0.0, "SQuAD 2.0: predict no answer when the "
                   "null score exceeds the best answer's by more than this.")
# NVIDIA's and ours.
flags.DEFINE_bool("horovod", False, "Data-parallel fine-tuning with Horovod, one process per "
                  "rank (launch with mpiexec or horovodrun).")
flags.DEFINE_bool("amp", False, "Automatic mixed precision (grappler rewrite); float16 with "
                  "dynamic loss scaling.")
flags.DEFINE_alias("use_fp16", "amp")
flags.DEFINE_enum("amp_dtype", "float16", ["float16", "bfloat16"], "Mixed-precision type.")
flags.DEFINE_bool("use_xla", False, "XLA auto-clustering (jit) of the training step.")
flags.DEFINE_integer("num_accumulation_steps", 1, "Micro-batches per update.")
flags.DEFINE_enum("optimizer_type", "adam", optimization.OPTIMIZER_TYPES, "adam: Google's "
                  "(no bias correction); adamw: with bias-corrected moments, as PyTorch's and "
                  "Hugging Face's AdamW (for short fine-tuning runs at higher rates); lamb.")
flags.DEFINE_bool("rescale_decay", False, "Linear decay from the peak rate at the end of "
                  "warm-up (NVIDIA's Adam, Hugging Face's linear schedule) instead of Google's "
                  "decay from step 0 (10% below the peak at the end of a 0.1 warm-up).")
flags.DEFINE_integer("seed", 12345, "Seeds the example shuffle (Google's fixed 12345 by "
                     "default), initialisation, dropout and the order of the windows.")
flags.DEFINE_integer("keep_checkpoint_max", 5, "Newest checkpoints to keep.")
flags.DEFINE_integer("display_loss_steps", 10, "Log the loss every this many updates.")
flags.DEFINE_integer("intra_op_threads", 0, "Threads inside one op (0: TensorFlow's choice).")
flags.DEFINE_integer("inter_op_threads", 0, "Ops run in parallel (0: TensorFlow's choice).")
flags.DEFINE_integer("rank_timeout_seconds", 300, "With --horovod: a rank that makes no "
                     "progress in a training step this long ends the job (0: wait forever).",
                     lower_bound=0)
flags.DEFINE_bool("predict_trim_padding", True, "Predict each batch only up to its longest "
                  "window (with --use_xla rounded up to a multiple of 16 tokens) and write the "
                  "windows in order of length; padding gets logit -inf. Google's code computes "
                  "the padding positions' logits and ranks them, unused, in its n-best search: "
                  "--nopredict_trim_padding does the same, for its n-best lists bit for bit.")
flags.DEFINE_string("export_dir", None, "Also write a SavedModel for serving here (inputs "
                    "input_ids, input_mask, segment_ids; outputs start_logits, end_logits).")

SQUAD_HEAD = "cls/squad/"
# Not needed by the span head: a checkpoint without them (a Hugging Face
# BertForQuestionAnswering export has no pooler) still initialises the model.
OPTIONAL_SCOPES = (SQUAD_HEAD, "bert/pooler/")


class FlagError(ValueError):
    """Flags that contradict each other or the files; the message names the fix."""


def _amp_loss_scaling():
    return FLAGS.amp and FLAGS.amp_dtype == "float16"


def check_flags():
    """All checks that need no graph; returns (bert_config, tokenizer)."""
    if not (FLAGS.do_train or FLAGS.do_predict):
        raise FlagError("nothing to do: pass --do_train and/or --do_predict")
    for name in ("bert_config_file", "vocab_file", "output_dir"):
        if not FLAGS[name].value:
            raise FlagError(f"--{name} is required")
    for name in ("bert_config_file", "vocab_file"):
        if not os.path.isfile(FLAGS[name].value):
            raise FlagError(f"--{name}={FLAGS[name].value}: no such file")
    if FLAGS.do_train and not FLAGS.train_file:
        raise FlagError("--do_train needs --train_file (SQuAD JSON)")
    if FLAGS.do_predict and not FLAGS.predict_file:
        raise FlagError("--do_predict needs --predict_file (SQuAD JSON)")
    for name in ("train_batch_size", "predict_batch_size", "num_accumulation_steps",
                 "save_checkpoints_steps", "keep_checkpoint_max", "display_loss_steps",
                 "n_best_size", "max_answer_length", "max_query_length"):
        if FLAGS[name].value < 1:
            raise FlagError(f"--{name}={FLAGS[name].value} must be >= 1")
    if FLAGS.learning_rate <= 0 or FLAGS.num_train_epochs <= 0:
        raise FlagError("--learning_rate and --num_train_epochs must be > 0")
    if not 0 <= FLAGS.warmup_proportion <= 1:
        raise FlagError(f"--warmup_proportion={FLAGS.warmup_proportion} must be in [0, 1]")
    for path, used in ((FLAGS.train_file, FLAGS.do_train), (FLAGS.predict_file, FLAGS.do_predict)):
        if used:
            squad.load_squad(path)  # a file that is not SQuAD fails now, not after training
    try:
        squad.check_lengths(FLAGS.max_seq_length, FLAGS.max_query_length, FLAGS.doc_stride)
        bert_config = modeling.BertConfig.from_json_file(FLAGS.bert_config_file)
    except (ValueError, KeyError, TypeError) as error:
        raise FlagError(str(error)) from None
    if FLAGS.max_seq_length > bert_config.max_position_embeddings:
        raise FlagError(f"--max_seq_length={FLAGS.max_seq_length} exceeds max_position_embeddings "
                        f"{bert_config.max_position_embeddings} of {FLAGS.bert_config_file}")
    tokenizer = tokenization.FullTokenizer(FLAGS.vocab_file, FLAGS.do_lower_case)
    try:
        tokenization.check_vocab(tokenizer.vocab, FLAGS.vocab_file)
    except ValueError as error:
        raise FlagError(str(error)) from None
    if len(tokenizer.vocab) != bert_config.vocab_size:
        raise FlagError(f"--vocab_file={FLAGS.vocab_file} has {len(tokenizer.vocab)} tokens but "
                        f"vocab_size of --bert_config_file={FLAGS.bert_config_file} is "
                        f"{bert_config.vocab_size}: pass the vocab.txt the model was trained with")
    _check_checkpoint(bert_config)
    return bert_config, tokenizer


def _check_checkpoint(bert_config):
    """The checkpoint the run starts from fits the config; predicting alone needs a SQuAD head."""
    latest = tf1.train.latest_checkpoint(FLAGS.output_dir)
    start = latest or FLAGS.init_checkpoint
    if FLAGS.init_checkpoint and not tf.io.gfile.exists(FLAGS.init_checkpoint + ".index"):
        raise FlagError(f"--init_checkpoint={FLAGS.init_checkpoint}: no checkpoint there (no "
                        ".index file); pass a checkpoint prefix such as .../bert_model.ckpt")
    if not start:
        if FLAGS.do_predict and not FLAGS.do_train:
            raise FlagError(f"--do_predict without --do_train: no checkpoint in "
                            f"{FLAGS.output_dir}; pass --init_checkpoint of a SQuAD model")
        return
    what = (f"the checkpoint {latest} in --output_dir" if latest
            else f"--init_checkpoint={FLAGS.init_checkpoint}")
    try:
        session_setup.check_checkpoint_fits(start, what, bert_config, FLAGS.bert_config_file,
                                            "pass the bert_config.json of the checkpoint")
    except ValueError as error:
        raise FlagError(str(error)) from None
    names = {name for name, _ in tf.train.list_variables(start)}
    if FLAGS.do_predict and not FLAGS.do_train and not any(
            name.startswith(SQUAD_HEAD) for name in names):
        raise FlagError(f"{what} has no SQuAD head ({SQUAD_HEAD}output_weights): it is not "
                        "fine-tuned; add --do_train --train_file=..., or pass a fine-tuned "
                        "checkpoint")


def init_from_checkpoint(path):
    """Initialises the model from `path`; the SQuAD head and the pooler only if it has them."""
    names = {name for name, _ in tf.train.list_variables(path)}
    tvars = [var for var in tf1.trainable_variables()
             if not var.op.name.startswith(OPTIONAL_SCOPES) or var.op.name in names]
    modeling.init_from_checkpoint(path, tvars)


def model_fn_builder(bert_config, distributed, num_train_steps, num_warmup_steps):
    """The model_fn: BertModel + `cls/squad` span head; Adam in TRAIN mode."""

    def model_fn(features, labels, mode, params):
        del labels, params
        if mode != estimator.ModeKeys.TRAIN:
            return build(features, mode)
        with session_setup.training_graph(FLAGS.seed, distributed.rank,
                                          FLAGS.num_accumulation_steps, FLAGS.use_xla):
            return build(features, mode)

    def build(features, mode):
        is_training = mode == estimator.ModeKeys.TRAIN
        if not is_training and FLAGS.predict_trim_padding:
            features = trim_padding(features, XLA_TRIM_MULTIPLE if FLAGS.use_xla else 1)
        model = modeling.BertModel(bert_config, is_training, features["input_ids"],
                                   features["input_mask"], features["segment_ids"])
        start_logits, end_logits = modeling.get_squad_output(bert_config,
                                                             model.get_sequence_output())
        if not is_training:
            predictions = {"unique_ids": features["unique_ids"],
                           "start_logits": pad_logits(start_logits, "start_logits"),
                           "end_logits": pad_logits(end_logits, "end_logits")}
            return estimator.Spec(loss=tf.constant(0.0), predictions=predictions)
        start_loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=features["start_positions"], logits=start_logits))
        end_loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=features["end_positions"], logits=end_logits))
        total_loss = tf.identity((start_loss + end_loss) / 2.0, name="total_loss")
        ops = optimization.create_optimizer(
            total_loss, FLAGS.learning_rate * distributed.size, num_train_steps,
            num_warmup_steps, optimizer_type=FLAGS.optimizer_type,
            rescale_decay=FLAGS.rescale_decay,
            num_accumulation_steps=FLAGS.num_accumulation_steps, amp=_amp_loss_scaling(),
            distributed=distributed)
        logged = {"start_loss": start_loss, "end_loss": end_loss,
                  "learning_rate": ops.learning_rate}
        if ops.loss_scale is not None:
            logged["loss_scaler"] = ops.loss_scale
        return estimator.Spec(loss=total_loss, train_op=ops.train_op, logged_tensors=logged,
                              skipped_steps=ops.skipped_steps)

    return model_fn


# Under XLA every batch length compiles its own clusters: lengths rounded up to 16 keep that
# to max_seq_length / 16 compilations. oneDNN's kernels for a new shape are cheap to create.
XLA_TRIM_MULTIPLE = 16
WINDOW_FEATURES = ("input_ids", "input_mask", "segment_ids")


def trim_padding(features, multiple):
    """The batch's windows cut after the longest one's last real token (rounded up to a
    multiple of `multiple`): padding never changes the real tokens' logits (it is masked
    out of attention) and costs time quadratic in its length."""
    longest = tf.reduce_max(tf.reduce_sum(features["input_mask"], axis=1))
    padded_length = tf.shape(features["input_mask"])[1]
    length = tf.minimum((longest + multiple - 1) // multiple * multiple, padded_length)
    return {name: value[:, :length] if name in WINDOW_FEATURES else value
            for name, value in features.items()}


def pad_logits(logits, name):
    """[B, S'] logits of a trimmed batch back to [B, --max_seq_length], padding at -inf."""
    missing = FLAGS.max_seq_length - tf.shape(logits)[1]
    return tf.pad(logits, [[0, 0], [0, missing]], constant_values=float("-inf"), name=name)


def _parse(max_seq_length, is_training):
    spec = squad.feature_spec(max_seq_length, is_training)

    def parse(serialized):
        return {name: tf.cast(value, tf.int32)
                for name, value in tf.io.parse_example(serialized, spec).items()}

    return parse


def train_dataset(path, batch_size, max_seq_length, seed, skip_batches=0):
    """Training windows of TFRecord `path`: shuffled each epoch (seeded), repeated, batched."""
    dataset = tf.data.TFRecordDataset(path)
    dataset = dataset.shuffle(10_000, seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = dataset.batch(batch_size, drop_remainder=True).skip(skip_batches)
    return input_pipeline.without_autotune_model(
        dataset.map(_parse(max_seq_length, True)).prefetch(2))


def predict_dataset(path, batch_size, max_seq_length):
    """Every window of TFRecord `path`, in order, batched (the last batch may be smaller)."""
    dataset = tf.data.TFRecordDataset(path).batch(batch_size)
    return input_pipeline.without_autotune_model(
        dataset.map(_parse(max_seq_length, False)).prefetch(2))


def prepare_training(tokenizer, distributed, logger):
    """Writes this rank's training windows; returns (path, examples, windows written)."""
    examples, skipped = squad.read_squad_examples(FLAGS.train_file, True,
                                                  FLAGS.version_2_with_negative)
    if skipped:
        logging.warning("%d training questions skipped: answer not found in the context",
                        skipped)
    if not examples:
        raise FlagError(f"--train_file={FLAGS.train_file} has no usable training question")
    random.Random(FLAGS.seed).shuffle(examples)  # Google pre-shuffles with Random(12345)
    features = squad.convert_examples_to_features(
        examples, tokenizer, FLAGS.max_seq_length, FLAGS.doc_stride, FLAGS.max_query_length,
        True)
    mine = (f for index, f in enumerate(features) if index % distributed.size == distributed.rank)
    suffix = f".rank-{distributed.rank}" if distributed.size > 1 else ""
    path = os.path.join(FLAGS.output_dir, f"train{suffix}.tf_record")
    written = len(squad.write_features(mine, path, True))
    logger.summary("train_data", {"examples": len(examples), "skipped_questions": skipped,
                                  "windows": written, "file": path})
    return path, len(examples), written


def num_train_steps(num_examples, distributed):
    """Updates of the run: epochs x examples / global batch, as Google and NVIDIA count."""
    global_batch = FLAGS.train_batch_size * FLAGS.num_accumulation_steps * distributed.size
    return max(1, int(num_examples / global_batch * FLAGS.num_train_epochs))


def predict(runner, tokenizer, logger):
    """Predicts --predict_file; writes the prediction files and, when it has answers, the
    EM/F1; returns (results dict, paths)."""
    dataset = squad.load_squad(FLAGS.predict_file)
    examples, _ = squad.read_squad_examples(FLAGS.predict_file, False, articles=dataset)
    path = os.path.join(FLAGS.output_dir, "eval.tf_record")
    features = list(squad.convert_examples_to_features(
        examples, tokenizer, FLAGS.max_seq_length, FLAGS.doc_stride, FLAGS.max_query_length,
        False))
    # Batches of similar lengths trim the most; the n-best search keeps Google's order.
    squad.write_features(sorted(features, key=lambda feature: sum(feature.input_mask))
                         if FLAGS.predict_trim_padding else features, path, False)

    def input_fn(params):
        del params
        return predict_dataset(path, FLAGS.predict_batch_size, FLAGS.max_seq_length)

    results, latencies = [], []
    for batch in runner.predict(input_fn):
        latencies.append(batch.seconds)
        for unique_id, start, end in zip(batch.values["unique_ids"],
                                         batch.values["start_logits"],
                                         batch.values["end_logits"], strict=True):
            results.append(squad_answers.RawResult(int(unique_id), start, end))
    predictions, nbest, null_odds = squad_answers.compute_predictions(
        examples, features, results, FLAGS.n_best_size, FLAGS.max_answer_length,
        FLAGS.do_lower_case, FLAGS.version_2_with_negative, FLAGS.null_score_diff_threshold)
    paths = squad_answers.write_predictions(
        FLAGS.output_dir, predictions, nbest,
        null_odds if FLAGS.version_2_with_negative else None)
    stats = inference_stats(latencies, len(features))
    logger.summary("predict", dict(examples=len(examples), windows=len(features), **stats))
    scores = {}
    if not FLAGS.version_2_with_negative and _has_answers(dataset):
        scores = squad_metrics.evaluate(dataset, predictions)
        logger.summary("squad_v1.1", scores)
    return dict(scores, **stats), paths


def _has_answers(dataset):
    return any(qa.get("answers") for article in dataset for paragraph in article["paragraphs"]
               for qa in paragraph["qas"])


def inference_stats(latencies, windows):
    """Sequences/s over the batches after the first (graph optimisation) and the per-batch
    latency percentiles in ms, as NVIDIA's inference tables give them."""
    timed = latencies[1:] or latencies
    timed_windows = windows - (FLAGS.predict_batch_size if len(latencies) > 1 else 0)
    stats = {"predict_batches": len(latencies),
             "throughput_predict": round(timed_windows / max(sum(timed), 1e-9), 2)}
    for percentile in (50, 90, 99):
        stats[f"latency_p{percentile}_ms"] = round(
            float(np.percentile(timed, percentile)) * 1000, 2)
    return stats


def export_saved_model(bert_config, checkpoint, export_dir, session_config):
    """A SavedModel of `checkpoint` for serving: int32 [batch, seq] inputs `input_ids`,
    `input_mask`, `segment_ids`; float32 outputs `start_logits`, `end_logits`."""
    with tf.Graph().as_default():
        inputs = {name: tf1.placeholder(tf.int32, [None, None], name)
                  for name in ("input_ids", "input_mask", "segment_ids")}
        model = modeling.BertModel(bert_config, False, inputs["input_ids"],
                                   inputs["input_mask"], inputs["segment_ids"])
        start_logits, end_logits = modeling.get_squad_output(bert_config,
                                                             model.get_sequence_output())
        outputs = {"start_logits": start_logits, "end_logits": end_logits}
        with tf1.Session(config=session_config) as session:
            tf1.train.Saver(tf1.trainable_variables()).restore(session, checkpoint)
            temporary = f"{export_dir.rstrip('/')}.tmp-{os.getpid()}"
            builder = tf1.saved_model.Builder(temporary)
            signature = tf1.saved_model.predict_signature_def(inputs, outputs)
            builder.add_meta_graph_and_variables(
                session, [tf1.saved_model.SERVING],
                signature_def_map={"serving_default": signature}, strip_default_attrs=True)
            builder.save()
    os.replace(temporary, export_dir)
    return export_dir


def run(bert_config, tokenizer, distributed):
    """Fine-tune and/or predict as the flags say; returns the prediction results or None."""
    if FLAGS.export_dir and os.path.exists(FLAGS.export_dir):
        raise FlagError(f"--export_dir={FLAGS.export_dir} exists: pass a new directory")
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    json_log = os.path.join(FLAGS.output_dir, "train_log.jsonl")
    logger = train_logging.run_logger(FLAGS.output_dir, json_log, distributed.is_chief)
    config = estimator.RunConfig(
        model_dir=FLAGS.output_dir, save_checkpoints_steps=FLAGS.save_checkpoints_steps,
        keep_checkpoint_max=FLAGS.keep_checkpoint_max, log_every_steps=FLAGS.display_loss_steps,
        sequences_per_run=FLAGS.train_batch_size * distributed.size,
        session_config=session_setup.session_config(
            distributed, FLAGS.intra_op_threads, FLAGS.inter_op_threads, FLAGS.use_xla,
            FLAGS.amp, FLAGS.amp_dtype),
        seed=FLAGS.seed, distributed=distributed,
        max_consecutive_skips=100 if _amp_loss_scaling() else 1)
    warm_start = None
    if FLAGS.init_checkpoint:
        def warm_start():
            init_from_checkpoint(FLAGS.init_checkpoint)
    results = None
    try:
        steps = warmup = 0
        if FLAGS.do_train:
            path, num_examples, _ = prepare_training(tokenizer, distributed, logger)
            steps = num_train_steps(num_examples, distributed)
            warmup = int(steps * FLAGS.warmup_proportion)
        model_fn = model_fn_builder(bert_config, distributed, steps, warmup)
        runner = estimator.Estimator(model_fn, config, warm_start=warm_start, logger=logger)
        if FLAGS.do_train:
            def train_input_fn(params):
                return train_dataset(path, FLAGS.train_batch_size, FLAGS.max_seq_length,
                                     FLAGS.seed, params["skip_steps"] * FLAGS.num_accumulation_steps)

            fingerprint = json.dumps({"file": [path, os.path.getsize(path)],
                                      "batch_size": FLAGS.train_batch_size, "seed": FLAGS.seed,
                                      "max_seq_length": FLAGS.max_seq_length})
            runner.train(train_input_fn, steps, hooks=distributed.training_hooks(),
                         input_fingerprint=fingerprint)
        if distributed.is_chief:
            if FLAGS.do_predict:
                results, paths = predict(runner, tokenizer, logger)
                paths["eval_results"] = session_setup.write_results(FLAGS.output_dir, results)
                logger.summary("outputs", paths)
            if FLAGS.export_dir:
                checkpoint = runner.latest_checkpoint() or FLAGS.init_checkpoint
                logger.summary("outputs", {"saved_model": export_saved_model(
                    bert_config, checkpoint, FLAGS.export_dir, config.session_config)})
    finally:
        logger.close()
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    tf1.disable_eager_execution()
    try:
        distributed = session_setup.distributed_handle(
            FLAGS.horovod, _amp_loss_scaling(), FLAGS.rank_timeout_seconds, FLAGS.output_dir)
        session_setup.configure_threads(distributed, FLAGS.intra_op_threads,
                                        FLAGS.inter_op_threads)
        bert_config, tokenizer = check_flags()
        run(bert_config, tokenizer, distributed)
    except (ValueError, estimator.TrainingError) as error:  # FlagError, SquadError, a
        sys.exit(f"run_squad.py: error: {error}")  # checkpoint that does not fit the model
    except OSError as error:
        sys.exit(f"run_squad.py: error: cannot write {error.filename or 'a file'}: "
                 f"{error.strerror or error}; free space or fix the permissions there, or pass "
                 "another --output_dir")


if __name__ == "__main__":
    app.run(main)
