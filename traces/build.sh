#!/usr/bin/env bash
# Rebuild every committed trace under traces/ from the real data in ../shared/data.
# Usage: traces/build.sh [DATA_DIR]   (run from the repository root)
set -euo pipefail
D=${1:-../shared/data}
A=agentsim
LM="LMCache agent traces, github.com/LMCache/lmcache-agent-trace @16a14adaad43e1a7213f17277726e0abb66ece11, Apache-2.0"
MC="Mooncake FAST'25 conversation trace, github.com/kvcache-ai/Mooncake @3b5a594133958449a1feaf1c9e0fc1b553e34a28, Apache-2.0; Qin et al., FAST'25"
AZ="Azure LLM inference trace 2023, github.com/Azure/AzurePublicDataset @b469a113cedca53ddc3bdea71a143dc4b7d8700c, CC-BY-4.0; Patel et al., Splitwise, ISCA'24"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# All recorded agent sessions.
$A trace convert --from lmcache "$D/lmcache-agent-trace/miniswe" -o traces/lmcache/miniswe.jsonl.gz --attribution "$LM"
$A trace convert --from lmcache "$D/lmcache-agent-trace/magagent" -o traces/lmcache/magagent.jsonl.gz --attribution "$LM"

# Samples of the request-level traces: the first whole sessions (Azure: rows).
$A trace convert --from mooncake "$D/mooncake/conversation_trace.jsonl" -o "$tmp/mooncake.jsonl" --attribution "$MC"
$A trace sample "$tmp/mooncake.jsonl" --sessions 400 -o traces/samples/mooncake_conversation_400s.jsonl.gz
$A trace convert --from azure "$D/azure-llm-2023/AzureLLMInferenceTrace_conv.csv" -o "$tmp/az_conv.jsonl" --attribution "$AZ"
$A trace sample "$tmp/az_conv.jsonl" --sessions 1000 -o traces/samples/azure_conv_1000.jsonl.gz
$A trace convert --from azure "$D/azure-llm-2023/AzureLLMInferenceTrace_code.csv" -o "$tmp/az_code.jsonl" --attribution "$AZ"
$A trace sample "$tmp/az_code.jsonl" --sessions 1000 -o traces/samples/azure_code_1000.jsonl.gz

# The default demo trace: 12 short real agent sessions (mini-SWE-agent and
# Magentic-One), session starts re-timed as a Poisson process of 0.2 sessions/s.
$A trace sample traces/lmcache --sessions 12 --max-calls 40 --seed 3 --rate 0.2 -o traces/default.jsonl
