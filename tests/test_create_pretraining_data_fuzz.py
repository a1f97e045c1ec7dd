"""create_pretraining_data under fuzzing (property-based, `hypothesis`).

Inputs are arbitrary bytes built from nasty pieces (invalid UTF-8, NUL and control bytes, the
UTF-8 encodings of lone surrogates, words over 200 characters, whitespace-only and punctuation-only
lines, blank-line runs, CJK, combining marks, emoji, \\r\\n and \\r line endings) mixed with real
vocabulary words, and flags drawn from their sensible ranges. Two layers:
- in process: `create_pretraining_data.run` and the tokenizer, many examples, checked against the
  record invariants and against google-research/bert's code (the bert-tensorflow package);
- the CLI in a subprocess, fewer examples: exit code 0 with valid records, or a one-line error and
  no traceback.
The reference's reader drops every \\r byte, and so must ours (a regression example below).
Every run is reproducible: `derandomize=True` and no example database.
"""

import contextlib
import functools
import io
import itertools
import os
import tempfile
from unittest import mock

import numpy as np
import tensorflow as tf
from conftest import VOCAB, run_cli
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import create_pretraining_data
import tokenization

FEATURES = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids",
            "masked_lm_weights", "next_sentence_labels")

with open(VOCAB, encoding="utf-8") as _vocab:
    VOCAB_TOKENS = [line.strip() for line in _vocab]
VOCAB_SIZE = len(VOCAB_TOKENS)
PAD_ID, CLS_ID, SEP_ID, MASK_ID = (VOCAB_TOKENS.index(token)
                                   for token in ("[PAD]", "[CLS]", "[SEP]", "[MASK]"))
IS_CONTINUATION = [token.startswith("##") for token in VOCAB_TOKENS]
# Whole vocabulary words (not "##" pieces, not [special] tokens): concatenated, they make words
# WordPiece splits into several pieces, the groups of whole-word masking.
WORDS = [token for token in VOCAB_TOKENS if not token.startswith(("##", "["))]

# Byte strings likely to trip up a decoder, a tokenizer or a line reader.
NASTY_PIECES = [
    b"\x00", b"\x00\x00\x00", b"\xff", b"\xfe\xff", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98",
    b"\x80\x80", b"\xc0\xaf",  # truncated sequences, stray continuation bytes, overlong "/"
    b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xed\xa0\xbd\xed\xb8\x80",  # lone/paired surrogates
    b"\xef\xbb\xbf", b"\xef\xbf\xbd", b"\xf4\x90\x80\x80",  # BOM, U+FFFD, beyond U+10FFFF
    b"\x1b[31m", b"\x07", b"\x08", b"\x0b", b"\x0c", b"\x1c", b"\x1f", b"\x7f",
    b"\t", b"\r", b"\r\n", b"\n", b"\n\n", b"\n \n\t\n", b" ", b"   ",
    "\u0085 \u00a0 \u1680 \u2000 \u2028 \u2029 \u3000 \u200b \u200d \ufeff \u2060".encode(),
    "e\u0301 \u0301\u0301 a\u0308\u0304 \u0e01\u0e34\u0e4d".encode(),  # combining marks
    "👩‍👩‍👧 🇫🇷 🏳️‍🌈 \U0001f600\ufe0f 1\ufe0f\u20e3".encode(),
    "中文字符 日本語のテキスト 한국어 \U00020000\U0002a700 \uf900".encode(),
    "Ελληνικά кириллица עברית العربية हिन्दी ไทย".encode(),
    "İstanbul ß ﬁ Ⅻ ½ ² ǅ ꭰ ΐ".encode(),  # lower() and NFD change lengths
    b"...", b"?!?!", b"--", "\u00ab\u00bb \u2014 \u3002 \u00bf".encode(), b"$%^&*()_+",
    b"[CLS]", b"[SEP]", b"[MASK]", b"[PAD]", b"[UNK]", b"[unused0]", b"##", b"##ing",
    b"a" * 200, b"b" * 201, "\u00e9".encode() * 250, b"x" * 1000, "中".encode() * 300,
    "e\u0301".encode() * 150,  # 300 characters, 150 after accent stripping
]

word = st.sampled_from(WORDS).map(str.encode)
piece = st.one_of(  # vocabulary words weigh double, so that most lines have tokens
    word, word,
    st.lists(st.sampled_from(WORDS), min_size=2, max_size=4).map(lambda w: "".join(w).encode()),
    st.sampled_from(NASTY_PIECES),
    st.binary(max_size=12),
    st.text(max_size=12).map(lambda text: text.encode("utf-8", "surrogatepass")),
)
line = st.lists(piece, max_size=12).flatmap(
    lambda pieces: st.sampled_from([b" ", b"", b"\t"]).map(lambda glue: glue.join(pieces)))
line_end = st.sampled_from([b"\n", b"\n", b"\n", b"\r\n", b"\r", b"\n\n", b"\n\n\n\n", b"\n \n"])
corpus = st.lists(st.tuples(line, line_end), min_size=1, max_size=40).map(
    lambda lines: b"".join(text + end for text, end in lines))

generator_settings = st.fixed_dictionaries({
    "max_seq_length": st.one_of(st.integers(5, 48), st.sampled_from([64, 128, 512])),
    "max_predictions_per_seq": st.integers(1, 24),
    "masked_lm_prob": st.one_of(st.floats(0.001, 1.0), st.sampled_from([0.15, 1.0])),
    "short_seq_prob": st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 0.1, 1.0])),
    "dupe_factor": st.integers(1, 3),
    "do_lower_case": st.booleans(),
    "do_whole_word_mask": st.booleans(),
    "random_seed": st.integers(-(2**63), 2**63 - 1),
})

FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])

# Fixed inputs every in-process run test tries first (regressions and known-nasty cases).
FIXED_CORPORA = [
    b"",
    b"\n\n\n\r\n \t\n\xc2\xa0\n",  # nothing but line breaks and whitespace
    b"\x00\x01\x02\x7f\xed\xa0\x80\xef\xbf\xbd\n\x1b\x1c\n",  # tokenizes to nothing
    b"hello\n",  # one document of one one-word sentence
    # Classic-Mac line ends: one line, and every "\r" dropped, as Google's reader does ("worldsecond"
    # is one word). Regression: "\r" was read as a space, so the records differed from Google's.
    b"hello world\rsecond line\rthird\r",
    b"c\xc3\r\xa9d one\rtwo\r\n\r\nthree\r\rfour\r\n \r\n\rfive\n",  # "\r" inside a UTF-8 sequence
    b"...\n?!\n\n" + "中".encode() * 300 + b"\r\n\r\n" + b"a" * 201 + b" b\n",
    "e\u0301\u0301 \U0001f600 İ ﬁ\n\n\x00un\xffaffable\n".encode(),
]


def read_examples(path):
    """(serialized bytes, {feature: np.ndarray}) of every record, read by TensorFlow's record
    reader (which checks the framing CRCs) and parsed by protobuf."""
    examples = []
    for raw in tf.compat.v1.io.tf_record_iterator(str(path)):
        parsed = tf.train.Example.FromString(raw)
        features = {}
        for name, feature in parsed.features.feature.items():
            kind = feature.WhichOneof("kind")
            assert kind == ("float_list" if name == "masked_lm_weights" else "int64_list"), name
            features[name] = np.array(getattr(feature, kind).value)
        examples.append((raw, features))
    return examples


def whole_word_groups(candidates, original):
    """Candidate positions grouped into words: a "##" piece joins the candidate before it."""
    groups = []
    for position in candidates:
        if groups and IS_CONTINUATION[original[position]]:
            groups[-1].append(position)
        else:
            groups.append([position])
    return groups


def check_record(raw, features, flags, documents=None):
    """Asserts DESIGN.md's feature layout and the invariants of one record; `documents` (each the
    ids of one document as a str of chr(id)s) also checks the segments come from the corpus."""
    max_seq_length = flags["max_seq_length"]
    max_predictions = flags["max_predictions_per_seq"]
    assert sorted(features) == sorted(FEATURES)
    assert raw == tf.train.Example.FromString(raw).SerializeToString(deterministic=True)
    for name in ("input_ids", "input_mask", "segment_ids"):
        assert len(features[name]) == max_seq_length, name
    for name in ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights"):
        assert len(features[name]) == max_predictions, name
    ids, mask, segments = (features[name] for name in ("input_ids", "input_mask", "segment_ids"))
    positions, labels = features["masked_lm_positions"], features["masked_lm_ids"]
    weights = features["masked_lm_weights"]
    [label] = features["next_sentence_labels"]
    assert label in (0, 1)

    # input_mask: 1s then 0s; at least [CLS] A [SEP] B [SEP] with A and B non-empty.
    length = int(mask.sum())
    assert set(mask.tolist()) <= {0, 1} and (mask[:length] == 1).all()
    assert 5 <= length <= max_seq_length
    assert ((ids >= 0) & (ids < VOCAB_SIZE)).all() and not ids[length:].any()

    # Masked positions: weights 1s then 0s; weighted ones increasing, inside the real tokens;
    # the padding entries all 0.
    assert set(weights.tolist()) <= {0.0, 1.0}
    num_masked = int(weights.sum())
    assert (weights[:num_masked] == 1.0).all()
    assert not positions[num_masked:].any() and not labels[num_masked:].any()
    masked = positions[:num_masked]
    assert (np.diff(masked) > 0).all() and ((masked > 0) & (masked < length)).all()
    assert ((labels[:num_masked] >= 0) & (labels[:num_masked] < VOCAB_SIZE)).all()

    # The text before masking: "[CLS] A [SEP] B [SEP]", no special token inside A or B.
    original = ids.copy()
    original[masked] = labels[:num_masked]
    original = original[:length].tolist()
    assert original[0] == CLS_ID and original[-1] == SEP_ID
    separators = [index for index, token in enumerate(original) if token == SEP_ID]
    assert len(separators) == 2, original
    first_separator = separators[0]
    assert 2 <= first_separator <= length - 3
    for token in original[1:-1]:
        assert token not in (PAD_ID, CLS_ID, MASK_ID)
    assert first_separator not in masked.tolist()
    assert (segments[:first_separator + 1] == 0).all()
    assert (segments[first_separator + 1:length] == 1).all() and not segments[length:].any()

    # How many are masked: Google's count, all of it without whole-word masking; with it, whole
    # words only.
    candidates = [p for p in range(1, length - 1) if p != first_separator]
    num_to_predict = min(max_predictions, max(1, round(length * flags["masked_lm_prob"])))
    if flags.get("do_whole_word_mask"):
        assert num_masked <= num_to_predict
        masked_set = set(masked.tolist())
        for group in whole_word_groups(candidates, original):
            assert masked_set.issuperset(group) or masked_set.isdisjoint(group), group
    else:
        assert num_masked == min(num_to_predict, len(candidates))

    if documents is not None:
        segment_a = "".join(map(chr, original[1:first_separator]))
        segment_b = "".join(map(chr, original[first_separator + 1:-1]))
        assert any(segment_a in document for document in documents)
        assert any(segment_b in document for document in documents)
        if label == 0:  # B follows A in A's document
            assert any(document.find(segment_b, document.find(segment_a) + len(segment_a)) >= 0
                       for document in documents if segment_a in document)


_reference_tokenizers = {}


def reference_tokenizer(do_lower_case):
    """google-research/bert's FullTokenizer (the bert-tensorflow package) on the shipped vocab."""
    if do_lower_case not in _reference_tokenizers:
        from absl import flags
        from bert import tokenization as reference_tokenization

        flags.FLAGS(["test"], known_only=True)  # its tokenizer reads --preserve_unused_tokens
        _reference_tokenizers[do_lower_case] = reference_tokenization.FullTokenizer(
            VOCAB, do_lower_case=do_lower_case)
    return _reference_tokenizers[do_lower_case]


def reference_documents(data, do_lower_case):
    """The corpus as google-research/bert reads it (its loop, on lines with every "\\r" and then
    invalid UTF-8 dropped): the ids of each non-empty document, each as a str of chr(id)s."""
    tokenizer = reference_tokenizer(do_lower_case)
    documents = [[]]
    for text in data.split(b"\n"):
        text = text.replace(b"\r", b"").decode("utf-8", "ignore").strip()
        if not text:
            documents.append([])
        documents[-1].extend(tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text)))
    return ["".join(map(chr, document)) for document in documents if document]


# Reading the 30,522-line vocab twice per run would take most of each example's time: the
# in-process runs share one load (the vocab is not what is fuzzed here).
_load_vocab_once = functools.cache(tokenization.load_vocab)


def run_library(data, flags, directory, lines_per_chunk=None, instances_per_batch=None):
    """`create_pretraining_data.run` on `data`; its summary and records, or the DataError.
    `lines_per_chunk` / `instances_per_batch` (optional) shrink the tokenizer's line chunks and
    the encoder's instance batches, so that tiny corpora cross their boundaries."""
    input_path = os.path.join(directory, "input.txt")
    output_path = os.path.join(directory, "output.tfrecord")
    with open(input_path, "wb") as handle:
        handle.write(data)
    maker = create_pretraining_data.InstanceMaker
    instance_batches = maker.instance_batches
    batch_size = instances_per_batch or create_pretraining_data._INSTANCES_PER_BATCH
    try:
        with contextlib.ExitStack() as patches:
            patches.enter_context(mock.patch.object(tokenization, "load_vocab", _load_vocab_once))
            if lines_per_chunk:
                patches.enter_context(mock.patch.object(
                    create_pretraining_data, "_LINES_PER_CHUNK", lines_per_chunk))
            patches.enter_context(mock.patch.object(
                maker, "instance_batches", lambda self, dupe_factor, progress=None:
                instance_batches(self, dupe_factor, batch_size, progress)))
            summary = create_pretraining_data.run(input_path, output_path, VOCAB, num_workers=1,
                                                  log=io.StringIO(), **flags)
    except create_pretraining_data.DataError as error:
        assert not os.path.exists(output_path)
        return error, None
    return summary, read_examples(output_path)


def with_fixed_corpora(do_whole_word_mask, **other_arguments):
    """Adds an @example for each of FIXED_CORPORA."""
    def decorate(test):
        for data in FIXED_CORPORA:
            test = example(data=data, flags={
                "max_seq_length": 8, "max_predictions_per_seq": 3, "masked_lm_prob": 0.15,
                "short_seq_prob": 0.1, "dupe_factor": 2, "do_lower_case": True,
                "do_whole_word_mask": do_whole_word_mask, "random_seed": 12345},
                **other_arguments)(test)
        return test
    return decorate


@settings(FUZZ, max_examples=300)
@with_fixed_corpora(do_whole_word_mask=True)
@given(data=corpus, flags=generator_settings)
def test_library_records_meet_invariants(data, flags):
    """Property: for any bytes and any flags in their ranges, `run` either raises DataError
    "no text in ..." exactly when the corpus has no token, or writes records that all parse and
    meet the invariants (lengths; masked positions increasing, inside the real tokens, never
    [CLS]/[SEP]; ids inside the vocabulary; weights, labels and segment ids 0/1; whole words
    masked whole), whose segments are spans of the corpus's documents, as many as the summary
    says."""
    documents = reference_documents(data, flags["do_lower_case"])
    with tempfile.TemporaryDirectory() as directory:
        summary, examples = run_library(data, flags, directory)
    if examples is None:
        assert str(summary).startswith("no text in "), summary
        assert not documents
        event("no text")
        return
    event("documents: " + ("1" if len(documents) == 1 else "2-5" if len(documents) <= 5 else ">5"))
    event("records: " + ("<10" if len(examples) < 10 else "<100" if len(examples) < 100
                         else ">=100"))
    assert summary["documents"] == len(documents)
    assert summary["tokens"] == sum(map(len, documents))
    assert summary["instances"] == len(examples) >= len(documents) * flags["dupe_factor"]
    assert summary["masked_positions"] == sum(int(f["masked_lm_weights"].sum())
                                              for _, f in examples)
    for raw, features in examples:
        check_record(raw, features, flags, documents)


def reference_records(data, flags, directory):
    """google-research/bert's create_training_instances and writer on `data` with invalid UTF-8
    dropped (its reader rejects invalid UTF-8; DESIGN.md: such bytes are dropped). Its reader
    drops every "\\r" byte first, so "\\xc3\\r\\xa9" is a valid "\\xe9": ours must too."""
    import random

    from bert import create_pretraining_data as reference

    input_path = os.path.join(directory, "reference_input.txt")
    output_path = os.path.join(directory, "reference.tfrecord")
    with open(input_path, "wb") as handle:
        handle.write(data.replace(b"\r", b"").decode("utf-8", "ignore").encode("utf-8"))
    tokenizer = reference_tokenizer(flags["do_lower_case"])
    instances = reference.create_training_instances(
        [input_path], tokenizer, flags["max_seq_length"], flags["dupe_factor"],
        flags["short_seq_prob"], flags["masked_lm_prob"], flags["max_predictions_per_seq"],
        random.Random(flags["random_seed"]))
    reference.write_instance_to_example_files(instances, tokenizer, flags["max_seq_length"],
                                              flags["max_predictions_per_seq"], [output_path])
    return read_examples(output_path)


@settings(FUZZ, max_examples=120)
@with_fixed_corpora(do_whole_word_mask=False, lines_per_chunk=2, instances_per_batch=3)
@given(data=corpus, flags=generator_settings.map(lambda f: {**f, "do_whole_word_mask": False}),
       lines_per_chunk=st.integers(1, 8), instances_per_batch=st.integers(1, 8))
def test_library_matches_google_reference(data, flags, lines_per_chunk, instances_per_batch):
    """Property: on any bytes, with any flags, `run` writes the records google-research/bert's
    generator writes for the same text with invalid UTF-8 dropped: every feature of every record,
    in order (whole-word masking aside: the packaged reference predates it), also when documents
    and instances straddle the boundaries of its tokenizing chunks and encoding batches."""
    with tempfile.TemporaryDirectory() as directory:
        _, ours = run_library(data, flags, directory, lines_per_chunk, instances_per_batch)
        theirs = reference_records(data, flags, directory)
    ours = [] if ours is None else ours
    event("records" if ours else "no text")
    assert len(ours) == len(theirs)
    for index, ((_, mine), (_, reference)) in enumerate(zip(ours, theirs)):
        for name in FEATURES:
            assert mine[name].tolist() == reference[name].tolist(), f"record {index}: {name}"


_tokenizers = {}


@settings(FUZZ, max_examples=1000)
@example(text=b"\xed\xa0\x80\x00 a\xcc\x81 \xe2\x80\xa8x\xc2\x85y", do_lower_case=True)
@given(text=st.lists(piece, max_size=16).map(b" ".join), do_lower_case=st.booleans())
def test_tokenizer_matches_google_reference(text, do_lower_case):
    """Property: on any text (bytes with invalid UTF-8 dropped, or str), the memoising fast path
    `tokenize_to_ids` and `tokenize` give google-research/bert's FullTokenizer's tokens, and ids
    inside the vocabulary, also on a second (cached) call."""
    if do_lower_case not in _tokenizers:
        _tokenizers[do_lower_case] = tokenization.FullTokenizer(VOCAB, do_lower_case)
    ours = _tokenizers[do_lower_case]
    reference = reference_tokenizer(do_lower_case)
    decoded = text.decode("utf-8", "ignore")
    expected = reference.tokenize(decoded)
    for given_text in (text, decoded):
        assert ours.tokenize(given_text) == expected
        for _ in range(2):
            ids = ours.tokenize_to_ids(given_text)
            assert ids == reference.convert_tokens_to_ids(expected)
    assert all(0 <= token < VOCAB_SIZE for token in ids)


# Flags out of the ranges the generator accepts: one of these, now and then, on valid flags.
OUT_OF_RANGE = [{"max_seq_length": 4}, {"max_seq_length": -2}, {"max_predictions_per_seq": 0},
                {"masked_lm_prob": 0.0}, {"masked_lm_prob": 1.5}, {"masked_lm_prob": float("nan")},
                {"short_seq_prob": -0.5}, {"short_seq_prob": 2.0}, {"dupe_factor": 0},
                {"num_workers": 0}]
cli_settings = st.tuples(
    generator_settings, st.integers(1, 2),
    st.one_of(st.just({}), st.just({}), st.just({}), st.sampled_from(OUT_OF_RANGE)),
).map(lambda parts: {**parts[0], "num_workers": parts[1], **parts[2]})


def settings_are_valid(flags):
    return (flags["max_seq_length"] >= 5 and flags["max_predictions_per_seq"] >= 1
            and 0.0 < flags["masked_lm_prob"] <= 1.0 and 0.0 <= flags["short_seq_prob"] <= 1.0
            and flags["dupe_factor"] >= 1 and flags["num_workers"] >= 1)


@settings(FUZZ, max_examples=20)
@example(data=FIXED_CORPORA[2], flags={
    "max_seq_length": 5, "max_predictions_per_seq": 1, "masked_lm_prob": 1.0,
    "short_seq_prob": 1.0, "dupe_factor": 1, "do_lower_case": False, "do_whole_word_mask": True,
    "random_seed": 0, "num_workers": 2}, splits=[1, 5], num_outputs=3)
@example(data=FIXED_CORPORA[5] + FIXED_CORPORA[6], flags={
    "max_seq_length": 9, "max_predictions_per_seq": 20, "masked_lm_prob": 1.0,
    "short_seq_prob": 0.5, "dupe_factor": 3, "do_lower_case": True, "do_whole_word_mask": True,
    "random_seed": -1, "num_workers": 2}, splits=[3, 40, 41], num_outputs=2)
@given(data=corpus, flags=cli_settings, splits=st.lists(st.integers(0, 2000), max_size=2),
       num_outputs=st.integers(1, 3))
def test_cli_exits_cleanly_with_valid_records(data, flags, splits, num_outputs):
    """Property: the CLI on any bytes (split over several input files at arbitrary byte offsets,
    even inside a UTF-8 sequence), any flags, 1-3 output files and 1-2 workers either exits 0
    with every record of every output parsing and meeting the invariants, as many as the summary
    says, or exits 2 with one "error:" line, no traceback and no output file; it fails exactly
    when a flag is out of range or the corpus has no token."""
    with tempfile.TemporaryDirectory() as directory:
        cuts = [0, *sorted(min(cut, len(data)) for cut in splits), len(data)]
        inputs, parts = [], [data[start:end] for start, end in itertools.pairwise(cuts)]
        for index, part in enumerate(parts):
            inputs.append(os.path.join(directory, f"input{index}.txt"))
            with open(inputs[-1], "wb") as handle:
                handle.write(part)
        outputs = [os.path.join(directory, f"out{index}.tfrecord") for index in range(num_outputs)]
        args = ["create_pretraining_data.py", f"--input_file={','.join(inputs)}",
                f"--output_file={','.join(outputs)}", f"--vocab_file={VOCAB}"]
        for name, value in flags.items():
            args.append(f"--{name}={value}" if not isinstance(value, bool)
                        else f"--{'' if value else 'no'}{name}")
        result = run_cli(args, check=False, timeout=120)
        event(f"exit {result.returncode}")
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        has_text = any(reference_documents(part, flags["do_lower_case"]) for part in parts)
        if result.returncode != 0:
            assert result.returncode == 2
            errors = [text for text in result.stderr.splitlines() if "error:" in text]
            assert len(errors) == 1, result.stderr
            assert not any(os.path.exists(path) for path in outputs)
            assert not settings_are_valid(flags) or not has_text, result.stderr
            return
        assert settings_are_valid(flags) and has_text
        records = [record for path in outputs for record in read_examples(path)]
    summary = dict(text.split(":", 1) for text in result.stdout.splitlines() if ":" in text)
    assert int(summary["instances"].split()[0].replace(",", "")) == len(records) >= 1
    for raw, features in records:
        check_record(raw, features, flags)

