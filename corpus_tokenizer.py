"""Tokenization of raw corpus lines, the reading side of create_pretraining_data's workers.

Kept apart from create_pretraining_data.py so that a worker process imports only this module and
tokenization.py (no NumPy, no TensorFlow) and starts in a few tens of milliseconds.
"""

import array

import tokenization

# A line's entry in the per-line lengths: a blank line ends the current document.
DOCUMENT_BREAK = -1

_worker_tokenizer = None


def init_worker(vocab_file, do_lower_case):
    """Loads the tokenizer `tokenize_lines` uses: once per worker process (the pool's
    initializer), or in the main process when it tokenizes itself."""
    global _worker_tokenizer
    _worker_tokenizer = tokenization.FullTokenizer(vocab_file, do_lower_case)


def tokenize_lines(lines):
    """Raw byte lines -> (WordPiece ids, per-line id count or DOCUMENT_BREAK) as int arrays.

    Lines are read as google-research/bert reads its input: every "\\r" byte is dropped (its
    reader, TensorFlow's ReadLine, drops them anywhere in a line, so "a\\rb" is one word "ab"),
    then the line is decoded as UTF-8 with invalid bytes dropped and stripped; a line that is
    empty after that is a document break. Uses the tokenizer `init_worker` loaded.
    """
    tokenizer = _worker_tokenizer
    ids = array.array("i")
    lengths = array.array("q")
    for raw in lines:
        line = tokenization.convert_to_unicode(raw.replace(b"\r", b"")).strip()
        if not line:
            lengths.append(DOCUMENT_BREAK)
            continue
        line_ids = tokenizer.tokenize_to_ids(line)
        lengths.append(len(line_ids))
        ids.extend(line_ids)
    return ids, lengths
