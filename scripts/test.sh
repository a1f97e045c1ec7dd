#!/usr/bin/env bash
# The test command: sets the machine up if needed (scripts/setup.sh), then runs ruff and the
# whole pytest suite. Extra arguments go to pytest (e.g. -k tokenization, -x).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
