"""Raw text -> TFRecord files of BERT pre-training instances (masked LM + next sentence).

For the same flags, seed and input this writes the same instances, in the same order and with the
same features, as google-research/bert's `create_pretraining_data.py`: every random draw is made
in the same order with the same arguments. What differs is how the work is held and done:
- tokenized text is kept as one int32 array with sentence offsets (not lists of strings), and the
  A/B segments of an instance are spans of it, so memory stays small at Wikipedia scale;
- tokenization runs in `--num_workers` processes and memoises each distinct word;
- records are serialized deterministically and written under a temporary name, renamed when done.

Input format: one sentence per line, a blank line between documents. Invalid UTF-8 bytes are
dropped, as the reference's `convert_to_unicode` does.
"""

import array
import collections
import concurrent.futures
import glob
import multiprocessing
import os
import sys
import time

import numpy as np

import corpus_tokenizer
import tfrecord
import tokenization
from fast_random import FastRandom
from progress import Progress

# Lines handed to a tokenizer worker at a time, and chunks in flight per worker.
_LINES_PER_CHUNK = 2000
_CHUNKS_IN_FLIGHT_PER_WORKER = 4


class DataError(Exception):
    """Bad input or settings; the message names the problem and the fix."""


class Corpus:
    """Tokenized documents held as compact integer arrays.

    `tokens` (int32) holds every sentence's WordPiece ids back to back; sentence `s` is
    `tokens[sentence_starts[s]:sentence_starts[s + 1]]`; `documents` ([N, 2] int64) holds the
    first and end sentence of each non-empty document, in input order.
    """

    def __init__(self, tokens, sentence_starts, documents):
        self.tokens = tokens
        self.sentence_starts = sentence_starts
        self.documents = documents

    @property
    def num_tokens(self):
        return int(self.tokens.size)


TrainingInstance = collections.namedtuple(
    "TrainingInstance",
    ["input_ids", "num_segment_a_ids", "masked_lm_positions", "masked_lm_ids", "is_random_next"],
)
TrainingInstance.__doc__ = """One pre-training example.

input_ids: [CLS] A [SEP] B [SEP] after masking (np.int32); num_segment_a_ids: length of
"[CLS] A [SEP]" (segment 0); masked_lm_positions / masked_lm_ids: sorted positions and their
original ids; is_random_next: B comes from another document (label 1, Google's convention)."""


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
    """Yields (lines, bytes) chunks of raw input lines, files in order."""
    for path in input_files:
        with open(path, "rb") as reader:
            lines = []
            size = 0
            for line in reader:
                lines.append(line)
                size += len(line)
                if len(lines) == _LINES_PER_CHUNK:
                    yield lines, size
                    lines, size = [], 0
            if lines:
                yield lines, size


def _bounded_ordered_map(executor, function, items, max_in_flight):
    """Like executor.map over (lines, size) chunks, yielding (chunk, result) in order, but never
    reading more than `max_in_flight` chunks ahead of the consumer."""
    pending = collections.deque()
    for item in items:
        pending.append((item, executor.submit(function, item[0])))
        if len(pending) >= max_in_flight:
            done_item, future = pending.popleft()
            yield done_item, future.result()
    while pending:
        done_item, future = pending.popleft()
        yield done_item, future.result()


def read_corpus(input_files, vocab_file, do_lower_case, num_workers=1, log=sys.stderr):
    """Reads and tokenizes the input files into a `Corpus`, in `num_workers` processes.

    The result does not depend on `num_workers`.
    """
    total_bytes = sum(os.path.getsize(path) for path in input_files)
    progress = Progress("tokenizing", total_bytes, unit="bytes", stream=log)
    token_parts = []
    sentence_lengths = array.array("i")
    document_bounds = array.array("q")  # (first sentence, end sentence) pairs
    document_start = 0  # first sentence of the current document

    def consume(lengths):
        nonlocal document_start
        for length in lengths:
            if length == corpus_tokenizer.DOCUMENT_BREAK:
                if len(sentence_lengths) > document_start:
                    document_bounds.extend((document_start, len(sentence_lengths)))
                document_start = len(sentence_lengths)
            elif length > 0:
                sentence_lengths.append(length)

    chunks = _iter_line_chunks(input_files)
    if num_workers <= 1:
        tokenizer = tokenization.FullTokenizer(vocab_file, do_lower_case)
        results = ((chunk, corpus_tokenizer.tokenize_lines(chunk[0], tokenizer))
                   for chunk in chunks)
        _consume_results(results, token_parts, consume, progress)
    else:
        # fork starts workers at once; but a parent that has loaded TensorFlow (a library
        # caller) holds threads that fork would copy half-made, so it spawns them instead.
        # A worker that dies raises BrokenProcessPool here instead of hanging the run.
        start_method = "spawn" if "tensorflow" in sys.modules else "fork"
        with concurrent.futures.ProcessPoolExecutor(
            num_workers, multiprocessing.get_context(start_method), corpus_tokenizer.init_worker,
            (vocab_file, do_lower_case),
        ) as executor:
            results = _bounded_ordered_map(executor, corpus_tokenizer.tokenize_lines, chunks,
                                           num_workers * _CHUNKS_IN_FLIGHT_PER_WORKER)
            _consume_results(results, token_parts, consume, progress)
    if len(sentence_lengths) > document_start:
        document_bounds.extend((document_start, len(sentence_lengths)))
    progress.close()

    tokens = np.concatenate(token_parts) if token_parts else np.zeros(0, np.int32)
    sentence_starts = np.zeros(len(sentence_lengths) + 1, dtype=np.int64)
    np.cumsum(np.frombuffer(sentence_lengths, np.int32), out=sentence_starts[1:])
    documents = np.frombuffer(document_bounds, np.int64).reshape(-1, 2)
    return Corpus(tokens, sentence_starts, documents)


def _consume_results(results, token_parts, consume, progress):
    for (_, chunk_bytes), (ids, lengths) in results:
        token_parts.append(np.frombuffer(ids, dtype=np.int32))
        consume(lengths)
        progress.update(chunk_bytes)


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

    Segments are (start, end) spans of `corpus.tokens`; truncation moves span ends.
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
        is_continuation = np.zeros(max(vocab.values()) + 1, dtype=bool)
        for token, index in vocab.items():
            is_continuation[index] = token.startswith("##")
        self.is_continuation = is_continuation

    def create_instances(self, dupe_factor):
        """All instances: documents shuffled once, `dupe_factor` passes, instances shuffled."""
        order = array.array("q", range(len(self.corpus.documents)))
        self.rng.shuffle(order)
        documents = _DocumentList(self.corpus.documents[np.frombuffer(order, np.int64)])
        instances = []
        for _ in range(dupe_factor):
            for document_index in range(len(documents)):
                instances.extend(self.instances_from_document(documents, document_index))
        self.rng.shuffle(instances)
        return instances

    def instances_from_document(self, documents, document_index):
        """The instances of one document; `documents` is the shuffled document list."""
        rng = self.rng
        starts = self.corpus.sentence_starts
        first_sentence, end_sentence = documents[document_index]
        num_sentences = end_sentence - first_sentence
        max_num_tokens = self.max_seq_length - 3
        target_seq_length = max_num_tokens
        if rng.random() < self.short_seq_prob:
            target_seq_length = rng.randint(2, max_num_tokens)

        instances = []
        chunk_first = 0  # first sentence of the current chunk, relative to the document
        chunk_size = 0
        current_length = 0
        i = 0
        while i < num_sentences:
            if chunk_size == 0:
                chunk_first = i
            chunk_size += 1
            sentence = first_sentence + i
            current_length += int(starts[sentence + 1] - starts[sentence])
            if i == num_sentences - 1 or current_length >= target_seq_length:
                a_end = 1
                if chunk_size >= 2:
                    a_end = rng.randint(1, chunk_size - 1)
                chunk_start = first_sentence + chunk_first
                a_span = [int(starts[chunk_start]), int(starts[chunk_start + a_end])]
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
                    b_start = int(starts[random_first + random_start])
                    for sentence in range(random_first + random_start, random_end):
                        b_end = int(starts[sentence + 1])
                        if b_end - b_start >= target_b_length:
                            break
                    b_span = [b_start, b_end]
                    # The unused sentences of the chunk are put back for the next instance.
                    i -= chunk_size - a_end
                else:
                    is_random_next = False
                    b_span = [int(starts[chunk_start + a_end]),
                              int(starts[chunk_start + chunk_size])]
                self._truncate_pair(a_span, b_span, max_num_tokens)
                instances.append(self._make_instance(a_span, b_span, is_random_next))
                chunk_size = 0
                current_length = 0
            i += 1
        return instances

    def _truncate_pair(self, a_span, b_span, max_num_tokens):
        """Trims the longer span, from the front or back at random, until both fit."""
        while True:
            a_length = a_span[1] - a_span[0]
            b_length = b_span[1] - b_span[0]
            if a_length + b_length <= max_num_tokens:
                return
            span = a_span if a_length > b_length else b_span
            if self.rng.random() < 0.5:
                span[0] += 1
            else:
                span[1] -= 1

    def _make_instance(self, a_span, b_span, is_random_next):
        tokens = self.corpus.tokens
        a_ids = tokens[a_span[0]:a_span[1]].tolist()
        b_ids = tokens[b_span[0]:b_span[1]].tolist()
        if not a_ids or not b_ids:
            raise AssertionError("empty segment: the corpus violates the generator's invariants")
        input_ids = [self.cls_id, *a_ids, self.sep_id, *b_ids, self.sep_id]
        num_segment_a_ids = len(a_ids) + 2
        positions, labels = self._mask(input_ids, num_segment_a_ids)
        return TrainingInstance(np.asarray(input_ids, np.int32), num_segment_a_ids,
                                np.asarray(positions, np.int32), np.asarray(labels, np.int32),
                                is_random_next)

    def _mask(self, input_ids, num_segment_a_ids):
        """Masks `input_ids` in place (80% [MASK], 10% kept, 10% random); returns positions, ids.

        Candidates are all positions but [CLS] and the two [SEP]s, in groups of one (or whole
        words with `do_whole_word_mask`), shuffled; groups are taken while they fit in
        min(max_predictions_per_seq, max(1, round(len * masked_lm_prob))).
        """
        rng = self.rng
        length = len(input_ids)
        word_positions = list(range(1, num_segment_a_ids - 1))
        word_positions.extend(range(num_segment_a_ids, length - 1))
        if self.do_whole_word_mask:
            groups = []
            for position in word_positions:
                if groups and self.is_continuation[input_ids[position]]:
                    groups[-1].append(position)
                else:
                    groups.append([position])
        else:
            groups = word_positions
        rng.shuffle(groups)
        num_to_predict = min(
            self.max_predictions_per_seq, max(1, round(length * self.masked_lm_prob))
        )
        if self.do_whole_word_mask:
            chosen = []
            for group in groups:
                if len(chosen) >= num_to_predict:
                    break
                if len(chosen) + len(group) <= num_to_predict:
                    chosen.extend(group)
        else:
            chosen = groups[:num_to_predict]
        labels = {position: input_ids[position] for position in chosen}
        words = self.vocab_word_ids
        for position in chosen:
            if rng.random() < 0.8:
                input_ids[position] = self.mask_id
            elif rng.random() >= 0.5:
                input_ids[position] = words[rng.randint(0, len(words) - 1)]
        positions = sorted(chosen)
        return positions, [labels[position] for position in positions]


_FLOAT_ONE = b"\x00\x00\x80\x3f"  # 1.0 as little-endian float32
_FLOAT_ZERO = bytes(4)


def encode_instance(instance, max_seq_length, max_predictions_per_seq):
    """The serialized `tf.train.Example` of one instance: DESIGN.md's features, zero-padded.

    Padding zeros and the 0/1 mask and segment values are single-byte varints, so they are
    written as byte runs.
    """
    num_ids = instance.input_ids.size
    if num_ids > max_seq_length:
        raise AssertionError(f"instance of {num_ids} ids exceeds max_seq_length {max_seq_length}")
    num_a = instance.num_segment_a_ids
    id_padding = bytes(max_seq_length - num_ids)
    num_masked = instance.masked_lm_positions.size
    prediction_padding = bytes(max_predictions_per_seq - num_masked)
    packed = tfrecord.packed_varints
    return tfrecord.encode_packed_example({
        "input_ids": ("int64", packed(instance.input_ids.tolist()) + id_padding),
        "input_mask": ("int64", b"\x01" * num_ids + id_padding),
        "segment_ids": ("int64", bytes(num_a) + b"\x01" * (num_ids - num_a) + id_padding),
        "masked_lm_positions": ("int64", packed(instance.masked_lm_positions.tolist())
                                + prediction_padding),
        "masked_lm_ids": ("int64", packed(instance.masked_lm_ids.tolist()) + prediction_padding),
        "masked_lm_weights": ("float", _FLOAT_ONE * num_masked
                              + _FLOAT_ZERO * (max_predictions_per_seq - num_masked)),
        "next_sentence_labels": ("int64", b"\x01" if instance.is_random_next else b"\x00"),
    })


def check_outputs_writable(output_files):
    """Fails fast, before any work, if an output file cannot be created."""
    for path in output_files:
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise DataError(f"output directory {directory} does not exist: create it first")
        if not os.access(directory, os.W_OK) or (os.path.exists(path) and
                                                 not os.access(path, os.W_OK)):
            raise DataError(f"cannot write {path}: choose a writable --output_file")


def write_instances(instances, output_files, max_seq_length, max_predictions_per_seq,
                    log=sys.stderr):
    """Writes instances round-robin over `output_files` (as Google does), atomically.

    Each file is written as `<name>.tmp-<pid>` and renamed only when all are complete, so an
    interrupted run never leaves a file that looks finished. Returns the number of records.
    """
    temporary = [f"{path}.tmp-{os.getpid()}" for path in output_files]
    progress = Progress("writing", len(instances), unit="instances", stream=log)
    writers = []
    try:
        writers = [tfrecord.TFRecordWriter(path) for path in temporary]
        for index, instance in enumerate(instances):
            record = encode_instance(instance, max_seq_length, max_predictions_per_seq)
            writers[index % len(writers)].write(record)
            progress.update()
        for writer in writers:
            writer.close()
        for source, destination in zip(temporary, output_files):
            os.replace(source, destination)
    except BaseException:
        for writer in writers:
            writer.close()
        for path in temporary:
            if os.path.exists(path):
                os.remove(path)
        raise
    progress.close()
    return len(instances)


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

    corpus = read_corpus(input_files, vocab_file, do_lower_case, num_workers, log)
    if not len(corpus.documents):
        raise DataError(f"no text in {', '.join(input_files)}: the input needs one sentence per "
                        "line and a blank line between documents")
    maker = InstanceMaker(corpus, vocab, max_seq_length, short_seq_prob, masked_lm_prob,
                          max_predictions_per_seq, do_whole_word_mask,
                          FastRandom(random_seed), same_document_is_not_random)
    instances = maker.create_instances(dupe_factor)
    write_instances(instances, output_files, max_seq_length, max_predictions_per_seq, log)
    return {
        "input_files": len(input_files),
        "documents": len(corpus.documents),
        "sentences": len(corpus.sentence_starts) - 1,
        "tokens": corpus.num_tokens,
        "instances": len(instances),
        "masked_positions": sum(instance.masked_lm_positions.size for instance in instances),
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
                         "Tokenizer processes. The output is identical for every value.")
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
        print("create_pretraining_data: error: a tokenizer worker died (killed, or out of "
              "memory): rerun, with a smaller --num_workers if memory is short", file=sys.stderr)
        raise SystemExit(2) from None
    print(format_summary(summary))


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
