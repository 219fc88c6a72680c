"""A generated corpus of malformed inputs against every reader and config loader.

Each case is a file (trace, cluster TOML, fault TOML, sweep TOML, synth TOML, model
``config.json``, cost model TOML) that must be refused: the CLI (run in-process through
:func:`sim.cli.main.main`) exits 2, prints exactly one line ``agentsim: error: FILE:LINE:
FIELD: problem`` (the line where the format has lines, and for TOML where the parser
or the loader knows it), no traceback, and writes nothing (no output file, no output
directory, no temporary left beside them).

The corpus is built from a valid file per format with one defect spliced in: truncated,
wrong types, negative and zero counts, non-UTF-8 bytes, enormous values (1e308,
10**30 tokens), NaN/inf, duplicate ids, empty files, and the input given as the output.
``test_valid_bases_load`` checks that every base file is accepted, so each case fails
for its defect alone.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sim.cli.main import main

ROOT = Path(__file__).resolve().parent.parent

# ---- valid bases -------------------------------------------------------------------------

CANON = (
    '{"agentsim_trace": 1}\n'
    '{"session_id":"s","call_id":"a","type":"llm","issue_time_s":0,"input_tokens":40,"output_tokens":4}\n'
    '{"session_id":"s","call_id":"b","parents":["a"],"type":"llm","gap_s":0.5,"input_tokens":60,"output_tokens":3}\n'
)
MOONCAKE = (
    '{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]}\n'
    '{"timestamp": 10, "input_length": 700, "output_length": 9, "hash_ids": [1, 2, 3]}\n'
)
AZURE = (
    "TIMESTAMP,ContextTokens,GeneratedTokens\n"
    "2023-11-16 18:15:46.6805900,374,44\n"
    "2023-11-16 18:15:50.0,37,4\n"
)
BURST = (
    "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
    "5,ChatGPT,472,18,490,Conversation log\n"
    "7,GPT-4,1087,230,1317,API log\n"
)
CSV = "timestamp,input_tokens,output_tokens\n0,10,2\n1.5,20,3\n"
JSONL = (
    '{"timestamp": 0, "prompt_tokens": 10, "completion_tokens": 2}\n'
    '{"timestamp": 1.5, "prompt_tokens": 20, "completion_tokens": 3}\n'
)
LMCACHE = (
    '{"timestamp": 1700000000000000, "input": "You are a helpful agent.", "output": "ok", "session_id": "s1"}\n'
    '{"timestamp": 1700000003500000, "input": "You are a helpful agent. ok. next", "output": "done", "session_id": "s1"}\n'
)
CLUSTER = """name = "tiny"
gpu = "a100-80gb"

[[nodes]]
builder = "dgx-a100"
count = 1
gpus = 8

[[deployments]]
model = "llama-3-8b"
tp = 1
replicas = 2
max_num_seqs = 64
max_num_batched_tokens = 4096

[policies]
router = "round_robin"
"""
FAULTS = """[[faults]]
at_s = 5.0
kind = "gpu"
gpu = 0
repair_s = 60.0

[generate]
seed = 1
horizon_s = 100.0
gpu_mtbf_s = 1.0e6
"""
SYNTH = """seed = 0
sessions = 3

[arrivals]
process = "poisson"
rate_per_s = 1.0

[[agents]]
kind = "react"
weight = 1.0
turns = { dist = "const", value = 3 }
"""
MODEL = {
    "hidden_size": 512,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "num_hidden_layers": 4,
    "intermediate_size": 1024,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "torch_dtype": "bfloat16",
}


def _sweep(trace: str) -> str:
    return f"""[sweep]
name = "t"

[base]
trace = "{trace}"
nodes = 1
model = "llama-3-8b"
tp = 1
replicas = 1

[grid]
policies = ["round_robin"]
load_scales = [1.0, 2.0]
"""


# ---- how each loader is driven ----------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One malformed input: ``content`` written to ``name`` and read by ``loader``;
    ``expect`` is a regex the part after ``FILE`` must match (line and field)."""

    id: str
    loader: str
    name: str
    content: bytes | str
    expect: str


def _trace_cmds(path: Path, out: Path, fmt: str | None) -> list[list[str]]:
    extra = ["--trace-format", fmt] if fmt else []
    return [
        ["trace", "stats", str(path), *extra],
        ["trace", "convert", str(path), "-o", str(out / "conv.jsonl"), *extra],
    ]


#: The committed fitted model, named so that the runs do not depend on the default.
COSTMODEL = str(ROOT / "calibration" / "costmodels" / "vidur-a100.toml")


def _run(out: Path, *args: str) -> list[str]:
    cm = [] if "--costmodel" in args else ["--costmodel", COSTMODEL]
    return ["run", "--quiet", "--no-html", "--out", str(out / "run"), *cm, *args]


def commands(loader: str, path: Path, out: Path) -> list[list[str]]:
    tiny = str(out.parent / "tiny.jsonl")
    if loader in ("agentsim", "mooncake", "azure", "burstgpt", "csv", "lmcache"):
        fmt = None if loader in ("agentsim", "mooncake", "azure", "burstgpt") else loader
        cmds = _trace_cmds(path, out, fmt)
        cmds.append(_run(out, "--trace", str(path), *(["--trace-format", fmt] if fmt else [])))
        return cmds
    if loader == "cluster":
        return [_run(out, "--cluster", str(path), "--trace", tiny)]
    if loader == "faults":
        return [_run(out, "--faults", str(path), "--trace", tiny)]
    if loader == "sweep":
        return [["sweep", str(path), "--dry-run", "--out", str(out / "sweep")]]
    if loader == "synth":
        return [
            ["trace", "synth", str(path), "-o", str(out / "synth.jsonl")],
            ["trace", "stats", str(path)],
        ]
    if loader == "model":
        return [_run(out, "--model", str(path), "--tp", "1", "--trace", tiny)]
    if loader == "costmodel":
        return [_run(out, "--costmodel", str(path), "--trace", tiny)]
    raise AssertionError(loader)


# ---- the corpus ------------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _sub(text: str, line: int, old: str, new: str) -> str:
    """``text`` with ``old`` replaced by ``new`` on 1-based ``line`` (must be there)."""
    ls = _lines(text)
    assert old in ls[line - 1], (old, ls[line - 1])
    ls[line - 1] = ls[line - 1].replace(old, new, 1)
    return "".join(ls)


def _bad_utf8(text: str, line: int) -> bytes:
    ls = [x.encode() for x in _lines(text)]
    ls[line - 1] = ls[line - 1].rstrip(b"\n") + b"\xff\xfe\x80\n"
    return b"".join(ls)


def _truncate(text: str, line: int) -> str:
    """``text`` cut in the middle of ``line``."""
    ls = _lines(text)
    return "".join(ls[: line - 1]) + ls[line - 1][: len(ls[line - 1]) // 2]


def _trace_cases() -> list[Case]:
    cs: list[Case] = []
    # (format, file name, base, line of the 2nd record, token field, its value there,
    #  output field and value, time field and value)
    table = [
        ("agentsim", "c.jsonl", CANON, 3, '"input_tokens":60', '"output_tokens":3', '"gap_s":0.5'),
        ("mooncake", "m.jsonl", MOONCAKE, 2, '"input_length": 700', '"output_length": 9', '"timestamp": 10'),
        ("azure", "a.csv", AZURE, 3, ",37,", ",4\n", "18:15:50.0"),
        ("burstgpt", "b.csv", BURST, 3, ",1087,", ",230,", "7,GPT"),
        ("csv", "u.csv", CSV, 3, ",20,", ",3\n", "1.5,"),
        ("csv", "u.jsonl", JSONL, 2, '"prompt_tokens": 20', '"completion_tokens": 3', '"timestamp": 1.5'),
        ("lmcache", "l.jsonl", LMCACHE, 2, '"input": "You', '"output": "done"', '"timestamp": 1700000003500000'),
    ]  # fmt: skip
    fields = {
        "agentsim": ("input_tokens", "output_tokens", "gap_s"),
        "mooncake": ("input_length", "output_length", "timestamp"),
        "azure": ("ContextTokens", "GeneratedTokens", "TIMESTAMP"),
        "burstgpt": ("Request tokens", "Response tokens", "Timestamp"),
        "csv": ("(input_tokens|prompt_tokens)", "(output_tokens|completion_tokens)", "timestamp"),
        "lmcache": ("input", "output", "timestamp"),
    }
    for fmt, name, base, ln, tok, out, tim in table:
        fin, fout, ftime = fields[fmt]
        key = f"{fmt}-{Path(name).suffix[1:]}"
        num = not tok.startswith('"input"')  # lmcache holds text, not counts

        def setv(frag: str, value: str, base: str = base, ln: int = ln) -> str:
            sep = ": " if ": " in frag else (":" if frag.startswith('"') else None)
            if sep is None:  # a CSV cell ",37," / ",4\n" / "7,GPT" / "1.5,"
                if frag.startswith(","):
                    end = "," if frag.endswith(",") else "\n"
                    return _sub(base, ln, frag, f",{value}{end}")
                if frag.endswith(","):
                    return _sub(base, ln, frag, f"{value},")
                if frag.endswith(",GPT"):
                    return _sub(base, ln, frag, f"{value},GPT")
                return _sub(base, ln, frag, value)
            k = frag.split(sep)[0]
            return _sub(base, ln, frag, f"{k}{sep}{value}")

        cs += [
            Case(f"{key}-empty", fmt, name, "", r":1: "),
            Case(f"{key}-blank-lines", fmt, name, "\n\n  \n", r":\d+: "),
            Case(f"{key}-not-utf8", fmt, name, _bad_utf8(base, ln), rf":{ln}: encoding: "),
            Case(f"{key}-random-bytes", fmt, name, bytes(range(128, 256)) * 4, r":1: encoding: "),
            Case(f"{key}-truncated", fmt, name, _truncate(base, ln), rf":{ln}: "),
        ]
        if fmt == "azure":
            cs.append(
                Case(f"{key}-bad-time", fmt, name, setv(tim, "18:15:61.0"), rf":{ln}: {ftime}: ")
            )
        if not num:
            wrong = _sub(base, ln, '"output": "done"', '"output": 12')
            cs.append(Case(f"{key}-wrong-type", fmt, name, wrong, rf":{ln}: {fout}: "))
            cs.append(
                Case(
                    f"{key}-time-nan",
                    fmt,
                    name,
                    setv(tim, "NaN"),
                    rf":{ln}: ({ftime}|invalid JSON)",
                )
            )
            continue
        q = '"' if tok.startswith('"') else ""
        cs += [
            Case(f"{key}-tokens-text", fmt, name, setv(tok, f"{q}many{q}"), rf":{ln}: {fin}: "),
            Case(f"{key}-tokens-fraction", fmt, name, setv(tok, "2.5"), rf":{ln}: {fin}: "),
            Case(f"{key}-tokens-negative", fmt, name, setv(tok, "-7"), rf":{ln}: {fin}: "),
            Case(f"{key}-out-negative", fmt, name, setv(out, "-1"), rf":{ln}: {fout}: "),
            Case(f"{key}-tokens-1e308", fmt, name, setv(tok, "1e308"), rf":{ln}: {fin}: "),
            Case(f"{key}-tokens-10e30", fmt, name, setv(tok, str(10**30)), rf":{ln}: {fin}: "),
            Case(f"{key}-out-10e30", fmt, name, setv(out, str(10**30)), rf":{ln}: {fout}: "),
            Case(f"{key}-tokens-nan", fmt, name, setv(tok, "NaN"), rf":{ln}: ({fin}: |invalid JSON)"),
            Case(f"{key}-tokens-inf", fmt, name, setv(tok, "Infinity" if q else "inf"), rf":{ln}: ({fin}: |invalid JSON)"),
            Case(f"{key}-time-negative", fmt, name, setv(tim, "-3" if fmt != "burstgpt" else "-3"), rf":{ln}: {ftime}: "),
            Case(f"{key}-time-1e308", fmt, name, setv(tim, "1e308"), rf":{ln}: {ftime}: "),
            Case(f"{key}-time-nan", fmt, name, setv(tim, "NaN"), rf":{ln}: ({ftime}: |invalid JSON)"),
        ]  # fmt: skip
        if q:
            cs.append(Case(f"{key}-tokens-bool", fmt, name, setv(tok, "true"), rf":{ln}: {fin}: "))
    # duplicate ids, bad references
    cs.append(
        Case(
            "agentsim-duplicate-id",
            "agentsim",
            "c.jsonl",
            _sub(CANON, 3, '"call_id":"b"', '"call_id":"a"'),
            r":3: call_id: duplicate",
        )
    )
    cs.append(
        Case(
            "agentsim-tool-duration-1e308",
            "agentsim",
            "c.jsonl",
            CANON
            + '{"session_id":"s","call_id":"t","parents":["b"],"type":"tool","tool_duration_s":1e308}\n',
            r":4: tool_duration_s: ",
        )
    )
    cs.append(
        Case(
            "agentsim-issue-time-1e308",
            "agentsim",
            "c.jsonl",
            _sub(CANON, 2, '"issue_time_s":0', '"issue_time_s":1e308'),
            r":2: issue_time_s: ",
        )
    )
    cs.append(
        Case(
            "mooncake-hash-ids-huge",
            "mooncake",
            "m.jsonl",
            _sub(MOONCAKE, 2, "[1, 2, 3]", f"[1, 2, {10**30}]"),
            r":2: hash_ids: ",
        )
    )
    cs.append(
        Case(
            "lmcache-duplicate-session",
            "lmcache",
            "l.jsonl",
            _sub(LMCACHE, 2, '"session_id": "s1"', '"session_id": "s2"'),
            r":2: session_id: ",
        )
    )
    cs.append(
        Case(
            "azure-header-only-typo",
            "azure",
            "a.csv",
            "TIMESTAMP,ContextTokens,Generated\n",
            r":1: ",
        )
    )
    return cs


def _toml_cases(
    loader: str, name: str, base: str, edits: list[tuple[str, int, str, str, str]]
) -> list[Case]:
    """Common defects of a TOML file, plus ``edits`` (id, line, old, new, expect)."""
    cs = [
        Case(f"{loader}-empty", loader, name, "", r"(:\d+)?: "),
        Case(f"{loader}-not-utf8", loader, name, _bad_utf8(base, 2), r":2: "),
        Case(f"{loader}-random-bytes", loader, name, bytes(range(128, 256)) * 4, r":1: "),
        Case(f"{loader}-truncated", loader, name, base[: base.index("= ", len(base) // 2) + 2], r":\d+: "),
        Case(f"{loader}-syntax", loader, name, base + "\n[[x\n", r":\d+: "),
    ]  # fmt: skip
    for cid, line, old, new, expect in edits:
        cs.append(Case(f"{loader}-{cid}", loader, name, _sub(base, line, old, new), expect))
    return cs


def _line_of(text: str, frag: str) -> int:
    for i, s in enumerate(text.splitlines(), 1):
        if frag in s:
            return i
    raise AssertionError(frag)


def _cl(cid: str, frag: str, new: str, field: str) -> tuple[str, int, str, str, str]:
    return (cid, _line_of(CLUSTER, frag), frag, new, rf"(:\d+)?: {re.escape(field)}[\w.\[\]]*: ")


def _fa(cid: str, frag: str, new: str, field: str) -> tuple[str, int, str, str, str]:
    ln = _line_of(FAULTS, frag)
    return (cid, ln, frag, new, rf":{ln}: {re.escape(field)}[\w.\[\]]*: ")


def _sy(cid: str, frag: str, new: str, field: str) -> tuple[str, int, str, str, str]:
    return (cid, _line_of(SYNTH, frag), frag, new, rf"(:\d+)?: {re.escape(field)}[\w.\[\]]*: ")


def _config_cases() -> list[Case]:
    d = "deployments[0]"
    cs = _toml_cases(
        "cluster",
        "c.toml",
        CLUSTER,
        [
            _cl("tp-string", "tp = 1", 'tp = "one"', f"{d}.tp"),
            _cl("tp-zero", "tp = 1", "tp = 0", f"{d}.model"),
            _cl("replicas-negative", "replicas = 2", "replicas = -1", f"{d}.replicas"),
            _cl("seqs-zero", "max_num_seqs = 64", "max_num_seqs = 0", f"{d}.max_num_seqs"),
            _cl("seqs-10e30", "max_num_seqs = 64", f"max_num_seqs = {10**30}", f"{d}.max_num_seqs"),
            _cl(
                "tokens-1e308",
                "max_num_batched_tokens = 4096",
                "max_num_batched_tokens = 1e308",
                f"{d}.max_num_batched_tokens",
            ),
            _cl("count-zero", "count = 1", "count = 0", "nodes[0].count"),
            _cl("count-negative", "count = 1", "count = -2", "nodes[0].count"),
            _cl("gpus-float", "gpus = 8", "gpus = 8.5", "nodes[0].gpus"),
            _cl("router-int", 'router = "round_robin"', "router = 3", "policies.router"),
            _cl("gpu-unknown", 'gpu = "a100-80gb"', 'gpu = "z100"', "gpu"),
            _cl(
                "model-len-negative",
                "max_num_seqs = 64",
                "max_num_seqs = 64\nmax_model_len = -5",
                f"{d}.max_model_len",
            ),
            _cl(
                "model-len-10e30",
                "max_num_seqs = 64",
                f"max_num_seqs = 64\nmax_model_len = {10**30}",
                f"{d}.max_model_len",
            ),
            _cl(
                "too-long-bad",
                "max_num_seqs = 64",
                'max_num_seqs = 64\ntoo_long = "drop"',
                f"{d}.too_long",
            ),
            _cl("init-nan", "max_num_seqs = 64", "max_num_seqs = 64\ninit_s = nan", f"{d}.init_s"),
            _cl("init-inf", "max_num_seqs = 64", "max_num_seqs = 64\ninit_s = inf", f"{d}.init_s"),
            _cl(
                "init-1e308",
                "max_num_seqs = 64",
                "max_num_seqs = 64\ninit_s = 1e308",
                f"{d}.init_s",
            ),
            _cl(
                "host-kv-negative",
                "max_num_seqs = 64",
                "max_num_seqs = 64\nhost_kv_gib = -1.0",
                f"{d}.host_kv_gib",
            ),
            _cl(
                "delay-nan",
                'router = "round_robin"',
                'router = "round_robin"\nrouter_delay_s = nan',
                "policies.router_delay_s",
            ),
            _cl("duplicate-key", "tp = 1", "tp = 1\ntp = 2", "invalid TOML"),
        ],  # fmt: skip
    )
    cs += _toml_cases(
        "faults",
        "f.toml",
        FAULTS,
        [
            _fa("at-negative", "at_s = 5.0", "at_s = -5.0", "faults[0].at_s"),
            _fa("at-nan", "at_s = 5.0", "at_s = nan", "faults[0].at_s"),
            _fa("at-inf", "at_s = 5.0", "at_s = inf", "faults[0].at_s"),
            _fa("at-string", "at_s = 5.0", 'at_s = "5"', "faults[0].at_s"),
            _fa("gpu-negative", "gpu = 0", "gpu = -1", "faults[0].gpu"),
            _fa("gpu-10e30", "gpu = 0", f"gpu = {10**30}", "faults[0].gpu"),
            _fa("repair-negative", "repair_s = 60.0", "repair_s = -1.0", "faults[0].repair_s"),
            _fa("repair-nan", "repair_s = 60.0", "repair_s = nan", "faults[0].repair_s"),
            _fa("mtbf-zero", "gpu_mtbf_s = 1.0e6", "gpu_mtbf_s = 0", "generate.gpu_mtbf_s"),
            _fa("mtbf-negative", "gpu_mtbf_s = 1.0e6", "gpu_mtbf_s = -1.0", "generate.gpu_mtbf_s"),
            _fa("mtbf-nan", "gpu_mtbf_s = 1.0e6", "gpu_mtbf_s = nan", "generate.gpu_mtbf_s"),
            _fa("horizon-zero", "horizon_s = 100.0", "horizon_s = 0", "generate.horizon_s"),
            (
                "horizon-1e308",
                _line_of(FAULTS, "horizon_s"),
                "horizon_s = 100.0",
                "horizon_s = 1e308",
                r"(:\d+)?: generate",
            ),
            _fa("seed-negative", "seed = 1", "seed = -1", "generate.seed"),
            _fa("kind-unknown", 'kind = "gpu"', 'kind = "cpu"', "faults[0].kind"),
        ],  # fmt: skip
    )
    cs.append(
        Case(
            "faults-gpu-missing-target",
            "faults",
            "f.toml",
            '[[faults]]\nat_s = 1.0\nkind = "gpu"\ngpu = 99\n',
            r":1: faults\[0\]\.gpu: ",
        )
    )
    cs.append(
        Case(
            "faults-generate-no-mtbf",
            "faults",
            "f.toml",
            "[generate]\nseed = 1\nhorizon_s = 100.0\n",
            r":1: generate: ",
        )
    )
    cs += _toml_cases(
        "synth",
        "s.toml",
        SYNTH,
        [
            _sy("sessions-zero", "sessions = 3", "sessions = 0", "sessions"),
            _sy("sessions-negative", "sessions = 3", "sessions = -3", "sessions"),
            _sy("sessions-10e30", "sessions = 3", f"sessions = {10**30}", "sessions"),
            _sy("sessions-float", "sessions = 3", "sessions = 3.5", "sessions"),
            _sy("rate-zero", "rate_per_s = 1.0", "rate_per_s = 0.0", "arrivals.rate_per_s"),
            _sy("rate-nan", "rate_per_s = 1.0", "rate_per_s = nan", "arrivals.rate_per_s"),
            _sy("rate-inf", "rate_per_s = 1.0", "rate_per_s = inf", "arrivals.rate_per_s"),
            _sy("rate-1e308", "rate_per_s = 1.0", "rate_per_s = 1e308", "arrivals.rate_per_s"),
            _sy("weight-zero", "weight = 1.0", "weight = 0.0", "agents[0].weight"),
            _sy("turns-10e30", "value = 3", f"value = {10**30}", "agents[0].turns"),
            _sy("turns-1e308", "value = 3", "value = 1e308", "agents[0].turns"),
            _sy("turns-negative", "value = 3", "value = -3", "agents[0].turns"),
            _sy("turns-nan", "value = 3", "value = nan", "agents[0].turns"),
            _sy("kind-unknown", 'kind = "react"', 'kind = "planner"', "agents[0].kind"),
            _sy(
                "tokens-1e308",
                "weight = 1.0",
                'weight = 1.0\ntask_tokens = { dist = "const", value = 1e308 }',
                "agents[0].task_tokens",
            ),
            _sy("seed-string", "seed = 0", 'seed = "zero"', "seed"),
        ],  # fmt: skip
    )
    return cs


def _sweep_cases(tiny: str) -> list[Case]:
    base = _sweep(tiny)

    def sw(cid: str, frag: str, new: str, field: str) -> tuple[str, int, str, str, str]:
        return (
            cid,
            _line_of(base, frag),
            frag,
            new,
            rf"(:\d+)?: (grid\.|base\.)?{re.escape(field)}",
        )

    return _toml_cases(
        "sweep",
        "w.toml",
        base,
        [
            sw("scales-empty", "load_scales = [1.0, 2.0]", "load_scales = []", "load_scales"),
            sw(
                "scales-negative",
                "load_scales = [1.0, 2.0]",
                "load_scales = [1.0, -2.0]",
                "load_scales",
            ),
            sw("scales-nan", "load_scales = [1.0, 2.0]", "load_scales = [nan]", "load_scales"),
            sw("scales-inf", "load_scales = [1.0, 2.0]", "load_scales = [inf]", "load_scales"),
            sw("scales-1e308", "load_scales = [1.0, 2.0]", "load_scales = [1e308]", "load_scales"),
            sw("scales-string", "load_scales = [1.0, 2.0]", 'load_scales = ["x"]', "load_scales"),
            sw("replicas-negative", "replicas = 1", "replicas = -1", "replicas"),
            sw("replicas-10e30", "replicas = 1", f"replicas = {10**30}", "replicas"),
            sw("tp-zero", "tp = 1", "tp = 0", "tp"),
            sw("nodes-zero", "nodes = 1", "nodes = 0", "nodes"),
            sw("policies-empty", 'policies = ["round_robin"]', "policies = []", "policies"),
            sw(
                "policies-duplicate",
                'policies = ["round_robin"]',
                'policies = ["round_robin", "round_robin"]',
                "policies",
            ),
        ],  # fmt: skip
    )


def _model_cases() -> list[Case]:
    def m(cid: str, **change: object) -> Case:
        d = {**MODEL, **change}
        d = {k: v for k, v in d.items() if v is not None}
        text = json.dumps(d, indent=1)
        fields = [k for k in change]
        return Case(f"model-{cid}", "model", "config.json", text, rf":\d+: {fields[0]}: ")

    text = json.dumps(MODEL, indent=1)
    return [
        Case("model-empty", "model", "config.json", "", r":1: "),
        Case("model-not-utf8", "model", "config.json", _bad_utf8(text, 3), r":3: encoding: "),
        Case("model-truncated", "model", "config.json", text[: len(text) // 2], r":\d+: "),
        Case("model-not-object", "model", "config.json", "[1, 2]\n", r":1: "),
        m("layers-zero", num_hidden_layers=0),
        m("layers-negative", num_hidden_layers=-4),
        m("layers-string", num_hidden_layers="four"),
        m("layers-float", num_hidden_layers=4.5),
        m("hidden-10e30", hidden_size=10**30),
        m("hidden-1e308", hidden_size=1e308),
        m("heads-zero", num_attention_heads=0),
        m("kv-heads-negative", num_key_value_heads=-8),
        m("vocab-bool", vocab_size=True),
        m("context-negative", max_position_embeddings=-1),
        m("context-10e30", max_position_embeddings=10**30),
        m("intermediate-missing", intermediate_size=None),
        Case("model-nan", "model", "config.json", text.replace("512", "NaN", 1), r":\d+: hidden_size: "),
        Case("model-inf", "model", "config.json", text.replace("512", "Infinity", 1), r":\d+: hidden_size: "),
    ]  # fmt: skip


def _costmodel_cases() -> list[Case]:
    base = (ROOT / "calibration" / "costmodels" / "vidur-a100.toml").read_text()
    ln_it = _line_of(base, "iteration_s = 0.002")
    ln_ps = _line_of(base, "per_seq_s = 2e-05")
    return [
        Case("costmodel-empty", "costmodel", "cm.toml", "", r": format: "),
        Case("costmodel-not-utf8", "costmodel", "cm.toml", _bad_utf8(base, 2), r":2: "),
        Case("costmodel-random-bytes", "costmodel", "cm.toml", bytes(range(128, 256)) * 4, r":1: "),
        Case("costmodel-truncated", "costmodel", "cm.toml", base[: len(base) // 3], r"(:\d+)?: "),
        Case("costmodel-iteration-nan", "costmodel", "cm.toml", _sub(base, ln_it, "0.002", "nan"), r"(:\d+)?: gpu\.a100-80gb\.iteration_s: "),
        Case("costmodel-iteration-negative", "costmodel", "cm.toml", _sub(base, ln_it, "0.002", "-0.002"), r"(:\d+)?: gpu\.a100-80gb\.iteration_s: "),
        Case("costmodel-iteration-string", "costmodel", "cm.toml", _sub(base, ln_it, "0.002", '"fast"'), r"(:\d+)?: gpu\.a100-80gb\.iteration_s: "),
        Case("costmodel-per-seq-1e308", "costmodel", "cm.toml", _sub(base, ln_ps, "2e-05", "1e308"), r"(:\d+)?: gpu\.a100-80gb\.per_seq_s: "),
        Case("costmodel-per-seq-inf", "costmodel", "cm.toml", _sub(base, ln_ps, "2e-05", "inf"), r"(:\d+)?: gpu\.a100-80gb\.per_seq_s: "),
        Case("costmodel-wrong-format", "costmodel", "cm.toml", base.replace('format = "agentsim-costmodel"', 'format = "x"'), r"(:\d+)?: format: "),
    ]  # fmt: skip


def _step_costmodel_cases() -> list[Case]:
    """The vLLM step model (``kind = "vllm-step"``), the default cost model's format."""
    base = (ROOT / "sim" / "data" / "costmodels" / "vllm-serving.toml").read_text()

    def edit(cid: str, key: str, value: str, field: str | None = None) -> Case:
        ls = _lines(base)
        i = next(i for i, x in enumerate(ls) if x.split("=")[0].strip() == key)
        ls[i] = f"{key} = {value}\n"
        return Case(
            f"stepmodel-{cid}", "costmodel", "sm.toml", "".join(ls),
            rf"(:\d+)?: {re.escape(field or 'params.' + key)}: ",
        )  # fmt: skip

    return [
        Case("stepmodel-not-utf8", "costmodel", "sm.toml", _bad_utf8(base, 3), r":3: "),
        Case("stepmodel-truncated", "costmodel", "sm.toml", base[: base.index("= ") + 2], r":\d+: "),
        edit("step-nan", "step_s", "nan"),
        edit("step-negative", "step_s", "-1.0"),
        edit("step-1e308", "step_s", "1e308"),
        edit("eff-inf", "gemm_eff", "inf"),
        edit("eff-zero", "gemm_eff", "0.0"),
        edit("eff-string", "gemm_eff", '"high"'),
        edit("unknown", "gemm_eff", "0.5\ngemm_eff2 = 1.0", "params.gemm_eff2"),
    ]  # fmt: skip


TINY = (
    '{"agentsim_trace": 1}\n'
    '{"session_id":"s","call_id":"a","type":"llm","issue_time_s":0,"input_tokens":40,"output_tokens":4}\n'
)


def _all_cases() -> list[Case]:
    return (
        _trace_cases()
        + _config_cases()
        + _sweep_cases("TINY_TRACE")
        + _model_cases()
        + _costmodel_cases()
        + _step_costmodel_cases()
    )


CASES = _all_cases()


def _write(tmp: Path, case: Case) -> tuple[Path, Path]:
    (tmp / "tiny.jsonl").write_text(TINY)
    src = tmp / "in" / case.name
    src.parent.mkdir()
    content = case.content
    if isinstance(content, str):
        content = content.replace("TINY_TRACE", str(tmp / "tiny.jsonl")).encode()
    src.write_bytes(content)
    out = tmp / "out"
    out.mkdir()
    return src, out


def _leftovers(tmp: Path, src: Path, before: dict[Path, bytes]) -> list[str]:
    now = {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file()}
    extra = [str(p) for p in now if p not in before]
    changed = [str(p) for p in before if now.get(p) != before[p]]
    dirs = [str(p) for p in (tmp / "out").iterdir()]
    return sorted(set(extra + changed + dirs))


def _assert_refused(
    capsys: pytest.CaptureFixture[str], tmp: Path, src: Path, argv: list[str], expect: str
) -> None:
    before = {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file()}
    code = main(argv)
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert code == 2, (argv, code, err[-2000:])
    assert "Traceback" not in cap.err, cap.err
    lines = err.splitlines()
    assert len(lines) == 1, err
    prefix = f"agentsim: error: {src}"
    assert lines[0].startswith(prefix), (lines[0], prefix)
    rest = lines[0][len(prefix) :]
    assert re.match(expect, rest), (rest, expect)
    assert not _leftovers(tmp, src, before), _leftovers(tmp, src, before)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: Case
) -> None:
    src, out = _write(tmp_path, case)
    for argv in commands(case.loader, src, out):
        _assert_refused(capsys, tmp_path, src, argv, case.expect)


# ---- the bases are valid, so each case fails for its defect -------------------------------

BASES: list[tuple[str, str, str | bytes]] = [
    ("agentsim", "c.jsonl", CANON),
    ("mooncake", "m.jsonl", MOONCAKE),
    ("azure", "a.csv", AZURE),
    ("burstgpt", "b.csv", BURST),
    ("csv", "u.csv", CSV),
    ("csv", "u.jsonl", JSONL),
    ("lmcache", "l.jsonl", LMCACHE),
    ("cluster", "c.toml", CLUSTER),
    ("faults", "f.toml", FAULTS),
    ("sweep", "w.toml", _sweep("TINY_TRACE")),
    ("synth", "s.toml", SYNTH),
    ("model", "config.json", json.dumps(MODEL, indent=1)),
    ("costmodel", "cm.toml", (ROOT / "calibration" / "costmodels" / "vidur-a100.toml").read_text()),
    (
        "costmodel",
        "sm.toml",
        (ROOT / "sim" / "data" / "costmodels" / "vllm-serving.toml").read_text(),
    ),
]


@pytest.mark.parametrize("loader,name,content", BASES, ids=[f"{b[0]}-{b[1]}" for b in BASES])
def test_valid_bases_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], loader: str, name: str, content: str
) -> None:
    src, out = _write(tmp_path, Case("base", loader, name, content, ""))
    cmds = commands(loader, src, out)
    for argv in cmds[:1]:
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 0, (argv, err)


# ---- the same file as input and output -------------------------------------------------


SAME_PATH: list[tuple[str, str, str, Callable[[Path], list[str]]]] = [
    ("convert", "c.jsonl", CANON, lambda p: ["trace", "convert", str(p), "-o", str(p)]),
    ("convert-azure", "a.csv", AZURE, lambda p: ["trace", "convert", str(p), "-o", str(p)]),
    ("sample", "c.jsonl", CANON, lambda p: ["trace", "sample", str(p), "--sessions", "1", "-o", str(p)]),
    ("synth", "s.toml", SYNTH, lambda p: ["trace", "synth", str(p), "-o", str(p)]),
]  # fmt: skip


@pytest.mark.parametrize("cid,name,content,argv", SAME_PATH, ids=[s[0] for s in SAME_PATH])
def test_input_as_output_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cid: str,
    name: str,
    content: str,
    argv: Callable[[Path], list[str]],
) -> None:
    src = tmp_path / name
    src.write_text(content)
    assert main(argv(src)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(src) in err
    assert src.read_text() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_gzip_truncated_names_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "m.jsonl.gz"
    src.write_bytes(gzip.compress((MOONCAKE * 200).encode(), mtime=0)[:-30])
    assert main(["trace", "stats", str(src)]) == 2
    err = capsys.readouterr().err.strip()
    assert re.match(rf"agentsim: error: {re.escape(str(src))}:\d+: ", err), err


def test_case_count() -> None:
    """The corpus covers every reader and loader (stated so CI output shows its size)."""
    loaders = {c.loader for c in CASES}
    assert loaders == {
        "agentsim", "mooncake", "azure", "burstgpt", "csv", "lmcache",
        "cluster", "faults", "sweep", "synth", "model", "costmodel",
    }  # fmt: skip
    assert len(CASES) > 200
