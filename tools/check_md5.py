"""Check a corpus directory against an md5 list in `md5sum --check` format before preparing it.

    python -m tools.check_md5 --md5_file bert_reference_results_text_md5.txt --dir results4

Each line of the list is `<md5>  <file name>` (or `<md5> *<file name>`), the name relative to
--dir. Every mismatching or missing file is reported on its own line by name; the exit code is
1 if any file failed, 2 for an unreadable list. Files are hashed in parallel (--jobs).
"""

import argparse
import concurrent.futures
import hashlib
import os
import re
import sys

_LINE = re.compile(r"^([0-9a-fA-F]{32}) [ *](.+)$")
_CHUNK = 1 << 20


def read_md5_list(path):
    """[(file name, md5)] of an md5sum list; ValueError naming a malformed line."""
    entries = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            match = _LINE.match(line)
            if not match:
                raise ValueError(f"{path}:{number}: not an md5sum line ('<md5>  <file>'): "
                                 f"{line[:80]!r}")
            entries.append((match.group(2), match.group(1).lower()))
    return entries


def md5_of(path):
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check(directory, entries, jobs):
    """Problem lines, one per failing file, in list order (empty when all match)."""
    def one(entry):
        name, expected = entry
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            return f"{path}: missing"
        actual = md5_of(path)
        return None if actual == expected else f"{path}: FAILED (md5 {actual}, expected {expected})"

    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        return [problem for problem in pool.map(one, entries) if problem]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="check_md5", description=__doc__.split("\n")[1])
    parser.add_argument("--md5_file", required=True, help="md5sum-format list")
    parser.add_argument("--dir", required=True, help="directory the names are relative to")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if not os.path.isdir(args.dir):
        parser.error(f"--dir={args.dir}: no such directory")
    try:
        entries = read_md5_list(args.md5_file)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    if not entries:
        parser.error(f"{args.md5_file}: no md5 lines")
    problems = check(args.dir, entries, max(1, args.jobs))
    for problem in problems:
        print(f"check_md5: {problem}", file=sys.stderr)
    if problems:
        print(f"check_md5: error: {len(problems)} of {len(entries)} files failed the md5 check; "
              "re-download or re-extract them", file=sys.stderr)
        sys.exit(1)
    print(f"check_md5: {len(entries)} files OK")


if __name__ == "__main__":
    main()
