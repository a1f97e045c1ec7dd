#!/usr/bin/env bash
# The test command: sets the machine up if needed (scripts/setup.sh), then runs ruff and the
# whole pytest suite. Extra arguments go to pytest (e.g. -k tokenization, -x).
# The suite runs in two parts: the tests marked `serial` (deadlines in seconds of wall time)
# alone, then the others on one pytest-xdist worker per core (whole files per worker: their
# module fixtures are built once). TEST_WORKERS overrides the worker count.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
.venv/bin/ruff check .
workers=${TEST_WORKERS:-$(nproc)}

# pytest's exit code 5 means "no test selected": an -m/-k filter can leave one part empty,
# not both.
empty=0
part() {
  local rc=0
  .venv/bin/python -m pytest "$@" || rc=$?
  if [[ $rc -eq 5 ]]; then empty=$((empty + 1)); elif [[ $rc -ne 0 ]]; then exit "$rc"; fi
}
part -m serial "$@"
part -m "not serial" -n "$workers" --dist loadfile "$@"
[[ $empty -lt 2 ]] || { echo "no test matched: $*" >&2; exit 5; }
