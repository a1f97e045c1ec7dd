"""BERT tokenization, token for token identical to google-research/bert's `tokenization.py`.

`FullTokenizer` = `BasicTokenizer` (clean-up, CJK split, lower-casing and accent stripping,
punctuation split) followed by `WordpieceTokenizer` (greedy longest-match-first with `##`
continuations). The public API is Google's; `FullTokenizer.tokenize_to_ids` is the fast path the
data generator uses: every step after the character-level clean-up acts on one whitespace-separated
word at a time, so the result for each distinct word is computed once and memoised.

This module does not import TensorFlow, so tokenizer worker processes start quickly.
"""

import collections
import re
import unicodedata

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_UNUSED_TOKEN = re.compile(r"^\[unused\d+\]$")
# Distinct words whose ids FullTokenizer.tokenize_to_ids keeps (bounds its memory).
_MAX_CACHED_WORDS = 1_000_000

# Code point blocks Google treats as CJK ideographs (each becomes a token of its own).
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def convert_to_unicode(text):
    """Returns `text` as str; bytes are decoded as UTF-8 with invalid bytes dropped."""
    if isinstance(text, str):
        return text
    if isinstance(text, bytes):
        return text.decode("utf-8", "ignore")
    raise ValueError(f"Unsupported string type: {type(text)}")


def load_vocab(vocab_file):
    """Loads a vocabulary file (one token per line) into an ordered dict token -> id.

    Like Google's loader, every line takes the next id, and a repeated token keeps the id of its
    last occurrence.
    """
    vocab = collections.OrderedDict()
    with open(vocab_file, "rb") as reader:
        for index, line in enumerate(reader):
            vocab[convert_to_unicode(line).strip()] = index
    return vocab


def check_vocab(vocab, vocab_file):
    """Raises ValueError naming the missing special tokens if `vocab` lacks any BERT needs."""
    missing = [token for token in SPECIAL_TOKENS[1:] if token not in vocab]
    if missing:
        raise ValueError(
            f"vocab file {vocab_file} has no {', '.join(missing)}: use a BERT WordPiece vocab "
            "such as data/vocab.txt (one token per line)"
        )


def convert_by_vocab(vocab, items):
    """Maps each item through `vocab` (a dict)."""
    return [vocab[item] for item in items]


def whitespace_tokenize(text):
    """Strips `text` and splits it on whitespace."""
    return text.strip().split()


class FullTokenizer:
    """End-to-end tokenization: basic tokenization followed by WordPiece."""

    def __init__(self, vocab_file, do_lower_case=True, preserve_unused_tokens=False):
        self.vocab = load_vocab(vocab_file)
        self.inv_vocab = {index: token for token, index in self.vocab.items()}
        self.basic_tokenizer = BasicTokenizer(do_lower_case, self.vocab, preserve_unused_tokens)
        self.wordpiece_tokenizer = WordpieceTokenizer(vocab=self.vocab)
        self._word_ids = {}

    def tokenize(self, text):
        """Returns the WordPiece tokens of `text`."""
        return [
            sub_token
            for token in self.basic_tokenizer.tokenize(text)
            for sub_token in self._wordpieces(token)
        ]

    def _wordpieces(self, token):
        if self.basic_tokenizer.is_preserved(token):
            return [token]
        return self.wordpiece_tokenizer.tokenize_word(token)

    def tokenize_to_ids(self, text):
        """Returns the ids of `tokenize(text)`, computing each distinct word only once."""
        ids = []
        cache = self._word_ids
        for word in self.basic_tokenizer.split_words(text):
            word_ids = cache.get(word)
            if word_ids is None:
                word_ids = [
                    self.vocab[piece]
                    for token in self.basic_tokenizer.tokenize_word(word)
                    for piece in self._wordpieces(token)
                ]
                if len(cache) >= _MAX_CACHED_WORDS:
                    cache.clear()
                cache[word] = word_ids
            ids.extend(word_ids)
        return ids

    def convert_tokens_to_ids(self, tokens):
        return convert_by_vocab(self.vocab, tokens)

    def convert_ids_to_tokens(self, ids):
        return convert_by_vocab(self.inv_vocab, ids)


class BasicTokenizer:
    """Clean-up, CJK splitting, optional lower-casing with accent stripping, punctuation split.

    With `preserve_unused_tokens` (Google's flag of that name), a word that is an `[unusedN]`
    token of `vocab` is kept whole.
    """

    def __init__(self, do_lower_case=True, vocab=(), preserve_unused_tokens=False):
        self.do_lower_case = do_lower_case
        self.vocab = vocab
        self.preserve_unused_tokens = preserve_unused_tokens

    def is_preserved(self, token):
        """Whether `token` is kept out of lower-casing, punctuation and WordPiece splitting."""
        return (self.preserve_unused_tokens and token in self.vocab
                and _UNUSED_TOKEN.match(token) is not None)

    def tokenize(self, text):
        """Returns the basic tokens of `text`."""
        return [token for word in self.split_words(text) for token in self.tokenize_word(word)]

    def split_words(self, text):
        """Character-level clean-up and CJK spacing, then a whitespace split into words."""
        text = convert_to_unicode(text)
        if not text.isascii():
            text = _tokenize_chinese_chars(_clean_text(text))
        elif not text.isprintable():
            text = _clean_text(text)
        return text.split()

    def tokenize_word(self, word):
        """Lower-cases and strips accents (if asked) and splits punctuation off one word."""
        if self.is_preserved(word):
            return [word]
        if self.do_lower_case:
            word = word.lower()
            if not word.isascii():
                word = _strip_accents(word)
        if word.isalnum():
            return [word]
        return [token for piece in _split_on_punctuation(word) for token in piece.split()]


class WordpieceTokenizer:
    """Greedy longest-match-first WordPiece tokenization against a vocabulary."""

    def __init__(self, vocab, unk_token="[UNK]", max_input_chars_per_word=200):
        self.vocab = vocab
        self.unk_token = unk_token
        self.max_input_chars_per_word = max_input_chars_per_word

    def tokenize(self, text):
        """Splits each whitespace-separated token of `text` into WordPiece tokens.

        For example "unaffable" -> ["un", "##aff", "##able"]. A word longer than
        `max_input_chars_per_word` (200, as Google's) or with no match becomes the unknown token.
        """
        return [
            piece
            for token in whitespace_tokenize(convert_to_unicode(text))
            for piece in self.tokenize_word(token)
        ]

    def tokenize_word(self, word):
        """WordPiece tokens of a single word (no whitespace)."""
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_token]
        pieces = []
        start = 0
        while start < len(word):
            end = len(word)
            prefix = "##" if start > 0 else ""
            while end > start and prefix + word[start:end] not in self.vocab:
                end -= 1
            if end == start:
                return [self.unk_token]
            pieces.append(prefix + word[start:end])
            start = end
        return pieces


def _clean_text(text):
    """Drops NUL, U+FFFD and control characters; maps whitespace characters to a space."""
    output = []
    for char in text:
        cp = ord(char)
        if cp == 0 or cp == 0xFFFD or _is_control(char):
            continue
        output.append(" " if _is_whitespace(char) else char)
    return "".join(output)


def _tokenize_chinese_chars(text):
    """Surrounds every CJK ideograph with spaces."""
    output = []
    for char in text:
        if _is_chinese_char(ord(char)):
            output.extend((" ", char, " "))
        else:
            output.append(char)
    return "".join(output)


def _strip_accents(text):
    """Removes combining marks after canonical decomposition (NFD)."""
    return "".join(
        char for char in unicodedata.normalize("NFD", text) if unicodedata.category(char) != "Mn"
    )


def _split_on_punctuation(text):
    """Splits `text` so that every punctuation character is a piece of its own."""
    pieces = []
    start_new_piece = True
    for char in text:
        if _is_punctuation(char):
            pieces.append(char)
            start_new_piece = True
        else:
            if start_new_piece:
                pieces.append("")
                start_new_piece = False
            pieces[-1] += char
    return pieces


def _is_chinese_char(cp):
    return any(low <= cp <= high for low, high in _CJK_RANGES)


def _is_whitespace(char):
    """Space, tab, newline, carriage return and Unicode space separators (Zs)."""
    if char in " \t\n\r":
        return True
    return unicodedata.category(char) == "Zs"


def _is_control(char):
    """Control (Cc) and format (Cf) characters, except tab, newline and carriage return."""
    if char in "\t\n\r":
        return False
    return unicodedata.category(char) in ("Cc", "Cf")


def _is_punctuation(char):
    """ASCII non-alphanumeric printable characters and every Unicode P* character."""
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")
