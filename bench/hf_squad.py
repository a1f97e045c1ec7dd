"""The Hugging Face peer of bench/squad.py: SQuAD v1.1 fine-tuning, prediction and scoring with
transformers' `BertForQuestionAnswering` on PyTorch, in its standard SQuAD pipeline.

  .venv/bin/python bench/hf_squad.py --model_dir=HF_DIR --train_file=TRAIN.json \\
      --predict_file=DEV.json --output_dir=DIR [--bf16] [--threads=N] [...]

Pre- and post-processing are transformers' own legacy SQuAD pipeline, the one its original
`examples/legacy/question-answering/run_squad.py` uses (still in transformers 4.57):
`SquadV1Processor` reads the JSON, `squad_convert_examples_to_features` cuts the windows (with
the slow `BertTokenizer`, which that code needs: it passes token strings to `encode_plus`),
`compute_predictions_logits` picks the answers and `squad_evaluate` scores them.

Training follows that script: `torch.optim.AdamW` (weight decay 0.01 except biases and LayerNorm
weights, epsilon 1e-6, betas 0.9/0.999), `get_linear_schedule_with_warmup` (warm-up over
`--warmup_proportion` of the updates), gradients clipped to global norm 1.0, dropout on
(`model.train()`). The number of updates is Google's: int(questions / batch x epochs), counting
the questions that have windows (those whose answer is found in the context), so both sides do
the same number of updates of the same batch size; the windows are reshuffled (seeded) each pass
and a pass's last partial batch is dropped. `--bf16` runs the forward pass (training and
prediction) under `torch.autocast("cpu", dtype=torch.bfloat16)`; the backward pass runs outside
it, as PyTorch's autocast documentation prescribes (its ops then take the forward's dtypes).

Prints one JSON line to stdout (everything else goes to stderr): training sequences/s over the
steps after the first 3 and prediction sequences/s over the batches after the first, each timed
with time.perf_counter around the step or batch (inputs already in tensors, as run_squad.py's
are prefetched), the p50/p90/p99 batch latency, EM, F1 and the counts of questions and windows.
"""

import argparse
import json
import os
import random
import sys
import time

# transformers would import TensorFlow too when it is installed (it is, for our side).
os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("USE_TORCH", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
import transformers
from transformers import (
    BertForQuestionAnswering,
    BertTokenizer,
    get_linear_schedule_with_warmup,
)
from transformers.data.metrics.squad_metrics import (
    compute_predictions_logits,
    squad_evaluate,
)
from transformers.data.processors.squad import (
    SquadResult,
    SquadV1Processor,
    squad_convert_examples_to_features,
)

WARMUP_STEPS = 3  # training steps left out of sequences/s, as run_squad.py leaves them out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--model_dir", required=True, help="Hugging Face directory (config.json, "
        "model.safetensors, vocab.txt) of the BERT encoder to fine-tune.")
    add("--train_file", help="SQuAD v1.1 JSON to fine-tune on (no training without it).")
    add("--predict_file", help="SQuAD v1.1 JSON to predict and score (none without it).")
    add("--output_dir", required=True, help="predictions.json and nbest_predictions.json.")
    add("--train_batch_size", type=int, default=16)
    add("--predict_batch_size", type=int, default=8)
    add("--learning_rate", type=float, default=1e-4)
    add("--num_train_epochs", type=float, default=1.0)
    add("--warmup_proportion", type=float, default=0.1)
    add("--weight_decay", type=float, default=0.01)
    add("--max_seq_length", type=int, default=384)
    add("--doc_stride", type=int, default=128)
    add("--max_query_length", type=int, default=64)
    add("--n_best_size", type=int, default=20)
    add("--max_answer_length", type=int, default=30)
    add("--seed", type=int, default=12345)
    add("--threads", type=int, default=os.cpu_count() or 1,
        help="torch.set_num_threads and the preprocessing workers.")
    add("--bf16", action="store_true", help="Forward passes under bfloat16 autocast.")
    add("--compile", action="store_true", help="torch.compile the model (default: eager).")
    add("--train_examples", type=int, default=0, help="Only the first N training questions "
        "(file order; 0: all).")
    add("--predict_examples", type=int, default=0, help="Only the first M questions to predict "
        "(file order; 0: all).")
    add("--log_every", type=int, default=10, help="Log the loss every this many updates.")
    return parser.parse_args(argv)


def log(message):
    print(f"hf_squad: {message}", file=sys.stderr, flush=True)


def load_examples(path, training, limit):
    """SquadExamples of `path` in file order, the first `limit` (0: all)."""
    processor = SquadV1Processor()
    directory, name = os.path.split(os.path.abspath(path))
    if training:
        examples = processor.get_train_examples(directory, name)
    else:
        examples = processor.get_dev_examples(directory, name)
    return examples[:limit] if limit else examples


def featurize(examples, tokenizer, args, training):
    """(features, TensorDataset) of transformers' squad_convert_examples_to_features."""
    return squad_convert_examples_to_features(
        examples=examples, tokenizer=tokenizer, max_seq_length=args.max_seq_length,
        doc_stride=args.doc_stride, max_query_length=args.max_query_length,
        is_training=training, return_dataset="pt", threads=args.threads, tqdm_enabled=False)


def percentiles_ms(seconds):
    return {f"latency_p{p}_ms": round(float(np.percentile(seconds, p)) * 1000, 2)
            for p in (50, 90, 99)}


def autocast(args):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16)


def train(model, dataset, num_examples, args):
    """Fine-tunes `model` in place; returns the training statistics."""
    steps = max(1, int(num_examples / args.train_batch_size * args.num_train_epochs))
    warmup = int(steps * args.warmup_proportion)
    no_decay = ("bias", "LayerNorm.weight")
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if not any(nd in n for nd in no_decay)],
               "weight_decay": args.weight_decay},
              {"params": [p for n, p in named if any(nd in n for nd in no_decay)],
               "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, betas=(0.9, 0.999), eps=1e-6)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, steps)
    input_ids, attention_mask, token_type_ids, start_positions, end_positions = (
        dataset.tensors[:5])
    windows = input_ids.size(0)
    if windows < args.train_batch_size:
        sys.exit(f"hf_squad: {windows} training windows, fewer than one batch of "
                 f"{args.train_batch_size}")
    generator = torch.Generator().manual_seed(args.seed)
    order, seconds, losses = [], [], []
    model.train()
    started = time.perf_counter()
    for step in range(1, steps + 1):
        if len(order) < args.train_batch_size:  # a new pass; the partial batch is dropped
            order = torch.randperm(windows, generator=generator).tolist()
        index = torch.tensor(order[:args.train_batch_size])
        order = order[args.train_batch_size:]
        batch = {"input_ids": input_ids[index], "attention_mask": attention_mask[index],
                 "token_type_ids": token_type_ids[index],
                 "start_positions": start_positions[index], "end_positions": end_positions[index]}
        t0 = time.perf_counter()
        with autocast(args):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        seconds.append(time.perf_counter() - t0)
        if step % args.log_every == 0 or step in (1, steps):
            log(f"step {step}/{steps}: loss {np.mean(losses[-args.log_every:]):.4f}, "
                f"lr {scheduler.get_last_lr()[0]:.3g}, {seconds[-1]:.2f} s")
    timed = seconds[WARMUP_STEPS:] or seconds
    return {"train_steps": steps, "warmup_steps": warmup,
            "train_seconds": round(time.perf_counter() - started, 2),
            "throughput_train": round(len(timed) * args.train_batch_size / sum(timed), 2),
            "final_loss": round(float(np.mean(losses[-args.log_every:])), 4)}


def predict(model, examples, features, dataset, tokenizer, args):
    """Predicts every window; returns (statistics, {qas_id: answer text})."""
    input_ids, attention_mask, token_type_ids, feature_index = dataset.tensors[:4]
    model.eval()
    results, seconds = [], []
    with torch.no_grad():  # as transformers' run_squad.py evaluates
        for begin in range(0, input_ids.size(0), args.predict_batch_size):
            batch = slice(begin, begin + args.predict_batch_size)
            inputs = {"input_ids": input_ids[batch], "attention_mask": attention_mask[batch],
                      "token_type_ids": token_type_ids[batch]}
            size = inputs["input_ids"].size(0)
            if args.compile and size < args.predict_batch_size:
                # A smaller last batch would recompile inside the timed batch: pad it instead.
                inputs = {name: torch.cat([value, value[:1].expand(
                    args.predict_batch_size - size, -1)]) for name, value in inputs.items()}
            t0 = time.perf_counter()
            with autocast(args):
                outputs = model(**inputs)
            start_logits = outputs.start_logits[:size].float().numpy()
            end_logits = outputs.end_logits[:size].float().numpy()
            seconds.append(time.perf_counter() - t0)
            for i, index in enumerate(feature_index[batch].tolist()):
                results.append(SquadResult(features[index].unique_id, start_logits[i].tolist(),
                                           end_logits[i].tolist()))
    timed = seconds[1:] or seconds
    timed_windows = input_ids.size(0) - (args.predict_batch_size if len(seconds) > 1 else 0)
    stats = {"predict_batches": len(seconds),
             "throughput_predict": round(timed_windows / sum(timed), 2), **percentiles_ms(timed)}
    predictions = compute_predictions_logits(
        examples, features, results, args.n_best_size, args.max_answer_length,
        tokenizer.do_lower_case, os.path.join(args.output_dir, "predictions.json"),
        os.path.join(args.output_dir, "nbest_predictions.json"), None, False, False, 0.0,
        tokenizer)
    return stats, predictions


def main(argv=None):
    args = parse_args(argv)
    if not (args.train_file or args.predict_file):
        sys.exit("hf_squad: nothing to do: pass --train_file and/or --predict_file")
    os.makedirs(args.output_dir, exist_ok=True)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)  # also initialises qa_outputs in from_pretrained
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    report = {"peer": "transformers BertForQuestionAnswering", "torch": torch.__version__,
              "transformers": transformers.__version__, "threads": args.threads,
              "precision": "bf16" if args.bf16 else "fp32", "compiled": args.compile}
    tokenizer = BertTokenizer.from_pretrained(args.model_dir, do_lower_case=True)
    # Windows first, before the model: the preprocessing workers fork without torch state.
    started = time.perf_counter()
    if args.train_file:
        train_examples = load_examples(args.train_file, True, args.train_examples)
        train_features, train_data = featurize(train_examples, tokenizer, args, True)
        # Questions whose answer is not in the context get no window (Google skips them too).
        num_train = len({feature.example_index for feature in train_features})
        report.update(train_questions=len(train_examples), train_examples=num_train,
                      train_windows=len(train_features))
        del train_features
    if args.predict_file:
        predict_examples = load_examples(args.predict_file, False, args.predict_examples)
        predict_features, predict_data = featurize(predict_examples, tokenizer, args, False)
        report.update(predict_examples=len(predict_examples),
                      predict_windows=len(predict_features))
    report["preprocess_seconds"] = round(time.perf_counter() - started, 2)
    log(f"windows: {report.get('train_windows')} training, {report.get('predict_windows')} "
        f"to predict ({report['preprocess_seconds']} s)")

    model = BertForQuestionAnswering.from_pretrained(args.model_dir)
    report["attn_implementation"] = model.config._attn_implementation
    if args.compile:
        model = torch.compile(model)
    if args.train_file:
        report.update(train(model, train_data, num_train, args))
    if args.predict_file:
        stats, predictions = predict(model, predict_examples, predict_features, predict_data,
                                     tokenizer, args)
        scores = squad_evaluate(predict_examples, predictions)
        report.update(stats, exact_match=round(scores["exact"], 3), f1=round(scores["f1"], 3))
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
