"""Fuzz every reader and config loader: they load, or raise the project's own error.

Random bytes, truncated valid files, valid files with a hostile token spliced in (huge
numbers, NaN, negative values, unicode, NUL bytes, stray brackets) and empty files go
through each reader.  The only acceptable outcomes are a loaded object or an
:class:`~sim.common.errors.AgentsimError`; any other exception, or a hang (hypothesis
``deadline``), fails the test.  ``EXAMPLES`` is the number of cases per reader (stated
in CI output by ``test_fuzz_case_count``).
"""

from __future__ import annotations

import contextlib
import gzip
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.calibration.records import read_records
from sim.cluster.config import load_cluster_config
from sim.cluster.faults import load_faults
from sim.common.errors import AgentsimError
from sim.workload.traces import load_trace

try:
    from sim.experiments.sweep import load_sweep
except ImportError:  # the sweep loader is not in this checkout
    load_sweep = None

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = 150  # per reader

SPLICES = [
    b"1e309", b"-1", b"-0", b"99999999999999999999999999999999", b"NaN", b"nan", b"inf",
    b"1e-320", b"\xff\xfe", "\u00fc\u20ac\U0001f600".encode(), b"\x00", b'"', b"[", b"]",
    b"{", b"}", b",", b"\n", b"true", b"null", b"=", b"[[", b"0x10", b"\r\n", b"'",
]  # fmt: skip


def _head(path: Path, lines: int) -> bytes:
    with open(path, "rb") as fh:
        return b"".join(fh.readline() for _ in range(lines))


VALID: dict[str, tuple[str, bytes]] = {
    "agentsim": (".jsonl", _head(ROOT / "examples" / "calibration" / "agent-replay.jsonl", 4)),
    "mooncake": (
        ".jsonl",
        b'{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]}\n'
        b'{"timestamp": 10, "input_length": 700, "output_length": 9, "hash_ids": [1, 2, 3]}\n',
    ),
    "azure": (
        ".csv",
        b"TIMESTAMP,ContextTokens,GeneratedTokens\n"
        b"2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.0,37,4\n",
    ),
    "burstgpt": (
        ".csv",
        b"Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        b"5,ChatGPT,472,18,490,Conversation log\n7,GPT-4,1087,230,1317,API log\n",
    ),
    "lmcache": (
        ".jsonl",
        b'{"timestamp": 1700000000000000, "input": "You are a helpful agent.", "output": "ok"}\n'
        b'{"timestamp": 1700000003500000, "input": "You are a helpful agent. ok. next", "output": "done"}\n',
    ),
    "csv": (".csv", b"timestamp,input_tokens,output_tokens\n0,10,2\n1.5,20,3\n"),
    "agentsim_gz": (
        ".jsonl.gz",
        gzip.compress(_head(ROOT / "examples" / "calibration" / "agent-replay.jsonl", 3), mtime=0),
    ),
    "cluster": (".toml", (ROOT / "examples" / "clusters" / "dgx-2node-8b.toml").read_bytes()),
    "faults": (".toml", (ROOT / "examples" / "faults" / "spot_preemption.toml").read_bytes()),
    "generate": (".toml", (ROOT / "examples" / "faults" / "mtbf.toml").read_bytes()),
    "records": (
        ".jsonl",
        _head(ROOT / "calibration" / "records" / "torch-tiny-llama-cpu.jsonl", 3),
    ),
    "sweep": (
        ".toml",
        b'[sweep]\nname = "f"\nmetrics = ["ttft_s.p99"]\n\n[base]\nnodes = 1\nmodel = "llama-3-8b"\n'
        b'tp = 1\nreplicas = 2\n\n[grid]\npolicies = ["round_robin", "least_loaded"]\n'
        b'"deployments.0.max_num_seqs" = [64, 128]\nseeds = [0, 1]\n',
    ),
}


def _faults(p: str) -> Any:
    return load_faults(p)


READERS: dict[str, Callable[[str], Any]] = {
    **{fmt: (lambda p, fmt=fmt: load_trace(p, fmt)) for fmt in ("agentsim", "mooncake", "azure", "burstgpt", "lmcache", "csv")},
    "agentsim_gz": lambda p: load_trace(p),
    "cluster": load_cluster_config,
    "faults": _faults,
    "generate": _faults,
    "records": read_records,
}  # fmt: skip
if load_sweep is not None:
    READERS["sweep"] = load_sweep
else:
    del VALID["sweep"]


def mutants(valid: bytes) -> st.SearchStrategy[bytes]:
    n = len(valid)
    truncated = st.integers(0, n).map(lambda k: valid[:k])
    spliced = st.tuples(st.integers(0, n), st.integers(0, 8), st.sampled_from(SPLICES)).map(
        lambda t: valid[: t[0]] + t[2] + valid[t[0] + t[1] :]
    )
    number = st.tuples(st.integers(0, n), st.integers(-(10**30), 10**30)).map(
        lambda t: valid[: t[0]] + str(t[1]).encode() + valid[t[0] :]
    )
    return st.one_of(
        st.just(b""),
        st.binary(max_size=256),
        st.text(max_size=120).map(lambda s: s.encode("utf-8", "surrogatepass")),
        truncated,
        spliced,
        number,
    )


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=True,
)


def _check(reader: str, data: bytes) -> None:
    suffix, _ = VALID[reader]
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"fuzz{suffix}"
        p.write_bytes(data)
        with contextlib.suppress(AgentsimError):
            READERS[reader](str(p))


@pytest.mark.parametrize("reader", sorted(VALID))
def test_valid_seed_loads(reader: str) -> None:
    """The unmutated seed of every reader loads (so mutants start from a valid file)."""
    suffix, data = VALID[reader]
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"seed{suffix}"
        p.write_bytes(data)
        READERS[reader](str(p))


def _fuzz_test(reader: str) -> Callable[[], None]:
    @FUZZ
    @given(mutants(VALID[reader][1]))
    def test(data: bytes) -> None:
        _check(reader, data)

    test.__name__ = f"test_fuzz_{reader}"
    return test


for _name in VALID:
    globals()[f"test_fuzz_{_name}"] = _fuzz_test(_name)


def test_fuzz_case_count() -> None:
    """CI states the number of fuzz cases: readers x examples."""
    total = len(VALID) * EXAMPLES
    print(f"fuzz: {len(VALID)} readers x {EXAMPLES} examples = {total} cases")
    assert total >= 11 * EXAMPLES
