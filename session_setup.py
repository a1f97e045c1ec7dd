"""What every CLI that trains or predicts sets up around its graph: the distributed handle,
the process's thread pools, the session config (threads, XLA, mixed precision), the check that
a checkpoint fits the config, the training graph's dropout and XLA scope, and the results file.

Shared by run_pretraining.py and run_squad.py; plain arguments, no flags.
"""

import contextlib
import os

import numpy as np
import tensorflow as tf
from absl import logging

import distributed as distributed_lib
import modeling
import optimization

tf1 = tf.compat.v1

# Launchers that set one of these to more than 1 started several processes.
_WORLD_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "HOROVOD_SIZE")


def distributed_handle(horovod, fp16_allreduce, rank_timeout_seconds, output_dir):
    """The distributed handle of this process (see distributed.py); ValueError when it was
    launched as several processes without `horovod`."""
    launched = max(int(os.environ.get(name, "1")) for name in _WORLD_SIZE_VARIABLES)
    if launched > 1 and not horovod:
        raise ValueError(f"started as {launched} processes without --horovod: pass --horovod "
                         "(each process would otherwise train alone on the same output_dir)")
    return distributed_lib.create(horovod, fp16_allreduce,
                                  rank_timeout_seconds=rank_timeout_seconds,
                                  output_dir=output_dir)


def thread_counts(distributed, intra_op_threads=0, inter_op_threads=0):
    """(intra-op, inter-op) threads of this process: the given counts, where they are 0
    TensorFlow's choice (0: all cores) for a lone process, and an even share of the machine's
    cores for ranks that share it, instead of oversubscribing them."""
    default_threads = 0
    if distributed.local_size > 1:
        default_threads = max(1, (os.cpu_count() or 1) // distributed.local_size)
    return (intra_op_threads or default_threads, inter_op_threads or default_threads)


def configure_threads(distributed, intra_op_threads=0, inter_op_threads=0):
    """Sizes this process's thread pools; call before any graph or dataset is built.

    The session config alone does not do it: the first tf.data function registers with the
    eager context, which creates the CPU device and its intra-op pool with the context's
    thread settings, and every later session's CPU device shares that pool.
    """
    intra, inter = thread_counts(distributed, intra_op_threads, inter_op_threads)
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)


def session_config(distributed, intra_op_threads=0, inter_op_threads=0, use_xla=False,
                   amp=False, amp_dtype="float16"):
    """ConfigProto with the thread counts, XLA auto-clustering and the mixed-precision rewrite
    (`amp_dtype` float16: the GPU rewrite, or its CPU variant without a GPU; bfloat16: oneDNN's).
    """
    intra, inter = thread_counts(distributed, intra_op_threads, inter_op_threads)
    config = tf1.ConfigProto(intra_op_parallelism_threads=intra,
                             inter_op_parallelism_threads=inter, allow_soft_placement=True)
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    if has_gpu:
        config.gpu_options.visible_device_list = str(distributed.local_rank)
        config.gpu_options.allow_growth = True
    if use_xla:
        config.graph_options.optimizer_options.global_jit_level = tf1.OptimizerOptions.ON_1
    if amp:
        rewrites = config.graph_options.rewrite_options
        on = rewrites.ON
        if amp_dtype == "bfloat16":
            rewrites.auto_mixed_precision_onednn_bfloat16 = on
        elif has_gpu:
            rewrites.auto_mixed_precision = on
        else:
            rewrites.auto_mixed_precision_cpu = on
            rewrites.optimizers.extend(CPU_FLOAT16_OPTIMIZERS)
        if not mixed_precision_rewrite_runs(config):
            logging.warning(
                "--amp with %s: TensorFlow skips its %s mixed-precision rewrite on this machine "
                "(%s), so this run computes in float32 throughout. Drop --amp, or run where the "
                "rewrite applies.", amp_dtype, amp_dtype, _rewrite_needs(amp_dtype, has_gpu))
    return config


def _rewrite_needs(amp_dtype, has_gpu):
    if amp_dtype == "bfloat16":
        return ("oneDNN's bfloat16 needs TensorFlow's oneDNN kernels on (TF_ENABLE_ONEDNN_OPTS) "
                "and a CPU with AVX-512 or AVX-NE-CONVERT; AVX512_BF16 or AMX-BF16 make it fast")
    if has_gpu:
        return "its float16 rewrite needs a GPU of compute capability 7.0 or newer"
    return "its float16 rewrite for CPUs needs AMX-FP16 or AVX-NE-CONVERT"


def mixed_precision_rewrite_runs(config):
    """Whether the mixed-precision rewrite `config` asks for changes a float32 MatMul here.

    TensorFlow skips the rewrites without a word where the hardware lacks the type (it checks
    the CPU's features, or the GPU's compute capability), so this runs one small product under
    `config` and looks for the casts the rewrite adds.
    """
    with tf.Graph().as_default():
        matrix = tf1.placeholder(tf.float32, [2, 2])
        product = tf.matmul(matrix, matrix)
        metadata = tf1.RunMetadata()
        with tf1.Session(config=config) as session:
            session.run(product, {matrix: np.ones([2, 2], np.float32)},
                        options=tf1.RunOptions(output_partition_graphs=True),
                        run_metadata=metadata)
    return any(node.op == "Cast" for graph in metadata.partition_graphs for node in graph.node)


# Grappler's passes, in order, for float16 AMP on CPU: TensorFlow's defaults (pruning, function,
# common_subgraph_elimination, constfold, shape, AMP, arithmetic, layout, remap, loop, dependency,
# memory) with the AMP rewrite moved to the front. Its CPU mode emulates float16 (a cast to
# float32 before each converted op, to float16 after) and needs the graph in topological order:
# it walks the nodes in order, and an op seen before one of its inputs' producers leaves that
# producer a fanout (the new cast) missing from the pass's type map, so `flat_hash_map::at`
# throws std::out_of_range out of grappler (TF 2.21). The passes before it in the default order
# erase nodes by swapping the last node into each hole (EraseNodesFromGraph), which moves
# consumers ahead of producers: the eval graph of a 4-layer BERT lost its order that way, and
# session.run, translating the C++ exception with the GIL released, died of SIGSEGV. At the
# front the rewrite sees the graph as imported, which is topologically sorted; the passes after
# it clean up its casts as before.
CPU_FLOAT16_OPTIMIZERS = ("auto_mixed_precision_cpu", "pruning", "function",
                          "common_subgraph_elimination", "constfold", "shape", "arithmetic",
                          "layout", "remap", "loop", "dependency", "memory")


def check_checkpoint_fits(prefix, what, bert_config, config_file, fix):
    """ValueError, one line naming every config key on which checkpoint `prefix` and
    `bert_config` (read from `config_file`) differ: those its shapes show, and
    num_attention_heads from a bert_config.json beside it (Google's release layout and
    convert_checkpoint.py's output). `what` names the checkpoint, `fix` says what to do."""
    try:
        mismatches = modeling.checkpoint_config_mismatches(prefix, bert_config)
    except ValueError as error:
        raise ValueError(f"{what}: {error}") from None
    except tf.errors.OpError as error:
        raise ValueError(f"{what}: cannot read it ({error.message.splitlines()[0]}); {fix}"
                         ) from None
    beside = os.path.join(os.path.dirname(prefix), "bert_config.json")
    if os.path.isfile(beside):
        try:
            heads = modeling.BertConfig.from_json_file(beside).num_attention_heads
        except (OSError, ValueError, TypeError, KeyError):
            heads = None  # not a config we can read: the shapes are all we know
        if heads is not None and heads != bert_config.num_attention_heads:
            mismatches.append(("num_attention_heads", heads, bert_config.num_attention_heads,
                               beside))
    if mismatches:
        differences = "; ".join(f"{key} is {ours} in the checkpoint ({evidence}) but {theirs} in "
                                "the config" for key, ours, theirs, evidence in mismatches)
        raise ValueError(f"{what} does not fit --bert_config_file={config_file}: "
                         f"{differences}; {fix}")


@contextlib.contextmanager
def training_graph(seed, rank, num_accumulation_steps, use_xla):
    """The scope a training step is built in: dropout masks a function of (seed, global step,
    micro-batch, rank), so that a resumed run draws what the uninterrupted one would have; with
    `use_xla`, a jit scope that marks the step's ops (and their gradients) for XLA on any device
    (auto-clustering alone leaves CPU ops out)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(modeling.stateless_dropout(
            optimization.step_seed(seed, rank, num_accumulation_steps)))
        if use_xla:
            stack.enter_context(tf.xla.experimental.jit_scope())
        yield


def write_results(output_dir, results, name="eval_results.txt"):
    """OUTPUT_DIR/eval_results.txt (`key = value` lines, sorted), replaced atomically."""
    path = os.path.join(output_dir, name)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(f"{key} = {results[key]}\n" for key in sorted(results))
    os.replace(path + ".tmp", path)
    return path
