"""The calibration record format: round-trips, errors, truncated tails, gzip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.calibration.records import (
    RecordHeader,
    Sample,
    Section,
    append_samples,
    iter_records,
    read_records,
    write_records,
)
from sim.common.errors import InputError


def _header(**kw: object) -> RecordHeader:
    base: dict[str, object] = {
        "engine": "torch",
        "gpu": "h100-80gb",
        "model": "llama-3-8b",
        "tp": 1,
        "model_config": {"hidden_size": 4096},
        "extra": {"hostname_hash": "abc"},
    }
    base.update(kw)
    return RecordHeader(**base)  # type: ignore[arg-type]


def _samples() -> list[Sample]:
    return [
        Sample(
            "iteration",
            1,
            {
                "num_prefill_seqs": 1,
                "prefill_len": 128,
                "num_decode_seqs": 0,
                "decode_context_len": 0,
            },
            samples_s=[0.03, 0.01, 0.02],
        ),
        Sample(
            "mlp_up_proj",
            1,
            {"num_tokens": 64},
            stats_s={"median": 1e-4, "mean": 1.1e-4, "min": 9e-5, "max": 2e-4, "std": 1e-5},
            n=20,
        ),
    ]


@pytest.mark.parametrize("name", ["r.jsonl", "r.jsonl.gz"])
def test_round_trip_preserves_everything(tmp_path: Path, name: str) -> None:
    sec = Section(_header(), _samples(), other=[{"type": "call", "latency_s": 1.5, "x": [1]}])
    path = tmp_path / name
    write_records(path, [sec, Section(_header(tp=2), [])])
    back = read_records(path)
    assert len(back) == 2
    assert back[0].header == sec.header
    assert back[0].header.extra == {"hostname_hash": "abc"}
    assert back[0].samples == sec.samples
    assert back[0].other == sec.other
    assert back[1].header.tp == 2 and back[1].samples == []
    assert back[0].samples[0].value_s == 0.02
    assert back[0].samples[1].value_s == 1e-4


def test_gzip_output_is_byte_reproducible(tmp_path: Path) -> None:
    sec = Section(_header(), _samples())
    write_records(tmp_path / "a.jsonl.gz", [sec])
    write_records(tmp_path / "b.jsonl.gz", [sec])
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()


def test_append_continues_section_and_survives_truncation(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    s1, s2 = _samples()
    append_samples(path, _header(), [s1])
    append_samples(path, _header(), [s2])
    assert [len(s.samples) for s in read_records(path)] == [2]
    with open(path, "a") as fh:
        fh.write('{"type": "sample", "op": "iter')  # a crash mid-line
    with pytest.raises(InputError, match=r"rec.jsonl:4: .*truncated"):
        read_records(path)
    assert len(read_records(path, allow_truncated_tail=True)[0].samples) == 2
    append_samples(path, _header(tp=2), [s1])  # drops the partial line, new header
    secs = read_records(path)
    assert [(s.header.tp, len(s.samples)) for s in secs] == [(1, 2), (2, 1)]


def test_corrupt_middle_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps(_header().to_json()), "{not json", json.dumps(_samples()[0].to_json())]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl:2: not valid JSON"):
        read_records(path, allow_truncated_tail=True)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        (
            {"type": "sample", "op": "add", "tp": 1, "shape": {}, "samples_s": [1.0]},
            "shape.num_tokens",
        ),
        (
            {
                "type": "sample",
                "op": "add",
                "tp": 0,
                "shape": {"num_tokens": 1},
                "samples_s": [1.0],
            },
            "tp",
        ),
        (
            {
                "type": "sample",
                "op": "add",
                "tp": 1,
                "shape": {"num_tokens": -1},
                "samples_s": [1.0],
            },
            "shape.num_tokens",
        ),
        ({"type": "sample", "op": "add", "tp": 1, "shape": {"num_tokens": 1}}, "samples_s"),
        (
            {
                "type": "sample",
                "op": "add",
                "tp": 1,
                "shape": {"num_tokens": 1},
                "stats_s": {"median": 1.0},
            },
            "n",
        ),
        (
            {"type": "sample", "op": "add", "tp": 1, "shape": {"num_tokens": 1}, "samples_s": []},
            "samples_s",
        ),
    ],
)
def test_bad_sample_fields_are_named(tmp_path: Path, line: dict[str, object], field: str) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(_header().to_json()) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(InputError) as ei:
        read_records(path)
    assert ei.value.line == 2 and ei.value.field == field


def test_bad_header_and_missing_header(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    h = _header().to_json()
    h["engine"] = "tensorrt"
    path.write_text(json.dumps(h) + "\n")
    with pytest.raises(InputError, match="engine"):
        read_records(path)
    path.write_text(json.dumps(_samples()[0].to_json()) + "\n")
    with pytest.raises(InputError, match="before the first header"):
        read_records(path)
    path.write_text("")
    with pytest.raises(InputError, match="no header"):
        read_records(path)


def test_iter_records_streams_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_records(path, [Section(_header(), _samples(), other=[{"type": "call"}])])
    kinds = [type(item).__name__ for _, item in iter_records(path)]
    assert kinds == ["RecordHeader", "Sample", "Sample", "dict"]
