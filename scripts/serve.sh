#!/usr/bin/env bash
# Install everything, then start the server on its defaults (127.0.0.1:8000, local provider,
# in-memory storage). Extra arguments go to `xrouter serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/xrouter serve "$@"
