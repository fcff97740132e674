#!/usr/bin/env bash
# Run the Open Responses compliance runner against XRouter, in two configurations:
#   1. the built-in local provider, model `local/agent` (docs/local-provider.md);
#   2. a relay: a gateway whose OpenAI-compatible provider `up` (Chat Completions) points at the
#      fake upstream bench/fake_upstream.py, model `up/fake`.
# It prints both results and kills everything it started, whatever happens (trap).
#
# For the lead to run by hand, NOT in CI: it needs bun and the runner's checkout, which a fresh
# machine does not have. Everything listens on 127.0.0.1 (free ports); nothing leaves the machine.
# Every wait is bounded (startup, each runner run).
#
# Usage: scripts/compliance.sh
# Environment (defaults in brackets):
#   ORR_DIR          the Open Responses checkout holding bin/compliance-test.ts [/tmp/orr]
#   BUN              the bun binary [/tmp/bunx/node_modules/.bin/bun, else `bun` on PATH]
#   RUNNER_TIMEOUT_S bound on each runner run [180]
#   RUNNER_ARGS      extra runner flags, e.g. "--verbose" or "--filter tool-calling" []
#   LOCAL_MODEL      the model of the local run [local/agent]; local/echo fails "Tool Calling"
# Exit status: 0 when both runs pass every test, 1 otherwise. See docs/compliance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

ORR_DIR=${ORR_DIR:-/tmp/orr}
BUN=${BUN:-/tmp/bunx/node_modules/.bin/bun}
[[ -x $BUN ]] || BUN=$(command -v bun || true)
RUNNER_TIMEOUT_S=${RUNNER_TIMEOUT_S:-180}
RUNNER_ARGS=${RUNNER_ARGS:-}
LOCAL_MODEL=${LOCAL_MODEL:-local/agent}
RUNNER="$ORR_DIR/bin/compliance-test.ts"
[[ -n $BUN && -x $BUN ]] || { echo "compliance: bun not found (set BUN)" >&2; exit 2; }
[[ -f $RUNNER ]] || { echo "compliance: no runner at $RUNNER (set ORR_DIR)" >&2; exit 2; }
[[ -x $ROOT/.venv/bin/xrouter ]] || { echo "compliance: run scripts/bootstrap.sh first" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/xrouter-compliance.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$ROOT/.venv/bin/python" -c \
        'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_healthy NAME PORT LOG: up to 20 s for GET /health to answer 200.
wait_healthy() {
    local name=$1 port=$2 log=$3 i
    for ((i = 0; i < 100; i++)); do
        if curl -sf --max-time 1 "http://127.0.0.1:$port/health" >/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    echo "compliance: $name did not become healthy on port $port in 20 s; its log:" >&2
    tail -n 40 "$log" >&2
    exit 1
}

# start_gateway PORT LOG [VAR=VALUE...]: `xrouter serve` with local models and the given settings;
# no gateway keys (the runner sends a dummy one), whatever the caller's environment says.
start_gateway() {
    local port=$1 log=$2
    shift 2
    env XR_AUTH=none XR_DISCOVERY=false XR_LOG_LEVEL=warning "$@" \
        "$ROOT/.venv/bin/xrouter" serve --host 127.0.0.1 --port "$port" --workers 1 \
        >"$log" 2>&1 &
    PIDS+=($!)
    wait_healthy "gateway" "$port" "$log"
}

# run_runner LABEL PORT MODEL: one runner run; its output is kept in $WORK/LABEL.out.
FAILED=0
run_runner() {
    local label=$1 port=$2 model=$3 status=0
    echo "== $label: model $model =="
    # shellcheck disable=SC2086  # RUNNER_ARGS is a list of flags on purpose
    (cd "$ORR_DIR" && timeout "$RUNNER_TIMEOUT_S" "$BUN" run "$RUNNER" \
        --base-url "http://127.0.0.1:$port/v1" --api-key sk-compliance --model "$model" \
        $RUNNER_ARGS) >"$WORK/$label.out" 2>&1 || status=$?
    cat "$WORK/$label.out"
    if ((status != 0)); then
        FAILED=1
        if ((status == 124)); then
            echo "compliance: $label: the runner took over $RUNNER_TIMEOUT_S s"
        fi
    fi
    echo
}

# 1. The local provider.
LOCAL_PORT=$(free_port)
start_gateway "$LOCAL_PORT" "$WORK/gateway-local.log"
run_runner local "$LOCAL_PORT" "$LOCAL_MODEL"

# 2. A relay to a fake OpenAI-compatible upstream (Chat Completions).
UP_PORT=$(free_port)
(cd "$ROOT/bench" && exec "$ROOT/.venv/bin/python" -m uvicorn fake_upstream:create_app \
    --factory --host 127.0.0.1 --port "$UP_PORT" --workers 1 --no-access-log \
    --log-level warning) >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
wait_healthy "fake upstream" "$UP_PORT" "$WORK/upstream.log"
RELAY_PORT=$(free_port)
start_gateway "$RELAY_PORT" "$WORK/gateway-relay.log" \
    XR_UP_BASE_URL="http://127.0.0.1:$UP_PORT/v1" XR_UP_API_KEY=sk-fake XR_UP_MAX_RETRIES=0
run_runner relay "$RELAY_PORT" up/fake

echo "== summary ($(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD)) =="
for label in local relay; do
    printf '%-6s %s\n' "$label" "$(grep -E 'Results:' "$WORK/$label.out" | tail -n 1 |
        sed -E 's/\x1b\[[0-9;]*m//g' || echo 'no result line')"
done
exit "$FAILED"
