#!/usr/bin/env bash
# Fuzzes the gilkit_embed service's HTTP API from its own OpenAPI document (GET /openapi.json) with
# schemathesis: every check (server errors, status codes, content types and response bodies as
# documented, positive data accepted, negative data refused, unsupported methods answered 405).
# Bounded: at most EMBED_FUZZ_EXAMPLES examples per operation (default 60) and EMBED_FUZZ_SECONDS in
# all (default 90). Starts the service on a free port with a deterministic fake model and stops it.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -f .venv/bin/activate ]; then
    # shellcheck disable=SC1091
    source .venv/bin/activate
fi
examples=${EMBED_FUZZ_EXAMPLES:-60}
seconds=${EMBED_FUZZ_SECONDS:-90}
port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
PYTHONPATH=examples/embedding-client/tests python -m gilkit_embed serve \
    --model embed_fake_models:exact --name fake --host 127.0.0.1 --port "$port" >"$log" 2>&1 &
service=$!
# SIGTERM, not SIGINT: a background job of a non-interactive shell starts with SIGINT ignored, so
# Python never installs its KeyboardInterrupt handler and a SIGINT would be lost (the step would
# hang). SIGKILL if the service is still there after 10 s.
stop_service() {
    kill -TERM "$service" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$service" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$service" 2>/dev/null || true
    wait "$service" 2>/dev/null || true
    rm -f "$log"
}
trap stop_service EXIT
for _ in $(seq 100); do
    if python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=1)" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$service" 2>/dev/null; then
        echo "40-embed-schemathesis: the service did not start:" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 0.1
done
st --no-color run "http://127.0.0.1:$port/openapi.json" \
    --checks all \
    --max-examples "$examples" \
    --max-time "$seconds" \
    --seed 17
