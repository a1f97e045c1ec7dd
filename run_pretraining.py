"""BERT pre-training (masked LM + next sentence prediction): train and/or evaluate.

Takes NVIDIA's TF BERT `run_pretraining.py` flags (and Google's `--input_file`), on TensorFlow 2.21
`tf.compat.v1` graph mode with the Estimator-style runner of estimator.py.

  python run_pretraining.py --bert_config_file=data/bert_config_mini.json \\
    --input_files_dir=data/tfrecords/train --eval_files_dir=data/tfrecords/eval \\
    --output_dir=output/mini --do_train --do_eval --train_batch_size=32 \\
    --max_seq_length=128 --max_predictions_per_seq=20 --num_train_steps=1000 \\
    --num_warmup_steps=100 --learning_rate=1e-3 --optimizer_type=adam

`--train_batch_size` is per rank and micro-batch; `--learning_rate` is per rank (multiplied by the
number of Horovod ranks, as NVIDIA does). Data-parallel training on N processes:

  mpiexec --allow-run-as-root -np N python run_pretraining.py --horovod ...
  horovodrun -np N [--gloo] python run_pretraining.py --horovod ...

Re-running with the same `--output_dir` resumes from its
latest checkpoint; `--init_checkpoint` is loaded only when `--output_dir` has none.
"""

import tf_startup  # noqa: F401  (first: TensorFlow with oneDNN kernels on, without Keras)

# isort: split
import contextlib
import json
import os
import platform
import sys

import tensorflow as tf
from absl import app, flags, logging
from google.protobuf.message import DecodeError

import estimator
import input_pipeline
import mlperf_log
import modeling
import optimization
import session_setup
import time_to_train
import train_logging

tf1 = tf.compat.v1
FLAGS = flags.FLAGS

flags.DEFINE_string("bert_config_file", None, "bert_config.json of the model architecture.")
flags.DEFINE_string("input_files_dir", None,
                    "Directory (or comma-separated directories) of training TFRecord files.")
flags.DEFINE_string("input_file", None, "Training TFRecord files: comma-separated globs (Google's "
                    "flag; an alternative to --input_files_dir).")
flags.DEFINE_string("eval_files_dir", None, "Directory (or comma-separated directories) of eval "
                    "TFRecord files; default: the training files, as Google's script does.")
flags.DEFINE_string("output_dir", None, "Checkpoints, logs, TensorBoard and eval_results.txt.")
flags.DEFINE_string("init_checkpoint", None, "Checkpoint prefix with Google's variable names to "
                    "start from, used only when --output_dir has no checkpoint.")
flags.DEFINE_string("dllog_path", None, "JSON-lines log file; default OUTPUT_DIR/train_log.jsonl.")
flags.DEFINE_bool("do_train", False, "Train.")
flags.DEFINE_bool("do_eval", False, "Evaluate the final (or latest) checkpoint.")
flags.DEFINE_integer("train_batch_size", 32, "Sequences per micro-batch on each rank.")
flags.DEFINE_integer("eval_batch_size", 8, "Sequences per eval batch.")
flags.DEFINE_integer("max_seq_length", 512, "Sequence length; must match the records.")
flags.DEFINE_integer("max_predictions_per_seq", 80, "Masked positions per sequence; must match "
                     "the records.")
flags.DEFINE_integer("num_train_steps", 100000, "Updates to train to (global step).")
flags.DEFINE_integer("num_warmup_steps", 10000, "Updates of linear learning-rate warm-up.")
flags.DEFINE_integer("num_accumulation_steps", 1, "Micro-batches per update.")
flags.DEFINE_bool("allreduce_post_accumulation", False,
                  "Allreduce once per update instead of once per micro-batch.")
flags.DEFINE_float("learning_rate", 5e-5, "Peak learning rate per rank.")
flags.DEFINE_enum("optimizer_type", "lamb", optimization.OPTIMIZER_TYPES, "Optimizer.")
flags.DEFINE_integer("save_checkpoints_steps", 1000, "Save a checkpoint every this many updates.")
flags.DEFINE_integer("keep_checkpoint_max", 5, "Newest checkpoints to keep.")
flags.DEFINE_integer("display_loss_steps", 10, "Log losses and throughput every this many updates.")
flags.DEFINE_integer("max_eval_steps", 100, "At most this many eval batches.")
flags.DEFINE_bool("horovod", False, "Data-parallel training with Horovod, one process per rank "
                  "(launch with mpiexec or horovodrun).")
flags.DEFINE_integer("rank_timeout_seconds", 300, "With --horovod: when a rank makes no progress "
                     "in a training step for this long (stopped, dead or hung) every rank exits "
                     "(code 75) naming it; saving, restoring and evaluating do not count, the "
                     "first step may take 3x. 0: wait forever.", lower_bound=0)
flags.DEFINE_bool("fp16_allreduce", False, "Compress gradients to float16 for the Horovod "
                  "allreduce; always on with float16 --amp, as NVIDIA does.")
flags.DEFINE_bool("amp", False, "Automatic mixed precision (grappler rewrite) with dynamic loss "
                  "scaling.")
flags.DEFINE_alias("use_fp16", "amp")
flags.DEFINE_bool("manual_fp16", False, "NVIDIA's manual fp16 casts; here it runs --amp.")
flags.DEFINE_enum("amp_dtype", "float16", ["float16", "bfloat16"],
                  "Mixed-precision type: float16 (loss-scaled) or bfloat16 (oneDNN rewrite).")
flags.DEFINE_integer("init_loss_scale", 2**32, "Initial dynamic loss scale (float16 AMP).")
flags.DEFINE_integer("max_consecutive_skips", 100, "With float16 loss scaling: stop after this "
                     "many updates in a row skipped for non-finite gradients (the scale halves "
                     "at each). Without loss scaling the first non-finite update stops the run.")
flags.DEFINE_bool("use_xla", False, "XLA auto-clustering (jit) of the training step.")
flags.DEFINE_integer("intra_op_threads", 0, "Threads inside one op (0: TensorFlow's choice).")
flags.DEFINE_integer("inter_op_threads", 0, "Ops run in parallel (0: TensorFlow's choice).")
flags.DEFINE_integer("seed", 12345, "Seeds initialisation, dropout and the order of the data.")
flags.DEFINE_integer("eval_interval_samples", 0, "Evaluate every this many training samples "
                     "(sequences over all ranks) during training, and at the last step, on "
                     "--eval_files_dir (up to --max_eval_steps batches). 0: one evaluation at the "
                     "end with --do_eval; in MLPerf mode MLPerf's interval, floor(0.05 x (230.23 "
                     "x global batch + 3,000,000) / 25,000) x 25,000.", lower_bound=0)
flags.DEFINE_float("stop_threshold", None, "Stop training as soon as an evaluation reaches this "
                   "masked-LM accuracy, with a checkpoint there (MLPerf: 0.720, the default in "
                   "MLPerf mode).")
flags.DEFINE_string("mlperf_log_file", None, "MLPerf mode: write an MLPerf training log here "
                    "(mllog, ruleset 5.0.0, rank 0, a fresh file; an earlier one is kept as "
                    "FILE.N), evaluate during training and stop at --stop_threshold.")
flags.DEFINE_enum("mlperf_division", "closed", ["closed", "open"], "MLPerf division.")
flags.DEFINE_string("mlperf_submission_org", "bert-tf", "MLPerf submission_org.")
flags.DEFINE_string("mlperf_submission_platform", None, "MLPerf submission_platform (default: "
                    "RANKSx the machine type, e.g. 8xx86_64).")
flags.DEFINE_enum("mlperf_submission_status", "onprem", ["onprem", "cloud", "research"],
                  "MLPerf submission_status.")
flags.DEFINE_bool("skip_corrupt_records", False, "Leave out corrupt input records (truncated, bad "
                  "CRC, not a tf.train.Example, wrong feature lengths) instead of stopping; "
                  "their count is logged per file and in the run summary.")

class FlagError(ValueError):
    """Flags that contradict each other, the data or the files; the message names the fix."""


def _check_positive():
    for name, minimum in (("train_batch_size", 1), ("eval_batch_size", 1), ("num_train_steps", 1),
                          ("num_warmup_steps", 0), ("num_accumulation_steps", 1),
                          ("save_checkpoints_steps", 1), ("keep_checkpoint_max", 1),
                          ("display_loss_steps", 1), ("max_eval_steps", 1),
                          ("max_consecutive_skips", 1),
                          ("max_seq_length", 1), ("max_predictions_per_seq", 1),
                          ("intra_op_threads", 0), ("inter_op_threads", 0)):
        if FLAGS[name].value < minimum:
            raise FlagError(f"--{name}={FLAGS[name].value} must be >= {minimum}")
    if FLAGS.learning_rate <= 0:
        raise FlagError(f"--learning_rate={FLAGS.learning_rate} must be > 0")


def _bert_config():
    if not FLAGS.bert_config_file:
        raise FlagError("--bert_config_file is required: pass e.g. data/bert_config_mini.json")
    if not os.path.isfile(FLAGS.bert_config_file):
        raise FlagError(f"--bert_config_file={FLAGS.bert_config_file}: no such file")
    try:
        config = modeling.BertConfig.from_json_file(FLAGS.bert_config_file)
    except json.JSONDecodeError as error:
        raise FlagError(f"--bert_config_file={FLAGS.bert_config_file}: not JSON ({error})") from None
    if FLAGS.max_seq_length > config.max_position_embeddings:
        raise FlagError(f"--max_seq_length={FLAGS.max_seq_length} exceeds max_position_embeddings "
                        f"{config.max_position_embeddings} of {FLAGS.bert_config_file}; use a "
                        "shorter sequence length")
    return config


def _evaluates_while_training():
    return FLAGS.do_train and (FLAGS.eval_interval_samples > 0 or bool(FLAGS.mlperf_log_file))


def _check_time_to_train():
    """The evaluation-during-training, threshold and MLPerf flags fit together."""
    if (FLAGS.eval_interval_samples or FLAGS.stop_threshold is not None
            or FLAGS.mlperf_log_file) and not FLAGS.do_train:
        raise FlagError("--eval_interval_samples, --stop_threshold and --mlperf_log_file act "
                        "during training: add --do_train")
    if FLAGS.stop_threshold is not None:
        if not 0 < FLAGS.stop_threshold <= 1:
            raise FlagError(f"--stop_threshold={FLAGS.stop_threshold} is a masked-LM accuracy: "
                            "pass a value in (0, 1], e.g. 0.720")
        if not _evaluates_while_training():
            raise FlagError("--stop_threshold needs evaluations during training: pass "
                            "--eval_interval_samples=N (or --mlperf_log_file)")
    if (FLAGS.mlperf_log_file and FLAGS.mlperf_division == "closed"
            and FLAGS.optimizer_type != "lamb"):
        raise FlagError("MLPerf's closed division trains BERT with LAMB: pass "
                        "--optimizer_type=lamb, or --mlperf_division=open")


def _data_files(num_ranks):
    """(train files, eval files), checked against the flags; [] for a phase not run."""
    if FLAGS.input_files_dir and FLAGS.input_file:
        raise FlagError("pass either --input_files_dir or --input_file, not both")
    evaluates = FLAGS.do_eval or _evaluates_while_training()
    needs_input = FLAGS.do_train or (evaluates and not FLAGS.eval_files_dir)
    if needs_input and not (FLAGS.input_files_dir or FLAGS.input_file):
        raise FlagError("--input_files_dir (or --input_file) is required: the TFRecord files "
                        "written by create_pretraining_data.py")
    train_files = eval_files = []
    if needs_input:
        train_files = input_pipeline.list_input_files(FLAGS.input_files_dir, FLAGS.input_file)
    if FLAGS.do_train and len(train_files) < num_ranks:
        raise FlagError(f"{len(train_files)} training files for {num_ranks} ranks: write at "
                        "least one file per rank")
    if evaluates:
        if FLAGS.eval_files_dir:
            eval_files = input_pipeline.list_input_files(FLAGS.eval_files_dir,
                                                         flag="--eval_files_dir")
        else:
            logging.warning("no --eval_files_dir: evaluating on the training files")
            eval_files = train_files
    for files in (train_files if FLAGS.do_train else [], eval_files):
        input_pipeline.check_files(files, FLAGS.max_seq_length, FLAGS.max_predictions_per_seq)
    return (train_files if FLAGS.do_train else []), eval_files


def _check_checkpoints(bert_config):
    """The checkpoint the run will start from (the latest in --output_dir, else
    --init_checkpoint) exists and has the architecture of --bert_config_file."""
    if FLAGS.init_checkpoint and not tf.io.gfile.exists(FLAGS.init_checkpoint + ".index"):
        raise FlagError(f"--init_checkpoint={FLAGS.init_checkpoint}: no checkpoint there (no "
                        ".index file); pass a checkpoint prefix such as .../model.ckpt-28252")
    latest = tf1.train.latest_checkpoint(FLAGS.output_dir)
    if FLAGS.do_eval and not FLAGS.do_train and not FLAGS.init_checkpoint and not latest:
        raise FlagError(f"--do_eval without --do_train: no checkpoint in {FLAGS.output_dir}; "
                        "train first or pass --init_checkpoint")
    if latest:
        _check_checkpoint_fits(
            latest, f"the checkpoint {latest} in --output_dir (the run resumes from it)",
            bert_config, "pass the --bert_config_file the run in --output_dir was started with, "
            "or a new --output_dir")
    elif FLAGS.init_checkpoint:
        _check_checkpoint_fits(
            FLAGS.init_checkpoint, f"--init_checkpoint={FLAGS.init_checkpoint}", bert_config,
            "pass the bert_config.json the checkpoint was trained with, or a checkpoint of "
            "this architecture")


def _check_checkpoint_fits(prefix, what, bert_config, fix):
    try:
        session_setup.check_checkpoint_fits(prefix, what, bert_config, FLAGS.bert_config_file,
                                            fix)
    except ValueError as error:
        raise FlagError(str(error)) from None


def _check_records_fit_config(files, bert_config):
    """The first record of each file holds no token id >= vocab_size and no segment id >=
    type_vocab_size of the config (an embedding lookup would fail at the first step)."""
    limits = (("input_ids", "vocab_size", "token id"), ("masked_lm_ids", "vocab_size", "token id"),
              ("segment_ids", "type_vocab_size", "segment id"))
    for path in dict.fromkeys(files):
        try:
            record = input_pipeline.first_record(path)
            features = tf.train.Example.FromString(record).features.feature if record else {}
        except (input_pipeline.InputError, DecodeError):
            continue  # a corrupt file is the input checks' business
        for name, key, what in limits:
            if name not in features or not features[name].int64_list.value:
                continue
            largest, limit = max(features[name].int64_list.value), getattr(bert_config, key)
            if largest >= limit:
                fix = (f"the data was made with a bigger vocabulary: regenerate it with the "
                       f"model's vocab.txt, or pass the config of that vocabulary ({key} > "
                       f"{largest})" if key == "vocab_size" else
                       f"pass a config with {key} > {largest}, or regenerate the data")
                raise FlagError(
                    f"{path}: the first record has {what} {largest} in {name}, but {key} of "
                    f"--bert_config_file={FLAGS.bert_config_file} is {limit}; {fix}")


def check_flags(num_ranks):
    """All checks that need no graph; returns (bert_config, train_files, eval_files)."""
    if not (FLAGS.do_train or FLAGS.do_eval):
        raise FlagError("nothing to do: pass --do_train and/or --do_eval")
    if not FLAGS.output_dir:
        raise FlagError("--output_dir is required: where checkpoints and logs go")
    _check_positive()
    if FLAGS.max_predictions_per_seq > FLAGS.max_seq_length:
        raise FlagError(f"--max_predictions_per_seq={FLAGS.max_predictions_per_seq} exceeds "
                        f"--max_seq_length={FLAGS.max_seq_length}")
    if FLAGS.amp_dtype == "bfloat16" and not _amp():
        raise FlagError("--amp_dtype=bfloat16 needs --amp (or --use_fp16)")
    _check_time_to_train()
    if FLAGS.num_warmup_steps > FLAGS.num_train_steps:
        logging.warning("--num_warmup_steps=%d > --num_train_steps=%d: the run only warms up",
                        FLAGS.num_warmup_steps, FLAGS.num_train_steps)
    bert_config = _bert_config()
    train_files, eval_files = _data_files(num_ranks)
    _check_records_fit_config([*train_files, *eval_files], bert_config)
    _check_checkpoints(bert_config)
    return bert_config, train_files, eval_files


def _amp():
    return FLAGS.amp or FLAGS.manual_fp16


def _loss_scaling():
    return _amp() and FLAGS.amp_dtype == "float16"


def distributed_handle():
    """The distributed handle of this process (see distributed.py)."""
    try:
        return session_setup.distributed_handle(
            FLAGS.horovod, FLAGS.fp16_allreduce or _loss_scaling(), FLAGS.rank_timeout_seconds,
            FLAGS.output_dir)
    except ValueError as error:
        raise FlagError(str(error)) from None


def _threads():
    return FLAGS.intra_op_threads, FLAGS.inter_op_threads


def session_config(distributed):
    """ConfigProto with the thread counts, XLA and mixed-precision rewrites of the flags."""
    return session_setup.session_config(distributed, *_threads(), use_xla=FLAGS.use_xla,
                                        amp=_amp(), amp_dtype=FLAGS.amp_dtype)


def model_fn_builder(bert_config, distributed):
    """The model_fn: BertModel + masked-LM and next-sentence heads; Adam/LAMB in TRAIN mode."""

    def model_fn(features, labels, mode, params):
        del labels, params  # labels are features here; settings come from the closure
        if mode != estimator.ModeKeys.TRAIN:
            return build(features, mode)
        with session_setup.training_graph(FLAGS.seed, distributed.rank,
                                          FLAGS.num_accumulation_steps, FLAGS.use_xla):
            return build(features, mode)

    def build(features, mode):
        # Every layer computes only the real tokens, the last one only the rows the heads read:
        # [CLS] and the masked positions. XLA compiles a cluster for each new input shape, and
        # the real tokens' count changes every batch: with --use_xla every layer keeps the
        # padded [B, S] shapes.
        model = modeling.BertModel(  # a named scope: evaluation during training reuses it
            bert_config, mode == estimator.ModeKeys.TRAIN, features["input_ids"],
            features["input_mask"], features["segment_ids"], scope="bert",
            output_positions=features["masked_lm_positions"], skip_padding=not FLAGS.use_xla)
        mlm_loss, mlm_example_loss, mlm_log_probs = modeling.get_masked_lm_output(
            bert_config, model.get_sequence_output(), model.get_embedding_table(), None,
            features["masked_lm_ids"], features["masked_lm_weights"])
        nsp_loss, nsp_example_loss, nsp_log_probs = modeling.get_next_sentence_output(
            bert_config, model.get_pooled_output(), features["next_sentence_labels"])
        mlm_loss = tf.identity(mlm_loss, name="mlm_loss")
        nsp_loss = tf.identity(nsp_loss, name="nsp_loss")
        total_loss = tf.identity(mlm_loss + nsp_loss, name="total_loss")

        if mode == estimator.ModeKeys.TRAIN:
            ops = optimization.create_optimizer(
                total_loss, FLAGS.learning_rate * distributed.size, FLAGS.num_train_steps,
                FLAGS.num_warmup_steps, optimizer_type=FLAGS.optimizer_type,
                num_accumulation_steps=FLAGS.num_accumulation_steps,
                allreduce_post_accumulation=FLAGS.allreduce_post_accumulation,
                amp=_loss_scaling(), init_loss_scale=float(FLAGS.init_loss_scale),
                distributed=distributed)
            logged = {"mlm_loss": mlm_loss, "nsp_loss": nsp_loss,
                      "learning_rate": ops.learning_rate}
            if ops.loss_scale is not None:
                logged["loss_scaler"] = ops.loss_scale
            return estimator.Spec(loss=total_loss, train_op=ops.train_op, logged_tensors=logged,
                                  skipped_steps=ops.skipped_steps)

        weights = tf.reshape(features["masked_lm_weights"], [-1])
        mlm_predictions = tf.argmax(mlm_log_probs, axis=-1, output_type=tf.int32)
        nsp_predictions = tf.argmax(nsp_log_probs, axis=-1, output_type=tf.int32)
        metrics = {
            "masked_lm_accuracy": tf1.metrics.accuracy(
                tf.reshape(features["masked_lm_ids"], [-1]), mlm_predictions, weights=weights),
            "masked_lm_loss": tf1.metrics.mean(mlm_example_loss, weights=weights),
            "next_sentence_accuracy": tf1.metrics.accuracy(
                tf.reshape(features["next_sentence_labels"], [-1]), nsp_predictions),
            "next_sentence_loss": tf1.metrics.mean(nsp_example_loss),
        }
        return estimator.Spec(loss=total_loss, eval_metric_ops=metrics,
                              predictions={"masked_lm_predictions": mlm_predictions,
                                           "next_sentence_predictions": nsp_predictions})

    return model_fn


def input_fingerprint(files, distributed):
    """What the training input depends on: a saved input position is restored only into the
    same (files and their sizes, batch size, shapes, seed, ranks, --skip_corrupt_records)."""
    return json.dumps({
        "files": [[path, os.path.getsize(path)] for path in files],
        "batch_size": FLAGS.train_batch_size, "max_seq_length": FLAGS.max_seq_length,
        "max_predictions_per_seq": FLAGS.max_predictions_per_seq, "seed": FLAGS.seed,
        "rank": distributed.rank, "ranks": distributed.size,
        "skip_corrupt_records": FLAGS.skip_corrupt_records}, sort_keys=True)


@contextlib.contextmanager
def _naming_corrupt_records(files):
    """Turns an error of reading or parsing the input into an InputError naming the file, the
    record and the fix; `files()` gives the candidate files, the likeliest first."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError, UnicodeDecodeError) as error:
        found = input_pipeline.corrupt_record_error(error, files(), FLAGS.max_seq_length,
                                                    FLAGS.max_predictions_per_seq)
        if found is None:
            raise
        raise found from None


def _global_batch_size(distributed):
    return FLAGS.train_batch_size * FLAGS.num_accumulation_steps * distributed.size


def _eval_interval_steps(global_batch_size):
    """Updates between evaluations during training (--eval_interval_samples or MLPerf's)."""
    samples = (FLAGS.eval_interval_samples
               or mlperf_log.default_eval_interval_samples(global_batch_size))
    return max(1, -(-samples // global_batch_size))


def _time_to_train(logger, distributed):
    """The run towards the accuracy threshold, with the MLPerf log on rank 0 in MLPerf mode."""
    threshold, mlperf = FLAGS.stop_threshold, None
    if FLAGS.mlperf_log_file:
        if threshold is None:
            threshold = mlperf_log.TARGET_ACCURACY
        if distributed.is_chief:
            mlperf = mlperf_log.MlperfLog(FLAGS.mlperf_log_file, submission={
                "org": FLAGS.mlperf_submission_org, "division": FLAGS.mlperf_division,
                "status": FLAGS.mlperf_submission_status,
                "platform": (FLAGS.mlperf_submission_platform
                             or f"{distributed.size}x{platform.machine()}")}, hyperparameters={
                "seed": FLAGS.seed, "global_batch_size": _global_batch_size(distributed),
                "gradient_accumulation_steps": FLAGS.num_accumulation_steps,
                "max_sequence_length": FLAGS.max_seq_length,
                "learning_rate": FLAGS.learning_rate * distributed.size,
                "training_steps": FLAGS.num_train_steps, "warmup_steps": FLAGS.num_warmup_steps,
                "optimizer": {"epsilon": optimization.EPSILON, "beta_1": optimization.BETA_1,
                              "beta_2": optimization.BETA_2,
                              "weight_decay_rate": optimization.WEIGHT_DECAY_RATE}})
            if mlperf.previous:
                logging.info("MLPerf log of the earlier run kept as %s", mlperf.previous)
    return time_to_train.TimeToTrain(logger, mlperf, threshold, _global_batch_size(distributed),
                                     FLAGS.num_train_steps)


def run(bert_config, train_files, eval_files, distributed):
    """Train and/or evaluate as the flags say; returns the eval results or None."""
    if distributed.is_chief:
        os.makedirs(FLAGS.output_dir, exist_ok=True)
    json_log = FLAGS.dllog_path or os.path.join(FLAGS.output_dir, "train_log.jsonl")
    logger = train_logging.run_logger(FLAGS.output_dir, json_log, distributed.is_chief)
    config = estimator.RunConfig(
        model_dir=FLAGS.output_dir, save_checkpoints_steps=FLAGS.save_checkpoints_steps,
        keep_checkpoint_max=FLAGS.keep_checkpoint_max, log_every_steps=FLAGS.display_loss_steps,
        sequences_per_run=FLAGS.train_batch_size * distributed.size,
        session_config=session_config(distributed), seed=FLAGS.seed, distributed=distributed,
        max_consecutive_skips=FLAGS.max_consecutive_skips if _loss_scaling() else 1)

    def warm_start():
        try:
            modeling.init_from_checkpoint(FLAGS.init_checkpoint)
        except ValueError as error:  # the checkpoint does not fit the model
            raise FlagError(str(error)) from None
        logging.info("initialised from %s", FLAGS.init_checkpoint)

    model_fn = model_fn_builder(bert_config, distributed)
    train_skips = eval_skips = None
    if FLAGS.skip_corrupt_records:
        train_skips = input_pipeline.SkippedRecords(
            input_pipeline.rank_files(train_files, distributed.rank, distributed.size), "train")
        eval_skips = input_pipeline.SkippedRecords(eval_files, "eval")
        model_fn = train_skips.model_fn(model_fn)  # takes the skip counts out of the features
    runner = estimator.Estimator(model_fn, config,
                                 warm_start=warm_start if FLAGS.init_checkpoint else None,
                                 logger=logger)

    def train_input_fn(params):
        return input_pipeline.train_dataset(
            train_files, FLAGS.train_batch_size, FLAGS.max_seq_length,
            FLAGS.max_predictions_per_seq, FLAGS.seed, distributed.rank, distributed.size,
            skip_batches=params["skip_steps"] * FLAGS.num_accumulation_steps,
            skip_corrupt_records=FLAGS.skip_corrupt_records)

    def eval_input_fn(params, skipped=eval_skips):
        del params
        return input_pipeline.eval_dataset(eval_files, FLAGS.eval_batch_size,
                                           FLAGS.max_seq_length, FLAGS.max_predictions_per_seq,
                                           skipped=skipped)

    def likely_train_files():
        records_read = (runner.checkpoint_step() * FLAGS.num_accumulation_steps
                        * FLAGS.train_batch_size)
        return input_pipeline.likely_reading_order(train_files, FLAGS.seed, distributed.rank,
                                                   distributed.size, records_read)

    results = target = evaluation = None
    try:
        if FLAGS.do_train:
            hooks = [*distributed.training_hooks(), *([train_skips.hook()] if train_skips else [])]
            if _evaluates_while_training():
                target = _time_to_train(logger, distributed)
                hooks.append(target.hook())
                evaluation = estimator.Evaluation(  # the eval set's corrupt records stop it
                    lambda params: eval_input_fn(params, skipped=None),
                    _eval_interval_steps(_global_batch_size(distributed)),
                    FLAGS.max_eval_steps, target.on_result)
            with _naming_corrupt_records(likely_train_files):
                summary = runner.train(train_input_fn, FLAGS.num_train_steps, hooks=hooks,
                                       input_fingerprint=input_fingerprint(train_files,
                                                                           distributed),
                                       evaluation=evaluation)
            if train_skips:
                logger.summary("corrupt_records", train_skips.summary())
            if target:
                target.finish(summary)
        if target and target.last and distributed.is_chief:  # the last evaluation's results
            step, last = target.last
            results = dict({name: value for name, value in last.items()
                            if not name.startswith("eval_")}, global_step=step)
            path = session_setup.write_results(FLAGS.output_dir, results)
            logger.summary("outputs", {"eval_results": path})
        elif FLAGS.do_eval and distributed.is_chief:
            with _naming_corrupt_records(lambda: eval_files):
                results = runner.evaluate(eval_input_fn, steps=FLAGS.max_eval_steps)
            if eval_skips:
                eval_skips.log_counts()
                logger.summary("corrupt_records", eval_skips.summary())
            path = session_setup.write_results(FLAGS.output_dir, results)
            logger.summary("outputs", {"eval_results": path})
        if distributed.is_chief:
            logger.summary("outputs", {"checkpoints": FLAGS.output_dir,
                                       "json_log": json_log,
                                       "tensorboard": FLAGS.output_dir})
    finally:
        logger.close()
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    tf1.disable_eager_execution()
    try:
        distributed = distributed_handle()
        session_setup.configure_threads(distributed, *_threads())
        bert_config, train_files, eval_files = check_flags(distributed.size)
        run(bert_config, train_files, eval_files, distributed)
    except (FlagError, input_pipeline.InputError, estimator.TrainingError) as error:
        sys.exit(f"run_pretraining.py: error: {error}")
    except OSError as error:  # a log or results file that cannot be written (disk full, ...)
        sys.exit(f"run_pretraining.py: error: cannot write {error.filename or 'a file'}: "
                 f"{error.strerror or error}; free space or fix the permissions there, or pass "
                 "another --output_dir")


if __name__ == "__main__":
    app.run(main)
