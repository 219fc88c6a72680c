#!/usr/bin/env bash
# Calibrate the cost model on the NVIDIA GPU of this machine, in under 10 minutes:
#
#   1. record: time a Llama-3-8B-architecture grid (bf16, random weights, real kernels)
#      with the torch engine on cuda:0   -> calibration/records/NAME.jsonl
#   2. fit:    fit a cost model to it     -> calibration/costmodels/NAME.toml
#   3. validate the fit on the records, and replay it from the records (replay --check:
#      the same model within the stated tolerances of calibration/README.md: fitted
#      parameters 2e-3 relative, validation errors 0.5 percentage points);
#   4. e2e:    replay examples/calibration/agent-replay.jsonl through agentsim's torch
#              server on the same GPU (scripts/record_e2e.sh)
#                                      -> calibration/records/http-llama-3-8b-<gpu key>.jsonl
#              and, where agentsim is installed, compare it with the simulator
#              (agentsim calibrate compare-e2e --costmodel the model of step 2).
#
# NAME is torch-llama-3-8b-<gpu key>, e.g. torch-llama-3-8b-h100-80gb.  Recording is
# resumable: rerunning continues an interrupted grid.  Usage:
#
#   scripts/calibrate_gpu.sh [GRID.toml]        (default examples/calibration/llama3-8b-gpu.toml)
#
# Environment: PYTHON  an interpreter with CUDA torch and transformers (default: the
#                      first of .venv/bin/python, python3, python that has them);
#              FIT_PYTHON  one with numpy and scipy for the fit (default: .venv/bin/python
#                      when it works, else PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
GRID=${1:-examples/calibration/llama3-8b-gpu.toml}
MODEL=llama-3-8b
START=$SECONDS
say() { printf '[calibrate_gpu %3ds] %s\n' $((SECONDS - START)) "$*"; }

has_cuda_torch() {
  "$1" - <<'EOF' 2>/dev/null
import sys, torch, transformers
sys.exit(0 if torch.cuda.is_available() else 1)
EOF
}
has_fit_deps() { "$1" -c "import numpy, scipy, pandas, simpy" 2>/dev/null; }

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in .venv/bin/python python3 python; do
    if command -v "$cand" >/dev/null 2>&1 && has_cuda_torch "$cand"; then PY=$cand; break; fi
  done
fi
if [ -z "$PY" ] || ! has_cuda_torch "$PY"; then
  echo "calibrate_gpu: no Python with CUDA-enabled torch and transformers found" >&2
  echo "  (nvidia-smi: $(nvidia-smi -L 2>&1 | head -1)); set PYTHON=/path/to/python" >&2
  exit 3
fi
FIT_PY=${FIT_PYTHON:-}
if [ -z "$FIT_PY" ]; then
  if [ -x .venv/bin/python ] && has_fit_deps .venv/bin/python; then FIT_PY=.venv/bin/python; else FIT_PY=$PY; fi
fi

say "python: $PY ($("$PY" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)'))"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/[calibrate_gpu] gpu: /'
KEY=$("$PY" -c 'import torch; from sim.calibration.engines.devices import gpu_key; print(gpu_key("cuda", torch.cuda.get_device_name(0)) or "")')
if [ -z "$KEY" ]; then
  KEY=$("$PY" -c 'import re, torch; print(re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-"))')
  say "warning: this GPU has no entry in sim/hardware.py GPUS; records are kept as $KEY but the fit needs its datasheet peaks there"
fi
NAME=torch-llama-3-8b-$KEY
REC=calibration/records/$NAME.jsonl
CM=calibration/costmodels/$NAME.toml
mkdir -p calibration/records calibration/costmodels

say "1/3 record $MODEL over $GRID -> $REC"
timeout 330 "$PY" -m sim.calibration.harness_cli record --engine torch --device cuda \
  --model "$MODEL" --grid "$GRID" -o "$REC" --time-budget-s 240
E2E=calibration/records/http-$MODEL-$KEY.jsonl
say "e2e: replay the agent example through the torch server -> $E2E"
rm -f "$E2E"
PYTHON=$PY timeout 240 scripts/record_e2e.sh "$MODEL" cuda "$E2E"

if ! has_fit_deps "$FIT_PY"; then
  say "no interpreter with numpy/scipy/pandas/simpy here: copy $REC to a machine with agentsim and run"
  say "  agentsim calibrate fit $REC -o $CM && agentsim calibrate validate --costmodel $CM $REC"
  say "  agentsim calibrate compare-e2e --records $E2E --costmodel $CM"
  exit 0
fi
say "2/3 fit -> $CM"
"$FIT_PY" -m sim.cli calibrate fit "$REC" -o "$CM"
say "3/3 validate and replay"
"$FIT_PY" -m sim.cli calibrate validate --costmodel "$CM" "$REC"
"$FIT_PY" -m sim.calibration.harness_cli replay "$REC" -o "$CM" --check
say "4/4 compare the e2e replay with the simulator"
"$FIT_PY" -m sim.cli calibrate compare-e2e --records "$E2E" --costmodel "$CM"
say "done: $REC, $E2E (with its .server.jsonl and .iterations.jsonl logs) and $CM (commit them all)"
