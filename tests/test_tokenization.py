"""tokenization.py: Google's tokenizer behaviour, and identity with google-research/bert's code."""

import os

import pytest

import tokenization


@pytest.fixture(scope="module")
def uncased(vocab_file):
    return tokenization.FullTokenizer(vocab_file, do_lower_case=True)


@pytest.fixture(scope="module")
def cased(vocab_file):
    return tokenization.FullTokenizer(vocab_file, do_lower_case=False)


def test_lower_casing_strips_accents(uncased):
    """Lower-casing also strips accents (NFD, then combining marks removed)."""
    assert uncased.basic_tokenizer.tokenize("Héllo WÖRLD Crème") == ["hello", "world", "creme"]


def test_cased_keeps_case_and_accents():
    """Without lower-casing, case and accents stay."""
    basic = tokenization.BasicTokenizer(do_lower_case=False)
    assert basic.tokenize("Héllo WÖRLD") == ["Héllo", "WÖRLD"]


def test_cjk_ideographs_are_single_tokens(uncased):
    """Each CJK ideograph becomes its own token; kana are not split (and, lower-cased, lose
    their voicing marks, which NFD makes combining marks)."""
    assert uncased.basic_tokenizer.tokenize("ab中文cd ひらがな") == ["ab", "中", "文", "cd", "ひらかな"]


def test_punctuation_is_split_off(uncased):
    """ASCII symbols and Unicode P* characters are separate tokens."""
    assert uncased.basic_tokenizer.tokenize("Hi!How's it—going? $5") == [
        "hi", "!", "how", "'", "s", "it", "—", "going", "?", "$", "5"]


def test_control_characters_removed_and_whitespace_normalised(uncased):
    """NUL, U+FFFD, Cc/Cf characters vanish; tabs, newlines and Zs spaces separate words."""
    text = "a\x00b\ufffdc\u200bd\te\u3000f\ng\x07h"
    assert uncased.basic_tokenizer.tokenize(text) == ["abcd", "e", "f", "gh"]


def test_wordpiece_greedy_longest_match(uncased):
    """WordPiece takes the longest vocabulary prefix, then ## continuations."""
    assert uncased.tokenize("unaffable tokenization") == [
        "una", "##ffa", "##ble", "token", "##ization"]


def test_long_and_unmatchable_words_become_unk(uncased):
    """A word over 200 characters (Google's limit) or with no WordPiece split is [UNK]."""
    assert uncased.tokenize("a" * 201) == ["[UNK]"]
    assert uncased.tokenize("a" * 200) != ["[UNK]"]
    assert uncased.tokenize("\u2603\u2604") == ["[UNK]"]


def test_ids_round_trip(uncased):
    """convert_tokens_to_ids and convert_ids_to_tokens are inverses on vocabulary tokens."""
    tokens = uncased.tokenize("The quick brown fox.")
    ids = uncased.convert_tokens_to_ids(tokens)
    assert ids == [1996, 4248, 2829, 4419, 1012]
    assert uncased.convert_ids_to_tokens(ids) == tokens


def test_preserve_unused_tokens(vocab_file):
    """With preserve_unused_tokens, [unusedN] vocabulary tokens stay whole; otherwise split."""
    keep = tokenization.FullTokenizer(vocab_file, True, preserve_unused_tokens=True)
    split = tokenization.FullTokenizer(vocab_file, True)
    assert keep.tokenize("x [unused3] y") == ["x", "[unused3]", "y"]
    assert split.tokenize("x [unused3] y")[1] == "["


def test_load_vocab_order_and_bytes(tmp_path):
    """Every line takes the next id; invalid UTF-8 is dropped when reading the vocab."""
    path = tmp_path / "vocab.txt"
    path.write_bytes(b"[PAD]\n[UNK]\nhel\xfflo\n")
    assert tokenization.load_vocab(str(path)) == {"[PAD]": 0, "[UNK]": 1, "hello": 2}


def test_check_vocab_names_missing_tokens(tmp_path):
    """A vocab without BERT's special tokens is rejected with their names."""
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n[UNK]\nhello\n")
    with pytest.raises(ValueError, match=r"\[CLS\], \[SEP\], \[MASK\]"):
        tokenization.check_vocab(tokenization.load_vocab(str(path)), str(path))


EDGE_CASES = [
    "Héllo Wörld! [unused3] [UNUSED4] 中文字 \x00\x07 ctrl\u200b zero-width \u2028 line",
    "İstanbul ǅemal ﬁne ½ ² Ⅻ ㊀ x\u0301 \u0301",
    "tab\tsep\x1fseparated\x85next \ufeffbom",
    "a" * 200 + " " + "b" * 201,
    "",
]


@pytest.mark.parametrize(("lower", "preserve"), [(True, False), (False, False), (True, True)])
def test_identical_to_google_on_whole_sample_corpus(vocab_file, sample_corpus, lower, preserve):
    """Token for token (and id for id, on the fast path) equal to google-research/bert's
    tokenizer on every line of the shipped corpus plus Unicode edge cases."""
    from absl import flags
    from bert import tokenization as reference

    # The oracle reads the global flag at every call: back to the default afterwards, for the
    # later tests of this process (a pytest-xdist worker runs many files).
    flags.FLAGS(["test", f"--preserve_unused_tokens={preserve}"], known_only=True)
    try:
        ours = tokenization.FullTokenizer(vocab_file, lower, preserve_unused_tokens=preserve)
        theirs = reference.FullTokenizer(vocab_file, lower)
        with open(sample_corpus, "rb") as corpus:
            lines = [tokenization.convert_to_unicode(line) for line in corpus] + EDGE_CASES
        assert os.path.getsize(sample_corpus) > 1_000_000
        for line in lines:
            expected = theirs.tokenize(line)
            assert ours.tokenize(line) == expected, line
            assert ours.tokenize_to_ids(line) == theirs.convert_tokens_to_ids(expected), line
    finally:
        flags.FLAGS(["test", "--preserve_unused_tokens=false"], known_only=True)
