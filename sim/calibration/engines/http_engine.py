"""The ``http`` engine: replay a trace against any OpenAI-compatible streaming endpoint.

Calls are issued with the simulator's closed-loop semantics (:mod:`sim.workload.calls`): a
root call at its recorded ``issue_time_s`` after the replay starts, any other call
``gap_s`` seconds after the last of its parents finished; a tool call takes
``tool_duration_s`` of wall time and no request.  Each LLM call is one streaming
``POST {url}/v1/completions`` whose ``prompt`` is ``input_tokens`` token ids (calls
sharing ``prefix_hashes`` share the same leading token blocks, so prefix caches behave as
in the trace), with ``max_tokens=output_tokens`` and ``ignore_eos`` so the server
generates exactly that many tokens; the OpenAI ``user`` field carries the call id, so
server logs can be matched to calls.

Per call the engine records the send time (``arrival_s``, seconds since replay start),
TTFT (send to first streamed token), every inter-token gap (between consecutive content
chunks; a chunk carrying several tokens counts once and ``chunks`` says how many came),
and end-to-end latency (send to the last content chunk).  Seconds throughout.
"""

from __future__ import annotations

import heapq
import http.client
import json
import random
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from sim.common.errors import AgentsimError
from sim.workload.calls import Call, Workload

#: Token ids used for synthetic prompts: inside every real vocabulary, clear of special ids.
TOKEN_LO, TOKEN_HI = 100, 1000


@dataclass(frozen=True, slots=True)
class HttpReplayConfig:
    """Where and how to replay.

    Attributes:
        url: base URL of the server (``http://host:port``; ``/v1/completions`` is appended).
        api_model: ``model`` field of each request (``None``: the first of ``/v1/models``).
        timeout_s: socket timeout of one request (seconds).
        max_inflight: most concurrent requests (a bound on client threads).
        seed: seed of the synthetic prompt tokens.
        token_range: ``[lo, hi)`` of the synthetic token ids.
    """

    url: str
    api_model: str | None = None
    timeout_s: float = 600.0
    max_inflight: int = 256
    seed: int = 0
    token_range: tuple[int, int] = (TOKEN_LO, TOKEN_HI)


@dataclass
class CallMeasurement:
    """What the client saw of one call (seconds; ``None`` for what does not apply)."""

    call: Call
    arrival_s: float = 0.0
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    e2e_s: float = 0.0
    chunks: int = 0
    output_tokens_reported: int | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The record file's ``call`` line."""
        c = self.call
        d: dict[str, Any] = {
            "type": "call",
            "call_id": c.call_id,
            "session_id": c.session_id,
            "kind": c.kind,
            "parents": list(c.parents),
            "issue_time_s": c.issue_time_s,
            "gap_s": c.gap_s,
            "arrival_s": self.arrival_s,
        }
        if c.kind == "tool":
            d["tool_duration_s"] = c.tool_duration_s
            d["e2e_s"] = self.e2e_s
            return d
        d.update(
            input_tokens=c.input_tokens,
            output_tokens=c.output_tokens,
            prefix_hashes=list(c.prefix_hashes),
            block_size=c.block_size,
            ttft_s=self.ttft_s,
            itl_s=self.itl_s,
            e2e_s=self.e2e_s,
            chunks=self.chunks,
            output_tokens_reported=self.output_tokens_reported,
        )
        if self.error:
            d["error"] = self.error
        return d


def prompt_tokens(call: Call, seed: int, lo: int = TOKEN_LO, hi: int = TOKEN_HI) -> list[int]:
    """``call.input_tokens`` token ids; block ``i`` of the prompt is a function of
    ``prefix_hashes[i]`` alone, the rest of the call id."""
    out: list[int] = []
    for h in call.prefix_hashes:
        if len(out) + call.block_size > call.input_tokens:
            break
        r = random.Random(f"{seed}:{h}")
        out.extend(r.randrange(lo, hi) for _ in range(call.block_size))
    r = random.Random(f"{seed}:{call.call_id}")
    out.extend(r.randrange(lo, hi) for _ in range(call.input_tokens - len(out)))
    return out


class _Endpoint:
    def __init__(self, url: str, timeout_s: float) -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise AgentsimError(f"--url must look like http://host:port, got {url!r}")
        self.https = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.https else 80)
        self.base = u.path.rstrip("/")
        self.timeout_s = timeout_s

    def conn(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=self.timeout_s)

    def get_json(self, path: str) -> Any:
        c = self.conn()
        try:
            c.request("GET", self.base + path)
            r = c.getresponse()
            body = r.read()
            if r.status != 200:
                raise AgentsimError(f"GET {path}: HTTP {r.status}: {body[:200]!r}")
            return json.loads(body)
        except (OSError, http.client.HTTPException, json.JSONDecodeError) as e:
            raise AgentsimError(
                f"cannot reach the server at {self.host}:{self.port}{self.base}{path}: {e}"
            ) from None
        finally:
            c.close()


def server_info(url: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """``GET /v1/models`` of the server (the agentsim server adds its record header under
    ``agentsim``)."""
    info = _Endpoint(url, timeout_s).get_json("/v1/models")
    if not isinstance(info, dict):
        raise AgentsimError(f"{url}/v1/models: expected a JSON object")
    return info


def _stream_call(
    ep: _Endpoint, model: str, m: CallMeasurement, prompt: list[int], t0: float
) -> None:
    """Send one streaming completion and fill ``m`` (times relative to ``t0``)."""
    body = json.dumps(
        {
            "model": model,
            "prompt": prompt,
            "max_tokens": m.call.output_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": True,
            "temperature": 0.0,
            "user": m.call.call_id,
        }
    ).encode()
    c = ep.conn()
    sent = time.perf_counter()
    m.arrival_s = sent - t0
    last = sent
    try:
        c.request("POST", ep.base + "/v1/completions", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            m.error = f"HTTP {r.status}: {r.read()[:200]!r}"
            m.e2e_s = time.perf_counter() - sent
            return
        while True:
            line = r.readline()
            if not line:
                break
            now = time.perf_counter()
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            ev = json.loads(data)
            usage = ev.get("usage")
            if usage and usage.get("completion_tokens") is not None:
                m.output_tokens_reported = int(usage["completion_tokens"])
            choices = ev.get("choices") or []
            if not any(ch.get("text") for ch in choices):
                continue
            if m.chunks == 0:
                m.ttft_s = now - sent
            else:
                m.itl_s.append(now - last)
            m.chunks += 1
            last = now
        m.e2e_s = last - sent
    except (OSError, http.client.HTTPException, json.JSONDecodeError) as e:
        m.error = f"{type(e).__name__}: {e}"
        m.e2e_s = time.perf_counter() - sent
    finally:
        c.close()


# long: the replay's threads share the DAG bookkeeping (children, pending parents, lock) as closures
def replay(workload: Workload, cfg: HttpReplayConfig) -> list[CallMeasurement]:
    """Replay every call of ``workload`` against ``cfg.url``; returns measurements in
    the workload's call order.  Blocks until every call has finished."""
    ep = _Endpoint(cfg.url, cfg.timeout_s)
    model = cfg.api_model
    if model is None:
        data = server_info(cfg.url).get("data") or []
        if not data or "id" not in data[0]:
            raise AgentsimError(f"{cfg.url}/v1/models lists no model; pass --api-model")
        model = str(data[0]["id"])
    calls = workload.calls
    meas = {c.call_id: CallMeasurement(c) for c in calls}
    children: dict[str, list[Call]] = {}
    pending_parents = {c.call_id: len(c.parents) for c in calls}
    for c in calls:
        for p in c.parents:
            children.setdefault(p, []).append(c)
    lock = threading.Condition()
    # (due seconds since t0, sequence number, action, call); action "issue" or "tool_done"
    ready: list[tuple[float, int, str, Call]] = []
    seq = iter(range(1 << 62))
    finish_at: dict[str, float] = {}
    remaining = len(calls)
    inflight = 0
    prompts = {c.call_id: prompt_tokens(c, cfg.seed, *cfg.token_range) for c in calls if c.is_llm}
    t0 = time.perf_counter()

    def finished(call: Call, end: float) -> None:
        """Record a finish (seconds since t0) and release children; caller holds lock."""
        nonlocal remaining
        remaining -= 1
        finish_at[call.call_id] = end
        for ch in children.get(call.call_id, []):
            pending_parents[ch.call_id] -= 1
            if pending_parents[ch.call_id] == 0:
                due = max(finish_at[p] for p in ch.parents) + ch.gap_s
                heapq.heappush(ready, (due, next(seq), "issue", ch))
        lock.notify_all()

    def run_llm(call: Call) -> None:
        nonlocal inflight
        m = meas[call.call_id]
        _stream_call(ep, model, m, prompts[call.call_id], t0)
        with lock:
            inflight -= 1
            finished(call, m.arrival_s + m.e2e_s)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(min(switch, 5e-4))  # hand the GIL over promptly: sharper stamps
    try:
        with lock:
            for c in calls:
                if not c.parents:
                    heapq.heappush(ready, (c.issue_time_s, next(seq), "issue", c))
            while remaining > 0:
                now = time.perf_counter() - t0
                if ready and ready[0][0] <= now:
                    due, _, action, call = ready[0]
                    if action == "tool_done":
                        heapq.heappop(ready)
                        finished(call, due)
                        continue
                    if not call.is_llm:
                        heapq.heappop(ready)
                        meas[call.call_id].arrival_s = now
                        meas[call.call_id].e2e_s = call.tool_duration_s
                        heapq.heappush(
                            ready, (now + call.tool_duration_s, next(seq), "tool_done", call)
                        )
                        continue
                    if inflight < cfg.max_inflight:
                        heapq.heappop(ready)
                        inflight += 1
                        threading.Thread(target=run_llm, args=(call,), daemon=True).start()
                        continue
                    lock.wait(timeout=cfg.timeout_s)  # a finishing call frees a slot
                    continue
                if not ready and inflight == 0:
                    raise AgentsimError("replay stalled: calls remain whose parents never finish")
                lock.wait(timeout=min(ready[0][0] - now, cfg.timeout_s) if ready else cfg.timeout_s)
    finally:
        sys.setswitchinterval(switch)
    return [meas[c.call_id] for c in calls]
