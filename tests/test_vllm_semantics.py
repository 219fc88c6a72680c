"""vLLM v1 engine semantics: KV blocks from gpu_memory_utilization as vLLM profiles them,
prefix-cache hits per computed chunk, no admission in a step that preempted, and the CPU
KV offload tier.  Hand-worked scenarios; each number is derived in a comment."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sim.cluster.cluster import (
    NON_TORCH_BYTES,
    SAMPLER_BYTES_PER_LOGIT,
    TP_COMM_BYTES,
    driver_total_bytes,
    plan_memory,
)
from sim.cluster.config import Deployment
from sim.common.errors import ConfigError
from sim.costmodel.base import BatchShape
from sim.simulation import simulate
from sim.specs.hardware import GiB, get_gpu
from sim.specs.models import get_model
from tests.helpers import ROOFLINE, chain_hashes, cluster, llm, workload

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


# ---- engine scenarios --------------------------------------------------------------


def _it(model: str = "llama-2-7b"):
    from sim.costmodel.base import ReplicaHardware

    return ROOFLINE.for_replica(
        ReplicaHardware(get_model(model), get_gpu("a100-80gb"), 1, 1, float("inf"), 0.0, "local")
    )


@pytest.mark.parametrize("fast_forward", [True, False])
def test_prefix_blocks_become_hits_chunk_by_chunk(fast_forward: bool) -> None:
    """A 2560-token prompt prefills in three chunks under a 1024-token budget (1024,
    1024, 512).  B, the same prompt, arrives during chunk 1.  Chunk 2 takes the whole
    budget, so B is admitted in the step of chunk 3, beside A's last 512 tokens.  The
    blocks a step computes are cache entries from the moment it is scheduled (vLLM v1
    caches them in ``allocate_slots``), so B finds all 160 blocks and recomputes only
    its last token, although A's prefill is still running (with entries registered
    when a prefill completes, B would hit nothing).

        t1 = it((1024,), ctx (0,))                    A chunk 1
        t2 = t1 + it((1024,), ctx (1024,))            A chunk 2; B waits (no budget)
        t3 = t2 + it((512, 1), ctx (2048, 2559))      A chunk 3 + B's last token
    Both sample their first (only) token at t3."""
    it = _it()
    h = chain_hashes(0, 2560)
    w = workload(
        [llm("a", "s1", 2560, 1, t=0.0, hashes=h), llm("b", "s2", 2560, 1, t=1e-6, hashes=h)]
    )
    cfg = cluster(max_num_batched_tokens=1024, max_num_seqs=8, fast_forward=fast_forward)
    r = simulate(w, cfg, cost_model=ROOFLINE, check_invariants=True)
    rows = r.calls.set_index("call_id")
    t1 = it.iteration_time(BatchShape((1024,), (0,)))
    t2 = t1 + it.iteration_time(BatchShape((1024,), (1024,)))
    t3 = t2 + it.iteration_time(BatchShape((512, 1), (2048, 2559)))
    assert rows.loc["b", "cached_tokens"] == 2559
    assert rows.loc["a", "first_token_s"] == pytest.approx(t3, rel=1e-12)
    assert rows.loc["b", "first_token_s"] == pytest.approx(t3, rel=1e-12)
    assert r.summary["prefix_hit_rate"] == pytest.approx(2559 / 5120)


def test_second_request_hits_chunk_one_and_the_chunk_computed_beside_it() -> None:
    """A (3072 tokens, budget 2048) prefills in chunks 2048 + 1024.  B shares A's first
    2560 tokens (160 blocks) and has 512 of its own; it arrives during chunk 1 and is
    admitted in the step of chunk 2 (A's 1024 leave 1024 of budget).  It hits the 128
    blocks chunk 1 computed and the 32 of chunk 2 that the same step computes, and
    prefills its own 512 tokens beside A:

        t1 = it((2048,), (0,));  t2 = t1 + it((1024, 512), (2048, 2560))"""
    it = _it()
    ha = chain_hashes(0, 3072)
    hb = ha[:160] + chain_hashes(1, 512, salt=1)
    w = workload([llm("a", "s1", 3072, 1, hashes=ha), llm("b", "s2", 3072, 1, t=1e-6, hashes=hb)])
    r = simulate(
        w,
        cluster(max_num_batched_tokens=2048, max_num_seqs=8),
        cost_model=ROOFLINE,
        check_invariants=True,
    )
    rows = r.calls.set_index("call_id")
    t1 = it.iteration_time(BatchShape((2048,), (0,)))
    t2 = t1 + it.iteration_time(BatchShape((1024, 512), (2048, 2560)))
    assert rows.loc["b", "cached_tokens"] == 2560
    assert rows.loc["a", "first_token_s"] == pytest.approx(t2, rel=1e-12)
    assert rows.loc["b", "first_token_s"] == pytest.approx(t2, rel=1e-12)


def test_no_waiting_request_is_admitted_in_a_step_that_preempted() -> None:
    """4 KV blocks of 16 tokens, budget 17 tokens, two 16-token prompts (no hashes).

    iter 1: A prefills 16 (1 block), B is admitted with the 1 token left (1 block).
    iter 2: A's first decode takes a block (A full at 16); B prefills its last 15.
    iter 3: B's first decode takes the last free block.  A holds 32 token slots, B 32.
    iter 4..17: both decode; A reaches 32 tokens after iter 17, B 31.
    iter 18: A needs a 3rd block, none is free: B (latest admitted) is preempted and
        frees 2 blocks; A takes one.  B (16 prompt + 16 generated = 32 to recompute)
        could start a 16-token chunk in the 1 free block with the 16 tokens of budget
        left, but vLLM v1 admits nothing in a step that preempted: iter 18 is A alone.
    iter 19: B is admitted (16 of its 32 tokens).
    The timeline (one sample per iteration, step by step) shows it: before iter 19,
    1 running and 1 waiting; before iter 20, 2 running."""
    cfg = cluster(
        num_gpu_blocks_override=4,
        max_num_seqs=2,
        max_num_batched_tokens=17,
        fast_forward=False,
    )
    w = workload([llm("a", "s1", 16, 20), llm("b", "s2", 16, 30)])
    r = simulate(w, cfg, cost_model=ROOFLINE, check_invariants=True)
    tl = r.timeline
    running = tl["running"].tolist()
    waiting = tl["waiting"].tolist()
    # samples: [0] before iter 1 (both waiting), [k] before iter k + 1
    assert running[17] == 2 and waiting[17] == 0  # before iter 18
    assert running[18] == 1 and waiting[18] == 1  # before iter 19: B preempted, not re-admitted
    assert running[19] == 2 and waiting[19] == 0  # before iter 20: B admitted in iter 19
    rows = r.calls.set_index("call_id")
    assert rows.loc["b", "preemptions"] >= 1
    # iter 18 ran A's decode alone: its time is a one-sequence decode at 32 + 1 tokens
    it = _it()
    dt18 = tl["time_s"].iloc[18] - tl["time_s"].iloc[17]
    assert dt18 == pytest.approx(
        it.iteration_time(BatchShape(num_decode=1, decode_context_sum=33)), rel=1e-12
    )
    fast = simulate(w, replace(cfg, fast_forward=True), cost_model=ROOFLINE)
    x = fast.calls.set_index("call_id").sort_index()
    y = r.calls.set_index("call_id").sort_index()
    for col in ("first_token_s", "finish_s"):
        assert x[col].to_numpy() == pytest.approx(y[col].to_numpy(), rel=1e-9)


def _offload_case(cpu_offload_gib: float):
    """A's 320-token prompt (20 blocks) finishes; C, another 320-token prompt, needs 21
    of the 30 GPU blocks and evicts 11 of A's cached blocks (tail first); B, A's prompt
    again, then finds A's first 9 blocks in GPU memory."""
    ha = chain_hashes(0, 320)
    hc = chain_hashes(1, 320, salt=1)
    w = workload(
        [
            llm("a", "s1", 320, 2, t=0.0, hashes=ha),
            llm("c", "s2", 320, 2, t=10.0, hashes=hc),
            llm("b", "s3", 320, 2, t=20.0, hashes=ha),
        ]
    )
    cfg = cluster(num_gpu_blocks_override=30, cpu_offload_gib=cpu_offload_gib)
    return simulate(w, cfg, cost_model=ROOFLINE, check_invariants=True), cfg


def test_cpu_offload_loads_an_evicted_prefix_over_pcie_instead_of_recomputing() -> None:
    from sim.cluster.cluster import kv_bytes_per_token_per_gpu
    from sim.costmodel.base import kv_transfer_time
    from sim.specs.topology import build_topology

    it = _it()
    r, cfg = _offload_case(1.0)
    rows = r.calls.set_index("call_id")
    # B: 9 blocks hit in GPU memory, the other 11 load from the CPU tier: every token
    # but the last (always recomputed) is cached; the load is charged to B's step
    dep = cfg.deployments[0]
    block_bytes = kv_bytes_per_token_per_gpu(get_model(dep.model), dep) * dep.block_size
    topo = build_topology(cfg.node_list(), cfg.gpu)
    path = topo.path(topo.gpu_names[0], "n0/cpu0")
    load = kv_transfer_time(11 * block_bytes, path)
    assert rows.loc["b", "cached_tokens"] == 319
    assert rows.loc["b", "ttft_s"] == pytest.approx(
        load + it.iteration_time(BatchShape((1,), (319,))), rel=1e-9
    )
    # without the tier, B recomputes the 11 evicted blocks (and its last token)
    r0, _ = _offload_case(0.0)
    rows0 = r0.calls.set_index("call_id")
    assert rows0.loc["b", "cached_tokens"] == 9 * 16
    assert rows0.loc["b", "ttft_s"] == pytest.approx(
        it.iteration_time(BatchShape((176,), (144,))), rel=1e-12
    )
