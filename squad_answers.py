"""SQuAD answers from start/end logits, output for output identical to google-research/bert's
`run_squad.py` (`write_predictions`, `get_final_text`).

For each example, the `n_best_size` best start and end positions of every window pair up into
candidate spans; a span is kept when both ends lie in the context, the window has the start
token's maximum context, and it is not reversed nor longer than `max_answer_length`. Candidates
are ranked by start + end logit (a stable sort: ties stay in window, start rank, end rank
order), each is projected back onto the original words (`get_final_text`), repeated texts are
dropped, and the first `n_best_size` texts get softmax probabilities. With SQuAD 2.0 the null
answer (position 0 of the window where it scores lowest) competes too, and "" is predicted when
its score beats the best non-null one by more than `null_score_diff_threshold`.

Differences from Google's code: the n-best positions come from numpy's stable argsort (same
order); NaN or +inf logits and features without a result are one-line errors (-inf marks
a padding position that run_squad.py did not compute); and where Google's
SQuAD 2.0 code crashes (an n-best with no non-null answer) an "empty" answer with zero logits is
put first, as Hugging Face's port does.
"""

import functools
import json
import math
import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from absl import logging

import tokenization

# Google's placeholder answer when no span survives the filters.
NONCE = "empty"


class RawResult(NamedTuple):
    """The model's output for one feature: a start and an end logit per token position."""

    unique_id: int
    start_logits: Sequence[float]
    end_logits: Sequence[float]


class _Candidate(NamedTuple):
    feature_index: int
    start: int
    end: int
    start_logit: float
    end_logit: float


class _Answer(NamedTuple):
    text: str
    start_logit: float
    end_logit: float


def _logits(result, name):
    """`result.<name>` as a float64 array; a one-line error when a logit is NaN or +inf."""
    values = np.asarray(getattr(result, name), dtype=np.float64)
    if np.isnan(values).any() or np.isposinf(values).any():
        raise ValueError(f"{name} of the result with unique_id {result.unique_id} hold NaN or "
                         "+inf")
    return values


def _best_indexes(logits, n_best_size):
    """Positions of the `n_best_size` largest logits, largest first, ties in position order
    (what Google's stable `sorted(..., reverse=True)` gives)."""
    return np.argsort(-logits, kind="stable")[:n_best_size].tolist()


def _candidates(feature, start_logits, end_logits, n_best_size, max_answer_length):
    """The spans of one window that Google keeps, as (start, end), in its loop order."""
    num_tokens = len(feature.tokens)
    in_context = feature.token_to_orig_map
    starts = [i for i in _best_indexes(start_logits, n_best_size)
              if i < num_tokens and i in in_context and feature.token_is_max_context.get(i, False)]
    ends = [i for i in _best_indexes(end_logits, n_best_size)
            if i < num_tokens and i in in_context]
    return [(s, e) for s in starts for e in ends if s <= e < s + max_answer_length]


def _softmax(scores):
    """Google's softmax; the sum is sequential (the built-in sum compensates from Python 3.12)."""
    top = max(scores)
    exps = [math.exp(score - top) for score in scores]
    total = 0.0
    for x in exps:
        total += x
    return [x / total for x in exps]


@functools.lru_cache(maxsize=2)
def _basic_tokenizer(do_lower_case):
    return tokenization.BasicTokenizer(do_lower_case=do_lower_case)


def get_final_text(pred_text, orig_text, do_lower_case, verbose=False):
    """The part of `orig_text` that `pred_text` (its tokenized, normalized form) spells, found by
    a character alignment; `orig_text` itself when the alignment fails (Google's heuristic).
    E.g. ("steve smith", "Steve Smith's") -> "Steve Smith"."""
    def failed(message, *args):
        if verbose:
            logging.info(message, *args)
        return orig_text

    tok_text = " ".join(_basic_tokenizer(do_lower_case).tokenize(orig_text))
    start = tok_text.find(pred_text)
    if start == -1:
        return failed("Unable to find text: '%s' in '%s'", pred_text, orig_text)
    end = start + len(pred_text) - 1
    # Characters other than " ", and where each stands in its text.
    orig_positions = [i for i, c in enumerate(orig_text) if c != " "]
    tok_positions = [i for i, c in enumerate(tok_text) if c != " "]
    if len(orig_positions) != len(tok_positions):
        return failed("Length not equal after stripping spaces: '%s' vs '%s'",
                      orig_text.replace(" ", ""), tok_text.replace(" ", ""))
    # Same length: the i-th non-space characters of the two texts are taken to correspond.
    tok_to_ns = {position: i for i, position in enumerate(tok_positions)}
    if start not in tok_to_ns:
        return failed("Couldn't map start position")
    if end not in tok_to_ns:
        return failed("Couldn't map end position")
    return orig_text[orig_positions[tok_to_ns[start]]:orig_positions[tok_to_ns[end]] + 1]


def _span_text(example, feature, start, end, do_lower_case):
    """The answer text of window tokens start..end, as Google de-tokenizes and projects it."""
    tok_text = " ".join(feature.tokens[start:end + 1]).replace(" ##", "").replace("##", "")
    tok_text = " ".join(tok_text.split())
    first, last = feature.token_to_orig_map[start], feature.token_to_orig_map[end]
    orig_text = " ".join(example.doc_tokens[first:last + 1])
    return get_final_text(tok_text, orig_text, do_lower_case)


def compute_predictions(examples, features, results, n_best_size, max_answer_length,
                        do_lower_case, version_2_with_negative=False,
                        null_score_diff_threshold=0.0):
    """Google's `write_predictions` without the writing: (predictions, nbest, null_odds), dicts
    keyed by qas_id in example order. null_odds (null score minus the best non-null score) is
    filled only with `version_2_with_negative`."""
    features_of = {}
    for feature in features:
        features_of.setdefault(feature.example_index, []).append(feature)
    result_of = {result.unique_id: result for result in results}

    predictions, all_nbest, null_odds = {}, {}, {}
    for example_index, example in enumerate(examples):
        windows = features_of.get(example_index, [])
        candidates = []
        score_null, null_feature_index, null_start_logit, null_end_logit = 1000000, 0, 0, 0
        for feature_index, feature in enumerate(windows):
            result = result_of.get(feature.unique_id)
            if result is None:
                raise ValueError(f"no result for the feature with unique_id {feature.unique_id} "
                                 f"(question {example.qas_id})")
            start_logits = _logits(result, "start_logits")
            end_logits = _logits(result, "end_logits")
            start_values, end_values = start_logits.tolist(), end_logits.tolist()
            if version_2_with_negative:
                feature_null_score = start_values[0] + end_values[0]
                if feature_null_score < score_null:
                    score_null, null_feature_index = feature_null_score, feature_index
                    null_start_logit, null_end_logit = start_values[0], end_values[0]
            candidates += [_Candidate(feature_index, s, e, start_values[s], end_values[e])
                           for s, e in _candidates(feature, start_logits, end_logits,
                                                   n_best_size, max_answer_length)]
        if version_2_with_negative:
            candidates.append(_Candidate(null_feature_index, 0, 0, null_start_logit,
                                         null_end_logit))
        candidates.sort(key=lambda c: c.start_logit + c.end_logit, reverse=True)

        nbest, seen = [], set()
        for candidate in candidates:
            if len(nbest) >= n_best_size:
                break
            if candidate.start > 0:
                text = _span_text(example, windows[candidate.feature_index], candidate.start,
                                  candidate.end, do_lower_case)
                if text in seen:
                    continue
            else:
                text = ""
            seen.add(text)
            nbest.append(_Answer(text, candidate.start_logit, candidate.end_logit))
        if version_2_with_negative:
            if "" not in seen:
                nbest.append(_Answer("", null_start_logit, null_end_logit))
            if not any(answer.text for answer in nbest):
                nbest.insert(0, _Answer(NONCE, 0.0, 0.0))
        if not nbest:
            nbest.append(_Answer(NONCE, 0.0, 0.0))

        probabilities = _softmax([answer.start_logit + answer.end_logit for answer in nbest])
        all_nbest[example.qas_id] = [
            {"text": answer.text, "probability": probability,
             "start_logit": answer.start_logit, "end_logit": answer.end_logit}
            for answer, probability in zip(nbest, probabilities, strict=True)]
        if version_2_with_negative:
            best = next(answer for answer in nbest if answer.text)
            score_diff = score_null - best.start_logit - best.end_logit
            null_odds[example.qas_id] = score_diff
            predictions[example.qas_id] = "" if score_diff > null_score_diff_threshold else best.text
        else:
            predictions[example.qas_id] = nbest[0].text
    return predictions, all_nbest, null_odds


def _replace_file(path, text):
    """Writes `text` to `path` through a temporary file beside it, so `path` is never partial."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_predictions(output_dir, predictions, nbest, null_odds=None):
    """Writes predictions.json, nbest_predictions.json and, when `null_odds` is given,
    null_odds.json into `output_dir` as Google does; returns their paths by file name."""
    os.makedirs(output_dir, exist_ok=True)
    contents = {"predictions.json": predictions, "nbest_predictions.json": nbest}
    if null_odds is not None:
        contents["null_odds.json"] = null_odds
    paths = {}
    for name, obj in contents.items():
        paths[name] = os.path.join(output_dir, name)
        _replace_file(paths[name], json.dumps(obj, indent=4) + "\n")
    return paths
