"""vLLM v1 engine semantics: KV blocks from gpu_memory_utilization as vLLM profiles them,
prefix-cache hits per computed chunk, no admission in a step that preempted, and the CPU
KV offload tier.  Hand-worked scenarios; each number is derived in a comment."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sim.cluster import (
    NON_TORCH_BYTES,
    SAMPLER_BYTES_PER_LOGIT,
    TP_COMM_BYTES,
    driver_total_bytes,
    plan_memory,
)
from sim.config import Deployment
from sim.errors import ConfigError
from sim.hardware import GiB, get_gpu
from sim.models import get_model

H100 = get_gpu("h100-80gb")

# Block counts vLLM v0.15.1 reported on H100 SXM (block 16, max_num_seqs 128,
# gpu_memory_utilization 0.9), measured by the BLIS project (inference-sim):
# ../shared/data/vllm-serving-measurements/runs.csv, column gpu_kv_blocks, runs 60-66.
MEASURED = [
    ("llama-3.1-70b", 4, 8192, 30251),
    ("llama-3.1-70b", 4, 2048, 30425),
    ("mistral-nemo-12b", 2, 1024, 48009),
    ("mistral-nemo-12b", 1, 2048, 19251),
    ("qwen2.5-7b", 1, 2048, 65352),
    ("qwen2.5-7b", 1, 1024, 65368),
    ("yi-34b", 2, 2048, 20793),
]


def _dep(model: str, tp: int, mnbt: int, **kw: object) -> Deployment:
    d = Deployment(
        model=model,
        tp=tp,
        replicas=1,
        max_num_seqs=128,
        max_num_batched_tokens=mnbt,
        block_size=16,
        gpu_memory_utilization=0.9,
    )
    return replace(d, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("model", "tp", "mnbt", "blocks"), MEASURED)
def test_kv_blocks_match_measured_vllm(model: str, tp: int, mnbt: int, blocks: int) -> None:
    plan = plan_memory(get_model(model), driver_total_bytes(H100), _dep(model, tp, mnbt))
    assert abs(plan.kv_blocks - blocks) / blocks < 0.01, (plan.kv_blocks, blocks)


def test_kv_blocks_hand_worked_qwen25_7b() -> None:
    # Qwen2.5-7B, TP 1, mnbt 2048, on an H100 (79.18 GiB as the driver reports it):
    #   requested  = 79.18 GiB x 0.9
    #   weights    = 7,615,487,488 params x 2 B
    #   activation = max(forward, sampler):
    #       forward = 2048 x (2 x 3584 + 3 x 18944) x 2 B = 262,144,000
    #       sampler = 2 x 2048 x 3584 x 2 B + 51 B x 128 x 152064 = 29,360,128 + 992,673,792
    #   non-torch  = 0.34 GiB (TP 1: no communicator buffers)
    #   block      = 16 tokens x 2 x 28 layers x 4 KV heads x 128 x 2 B = 917,504 B
    model = get_model("qwen2.5-7b")
    plan = plan_memory(model, driver_total_bytes(H100), _dep("qwen2.5-7b", 1, 2048))
    usable = int(int(79.18 * GiB) * 0.9)
    act = 29_360_128 + 992_673_792
    assert SAMPLER_BYTES_PER_LOGIT == 51
    assert plan.usable == usable
    assert plan.weights == 7_615_487_488 * 2
    assert plan.activations == act
    assert plan.non_torch == NON_TORCH_BYTES
    assert plan.kv_bytes_per_block == 917_504
    kv = usable - 7_615_487_488 * 2 - act - NON_TORCH_BYTES
    assert plan.kv == kv
    assert plan.kv_blocks == kv // 917_504 == plan.kv_blocks_from_memory


def test_kv_blocks_follow_utilization_and_tp() -> None:
    model = get_model("llama-3.1-8b")
    base = plan_memory(model, driver_total_bytes(H100), _dep("llama-3.1-8b", 1, 2048))
    more = plan_memory(
        model,
        driver_total_bytes(H100),
        _dep("llama-3.1-8b", 1, 2048, gpu_memory_utilization=0.95),
    )
    # 5% more of 79.18 GiB is all KV: 0.05 x 79.18 GiB / (16 x 131072 B) = 2027 blocks
    assert more.kv_blocks - base.kv_blocks == pytest.approx(
        0.05 * 79.18 * GiB / (16 * 131072), abs=1
    )
    tp2 = plan_memory(model, driver_total_bytes(H100), _dep("llama-3.1-8b", 2, 2048))
    # TP 2 halves the weights and KV heads per GPU and adds the communicator buffers
    assert tp2.non_torch == NON_TORCH_BYTES + TP_COMM_BYTES
    assert tp2.weights == -(-model.weight_bytes // 2)
    assert tp2.kv_bytes_per_block == base.kv_bytes_per_block // 2


def test_gpu_kv_blocks_override_and_shortfall() -> None:
    model = get_model("llama-3.1-70b")
    plan = plan_memory(
        model,
        driver_total_bytes(H100),
        _dep("llama-3.1-70b", 4, 2048, num_gpu_blocks_override=1234),
    )
    assert plan.kv_blocks == 1234
    assert plan.kv_blocks_from_memory > 30000
    with pytest.raises(ConfigError, match="short by"):
        plan_memory(model, driver_total_bytes(H100), _dep("llama-3.1-70b", 1, 2048))
