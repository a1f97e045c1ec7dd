"""Builds data/sample_corpus.txt: English prose from the Python 3.11 documentation.

Source: Debian's `python3.11-doc` package (the HTML build of the official documentation),
licensed under the PSF License Version 2 (see data/README.md). From each page of the tutorial,
HOWTOs, FAQ, language reference and library reference, in sorted path order, the text of its
prose paragraphs (`<p>`, code blocks excluded) is split into sentences, one per line; the first
--max_sentences of each page make one document, followed by a blank line. Pages are added until
the corpus reaches --target_bytes.

Usage:
  python data/build_sample_corpus.py [--html_dir DIR] [--output data/sample_corpus.txt]
Without --html_dir the package is fetched with `apt-get download` and unpacked in a temp dir.
"""

import argparse
import glob
import html.parser
import os
import re
import subprocess
import tempfile

SECTIONS = ("tutorial", "howto", "faq", "reference", "library")
# Split after ., ! or ? (optionally closed by a quote or bracket) before a capital or an opening
# quote, unless the word before is a common abbreviation.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"”’)\]]?\s+(?=[\"“‘(]?[A-Z])")
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "Mr.", "Dr.", "cf.", "approx.", "No.")


class _ParagraphExtractor(html.parser.HTMLParser):
    """Collects the text of <p> elements inside the page body, skipping code blocks."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.paragraphs = []
        self._in_body = 0
        self._in_pre = 0
        self._current = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "div" and attributes.get("role") == "main":
            self._in_body = 1
        elif tag == "div" and self._in_body:
            self._in_body += 1
        elif tag == "pre":
            self._in_pre += 1
        elif tag == "p" and self._in_body and not self._in_pre:
            self._current = []

    def handle_endtag(self, tag):
        if tag == "div" and self._in_body:
            self._in_body -= 1
        elif tag == "pre" and self._in_pre:
            self._in_pre -= 1
        elif tag == "p" and self._current is not None:
            text = " ".join("".join(self._current).split())
            if text:
                self.paragraphs.append(text)
            self._current = None

    def handle_data(self, data):
        if self._current is not None and not self._in_pre:
            self._current.append(data)


def split_sentences(paragraph):
    """Splits a paragraph into sentences at sentence-final punctuation."""
    pieces = _SENTENCE_END.split(paragraph)
    sentences = []
    for piece in pieces:
        if sentences and sentences[-1].endswith(_ABBREVIATIONS):
            sentences[-1] += " " + piece
        else:
            sentences.append(piece)
    return [sentence for sentence in sentences if len(sentence.split()) >= 3]


def page_document(path):
    """The sentences of one HTML page."""
    with open(path, encoding="utf-8") as page:
        extractor = _ParagraphExtractor()
        extractor.feed(page.read())
    return [s for paragraph in extractor.paragraphs for s in split_sentences(paragraph)]


def fetch_html_dir(workdir):
    """Downloads and unpacks python3.11-doc into `workdir`; returns its HTML directory."""
    subprocess.run(["apt-get", "download", "python3.11-doc"], cwd=workdir, check=True)
    (deb,) = glob.glob(os.path.join(workdir, "python3.11-doc_*.deb"))
    subprocess.run(["dpkg-deb", "-x", deb, os.path.join(workdir, "root")], check=True)
    return os.path.join(workdir, "root/usr/share/doc/python3.11/html")


def build(html_dir, output, target_bytes, max_sentences):
    written = 0
    documents = 0
    with open(output, "w", encoding="utf-8") as out:
        for section in SECTIONS:
            for path in sorted(glob.glob(os.path.join(html_dir, section, "*.html"))):
                sentences = page_document(path)[:max_sentences]
                if len(sentences) < 2:
                    continue
                text = "\n".join(sentences) + "\n\n"
                out.write(text)
                written += len(text.encode("utf-8"))
                documents += 1
                if written >= target_bytes:
                    return documents, written
    return documents, written


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--html_dir", help="python3.11-doc HTML directory (fetched if omitted)")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__),
                                                         "sample_corpus.txt"))
    parser.add_argument("--target_bytes", type=int, default=1_300_000)
    parser.add_argument("--max_sentences", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        html_dir = args.html_dir or fetch_html_dir(workdir)
        documents, size = build(html_dir, args.output, args.target_bytes,
                                 args.max_sentences)
    print(f"wrote {args.output}: {documents} documents, {size:,} bytes")


if __name__ == "__main__":
    main()
