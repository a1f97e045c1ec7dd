"""SQuAD pre-processing, feature for feature identical to google-research/bert's `run_squad.py`.

SQuAD JSON -> `SquadExample`s (the context split on whitespace, with each character's word
index) -> `InputFeatures`: WordPiece tokens of the question (cut to `max_query_length`) and of a
window of the context (`max_seq_length`, windows `doc_stride` apart), `[CLS] question [SEP]
window [SEP]`, the map from window tokens to context words, and for each token whether this
window is the one where it has the most context. In training mode the answer's word span is
narrowed to the WordPiece span that spells the answer ("answer-span improvement") and placed
in each window (0, 0 when the window does not hold it).

Training features go to a TFRecord with Google's feature names (`unique_ids`, `input_ids`,
`input_mask`, `segment_ids`, `start_positions`, `end_positions`, `is_impossible`).

Differences from Google's code that do not change any output: each paragraph is WordPiece-
tokenized once (Google re-tokenizes it for every question), and the records are written with
deterministic serialization.
"""

import json
import os
from typing import NamedTuple

from absl import logging

import tokenization

# The id of the first feature, as Google numbers them.
FIRST_UNIQUE_ID = 1_000_000_000


class SquadError(ValueError):
    """A SQuAD file that cannot be used; the message names the file and the fix."""


class SquadExample(NamedTuple):
    """One question on one paragraph; positions are word indexes into `doc_tokens` (training),
    -1 for an impossible question (SQuAD 2.0), None in prediction mode."""

    qas_id: str
    question_text: str
    doc_tokens: list
    orig_answer_text: str | None = None
    start_position: int | None = None
    end_position: int | None = None
    is_impossible: bool = False


class InputFeatures(NamedTuple):
    """One window of one example, Google's fields; the maps are keyed by token position."""

    unique_id: int
    example_index: int
    doc_span_index: int
    tokens: list
    token_to_orig_map: dict
    token_is_max_context: dict
    input_ids: list
    input_mask: list
    segment_ids: list
    start_position: int | None = None
    end_position: int | None = None
    is_impossible: bool = False


class DocSpan(NamedTuple):
    start: int
    length: int


def _is_whitespace(char):
    return char in " \t\r\n" or ord(char) == 0x202F


def split_context(text):
    """(whitespace-separated words, the word index of every character) of a context."""
    words, char_to_word = [], []
    previous_is_space = True
    for char in text:
        if _is_whitespace(char):
            previous_is_space = True
        else:
            if previous_is_space:
                words.append(char)
            else:
                words[-1] += char
            previous_is_space = False
        char_to_word.append(len(words) - 1)
    return words, char_to_word


def load_squad(path):
    """The "data" list of a SQuAD JSON file; SquadError for a file that is not SQuAD."""
    try:
        with open(path, encoding="utf-8") as f:
            dataset = json.load(f)
    except FileNotFoundError:
        raise SquadError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SquadError(f"{path}: not a SQuAD JSON file ({error}); pass a file such as "
                         "data/squad/dev-v1.1.json") from None
    data = dataset.get("data") if isinstance(dataset, dict) else None
    if not isinstance(data, list):
        raise SquadError(f"{path}: not a SQuAD JSON file (no \"data\" list of articles); pass a "
                         "file such as data/squad/dev-v1.1.json")
    return data


def read_squad_examples(path, is_training, version_2_with_negative=False, articles=None):
    """The examples of SQuAD file `path`, in file order, and the number of training questions
    skipped because their answer text is not in the context (Google skips them too, with a
    warning). `articles`: the file's "data" list when the caller has loaded it already
    (`load_squad`), so that it is read once."""
    examples, skipped = [], 0
    try:
        for article in load_squad(path) if articles is None else articles:
            for paragraph in article["paragraphs"]:
                words, char_to_word = split_context(paragraph["context"])
                for qa in paragraph["qas"]:
                    example = _example(qa, words, char_to_word, is_training,
                                       version_2_with_negative, path)
                    if example is None:
                        skipped += 1
                    else:
                        examples.append(example)
    except (KeyError, TypeError, IndexError) as error:
        raise SquadError(f"{path}: not a SQuAD JSON file (an article, paragraph or question "
                         f"lacks {error}); each paragraph needs \"context\" and \"qas\" with "
                         "\"id\", \"question\" and \"answers\"") from None
    return examples, skipped


def _example(qa, words, char_to_word, is_training, version_2_with_negative, path):
    """The SquadExample of question `qa`, or None when its answer cannot be found."""
    if not is_training:
        return SquadExample(qa["id"], qa["question"], words)
    is_impossible = bool(qa["is_impossible"]) if version_2_with_negative else False
    if is_impossible:
        return SquadExample(qa["id"], qa["question"], words, "", -1, -1, True)
    if len(qa["answers"]) != 1:
        raise SquadError(f"{path}: training question {qa['id']} has {len(qa['answers'])} "
                         "answers; a training file has exactly one per question")
    answer = qa["answers"][0]
    text, offset = answer["text"], answer["answer_start"]
    start, end = char_to_word[offset], char_to_word[offset + len(text) - 1]
    found = " ".join(words[start:end + 1])
    wanted = " ".join(tokenization.whitespace_tokenize(text))
    if found.find(wanted) == -1:
        logging.warning("could not find answer of %s: '%s' vs. '%s'", qa["id"], found, wanted)
        return None
    return SquadExample(qa["id"], qa["question"], words, text, start, end, False)


class _ContextTokens:
    """WordPiece tokens of a paragraph's words, computed once per paragraph."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self._words = None
        self._word_pieces = {}

    def of(self, words):
        """(tokens, token -> word index, word -> first token index) of `words`."""
        if words is not self._words:
            tokens, token_to_word, word_to_token = [], [], []
            for index, word in enumerate(words):
                pieces = self._word_pieces.get(word)
                if pieces is None:
                    pieces = self._word_pieces[word] = self._tokenizer.tokenize(word)
                word_to_token.append(len(tokens))
                token_to_word.extend([index] * len(pieces))
                tokens.extend(pieces)
            self._words, self._result = words, (tokens, token_to_word, word_to_token)
        return self._result


def doc_spans(num_tokens, max_tokens, doc_stride):
    """The windows over `num_tokens` context tokens: at most `max_tokens` long, starting
    `doc_stride` apart, the last one reaching the end."""
    spans, start = [], 0
    while start < num_tokens:
        length = min(num_tokens - start, max_tokens)
        spans.append(DocSpan(start, length))
        if start + length == num_tokens:
            break
        start += min(length, doc_stride)
    return spans


def max_context_span(spans, position):
    """Index of the span in which token `position` has the most context: the largest
    min(left, right) + 0.01 x span length, the first on ties."""
    best_score = best_index = None
    for index, span in enumerate(spans):
        end = span.start + span.length - 1
        if span.start <= position <= end:
            score = min(position - span.start, end - position) + 0.01 * span.length
            if best_score is None or score > best_score:
                best_score, best_index = score, index
    return best_index


def improve_answer_span(doc_tokens, start, end, tokenizer, orig_answer_text):
    """The narrowest token span within [start, end] that spells the tokenized answer, else the
    span itself (e.g. "(1895-1943)." -> "1895")."""
    answer = " ".join(tokenizer.tokenize(orig_answer_text))
    for new_start in range(start, end + 1):
        for new_end in range(end, new_start - 1, -1):
            if " ".join(doc_tokens[new_start:new_end + 1]) == answer:
                return new_start, new_end
    return start, end


def convert_examples_to_features(examples, tokenizer, max_seq_length, doc_stride,
                                 max_query_length, is_training):
    """Yields the `InputFeatures` of every window of every example, numbered from
    FIRST_UNIQUE_ID, exactly as Google's `convert_examples_to_features`."""
    unique_id = FIRST_UNIQUE_ID
    context = _ContextTokens(tokenizer)
    for example_index, example in enumerate(examples):
        query = tokenizer.tokenize(example.question_text)[:max_query_length]
        doc_tokens, token_to_word, word_to_token = context.of(example.doc_tokens)
        answer = None
        if is_training and example.is_impossible:
            answer = (-1, -1)
        elif is_training:
            start = word_to_token[example.start_position]
            if example.end_position < len(example.doc_tokens) - 1:
                end = word_to_token[example.end_position + 1] - 1
            else:
                end = len(doc_tokens) - 1
            answer = improve_answer_span(doc_tokens, start, end, tokenizer,
                                         example.orig_answer_text)
        spans = doc_spans(len(doc_tokens), max_seq_length - len(query) - 3, doc_stride)
        best_span = {}  # token -> its max-context span, for tokens in more than one span
        for span_index, span in enumerate(spans):
            tokens = ["[CLS]", *query, "[SEP]"]
            offset = len(tokens)
            token_to_orig_map, token_is_max_context = {}, {}
            for i in range(span.length):
                position = span.start + i
                token_to_orig_map[offset + i] = token_to_word[position]
                if position not in best_span:
                    best_span[position] = max_context_span(spans, position)
                token_is_max_context[offset + i] = best_span[position] == span_index
            tokens += doc_tokens[span.start:span.start + span.length]
            tokens.append("[SEP]")
            padding = [0] * (max_seq_length - len(tokens))
            input_ids = tokenizer.convert_tokens_to_ids(tokens) + padding
            input_mask = [1] * len(tokens) + padding
            segment_ids = [0] * offset + [1] * (span.length + 1) + padding
            start_position = end_position = None
            if is_training:
                start_position = end_position = 0
                span_end = span.start + span.length - 1
                if not example.is_impossible and span.start <= answer[0] and answer[1] <= span_end:
                    start_position = answer[0] - span.start + offset
                    end_position = answer[1] - span.start + offset
            yield InputFeatures(unique_id, example_index, span_index, tokens, token_to_orig_map,
                                token_is_max_context, input_ids, input_mask, segment_ids,
                                start_position, end_position, example.is_impossible)
            unique_id += 1


def check_lengths(max_seq_length, max_query_length, doc_stride):
    """ValueError naming the fix when the lengths leave no room for the context."""
    if max_seq_length <= max_query_length + 3:
        raise ValueError(f"--max_seq_length={max_seq_length} must be greater than "
                         f"--max_query_length={max_query_length} + 3 ([CLS] and two [SEP])")
    if doc_stride < 1:
        raise ValueError(f"--doc_stride={doc_stride} must be >= 1")


def feature_record(feature, is_training):
    """The serialized tf.train.Example of a feature (Google's FeatureWriter features)."""
    import tensorflow as tf  # only the writers need TensorFlow

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

    features = {"unique_ids": ints([feature.unique_id]), "input_ids": ints(feature.input_ids),
                "input_mask": ints(feature.input_mask), "segment_ids": ints(feature.segment_ids)}
    if is_training:
        features["start_positions"] = ints([feature.start_position])
        features["end_positions"] = ints([feature.end_position])
        features["is_impossible"] = ints([int(feature.is_impossible)])
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString(deterministic=True)


def write_features(features, path, is_training):
    """Writes `features` to TFRecord `path` (atomically: a temp file renamed at the end);
    returns them as a list."""
    import tensorflow as tf

    written = []
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with tf.io.TFRecordWriter(temporary) as writer:
            for feature in features:
                writer.write(feature_record(feature, is_training))
                written.append(feature)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return written


def feature_spec(max_seq_length, is_training):
    """tf.io.parse_example spec of the records `write_features` writes."""
    import tensorflow as tf

    spec = {"unique_ids": tf.io.FixedLenFeature([], tf.int64),
            "input_ids": tf.io.FixedLenFeature([max_seq_length], tf.int64),
            "input_mask": tf.io.FixedLenFeature([max_seq_length], tf.int64),
            "segment_ids": tf.io.FixedLenFeature([max_seq_length], tf.int64)}
    if is_training:
        spec["start_positions"] = tf.io.FixedLenFeature([], tf.int64)
        spec["end_positions"] = tf.io.FixedLenFeature([], tf.int64)
    return spec
