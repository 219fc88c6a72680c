"""GPU presets (H200, L40S, B200), PCIe-only nodes, model presets and config.json loading."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import simpy

from policies import registry
from sim.cluster.cluster import Cluster
from sim.cluster.config import (
    ClusterConfig,
    Deployment,
    NodeGroup,
    apply_overrides,
    default_cluster_config,
    load_cluster_config,
    validate,
)
from sim.common.errors import ConfigError
from sim.costmodel.base import BatchShape, ReplicaHardware
from sim.specs.hardware import GB, GPUS, GiB, MiB, get_gpu, gpu_help
from sim.specs.models import HF_ALIASES, PRESETS, ModelSpec, get_model
from sim.specs.topology import build_topology
from tests.helpers import ROOFLINE

# ---- GPU presets ---------------------------------------------------------------------


def test_existing_gpu_presets_keep_their_values() -> None:
    a = GPUS["a100-80gb"]
    assert (a.memory_bytes, a.hbm_bandwidth, a.peak_flops) == (80 * GiB, 2039 * GB, 312e12)
    assert (a.nvlink_bandwidth, a.pcie_bandwidth, a.price_per_hour) == (
        300 * GB,
        32 * GB,
        40.97 / 8,
    )
    assert a.peak_flops_fp8 == 0 and not a.supports_fp8  # Ampere has no FP8 tensor cores
    h = GPUS["h100-80gb"]
    assert (h.memory_bytes, h.hbm_bandwidth, h.peak_flops) == (80 * GiB, 3350 * GB, 989e12)
    assert (h.nvlink_bandwidth, h.pcie_bandwidth) == (450 * GB, 64 * GB)
    assert h.peak_flops_fp8 == 1979e12


def test_new_gpu_presets_from_their_datasheets() -> None:
    h200, l40s, b200 = GPUS["h200-141gb"], GPUS["l40s-48gb"], GPUS["b200-180gb"]
    # driver-reported totals (nvidia-smi MiB), within 1% of the datasheet's GB figure
    # read as GiB except L40S, whose ECC reserve costs 3 GiB of the 48
    assert h200.memory_bytes == 143771 * MiB and h200.memory_bytes / GiB == pytest.approx(
        140.4, abs=0.1
    )
    assert l40s.memory_bytes == 46068 * MiB and l40s.memory_bytes / GiB == pytest.approx(
        45.0, abs=0.1
    )
    assert b200.memory_bytes == 183359 * MiB
    assert (h200.hbm_bandwidth, l40s.hbm_bandwidth, b200.hbm_bandwidth) == (4.8e12, 864e9, 8e12)
    # dense tensor peaks; FP8 doubles BF16 on Hopper, Ada and Blackwell alike
    assert (h200.peak_flops, l40s.peak_flops, b200.peak_flops) == (989e12, 362.05e12, 2250e12)
    for g in (h200, l40s, b200):
        assert g.peak_flops_fp8 == pytest.approx(2 * g.peak_flops, rel=0.02)
        assert g.supports_fp8
    assert l40s.form_factor == "pcie" and l40s.nvlink_bandwidth == 0 and not l40s.has_nvlink
    assert l40s.pcie_bandwidth == 32 * GB  # Gen4 x16 per direction
    assert (h200.nvlink_bandwidth, b200.nvlink_bandwidth) == (450 * GB, 900 * GB)
    assert h200.form_factor == b200.form_factor == "sxm"
    assert 0 < l40s.price_per_hour < h200.price_per_hour < b200.price_per_hour


def test_gpu_help_lists_every_preset_and_unknown_gpu_suggests_one() -> None:
    text = gpu_help()
    for name in GPUS:
        assert name in text
    assert "l40s-48gb (45 GiB, PCIe, no NVLink)" in text
    with pytest.raises(ConfigError, match="did you mean 'l40s-48gb'"):
        get_gpu("l40s-48g")


# ---- nodes of the new GPUs -------------------------------------------------------------


def test_l40s_server_has_no_nvlink_and_tp_goes_over_pcie() -> None:
    topo = build_topology([("pcie-server", 8)], "l40s-48gb")
    assert topo.num_gpus == 8
    assert topo.nvlink_islands() == [[i] for i in range(8)]
    pair = topo.group_bottleneck((0, 1))  # same PCIe switch
    assert (pair.link, pair.bandwidth, pair.hops) == ("pcie", 32 * GB, 2)
    far = topo.group_bottleneck((0, 7))  # across switches and sockets
    assert far.link in ("pcie", "host") and far.hops > 2
    # the A100 PCIe server keeps its NVLink bridges between card pairs
    a100 = build_topology([("pcie-server", 8)], "a100-80gb-pcie")
    assert a100.group_bottleneck((0, 1)).link == "nvlink"


@pytest.mark.parametrize(
    ("gpu", "bw"), [("h200-141gb", 450 * GB), ("b200-180gb", 900 * GB), ("a100-80gb", 300 * GB)]
)
def test_nvswitch_nodes_use_the_gpus_nvlink(gpu: str, bw: float) -> None:
    topo = build_topology([("dgx-a100", 8)], gpu)
    p = topo.group_bottleneck(tuple(range(8)))
    assert (p.link, p.bandwidth) == ("nvlink", bw)


def test_nvswitch_node_of_a_gpu_without_nvlink_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no NVLink"):
        build_topology([("dgx-a100", 8)], "l40s-48gb")
    f = tmp_path / "c.toml"
    f.write_text(
        'gpu = "l40s-48gb"\n[[nodes]]\nbuilder = "dgx-a100"\ncount = 1\ngpus = 8\n'
        '[[deployments]]\nmodel = "llama-3.1-8b"\ntp = 1\nreplicas = 1\n'
    )
    with pytest.raises(
        ConfigError, match=r"c\.toml: nodes\[0\]\.builder: GPU l40s-48gb has no NVLink"
    ):
        load_cluster_config(f)


def _cluster(cfg: ClusterConfig) -> Cluster:
    pol = cfg.policies
    return Cluster(
        simpy.Environment(),
        cfg,
        ROOFLINE,
        registry.create("routing", pol.router),
        lambda: registry.create("batching", pol.batching),
        registry.create("retention", pol.retention),
        registry.create("placement", pol.placement),
        registry.create("autoscaling", pol.autoscaler),
        lambda *a: None,
    )


def test_gpu_flag_picks_a_pcie_server_for_l40s_and_tp2_replicas_use_pcie() -> None:
    cfg = apply_overrides(
        default_cluster_config(), gpu="l40s-48gb", nodes=1, model="llama-3.1-8b", tp=2, replicas=2
    )
    assert cfg.nodes == (NodeGroup("pcie-server", 1, 8),)
    cl = _cluster(cfg)
    hws = list(cl._hw.values())
    assert len(hws) == 2
    for hw in hws:
        assert (hw.link, hw.allreduce_bandwidth, hw.gpu.name) == ("pcie", 32 * GB, "l40s-48gb")
    # H200 keeps the NVSwitch node of the default config, at its own NVLink bandwidth
    cfg = apply_overrides(
        default_cluster_config(), gpu="h200-141gb", nodes=1, model="llama-3.1-70b", tp=4, replicas=2
    )
    assert cfg.nodes[0].builder == "dgx-a100"
    for hw in _cluster(cfg)._hw.values():
        assert (hw.link, hw.allreduce_bandwidth) == ("nvlink", 450 * GB)


def test_memory_plan_follows_the_gpu_memory() -> None:
    from sim.cluster.cluster import plan_memory

    dep = Deployment(model="llama-3.1-8b", tp=1, replicas=1, max_num_batched_tokens=2048)
    m = get_model("llama-3.1-8b")
    l40s = plan_memory(m, GPUS["l40s-48gb"].memory_bytes, dep)
    h200 = plan_memory(m, GPUS["h200-141gb"].memory_bytes, dep)
    assert l40s.weights == h200.weights == m.weight_bytes
    # same weights and activations: the KV left differs by 0.9 x the memory difference
    diff = int(GPUS["h200-141gb"].memory_bytes * 0.9) - int(GPUS["l40s-48gb"].memory_bytes * 0.9)
    assert h200.kv - l40s.kv == diff
    assert l40s.kv_blocks == l40s.kv // (m.kv_bytes_per_token * 16)


# ---- model presets ---------------------------------------------------------------------

# published parameter counts (model cards / HF pages), billions: (total, active)
PUBLISHED = {
    "llama-3.1-8b": (8.03, None),
    "llama-3.1-70b": (70.6, None),
    "qwen3-14b": (14.8, None),
    "qwen3-32b": (32.8, None),
    "qwen2.5-7b": (7.6, None),
    "mistral-nemo-12b": (12.2, None),
    "yi-34b": (34.4, None),
    "codellama-34b": (33.7, None),
    "mixtral-8x7b": (46.7, 12.9),
    "mixtral-8x22b": (141.0, 39.0),
    # 109B counts the ~0.9B vision encoder, which the preset leaves out (see models.py)
    "llama-4-scout-17b-16e": (109.0, 17.0),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_presets_match_published_parameter_counts(name: str) -> None:
    m = PRESETS[name]
    total, active = PUBLISHED[name]
    assert m.num_params / 1e9 == pytest.approx(total, rel=0.02)
    if active is not None:
        # active = the weights one token multiplies, plus its embedding row table
        with_emb = m.active_params_per_token + m.vocab_size * m.hidden_size
        assert with_emb / 1e9 == pytest.approx(active, rel=0.02)


def test_explicit_head_dim_and_kv_bytes() -> None:
    q = PRESETS["qwen3-14b"]
    assert (q.head_dim, q.q_size, q.kv_size) == (128, 5120, 1024)
    assert q.kv_bytes_per_token == 2 * 40 * 8 * 128 * 2
    n = PRESETS["mistral-nemo-12b"]
    assert n.q_size == 4096 != n.hidden_size  # 32 heads x 128
    # q (4096) + k, v (1024 each) from hidden 5120, output 4096 -> 5120
    assert n.attn_params_per_layer == 5120 * (4096 + 2048) + 4096 * 5120
    s = PRESETS["llama-4-scout-17b-16e"]
    per_layer_mlp = 16 * 3 * 5120 * 8192 + 3 * 5120 * 8192  # 16 routed + 1 shared
    assert s.params_per_layer == s.attn_params_per_layer + per_layer_mlp + 5120 * 16 + 2 * 5120


EXPECTED_ALIASES = {
    "meta-llama/Llama-3.1-8B-Instruct": "llama-3.1-8b",
    "meta-llama/Llama-3.1-8B": "llama-3.1-8b",
    "meta-llama/Llama-3.1-70B-Instruct": "llama-3.1-70b",
    "Qwen/Qwen3-14B": "qwen3-14b",
    "Qwen/Qwen2.5-7B-Instruct": "qwen2.5-7b",
    "mistralai/Mistral-Nemo-Instruct-2407": "mistral-nemo-12b",
    "01-ai/Yi-34B": "yi-34b",
    "codellama/CodeLlama-34b-hf": "codellama-34b",
    "mistralai/Mixtral-8x22B-Instruct-v0.1": "mixtral-8x22b",
    "mistralai/Mixtral-8x22B-v0.1": "mixtral-8x22b",
    "mistralai/Mixtral-8x7B-v0.1": "mixtral-8x7b",
    "RedHatAI/Llama-4-Scout-17B-16E-Instruct-FP8-dynamic": "llama-4-scout-17b-16e-fp8",
}


def test_hf_aliases_of_the_measured_runs() -> None:
    for hf, preset in EXPECTED_ALIASES.items():
        assert HF_ALIASES[hf] == preset
        assert get_model(hf).name == preset
        assert get_model(hf.lower()).name == preset
    # every model named in the measured runs resolves (when the shared data is present)
    runs = Path(__file__).resolve().parents[2] / "shared/data/vllm-serving-measurements/runs.csv"
    if runs.exists():
        import csv

        with runs.open() as f:
            names = {row["model"] for row in csv.DictReader(f)}
        for n in names:
            get_model(n)


def test_fp8_scout_alias_has_fp8_weights_and_bf16_kv() -> None:
    fp8 = get_model("RedHatAI/Llama-4-Scout-17B-16E-Instruct-FP8-dynamic")
    bf16 = get_model("meta-llama/Llama-4-Scout-17B-16E-Instruct")
    assert fp8.weight_bytes_per_param == 1 and fp8.fp8_weights
    assert fp8.kv_bytes_per_element == 2 and fp8.kv_bytes_per_token == bf16.kv_bytes_per_token
    assert fp8.num_params == bf16.num_params
    # linear layers at 1 byte; embedding + LM head + norms + routers stay at 2 bytes
    kept = 2 * 202048 * 5120 + 5120 + 48 * (2 * 5120 + 5120 * 16)
    assert fp8.weight_bytes == (bf16.num_params - kept) + 2 * kept
    assert bf16.weight_bytes == 2 * bf16.num_params


# ---- config.json loading ---------------------------------------------------------------


def _cfg_of(m: ModelSpec, **extra: object) -> dict[str, object]:
    d: dict[str, object] = {
        "hidden_size": m.hidden_size,
        "num_attention_heads": m.num_heads,
        "num_key_value_heads": m.num_kv_heads,
        "head_dim": m.head_dim,
        "num_hidden_layers": m.num_layers,
        "intermediate_size": m.intermediate_size,
        "vocab_size": m.vocab_size,
        "max_position_embeddings": m.max_context,
        "tie_word_embeddings": m.tied_embeddings,
        "torch_dtype": "bfloat16",
    }
    if m.num_experts > 1:
        d["num_local_experts"] = m.num_experts
        d["num_experts_per_tok"] = m.experts_per_token
    d.update(extra)
    return d


@pytest.mark.parametrize(
    "name",
    [
        "llama-3.1-8b",
        "llama-3.1-70b",
        "qwen2.5-7b",
        "yi-34b",
        "codellama-34b",
        "mixtral-8x22b",
        "mixtral-8x7b",
    ],
)
def test_flat_configs_load_to_the_preset(name: str) -> None:
    m = PRESETS[name]
    assert ModelSpec.from_hf_config(_cfg_of(m), name=name) == m


def test_qwen3_config_with_explicit_head_dim() -> None:
    # Qwen/Qwen3-14B config.json (the fields the spec reads)
    cfg = {
        "architectures": ["Qwen3ForCausalLM"],
        "head_dim": 128,
        "hidden_act": "silu",
        "hidden_size": 5120,
        "intermediate_size": 17408,
        "max_position_embeddings": 40960,
        "model_type": "qwen3",
        "num_attention_heads": 40,
        "num_hidden_layers": 40,
        "num_key_value_heads": 8,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "vocab_size": 151936,
    }
    assert ModelSpec.from_hf_config(cfg, name="qwen3-14b") == PRESETS["qwen3-14b"]
    # Mistral-Nemo: hidden / heads = 160, but head_dim says 128
    nemo = _cfg_of(PRESETS["mistral-nemo-12b"])
    assert ModelSpec.from_hf_config(nemo).head_dim == 128
    del nemo["head_dim"]
    assert ModelSpec.from_hf_config(nemo).head_dim == 160  # the fallback hidden // heads


def _scout_config(**quant: object) -> dict[str, object]:
    """meta-llama/Llama-4-Scout-17B-16E config.json shape: text under text_config."""
    cfg: dict[str, object] = {
        "architectures": ["Llama4ForConditionalGeneration"],
        "model_type": "llama4",
        "torch_dtype": "bfloat16",
        "text_config": {
            "model_type": "llama4_text",
            "hidden_size": 5120,
            "intermediate_size": 8192,
            "intermediate_size_mlp": 16384,
            "num_hidden_layers": 48,
            "num_attention_heads": 40,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "num_local_experts": 16,
            "num_experts_per_tok": 1,
            "interleave_moe_layer_step": 1,
            "vocab_size": 202048,
            "max_position_embeddings": 10485760,
            "tie_word_embeddings": False,
        },
        "vision_config": {"hidden_size": 1408, "num_hidden_layers": 34},
    }
    cfg.update(quant)
    return cfg


def test_llama4_text_config_nesting_and_fp8_quantization() -> None:
    m = ModelSpec.from_hf_config(_scout_config(), name="llama-4-scout-17b-16e")
    assert m == PRESETS["llama-4-scout-17b-16e"]
    q = {
        "quantization_config": {
            "quant_method": "compressed-tensors",
            "config_groups": {
                "group_0": {"weights": {"num_bits": 8, "type": "float", "strategy": "channel"}}
            },
            "ignore": ["re:.*lm_head", "re:.*router"],
        }
    }
    fp8 = ModelSpec.from_hf_config(_scout_config(**q), name="llama-4-scout-17b-16e-fp8")
    assert fp8 == PRESETS["llama-4-scout-17b-16e-fp8"]
    q["quantization_config"]["kv_cache_scheme"] = {"num_bits": 8, "type": "float"}  # type: ignore[index]
    assert ModelSpec.from_hf_config(_scout_config(**q)).kv_bytes_per_element == 1
    native_fp8 = ModelSpec.from_hf_config(
        _cfg_of(PRESETS["llama-3.1-8b"], quantization_config={"quant_method": "fp8"})
    )
    assert native_fp8.weight_bytes_per_param == 1 and native_fp8.kv_bytes_per_element == 2


def test_interleaved_moe_is_refused_and_qwen_moe_widths_load() -> None:
    cfg = _scout_config()
    cfg["text_config"] = {**cfg["text_config"], "interleave_moe_layer_step": 2}  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="interleave_moe_layer_step=2"):
        ModelSpec.from_hf_config(cfg)
    # Qwen MoE style: expert width in moe_intermediate_size, a shared expert
    qm = ModelSpec.from_hf_config(
        {
            "hidden_size": 2048,
            "num_attention_heads": 16,
            "num_key_value_heads": 16,
            "num_hidden_layers": 24,
            "intermediate_size": 5632,
            "moe_intermediate_size": 1408,
            "shared_expert_intermediate_size": 5632,
            "num_experts": 60,
            "num_experts_per_tok": 4,
            "vocab_size": 151936,
        }
    )
    assert (qm.intermediate_size, qm.shared_expert_intermediate, qm.num_experts) == (1408, 5632, 60)


def test_config_file_loads_through_get_model(tmp_path: Path) -> None:
    import json

    d = tmp_path / "scout"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(_scout_config()))
    m = get_model(str(d / "config.json"))
    assert replace(m, name="x") == replace(PRESETS["llama-4-scout-17b-16e"], name="x")


def test_validate_accepts_every_new_preset_on_some_gpu() -> None:
    for name, tp in [
        ("llama-3.1-70b", 4),
        ("yi-34b", 2),
        ("mixtral-8x22b", 8),
        ("llama-4-scout-17b-16e-fp8", 2),
    ]:
        cfg = validate(
            ClusterConfig(
                gpu="h100-80gb",
                nodes=(NodeGroup("dgx-a100", 1, 8),),
                deployments=(Deployment(model=name, tp=tp, replicas=1),),
            )
        )
        _cluster(cfg)  # plans memory: the weights fit


# ---- precision: --dtype / deployment dtype -------------------------------------------


def test_with_dtype_sets_weight_and_kv_bytes() -> None:
    m = PRESETS["llama-3.1-8b"]
    assert m.with_dtype() is m and m.with_dtype("auto", "auto") is m
    assert m.with_dtype("bf16") == m == m.with_dtype("fp16", "bf16")  # both 2 bytes
    f = m.with_dtype("fp8")
    assert (f.weight_bytes_per_param, f.kv_bytes_per_element, f.dtype_bytes) == (1, 1, 2)
    assert f.kv_bytes_per_token * 2 == m.kv_bytes_per_token
    # linear weights halve; embedding, LM head and norms stay 2 bytes
    kept = 2 * 128256 * 4096 + 4096 + 32 * 2 * 4096
    assert f.weight_bytes == m.num_params - kept + 2 * kept
    w8kv16 = m.with_dtype("fp8", "bf16")
    assert (w8kv16.weight_bytes_per_param, w8kv16.kv_bytes_per_element) == (1, 2)
    assert m.with_dtype(kv_cache_dtype="fp8").weight_bytes == m.weight_bytes
    # an FP8 checkpoint served at bf16 is the bf16 model again
    scout8 = PRESETS["llama-4-scout-17b-16e-fp8"]
    assert replace(scout8.with_dtype("bf16"), name="s") == replace(
        PRESETS["llama-4-scout-17b-16e"], name="s"
    )
    with pytest.raises(ConfigError, match="'int4' is not one of fp16, bf16, fp8"):
        m.with_dtype("int4")


def _dtype_toml(tmp_path: Path, gpu: str, line: str) -> Path:
    f = tmp_path / "c.toml"
    f.write_text(
        f'gpu = "{gpu}"\n[[nodes]]\nbuilder = "dgx-a100"\ncount = 1\ngpus = 8\n'
        f'[[deployments]]\nmodel = "llama-3.1-8b"\ntp = 1\nreplicas = 1\n{line}\n'
    )
    return f


def test_toml_dtype_is_validated_with_file_and_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"c\.toml: deployments\[0\]\.dtype: 'fp4' is not one of"):
        load_cluster_config(_dtype_toml(tmp_path, "h100-80gb", 'dtype = "fp4"'))
    with pytest.raises(ConfigError, match=r"c\.toml: deployments\[0\]\.dtype: expected a string"):
        load_cluster_config(_dtype_toml(tmp_path, "h100-80gb", "dtype = 8"))
    with pytest.raises(
        ConfigError, match=r"deployments\[0\]\.dtype: fp8 needs FP8 tensor cores, which a100-80gb"
    ):
        load_cluster_config(_dtype_toml(tmp_path, "a100-80gb", 'dtype = "fp8"'))
    with pytest.raises(ConfigError, match=r"deployments\[0\]\.kv_cache_dtype: 'e4m3'"):
        load_cluster_config(_dtype_toml(tmp_path, "h100-80gb", 'kv_cache_dtype = "e4m3"'))
    # an FP8 KV cache alone is fine on A100 (vLLM stores it; attention upcasts)
    cfg = load_cluster_config(_dtype_toml(tmp_path, "a100-80gb", 'kv_cache_dtype = "fp8"'))
    assert cfg.deployments[0].kv_cache_dtype == "fp8"
    cfg = load_cluster_config(_dtype_toml(tmp_path, "h100-80gb", 'dtype = "fp8"'))
    cl = _cluster(cfg)
    spec = cl.specs["llama-3.1-8b"]
    assert (spec.weight_bytes_per_param, spec.kv_bytes_per_element) == (1, 1)
    hw = next(iter(cl._hw.values()))
    assert hw.model == spec  # the cost model sees the FP8 model


def test_fp8_doubles_kv_capacity_and_shrinks_weights() -> None:
    from sim.cluster.cluster import kv_bytes_per_token_per_gpu

    base = validate(
        ClusterConfig(
            gpu="h100-80gb",
            nodes=(NodeGroup("dgx-a100", 1, 8),),
            deployments=(Deployment(model="llama-3.1-70b", tp=4, replicas=1),),
        )
    )
    fp8 = apply_overrides(base, dtype="fp8")
    a, b = _cluster(base), _cluster(fp8)
    ma, mb = a.memory["llama-3.1-70b"], b.memory["llama-3.1-70b"]
    assert mb.weights < 0.52 * ma.weights
    dep = fp8.deployments[0]
    assert 2 * kv_bytes_per_token_per_gpu(b.specs["llama-3.1-70b"], dep) == (
        kv_bytes_per_token_per_gpu(a.specs["llama-3.1-70b"], dep)
    )
    assert mb.kv_blocks > 2 * ma.kv_blocks  # half the bytes per block and more memory left


def test_cli_dtype_fp8_on_a100_fails_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sim.cli.main import main

    out = tmp_path / "out"
    trace = str(Path(__file__).resolve().parent.parent / "traces" / "default.jsonl")
    rc = main(["run", "--trace", trace, "--out", str(out), "--quiet", "--dtype", "fp8"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "deployments[0].dtype: fp8 needs FP8 tensor cores" in err
    assert not out.exists()


def test_roofline_prices_fp8_bytes_and_fp8_flops_by_hand() -> None:
    from sim.costmodel.base import RooflineIterationModel, RooflineParams, gemm_peak_flops

    p = RooflineParams(iteration_overhead_s=0.0, per_seq_overhead_s=0.0, per_layer_overhead_s=0.0)
    m16 = PRESETS["llama-3.1-8b"]
    m8 = m16.with_dtype("fp8")
    h100, a100 = GPUS["h100-80gb"], GPUS["a100-80gb"]
    assert gemm_peak_flops(m8, h100) == 1979e12 and gemm_peak_flops(m16, h100) == 989e12
    # an FP8 checkpoint on A100 (no FP8 tensor cores) keeps 16-bit math, 1-byte reads
    assert gemm_peak_flops(m8, a100) == 312e12
    layer_w = m16.attn_params_per_layer + m16.mlp_params_per_expert
    head_w = m16.vocab_size * m16.hidden_size
    bw = h100.hbm_bandwidth * 0.8

    def by_hand(dt_w: int, peak: float, tokens: int) -> float:
        flops = peak * 0.7
        per_layer = max(2.0 * tokens * layer_w / flops, layer_w * dt_w / bw)
        head = max(2.0 * 1 * head_w / (989e12 * 0.7), head_w * 2 / bw)
        return 32 * per_layer + head

    for m, dt_w, peak in ((m16, 2, 989e12), (m8, 1, 1979e12)):
        it = RooflineIterationModel(ReplicaHardware(m, h100), p)
        # one decode token with no context: memory-bound weight read
        assert it.iteration_time(BatchShape(num_decode=1)) == pytest.approx(by_hand(dt_w, peak, 1))
        # a long prompt chunk: compute-bound GEMMs (attention priced separately)
        t = it._linear_time(4096, 1)
        assert t == pytest.approx(by_hand(dt_w, peak, 4096))
    # decode KV reads: fp8 KV halves the per-context term
    it16 = RooflineIterationModel(ReplicaHardware(m16, h100), p)
    it8 = RooflineIterationModel(ReplicaHardware(m8, h100), p)
    d16 = it16.decode_time(8, 8000) - it16.decode_time(8, 0)
    d8 = it8.decode_time(8, 8000) - it8.decode_time(8, 0)
    assert d8 == pytest.approx(d16 / 2)
    assert d16 == pytest.approx(32 * 2 * 1024 * 2 * 8000 / bw)


def test_fitted_model_runs_fp8_gemms_on_the_fp8_peak() -> None:
    from sim.costmodel.fitted import FittedIterationModel, default_fitted_costmodel

    cm = default_fitted_costmodel()
    h100 = GPUS["h100-80gb"]
    m16 = PRESETS["llama-3.1-8b"]
    params = cm.params_for(h100)
    f16 = FittedIterationModel(ReplicaHardware(m16, h100), params)
    f8 = FittedIterationModel(ReplicaHardware(m16.with_dtype("fp8"), h100), params)
    f8kv16 = FittedIterationModel(ReplicaHardware(m16.with_dtype("fp8", "bf16"), h100), params)
    for a, b in ((f16._qkv, f8._qkv), (f16._up, f8._up), (f16._down, f8._down)):
        assert b.peak_flops == pytest.approx(a.peak_flops * 1979 / 989)
        assert b.peak_bytes == a.peak_bytes
    assert f8._head_op is params.gemm["mlp_up_proj"]  # LM head and router stay 16-bit
    # every weight-reading component is cheaper; attention over bf16 KV is unchanged
    for tokens in (1, 64, 2048):
        assert f8.layer_breakdown(tokens)["gemm"] < f16.layer_breakdown(tokens)["gemm"]
        assert (
            f8.layer_breakdown(tokens)["elementwise"] == f16.layer_breakdown(tokens)["elementwise"]
        )
    assert f8kv16._decode_attn(32, 32 * 4000) == f16._decode_attn(32, 32 * 4000)
    assert f8._decode_attn(32, 32 * 4000) < f16._decode_attn(32, 32 * 4000)
    assert f8._g.decode_bytes(1000.0) * 2 == f16._g.decode_bytes(1000.0)
    big = BatchShape((2048,), (0,))
    assert f8.iteration_time(big) < f16.iteration_time(big)


# ---- MoE: distinct experts a batch touches ---------------------------------------------


def test_expected_experts_touched_by_hand_and_limits() -> None:
    from sim.specs.models import expected_experts_touched as ex

    # E = 8, k = 2, 3 tokens: each expert is missed by one token with p = 6/8
    assert ex(3, 8, 2) == pytest.approx(8 * (1 - 0.75**3)) == pytest.approx(4.625)
    assert ex(1, 8, 2) == pytest.approx(2.0)  # one token: its k experts
    assert ex(1, 16, 1) == pytest.approx(1.0)
    assert ex(10_000, 8, 2) == pytest.approx(8.0)  # many tokens: every expert
    assert ex(0, 8, 2) == 0.0
    assert ex(5, 1, 1) == 1.0  # dense: its one MLP
    prev = 0.0
    for n in range(1, 200):
        v = ex(n, 16, 1)
        assert prev < v <= min(16, n * 1) + 1e-12  # monotone, below the worst case
        prev = v


def test_expected_experts_touched_matches_a_seeded_simulation() -> None:
    import numpy as np

    from sim.specs.models import expected_experts_touched as ex

    rng = np.random.default_rng(7)
    for e, k, n in ((8, 2, 4), (16, 1, 6), (8, 2, 12)):
        trials = 4000
        counts = np.empty(trials)
        for i in range(trials):
            picks = np.concatenate([rng.choice(e, size=k, replace=False) for _ in range(n)])
            counts[i] = len(np.unique(picks))
        assert counts.mean() == pytest.approx(ex(n, e, k), rel=0.02)


def test_roofline_moe_reads_the_weights_of_the_experts_it_touches() -> None:
    from sim.costmodel.base import RooflineIterationModel, RooflineParams

    p = RooflineParams(iteration_overhead_s=0.0, per_seq_overhead_s=0.0, per_layer_overhead_s=0.0)
    m = PRESETS["mixtral-8x7b"]
    h100 = GPUS["h100-80gb"]
    it = RooflineIterationModel(ReplicaHardware(m, h100), p)
    bw = h100.hbm_bandwidth * 0.8
    head = m.vocab_size * m.hidden_size * 2 / bw  # memory-bound for a few sequences
    for n in (1, 2, 4):
        hit = 8 * (1 - 0.75**n)
        w = m.attn_params_per_layer + hit * m.mlp_params_per_expert
        expect = 32 * w * 2 / bw + head
        assert it.iteration_time(BatchShape(num_decode=n)) == pytest.approx(expect, rel=1e-12)
    # 4 decodes touch 5.47 experts, not min(8, 4 x 2) = 8
    four = it.iteration_time(BatchShape(num_decode=4))
    worst = 32 * (m.attn_params_per_layer + 8 * m.mlp_params_per_expert) * 2 / bw + head
    assert four < 0.8 * worst
    # Scout: 1 routed expert + the shared one per token
    s = PRESETS["llama-4-scout-17b-16e"]
    its = RooflineIterationModel(ReplicaHardware(s, h100), p)
    w1 = s.attn_params_per_layer + s.shared_expert_params_per_layer + s.mlp_params_per_expert
    head_s = s.vocab_size * s.hidden_size * 2 / bw
    assert its.iteration_time(BatchShape(num_decode=1)) == pytest.approx(48 * w1 * 2 / bw + head_s)


def test_fitted_moe_cost_grows_with_the_experts_touched() -> None:
    from sim.costmodel.fitted import FittedIterationModel, default_fitted_costmodel

    cm = default_fitted_costmodel()
    a100 = GPUS["a100-80gb"]
    fm = FittedIterationModel(
        ReplicaHardware(PRESETS["mixtral-8x7b"], a100, tp=2), cm.params_for(a100)
    )
    gemm = [fm.layer_breakdown(n)["gemm"] for n in (1, 2, 3, 4, 8, 16, 64)]
    assert all(a < b for a, b in zip(gemm, gemm[1:], strict=False))
    # small decode batches read fewer experts than the min(E, n k) worst case would
    one_expert = fm.layer_breakdown(1)["gemm"]
    assert fm.layer_breakdown(4)["gemm"] < 2.9 * one_expert  # 5.47 / 2 experts-worth
    # Scout's shared expert adds a dense MLP of 8192 to every token
    s = PRESETS["llama-4-scout-17b-16e"]
    no_shared = replace(s, shared_expert_intermediate=0)
    h100 = GPUS["h100-80gb"]
    fs = FittedIterationModel(ReplicaHardware(s, h100, tp=2), cm.params_for(h100))
    fn = FittedIterationModel(ReplicaHardware(no_shared, h100, tp=2), cm.params_for(h100))
    assert fs.layer_breakdown(32)["gemm"] > fn.layer_breakdown(32)["gemm"]
