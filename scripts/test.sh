#!/usr/bin/env bash
# Install everything, then run the whole check: formatter, linter, type checker, layer
# contracts and the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bin=.venv/bin
paths=(src tests)
[ -d bench ] && paths+=(bench)
echo "== ruff format --check"; "$bin/ruff" format --check "${paths[@]}"
echo "== ruff check";          "$bin/ruff" check "${paths[@]}"
echo "== mypy";                "$bin/mypy"
echo "== import contracts";    "$bin/lint-imports"
echo "== pytest";              "$bin/pytest" "$@"
