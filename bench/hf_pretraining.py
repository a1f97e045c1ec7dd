"""The Hugging Face peer of bench/train_throughput.py: BERT pre-training (masked LM + next
sentence) throughput with transformers' `BertForPreTraining` on PyTorch.

  .venv/bin/python bench/hf_pretraining.py --bert_config_file=bert_config.json \\
      --data_npz=BATCHES.npz --train_batch_size=B --steps=N [--warmup_steps=3] \\
      [--window_steps=5] [--learning_rate=1e-4] [--weight_decay=0.01] [--bf16] [--compile] \\
      [--threads=T] [--seed=12345]

The model is `BertForPreTraining(BertConfig(...))` built from the Google-format bert_config.json
(hidden_act mapped as convert_checkpoint.py maps it: Google's "gelu", the tanh approximation, is
transformers' "gelu_new", "gelu_exact" is "gelu"; layer-norm epsilon 1e-12 as modeling.py's),
randomly initialised after torch.manual_seed(--seed). Attention is transformers' default
implementation (reported as "attn_implementation").

--data_npz holds the pre-training features as numpy arrays (the controller writes them from
real pre-training TFRecords): int `input_ids`, `input_mask`, `segment_ids` [N, S],
`masked_lm_positions`, `masked_lm_ids` [N, P], float `masked_lm_weights` [N, P] and
`next_sentence_labels` [N] or [N, 1]. The transformers labels are built once for all N
examples: `labels` [N, S] is -100 everywhere except at the masked positions whose weight is
nonzero, where it is the masked token's id (with 0/1 weights, transformers' mean over those
tokens equals Google's weighted mean); `next_sentence_label` is next_sentence_labels (both use
0 for "B follows A", 1 for a random B). Batches take the examples in order, wrapping around.
Note that transformers' MLM head projects every position onto the vocabulary, not only the
masked ones as Google's gathers them, so it does that part of the work S/P times over.

Each update: model.train() (dropout on), the forward pass (under
`torch.autocast("cpu", dtype=torch.bfloat16)` with --bf16; the backward pass runs outside it,
as PyTorch's autocast documentation prescribes), loss = outputs.loss (MLM + NSP), backward,
gradients clipped to global norm 1.0, `torch.optim.AdamW` (betas 0.9/0.999, epsilon 1e-6,
weight decay on all but biases and LayerNorm weights, as transformers' run_mlm.py groups them)
at a constant learning rate, zero_grad(set_to_none=True). Each whole update is timed with
time.perf_counter (the batch is sliced from tensors before the clock starts); the first
--warmup_steps are not timed (with --compile they include the compilation), the rest form
windows of --window_steps updates, each giving window_steps x batch / seconds sequences/s (a
trailing partial window is left out). --threads sets torch.set_num_threads; the inter-op pool
is left at PyTorch's default (eager training does not use it).

Prints one JSON line to stdout (everything else goes to stderr): "windows" (sequences/s of each
window), "throughput_train" (their median), "losses" (every update's loss), "peak_rss_mib"
(getrusage ru_maxrss of this process), "threads", "interop_threads", "torch", "transformers",
"attn_implementation", "bf16", "compile", "steps", "warmup_steps", "window_steps",
"batch_size", "seq_length", "max_predictions", "examples". The process does not import
TensorFlow.
"""

import argparse
import json
import math
import os
import random
import resource
import statistics
import sys
import time
import zipfile

# transformers would import TensorFlow too when it is installed (it is, for our side), and
# TensorFlow would inflate the peak resident memory this process is measured for.
os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("USE_TORCH", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
import transformers
from transformers import BertConfig, BertForPreTraining

PROG = "hf_pretraining"
# Google's hidden_act names -> transformers' (the table of convert_checkpoint.py's _HF_ACT,
# repeated here because that module imports TensorFlow).
HF_ACT = {"gelu": "gelu_new", "gelu_exact": "gelu", "relu": "relu", "tanh": "tanh",
          "linear": "linear"}
CONFIG_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "intermediate_size", "hidden_act", "hidden_dropout_prob",
               "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
               "initializer_range")
LAYER_NORM_EPSILON = 1e-12  # modeling.py's
NPZ_ARRAYS = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions",
              "masked_lm_ids", "masked_lm_weights", "next_sentence_labels")
NO_DECAY = ("bias", "LayerNorm.weight")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--bert_config_file", required=True, help="Google-format bert_config.json.")
    add("--data_npz", required=True, help=".npz of pre-training features (see above).")
    add("--train_batch_size", type=int, default=32)
    add("--steps", type=int, default=23, help="Total updates, warm-up included.")
    add("--warmup_steps", type=int, default=3, help="First updates left out of the timing.")
    add("--window_steps", type=int, default=5, help="Updates per timed window.")
    add("--learning_rate", type=float, default=1e-4, help="Constant learning rate.")
    add("--weight_decay", type=float, default=0.01)
    add("--bf16", action="store_true", help="Forward passes under bfloat16 autocast.")
    add("--compile", action="store_true", help="torch.compile the model (default: eager).")
    add("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads.")
    add("--seed", type=int, default=12345)
    return parser.parse_args(argv)


def log(message):
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def fail(message):
    sys.exit(f"{PROG}: error: {message}")


def check_args(args):
    for name in ("train_batch_size", "steps", "window_steps", "threads"):
        if getattr(args, name) < 1:
            fail(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.warmup_steps < 0:
        fail(f"--warmup_steps must not be negative, got {args.warmup_steps}")
    if args.steps <= args.warmup_steps:
        fail(f"--steps ({args.steps}) must be larger than --warmup_steps "
             f"({args.warmup_steps}): nothing would be timed")
    if args.steps - args.warmup_steps < args.window_steps:
        fail(f"{args.steps - args.warmup_steps} timed steps (--steps {args.steps} minus "
             f"--warmup_steps {args.warmup_steps}) make no window of --window_steps "
             f"{args.window_steps}")


def load_config(path):
    """The transformers BertConfig of a Google-format bert_config.json."""
    if not os.path.isfile(path):
        fail(f"config file {path} not found")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"cannot read config file {path}: {e}")
    if not isinstance(config, dict):
        fail(f"config file {path} does not hold a JSON object")
    missing = [key for key in CONFIG_KEYS if key not in config]
    if missing:
        fail(f"config file {path} lacks {', '.join(missing)}")
    if config["hidden_act"] not in HF_ACT:
        fail(f"config file {path}: hidden_act {config['hidden_act']!r} is none of "
             f"{', '.join(HF_ACT)}")
    values = {key: config[key] for key in CONFIG_KEYS}
    values["hidden_act"] = HF_ACT[config["hidden_act"]]
    return BertConfig(**values, layer_norm_eps=LAYER_NORM_EPSILON, pad_token_id=0,
                      position_embedding_type="absolute")


def load_data(path, config, batch_size):
    """Tensors (input_ids, attention_mask, token_type_ids, labels, next_sentence_label) of all
    N examples of the npz, the labels in transformers' form."""
    if not os.path.isfile(path):
        fail(f"data file {path} not found")
    if not zipfile.is_zipfile(path):
        fail(f"data file {path} is not an .npz (zip) archive")
    try:
        npz = np.load(path)
        missing = [name for name in NPZ_ARRAYS if name not in npz.files]
        if missing:
            fail(f"data file {path} lacks array(s) {', '.join(missing)}")
        arrays = {name: npz[name] for name in NPZ_ARRAYS}
    except (OSError, ValueError) as e:
        fail(f"cannot read data file {path}: {e}")
    input_ids = arrays["input_ids"]
    if input_ids.ndim != 2:
        fail(f"{path}: input_ids has shape {input_ids.shape}, not [N, S]")
    n, seq = input_ids.shape
    positions = arrays["masked_lm_positions"]
    if positions.ndim != 2 or positions.shape[0] != n:
        fail(f"{path}: masked_lm_positions has shape {positions.shape}, not [{n}, P]")
    expected = {"input_mask": (n, seq), "segment_ids": (n, seq),
                "masked_lm_ids": positions.shape, "masked_lm_weights": positions.shape}
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            fail(f"{path}: {name} has shape {arrays[name].shape}, not {list(shape)}")
    nsp = arrays["next_sentence_labels"]
    if nsp.shape not in ((n,), (n, 1)):
        fail(f"{path}: next_sentence_labels has shape {nsp.shape}, not [{n}] or [{n}, 1]")
    for name in NPZ_ARRAYS:
        if name != "masked_lm_weights" and not np.issubdtype(arrays[name].dtype, np.integer):
            fail(f"{path}: {name} has dtype {arrays[name].dtype}, not an integer type")
    if batch_size > n:
        fail(f"--train_batch_size {batch_size} is larger than the {n} examples of {path}")
    if seq > config.max_position_embeddings:
        fail(f"{path}: sequence length {seq} exceeds max_position_embeddings "
             f"{config.max_position_embeddings}")
    if input_ids.min() < 0 or input_ids.max() >= config.vocab_size:
        fail(f"{path}: input_ids outside [0, vocab_size {config.vocab_size})")
    if arrays["segment_ids"].min() < 0 or arrays["segment_ids"].max() >= config.type_vocab_size:
        fail(f"{path}: segment_ids outside [0, type_vocab_size {config.type_vocab_size})")

    weights = arrays["masked_lm_weights"]
    rows, cols = np.nonzero(weights > 0)
    targets = positions[rows, cols]
    ids = arrays["masked_lm_ids"][rows, cols]
    if targets.size and (targets.min() < 0 or targets.max() >= seq):
        fail(f"{path}: a weighted masked_lm_position is outside [0, {seq})")
    if ids.size and (ids.min() < 0 or ids.max() >= config.vocab_size):
        fail(f"{path}: a weighted masked_lm_id is outside [0, vocab_size {config.vocab_size})")
    labels = np.full((n, seq), -100, dtype=np.int64)
    labels[rows, targets] = ids
    if not np.all(np.isin(weights, (0.0, 1.0))):
        log("warning: masked_lm_weights other than 0 and 1; transformers weighs every "
            "labelled token equally")
    if (labels != -100).sum(axis=1).min() == 0:
        log("warning: some examples have no weighted masked position")
    data = (torch.from_numpy(input_ids.astype(np.int64)),
            torch.from_numpy(arrays["input_mask"].astype(np.int64)),
            torch.from_numpy(arrays["segment_ids"].astype(np.int64)),
            torch.from_numpy(labels),
            torch.from_numpy(nsp.reshape(n).astype(np.int64)))
    return data, positions.shape[1]


def make_optimizer(model, args):
    named = list(model.named_parameters())
    groups = [{"params": [p for name, p in named if not any(nd in name for nd in NO_DECAY)],
               "weight_decay": args.weight_decay},
              {"params": [p for name, p in named if any(nd in name for nd in NO_DECAY)],
               "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.learning_rate, betas=(0.9, 0.999), eps=1e-6)


def train(model, data, args):
    """Runs args.steps updates; returns (seconds per update, loss per update)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(model, args)
    n = data[0].size(0)
    offsets = torch.arange(args.train_batch_size)
    seconds, losses = [], []
    model.train()
    for step in range(args.steps):
        index = (step * args.train_batch_size + offsets) % n  # in order, wrapping around
        input_ids, attention_mask, token_type_ids, labels, nsp = (t[index] for t in data)
        t0 = time.perf_counter()
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                outputs = model(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids, labels=labels,
                                next_sentence_label=nsp)
            loss = outputs.loss
            loss.backward()
        except Exception as e:  # compilation happens in the first call
            if args.compile and step == 0:
                fail(f"torch.compile failed on the first step: {type(e).__name__}: "
                     f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}")
            raise
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - t0)
        losses.append(float(loss.item()))
        if not math.isfinite(losses[-1]):
            log(f"warning: step {step + 1} loss is {losses[-1]}")
        log(f"step {step + 1}/{args.steps}: loss {losses[-1]:.4f}, {seconds[-1]:.3f} s"
            + (" (warm-up)" if step < args.warmup_steps else ""))
    return seconds, losses


def windows_of(seconds, args):
    timed = seconds[args.warmup_steps:]
    count = len(timed) // args.window_steps
    if len(timed) % args.window_steps:
        log(f"the last {len(timed) % args.window_steps} timed step(s) make no full window "
            "and are left out")
    return [args.window_steps * args.train_batch_size
            / sum(timed[i * args.window_steps:(i + 1) * args.window_steps])
            for i in range(count)]


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    config = load_config(args.bert_config_file)
    data, max_predictions = load_data(args.data_npz, config, args.train_batch_size)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()

    model = BertForPreTraining(config)
    attn = getattr(model.config, "_attn_implementation", None)
    log(f"BertForPreTraining: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{config.num_hidden_layers} layers, hidden {config.hidden_size}, attention {attn}; "
        f"{data[0].size(0)} examples of length {data[0].size(1)}, batch "
        f"{args.train_batch_size}, {'bf16' if args.bf16 else 'fp32'}"
        f"{', compiled' if args.compile else ''}, {args.threads} thread(s)")
    if args.compile:
        model = torch.compile(model)
    seconds, losses = train(model, data, args)
    windows = windows_of(seconds, args)
    if "tensorflow" in sys.modules:
        log("warning: TensorFlow got imported; the peak RSS includes it")
    report = {
        "windows": [round(w, 3) for w in windows],
        "throughput_train": round(statistics.median(windows), 3),
        "losses": losses,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": args.threads,
        "interop_threads": torch.get_num_interop_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "attn_implementation": attn,
        "bf16": args.bf16,
        "compile": args.compile,
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "window_steps": args.window_steps,
        "batch_size": args.train_batch_size,
        "seq_length": data[0].size(1),
        "max_predictions": max_predictions,
        "examples": data[0].size(0),
    }
    log(f"throughput {report['throughput_train']:.2f} sequences/s (median of "
        f"{len(windows)} windows), peak RSS {report['peak_rss_mib']} MiB")
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
