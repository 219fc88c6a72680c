#!/usr/bin/env bash
# Record an end-to-end replay against agentsim's own OpenAI-compatible torch server:
# start `python -m sim.calibration.server` on DEVICE, replay TRACE through it with
# `calibrate record --engine http`, stop the server.  The records file (client timings
# per call, plus the server's header) is what `agentsim calibrate compare-e2e` reads.
# The server's own log (one JSON line per request: server-side TTFT, ITLs and the
# duration of every iteration the request took part in) is kept next to it as
# OUTPUT with a .server.jsonl suffix (e.g. http-x.jsonl -> http-x.server.jsonl), and its
# per-iteration log (shape, prompt-chunk / cache-rebuild / decode seconds) as
# OUTPUT with a .iterations.jsonl suffix.
#
#   scripts/record_e2e.sh MODEL DEVICE OUTPUT.jsonl [TRACE] [MAX_BATCH] [BUDGET_TOKENS]
#
# e.g. scripts/record_e2e.sh llama-3-8b cuda calibration/records/http-llama-3-8b-h100-80gb.jsonl
#      scripts/record_e2e.sh examples/calibration/tiny-llama/config.json cpu /tmp/e2e.jsonl
# PYTHON: the interpreter (default python3); it needs torch and transformers only.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
MODEL=$1 DEVICE=$2 OUT=$3
TRACE=${4:-examples/calibration/agent-replay.jsonl}
MAX_BATCH=${5:-64}
BUDGET=${6:-2048}
PY=${PYTHON:-python3}
LOG=$(mktemp -d)/server.out
SERVER_LOG=${OUT%.jsonl}.server.jsonl
ITER_LOG=${OUT%.jsonl}.iterations.jsonl
rm -f "$SERVER_LOG" "$ITER_LOG"

"$PY" -m sim.calibration.server --model "$MODEL" --device "$DEVICE" --host 127.0.0.1 --port 0 \
  --max-batch "$MAX_BATCH" --max-num-batched-tokens "$BUDGET" \
  --max-lifetime-s 600 --idle-exit-s 120 --log "$SERVER_LOG" --iteration-log "$ITER_LOG" >"$LOG" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT

URL=
for _ in $(seq 1 600); do
  URL=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$LOG" | head -1 || true)
  [ -n "$URL" ] && break
  kill -0 $SERVER 2>/dev/null || { echo "record_e2e: server exited:" >&2; cat "$LOG" >&2; exit 1; }
  sleep 0.5
done
[ -n "$URL" ] || { echo "record_e2e: server did not start in 300 s" >&2; cat "$LOG" >&2; exit 1; }
echo "record_e2e: server $MODEL on $DEVICE at $URL (max_batch $MAX_BATCH, budget $BUDGET tokens)"
"$PY" -m sim.calibration.harness_cli record --engine http --url "$URL" --trace "$TRACE" -o "$OUT"
echo "record_e2e: client records $OUT, server log $SERVER_LOG, iteration log $ITER_LOG"
