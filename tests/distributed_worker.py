"""Trains a tiny BERT (dropout off) on fixed synthetic examples through the real runner,
optimizer and distributed handle, then saves every variable of this rank to DUMP_DIR.

  python tests/distributed_worker.py DUMP_DIR                  # 1 process, micro-batch 2b
  mpirun -np 2 python tests/distributed_worker.py DUMP_DIR --horovod   # 2 ranks x b

Both see the same examples: micro-batch k of the global run is examples [k*2b, (k+1)*2b); rank r
of a 2-rank run takes its r-th half. Ranks seed their initialisation differently (seed 1 + rank),
so only the broadcast of rank 0's variables makes them start alike. Writes
DUMP_DIR/<config>.rank<r>.npz for the configs in CONFIGS. Used by tests/test_distributed.py.

  mpirun -np 2 python tests/distributed_worker.py DUMP_DIR --horovod --configs=plain \
    --rank_timeout_seconds=6 --pause=1:3:8:after

runs the stalled-rank watchdog; each --pause=RANK:RUN:SECONDS:WHERE makes rank RANK sleep
SECONDS at its RUN-th session run (1-based), `inside` the step (a hang in its input or an op, as
the watchdog sees it) or `after` it (as a slow checkpoint save or evaluation). Used by
tests/test_stalled_rank.py.
"""

import argparse
import os
import sys
import time

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import distributed as distributed_lib
import estimator
import modeling
import optimization

tf1 = tf.compat.v1
SEQ, PRED, GLOBAL_BATCH, STEPS, LEARNING_RATE = 16, 4, 8, 4, 1e-3
CONFIG = modeling.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=64,
                             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                             max_position_embeddings=SEQ, type_vocab_size=2)
# name: (accumulation steps, allreduce_post_accumulation, clip_norm). Post-accumulation clips
# each rank's micro-batch before the allreduce (NVIDIA's order), which equals clipping the global
# micro-batch only when no clipping happens: that config runs unclipped.
CONFIGS = {"plain": (1, False, 1.0), "accumulation": (2, False, 1.0),
           "post_accumulation": (2, True, None)}


def examples(count):
    """`count` fixed synthetic pre-training examples (every masked position weighted 1)."""
    rng = np.random.default_rng(0)
    return {
        "input_ids": rng.integers(0, CONFIG.vocab_size, (count, SEQ), dtype=np.int32),
        "input_mask": np.ones((count, SEQ), np.int32),
        "segment_ids": (np.arange(SEQ) >= SEQ // 2).astype(np.int32)[None].repeat(count, 0),
        "masked_lm_positions": rng.integers(0, SEQ, (count, PRED), dtype=np.int32),
        "masked_lm_ids": rng.integers(0, CONFIG.vocab_size, (count, PRED), dtype=np.int32),
        "masked_lm_weights": np.ones((count, PRED), np.float32),
        "next_sentence_labels": rng.integers(0, 2, (count, 1), dtype=np.int32),
    }


def rank_examples(data, rank, size):
    """The examples rank `rank` reads: its 1/size slice of every global micro-batch, in order."""
    per_rank = GLOBAL_BATCH // size
    index = np.arange(len(data["input_ids"])).reshape(-1, size, per_rank)[:, rank].reshape(-1)
    return {name: value[index] for name, value in data.items()}, per_rank


def model_fn_builder(accumulation, post_accumulation, clip_norm, distributed):
    def model_fn(features, labels, mode, params):
        del labels, params
        model = modeling.BertModel(CONFIG, True, features["input_ids"], features["input_mask"],
                                   features["segment_ids"])
        mlm_loss = modeling.get_masked_lm_output(
            CONFIG, model.get_sequence_output(), model.get_embedding_table(),
            features["masked_lm_positions"], features["masked_lm_ids"],
            features["masked_lm_weights"])[0]
        nsp_loss = modeling.get_next_sentence_output(CONFIG, model.get_pooled_output(),
                                                     features["next_sentence_labels"])[0]
        ops = optimization.create_optimizer(
            mlm_loss + nsp_loss, LEARNING_RATE, STEPS, 1, optimizer_type="adam",
            num_accumulation_steps=accumulation, allreduce_post_accumulation=post_accumulation,
            clip_norm=clip_norm, distributed=distributed)
        return estimator.Spec(loss=mlm_loss + nsp_loss, train_op=ops.train_op)

    return model_fn


class DumpVariablesHook(tf1.train.SessionRunHook):
    """Saves every global variable's final value to `path` (.npz, keyed by variable name)."""

    def __init__(self, path):
        self._path = path

    def end(self, session):
        variables = tf1.global_variables()
        values = session.run(variables)
        np.savez(self._path, **{v.op.name: value for v, value in zip(variables, values)})


class PauseHook(tf1.train.SessionRunHook):
    """Sleeps `seconds` at the `run`-th session run, inside the step (in before_run, after the
    watchdog's heartbeat hook marked the step started) or after it (in after_run)."""

    def __init__(self, run, seconds, where):
        self._run, self._seconds, self._where = run, seconds, where
        self._runs = 0

    def before_run(self, run_context):
        self._runs += 1
        if self._where == "inside" and self._runs == self._run:
            time.sleep(self._seconds)

    def after_run(self, run_context, run_values):
        if self._where == "after" and self._runs == self._run:
            time.sleep(self._seconds)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dump_dir")
    parser.add_argument("--horovod", action="store_true")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--rank_timeout_seconds", type=int, default=0)
    parser.add_argument("--pause", action="append", default=[])
    args = parser.parse_args()
    tf1.disable_eager_execution()
    distributed = distributed_lib.create(args.horovod, rank_timeout_seconds=args.rank_timeout_seconds,
                                         output_dir=args.dump_dir)
    pauses = []
    for pause in args.pause:
        rank, run, seconds, where = pause.split(":")
        if int(rank) == distributed.rank:
            pauses.append(PauseHook(int(run), float(seconds), where))
    for name in args.configs.split(","):
        accumulation, post_accumulation, clip_norm = CONFIGS[name]
        data, batch = rank_examples(examples(GLOBAL_BATCH * accumulation * STEPS),
                                    distributed.rank, distributed.size)
        config = estimator.RunConfig(
            model_dir=os.path.join(args.dump_dir, f"{name}.size{distributed.size}"),
            seed=1 + distributed.rank, distributed=distributed,
            session_config=tf1.ConfigProto(intra_op_parallelism_threads=1,
                                           inter_op_parallelism_threads=1))
        runner = estimator.Estimator(
            model_fn_builder(accumulation, post_accumulation, clip_norm, distributed), config)
        dump = os.path.join(args.dump_dir, f"{name}.size{distributed.size}.rank{distributed.rank}")
        runner.train(lambda params, data=data, batch=batch:
                     tf.data.Dataset.from_tensor_slices(data).batch(batch),
                     STEPS, hooks=[*distributed.training_hooks(), *pauses,
                                   DumpVariablesHook(dump)])


if __name__ == "__main__":
    main()
