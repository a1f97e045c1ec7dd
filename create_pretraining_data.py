"""Raw text -> TFRecord files of BERT pre-training instances (masked LM + next sentence).

For the same flags, seed and input this writes the same instances, in the same order and with the
same features, as google-research/bert's `create_pretraining_data.py`: every random draw is made
in the same order with the same arguments. What differs is how the work is held and done:
- tokenized text is kept as one int32 array with sentence offsets (not lists of strings), and the
  A/B segments of an instance are spans of it, so memory stays small at Wikipedia scale;
- tokenization runs in `--num_workers` processes and memoises each distinct word;
- the instance maker only makes the random decisions (spans, masked positions, replacements);
  worker processes apply them and serialize the records meanwhile (`instance_encoding`);
- records are serialized deterministically and written under a temporary name, renamed when done.

Input format: one sentence per line ("\\n"), a blank line between documents. As in the reference,
every "\\r" byte is dropped (TensorFlow's line reader does so) and so are invalid UTF-8 bytes (its
`convert_to_unicode`).
"""

import array
import collections
import concurrent.futures
import contextlib
import functools
import glob
import multiprocessing
import os
import sys
import time

import numpy as np

import corpus_tokenizer
import instance_encoding
import tokenization
from fast_random import FastRandom
from progress import Progress

# Lines handed to a tokenizer worker at a time, instances to an encoding worker at a time, and
# items in flight per worker.
_LINES_PER_CHUNK = 500
_INSTANCES_PER_BATCH = 1000
_ITEMS_IN_FLIGHT_PER_WORKER = 4


class DataError(Exception):
    """Bad input or settings; the message names the problem and the fix."""


class Corpus:
    """Tokenized documents held as compact integer arrays.

    `tokens` (array of int32) holds every sentence's WordPiece ids back to back; sentence `s` is
    `tokens[sentence_starts[s]:sentence_starts[s + 1]]` (`sentence_starts`: array of int64);
    `documents` (NumPy [N, 2] int64) holds the first and end sentence of each non-empty
    document, in input order.
    """

    def __init__(self, tokens, sentence_starts, documents):
        self.tokens = tokens
        self.sentence_starts = sentence_starts
        self.documents = documents

    @property
    def num_tokens(self):
        return len(self.tokens)


def expand_input_patterns(input_patterns):
    """Comma-separated files or globs -> list of files; errors on no match.

    A glob's matches come in directory-listing order, not sorted, because that is the order
    google-research/bert's `tf.gfile.Glob` reads them in (and the order changes the output).
    Name the files one by one for an order independent of the file system.
    """
    files = []
    for pattern in (p.strip() for p in input_patterns.split(",")):
        if not pattern:
            continue
        matches = glob.glob(pattern)
        if not matches:
            if glob.has_magic(pattern):
                raise DataError(f"--input_file pattern {pattern} matches no file: check the path")
            raise DataError(f"input file {pattern} does not exist: check --input_file")
        files.extend(matches)
    if not files:
        raise DataError("--input_file is empty: give one or more text files or globs")
    for path in files:
        if os.path.isdir(path):
            raise DataError(f"input {path} is a directory: give the text files in it (e.g. {path}/*)")
        if not os.access(path, os.R_OK):
            raise DataError(f"input file {path} is not readable: check its permissions")
    return files


def _iter_line_chunks(input_files):
    """Yields lists of raw input lines, files in order."""
    for path in input_files:
        with open(path, "rb") as reader:
            lines = []
            for line in reader:
                lines.append(line)
                if len(lines) == _LINES_PER_CHUNK:
                    yield lines
                    lines = []
            if lines:
                yield lines


class WorkerPool:
    """Maps functions over items in worker processes (see `worker_pool`), in order."""

    def __init__(self, executor, num_workers):
        self.executor = executor
        self.num_workers = num_workers

    def ordered_map(self, function, items):
        """Yields (item, function(item)) in order, computed in the workers (in this process if
        there is no executor), never more than a few items per worker ahead of the consumer."""
        if self.executor is None:
            for item in items:
                yield item, function(item)
            return
        pending = collections.deque()
        for item in items:
            pending.append((item, self.executor.submit(function, item)))
            if len(pending) >= self.num_workers * _ITEMS_IN_FLIGHT_PER_WORKER:
                done_item, future = pending.popleft()
                yield done_item, future.result()
        while pending:
            done_item, future = pending.popleft()
            yield done_item, future.result()


@contextlib.contextmanager
def worker_pool(num_workers, vocab_file, do_lower_case):
    """A `WorkerPool` of `num_workers` processes ready to tokenize (`corpus_tokenizer`) and
    encode (`instance_encoding`); with one worker, this process does the work itself.

    Workers fork (they start at once); but a parent that has loaded TensorFlow (a library caller)
    holds threads that fork would copy half-made, so it spawns them instead. A worker that dies
    raises BrokenProcessPool in the parent instead of hanging the run.
    """
    if num_workers <= 1:
        corpus_tokenizer.init_worker(vocab_file, do_lower_case)
        yield WorkerPool(None, 1)
        return
    start_method = "spawn" if "tensorflow" in sys.modules else "fork"
    with concurrent.futures.ProcessPoolExecutor(
        num_workers, multiprocessing.get_context(start_method), corpus_tokenizer.init_worker,
        (vocab_file, do_lower_case),
    ) as executor:
        yield WorkerPool(executor, num_workers)


def read_corpus(input_files, workers, log=sys.stderr):
    """Reads and tokenizes the input files into a `Corpus` with a `worker_pool`'s `workers`.
    The result does not depend on the number of workers."""
    total_bytes = sum(os.path.getsize(path) for path in input_files)
    progress = Progress("tokenizing", total_bytes, unit="bytes", stream=log)
    tokens = array.array("i")
    sentence_lengths = array.array("i")
    document_bounds = array.array("q")  # (first sentence, end sentence) pairs
    document_start = 0  # first sentence of the current document

    for lines, (ids, lengths) in workers.ordered_map(corpus_tokenizer.tokenize_lines,
                                                     _iter_line_chunks(input_files)):
        tokens += ids
        for length in lengths:
            if length == corpus_tokenizer.DOCUMENT_BREAK:
                if len(sentence_lengths) > document_start:
                    document_bounds.extend((document_start, len(sentence_lengths)))
                document_start = len(sentence_lengths)
            elif length > 0:
                sentence_lengths.append(length)
        progress.update(sum(map(len, lines)))
    if len(sentence_lengths) > document_start:
        document_bounds.extend((document_start, len(sentence_lengths)))
    progress.close()

    sentence_starts = np.zeros(len(sentence_lengths) + 1, dtype=np.int64)
    np.cumsum(np.frombuffer(sentence_lengths, np.int32), out=sentence_starts[1:])
    documents = np.frombuffer(document_bounds, np.int64).reshape(-1, 2)
    return Corpus(tokens, array.array("q", sentence_starts.tobytes()), documents)


class _DocumentList:
    """(first sentence, end sentence) of each document as Python ints, from an [N, 2] array,
    stored as two compact int64 arrays."""

    def __init__(self, bounds):
        self._first = array.array("q", bounds[:, 0].tobytes())
        self._end = array.array("q", bounds[:, 1].tobytes())

    def __len__(self):
        return len(self._first)

    def __getitem__(self, index):
        return self._first[index], self._end[index]


class InstanceMaker:
    """Google's instance-creation algorithm over a `Corpus`, drawing from `rng` in the same order.

    Segments are (start, end) spans of `corpus.tokens`; truncation moves span ends. Instances
    come out as `instance_encoding.InstanceBatch`es: every random decision made, masks not yet
    applied.
    """

    def __init__(self, corpus, vocab, max_seq_length, short_seq_prob, masked_lm_prob,
                 max_predictions_per_seq, do_whole_word_mask, rng,
                 same_document_is_not_random=False):
        self.corpus = corpus
        self.max_seq_length = max_seq_length
        self.short_seq_prob = short_seq_prob
        self.masked_lm_prob = masked_lm_prob
        self.max_predictions_per_seq = max_predictions_per_seq
        self.do_whole_word_mask = do_whole_word_mask
        self.same_document_is_not_random = same_document_is_not_random
        self.rng = rng
        self.cls_id = vocab["[CLS]"]
        self.sep_id = vocab["[SEP]"]
        self.mask_id = vocab["[MASK]"]
        # Google draws random replacements from list(vocab.keys()), i.e. distinct tokens.
        self.vocab_word_ids = list(vocab.values())
        is_continuation = bytearray(max(vocab.values()) + 1)
        for token, index in vocab.items():
            is_continuation[index] = token.startswith("##")
        self.is_continuation = is_continuation
        self.num_masked_positions = 0
        self._batch = instance_encoding.InstanceBatch()

    def instance_batches(self, dupe_factor, batch_size=_INSTANCES_PER_BATCH, progress=None):
        """Yields every instance, in batches of about `batch_size`: documents shuffled once,
        then `dupe_factor` passes over them. `progress` (optional) counts documents."""
        order = array.array("q", range(len(self.corpus.documents)))
        self.rng.shuffle(order)
        documents = _DocumentList(self.corpus.documents[np.frombuffer(order, np.int64)])
        for _ in range(dupe_factor):
            for document_index in range(len(documents)):
                self.add_document_instances(documents, document_index)
                if len(self._batch) >= batch_size:
                    yield self._take_batch()
                if progress is not None:
                    progress.update()
        if len(self._batch):
            yield self._take_batch()

    def _take_batch(self):
        batch, self._batch = self._batch, instance_encoding.InstanceBatch()
        return batch

    def add_document_instances(self, documents, document_index):
        """Adds the instances of one document; `documents` is the shuffled document list."""
        rng = self.rng
        starts = self.corpus.sentence_starts
        first_sentence, end_sentence = documents[document_index]
        num_sentences = end_sentence - first_sentence
        max_num_tokens = self.max_seq_length - 3
        target_seq_length = max_num_tokens
        if rng.random() < self.short_seq_prob:
            target_seq_length = rng.randint(2, max_num_tokens)

        chunk_first = 0  # first sentence of the current chunk, relative to the document
        chunk_size = 0
        current_length = 0
        i = 0
        while i < num_sentences:
            if chunk_size == 0:
                chunk_first = i
            chunk_size += 1
            sentence = first_sentence + i
            current_length += starts[sentence + 1] - starts[sentence]
            if i == num_sentences - 1 or current_length >= target_seq_length:
                a_end = 1
                if chunk_size >= 2:
                    a_end = rng.randint(1, chunk_size - 1)
                chunk_start = first_sentence + chunk_first
                a_span = [starts[chunk_start], starts[chunk_start + a_end]]
                if chunk_size == 1 or rng.random() < 0.5:
                    is_random_next = True
                    target_b_length = target_seq_length - (a_span[1] - a_span[0])
                    for _ in range(10):
                        random_document_index = rng.randint(0, len(documents) - 1)
                        if random_document_index != document_index:
                            break
                    if self.same_document_is_not_random and random_document_index == document_index:
                        is_random_next = False
                    random_first, random_end = documents[random_document_index]
                    random_start = rng.randint(0, random_end - random_first - 1)
                    b_start = starts[random_first + random_start]
                    for sentence in range(random_first + random_start, random_end):
                        b_end = starts[sentence + 1]
                        if b_end - b_start >= target_b_length:
                            break
                    b_span = [b_start, b_end]
                    # The unused sentences of the chunk are put back for the next instance.
                    i -= chunk_size - a_end
                else:
                    is_random_next = False
                    b_span = [starts[chunk_start + a_end], starts[chunk_start + chunk_size]]
                self._truncate_pair(a_span, b_span, max_num_tokens)
                self._add_instance(a_span, b_span, is_random_next)
                chunk_size = 0
                current_length = 0
            i += 1

    def _truncate_pair(self, a_span, b_span, max_num_tokens):
        """Trims the longer span, from the front or back at random, until both fit."""
        random = self.rng.random
        a_length = a_span[1] - a_span[0]
        b_length = b_span[1] - b_span[0]
        while a_length + b_length > max_num_tokens:
            if a_length > b_length:
                span = a_span
                a_length -= 1
            else:
                span = b_span
                b_length -= 1
            if random() < 0.5:
                span[0] += 1
            else:
                span[1] -= 1

    def _add_instance(self, a_span, b_span, is_random_next):
        """Appends "[CLS] A [SEP] B [SEP]" and its masking decisions to the current batch."""
        (a_start, a_end), (b_start, b_end) = a_span, b_span
        if a_end <= a_start or b_end <= b_start:
            raise AssertionError("empty segment: the corpus violates the generator's invariants")
        batch = self._batch
        tokens = self.corpus.tokens
        input_ids = batch.input_ids
        first_id = len(input_ids)
        input_ids.append(self.cls_id)
        input_ids += tokens[a_start:a_end]
        input_ids.append(self.sep_id)
        input_ids += tokens[b_start:b_end]
        input_ids.append(self.sep_id)
        num_segment_a_ids = a_end - a_start + 2
        length = len(input_ids) - first_id
        batch.lengths.append(length)
        batch.num_segment_a_ids.append(num_segment_a_ids)
        batch.is_random_next.append(is_random_next)

        # Masking candidates: every position but [CLS] and the two [SEP]s, one by one (or as
        # whole words), shuffled; taken while they fit in min(max_predictions_per_seq,
        # max(1, round(length * masked_lm_prob))).
        candidates = list(range(1, num_segment_a_ids - 1))
        candidates += range(num_segment_a_ids, length - 1)
        if self.do_whole_word_mask:
            candidates = self._whole_word_groups(candidates, input_ids[first_id:])
        self.rng.shuffle(candidates)
        num_to_predict = min(
            self.max_predictions_per_seq, max(1, round(length * self.masked_lm_prob))
        )
        if self.do_whole_word_mask:
            chosen = []
            for group in candidates:
                if len(chosen) >= num_to_predict:
                    break
                if len(chosen) + len(group) <= num_to_predict:
                    chosen.extend(group)
        else:
            chosen = candidates[:num_to_predict]
        self._add_replacements(chosen)

    def _whole_word_groups(self, positions, input_ids):
        """`positions` grouped into words: a "##" piece joins the group before it."""
        is_continuation = self.is_continuation
        groups = []
        for position in positions:
            if groups and is_continuation[input_ids[position]]:
                groups[-1].append(position)
            else:
                groups.append([position])
        return groups

    def _add_replacements(self, chosen):
        """Draws what replaces each chosen position: 80% [MASK], 10% kept, 10% a random word."""
        batch = self._batch
        random = self.rng.random
        mask_id = self.mask_id
        batch.replacements.extend([mask_id if random() < 0.8 else self._unmasked_replacement()
                                   for _ in chosen])
        batch.masked_positions.extend(chosen)
        batch.masked_counts.append(len(chosen))
        self.num_masked_positions += len(chosen)

    def _unmasked_replacement(self):
        """The 20% not masked: half kept, half replaced by a random word."""
        if self.rng.random() < 0.5:
            return instance_encoding.KEEP
        return self.vocab_word_ids[self.rng.randint(0, len(self.vocab_word_ids) - 1)]


def create_records(maker, dupe_factor, workers, log=sys.stderr):
    """Every instance as a framed TFRecord record, in Google's final (shuffled) order.

    The maker runs here; the `worker_pool`'s `workers` encode its batches meanwhile. Encoding
    draws nothing at random, so the result does not depend on the number of workers.
    """
    progress = Progress("creating instances", dupe_factor * len(maker.corpus.documents),
                        unit="documents", stream=log)
    encode = functools.partial(instance_encoding.encode_batch,
                               max_seq_length=maker.max_seq_length,
                               max_predictions_per_seq=maker.max_predictions_per_seq)
    records = []
    batches = maker.instance_batches(dupe_factor, progress=progress)
    for _, batch_records in workers.ordered_map(encode, batches):
        records.extend(batch_records)
    progress.close()
    maker.rng.shuffle(records)
    return records


def check_outputs_writable(output_files):
    """Fails fast, before any work, if an output file cannot be created."""
    for path in output_files:
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise DataError(f"output directory {directory} does not exist: create it first")
        if not os.access(directory, os.W_OK) or (os.path.exists(path) and
                                                 not os.access(path, os.W_OK)):
            raise DataError(f"cannot write {path}: choose a writable --output_file")


def write_records(records, output_files, log=sys.stderr):
    """Writes framed records round-robin over `output_files` (as Google does), atomically.

    Each file is written as `<name>.tmp-<pid>` and renamed only when all are complete, so an
    interrupted run never leaves a file that looks finished.
    """
    temporary = [f"{path}.tmp-{os.getpid()}" for path in output_files]
    progress = Progress("writing", len(records), unit="records", stream=log)
    try:
        for shard, path in enumerate(temporary):
            shard_records = records[shard::len(output_files)]
            with open(path, "wb") as writer:
                writer.writelines(shard_records)
            progress.update(len(shard_records))
        for source, destination in zip(temporary, output_files):
            os.replace(source, destination)
    except BaseException:
        for path in temporary:
            if os.path.exists(path):
                os.remove(path)
        raise
    progress.close()


def validate_settings(max_seq_length, max_predictions_per_seq, masked_lm_prob, dupe_factor,
                      short_seq_prob, num_workers):
    """Raises DataError for settings the algorithm cannot run with."""
    if max_seq_length < 5:
        raise DataError(f"--max_seq_length={max_seq_length} is too small: use at least 5 "
                        "([CLS] A [SEP] B [SEP] needs 2 tokens of text)")
    if max_predictions_per_seq < 1:
        raise DataError(f"--max_predictions_per_seq={max_predictions_per_seq}: use at least 1")
    if not 0.0 < masked_lm_prob <= 1.0:
        raise DataError(f"--masked_lm_prob={masked_lm_prob}: use a value in (0, 1], e.g. 0.15")
    if not 0.0 <= short_seq_prob <= 1.0:
        raise DataError(f"--short_seq_prob={short_seq_prob}: use a value in [0, 1], e.g. 0.1")
    if dupe_factor < 1:
        raise DataError(f"--dupe_factor={dupe_factor}: use at least 1")
    if num_workers < 1:
        raise DataError(f"--num_workers={num_workers}: use at least 1")


def load_checked_vocab(vocab_file):
    """Loads `vocab_file`, raising DataError if it is missing or lacks BERT's special tokens."""
    if not os.path.isfile(vocab_file):
        raise DataError(f"vocab file {vocab_file} does not exist: check --vocab_file")
    vocab = tokenization.load_vocab(vocab_file)
    try:
        tokenization.check_vocab(vocab, vocab_file)
    except ValueError as error:
        raise DataError(str(error)) from None
    return vocab


def run(input_file, output_file, vocab_file, do_lower_case=True, do_whole_word_mask=False,
        max_seq_length=128, max_predictions_per_seq=20, random_seed=12345, dupe_factor=10,
        masked_lm_prob=0.15, short_seq_prob=0.1, num_workers=1,
        same_document_is_not_random=False, log=sys.stderr):
    """The whole job: read, tokenize, create instances, write. Returns a summary dict."""
    started = time.monotonic()
    validate_settings(max_seq_length, max_predictions_per_seq, masked_lm_prob, dupe_factor,
                      short_seq_prob, num_workers)
    vocab = load_checked_vocab(vocab_file)
    input_files = expand_input_patterns(input_file)
    output_files = [path.strip() for path in output_file.split(",") if path.strip()]
    if not output_files:
        raise DataError("--output_file is empty: give one or more comma-separated paths")
    check_outputs_writable(output_files)

    with worker_pool(num_workers, vocab_file, do_lower_case) as workers:
        corpus = read_corpus(input_files, workers, log)
        if not len(corpus.documents):
            raise DataError(f"no text in {', '.join(input_files)}: the input needs one sentence "
                            "per line and a blank line between documents")
        maker = InstanceMaker(corpus, vocab, max_seq_length, short_seq_prob, masked_lm_prob,
                              max_predictions_per_seq, do_whole_word_mask,
                              FastRandom(random_seed), same_document_is_not_random)
        records = create_records(maker, dupe_factor, workers, log)
    write_records(records, output_files, log)
    return {
        "input_files": len(input_files),
        "documents": len(corpus.documents),
        "sentences": len(corpus.sentence_starts) - 1,
        "tokens": corpus.num_tokens,
        "instances": len(records),
        "masked_positions": maker.num_masked_positions,
        "output_files": output_files,
        "seconds": time.monotonic() - started,
    }


def format_summary(summary):
    """A human-readable multi-line summary of `run`'s result."""
    seconds = summary["seconds"]
    rate = summary["instances"] / max(seconds, 1e-9)
    return "\n".join([
        f"documents:        {summary['documents']:,} ({summary['input_files']} input files)",
        f"sentences:        {summary['sentences']:,}",
        f"tokens:           {summary['tokens']:,}",
        f"instances:        {summary['instances']:,} ({rate:,.0f}/s)",
        f"masked positions: {summary['masked_positions']:,}",
        f"time:             {seconds:.1f}s",
        f"output:           {', '.join(summary['output_files'])}",
    ])


def _define_flags():
    from absl import flags

    flags.DEFINE_string("input_file", None,
                        "Input text file(s) or globs, comma-separated: one sentence per line, "
                        "blank line between documents.")
    flags.DEFINE_string("output_file", None, "Output TFRecord file(s), comma-separated.")
    flags.DEFINE_string("vocab_file", None, "The WordPiece vocabulary the model uses.")
    flags.DEFINE_bool("do_lower_case", True, "Lower-case the input (uncased models).")
    flags.DEFINE_bool("do_whole_word_mask", False,
                      "Mask whole words (all WordPieces of a word) instead of single WordPieces.")
    flags.DEFINE_integer("max_seq_length", 128, "Maximum sequence length.")
    flags.DEFINE_integer("max_predictions_per_seq", 20, "Maximum masked LM predictions per seq.")
    flags.DEFINE_integer("random_seed", 12345, "Random seed for data generation.")
    flags.DEFINE_integer("dupe_factor", 10,
                         "Number of times to duplicate the input data (with different masks).")
    flags.DEFINE_float("masked_lm_prob", 0.15, "Masked LM probability.")
    flags.DEFINE_float("short_seq_prob", 0.1,
                       "Probability of creating sequences shorter than the maximum length.")
    flags.DEFINE_integer("num_workers", 1,
                         "Worker processes (tokenizing, encoding records). The output is "
                         "identical for every value.")
    flags.DEFINE_bool("nvidia_same_document_is_not_random", False,
                      "NVIDIA's variant: when the 10 draws of a random document all return the "
                      "current one, label the pair not-random (0). Off: Google's behaviour.")
    flags.mark_flags_as_required(["input_file", "output_file", "vocab_file"])


def main(argv):
    from absl import flags

    if len(argv) > 1:
        raise SystemExit(f"create_pretraining_data: unexpected arguments {argv[1:]}")
    flag_values = flags.FLAGS
    try:
        summary = run(
            flag_values.input_file, flag_values.output_file, flag_values.vocab_file,
            do_lower_case=flag_values.do_lower_case,
            do_whole_word_mask=flag_values.do_whole_word_mask,
            max_seq_length=flag_values.max_seq_length,
            max_predictions_per_seq=flag_values.max_predictions_per_seq,
            random_seed=flag_values.random_seed, dupe_factor=flag_values.dupe_factor,
            masked_lm_prob=flag_values.masked_lm_prob,
            short_seq_prob=flag_values.short_seq_prob, num_workers=flag_values.num_workers,
            same_document_is_not_random=flag_values.nvidia_same_document_is_not_random,
        )
    except DataError as error:
        print(f"create_pretraining_data: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except concurrent.futures.process.BrokenProcessPool:
        print("create_pretraining_data: error: a worker process died (killed, or out of "
              "memory): rerun, with a smaller --num_workers if memory is short", file=sys.stderr)
        raise SystemExit(2) from None
    print(format_summary(summary))


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
