"""A small OpenAI-compatible streaming server that serves the ``torch`` engine.

It does real compute (the random-weight transformers model of
:mod:`sim.calibration.engines.torch_engine`) with iteration-level batching, so the
``http`` engine can be tested, and end-to-end comparisons made, against a real server:

- one scheduler thread runs iterations the way vLLM (and the simulator's engine) does
  with chunked prefill: every running request decodes one token (one batched forward
  over a left-padded, preallocated KV cache with per-sequence positions; see
  :meth:`Scheduler._build_batch`), and the rest of the
  ``max_num_batched_tokens`` budget goes to prompt chunks of prefilling and then newly
  admitted requests (FCFS, at most ``max_batch`` requests at once; each chunk is one
  forward pass continuing that request's KV cache);
- ``POST /v1/completions`` accepts ``prompt`` as a list of token ids (or a string, taken
  as UTF-8 bytes, one token per byte), ``max_tokens``, ``stream``,
  ``stream_options.include_usage`` and vLLM's ``ignore_eos``; tokens are greedy; the
  text of a token is ``"<id>"`` (there is no tokenizer); the ``user`` field is logged;
- ``GET /v1/models`` lists the model, with the server's record header under ``agentsim``;
- every finished request appends one JSON line to ``--log``: the server's own timings
  (``ttft_s``, ``itl_s``, ``e2e_s``, seconds, from accepting the connection to each
  chunk having been written to the socket) and the iteration times;
- every iteration appends one JSON line to ``--iteration-log``: its shape (decoding
  sequences, their context sum, the batched cache's padded width and slots, prompt
  chunks) and where its time went (prompt-chunk forwards, rebuilding the batched
  cache, the decode forward), to compare with the torch engine's grid of the same
  shapes.

It binds to 127.0.0.1 by default and exits by itself after ``--max-lifetime-s`` or
``--idle-exit-s`` seconds.  Run ``python -m sim.calibration.server --help`` or
``agentsim calibrate serve``.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sim.calibration.engines import require
from sim.calibration.engines.torch_engine import TorchEngine, TorchEngineConfig
from sim.common.errors import AgentsimError

#: Seconds a handler waits for the next token before giving up on the scheduler.
TOKEN_TIMEOUT_S = 300.0
#: Decode steps of room the batched KV cache is allocated with beyond the longest
#: running request (capped by the most tokens any of them still has to generate); when
#: it fills up the cache is rebuilt with as much room again.  Attention reads every
#: slot, so more room is more wasted reads; less is more frequent rebuilds.
DECODE_ROOM = 32
#: The batched cache's slots are a multiple of this (aligned key length and mask rows
#: for the attention kernels; the same shapes for every step until a rebuild).
DECODE_ALIGN = 16


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How the server runs.

    Attributes:
        engine: the torch engine's model, device, dtype, layers.
        host, port: where to listen (port 0: an ephemeral port).
        max_batch: most running requests (sequences) at once.
        max_num_batched_tokens: most new tokens (decodes + prompt chunks) per iteration.
        log_path: JSON Lines file of per-request server timings (``None``: no log).
        iteration_log_path: JSON Lines file of per-iteration shapes and timings.
        max_lifetime_s: shut down after this many seconds (``None``: never).
        idle_exit_s: shut down after this many seconds without a request (``None``: never).
        served_name: model name reported by ``/v1/models`` and accepted in requests.
    """

    engine: TorchEngineConfig
    host: str = "127.0.0.1"
    port: int = 0
    max_batch: int = 32
    max_num_batched_tokens: int = 4096
    log_path: str | None = None
    iteration_log_path: str | None = None
    max_lifetime_s: float | None = None
    idle_exit_s: float | None = None
    served_name: str | None = None


@dataclass(eq=False)
class _Request:
    """One request inside the server.  Times are ``time.perf_counter`` seconds."""

    rid: str
    prompt: list[int]
    max_tokens: int
    ignore_eos: bool
    received: float
    user: str | None = None
    tokens: queue.Queue[int | None] = field(default_factory=queue.Queue)
    generated: int = 0
    last_token: int = 0
    cache: Any = None  # the request's own DynamicCache while it prefills
    kv: list[tuple[Any, Any]] = field(default_factory=list)  # per layer [1, heads, len, dim]
    length: int = 0  # tokens in the KV cache
    iterations: list[float] = field(default_factory=list)


class Scheduler:
    """The iteration loop (see module doc).  Thread-safe :meth:`submit`.

    Each iteration: every running request past its prefill decodes one token; the
    remaining token budget (``max_num_batched_tokens`` minus the decodes) goes to prompt
    chunks, first of requests already prefilling, then of waiting requests admitted in
    arrival order while fewer than ``max_batch`` are running.  A request whose last
    prompt chunk ran emits its first token and decodes from the next iteration on.
    """

    def __init__(
        self,
        engine: TorchEngine,
        max_batch: int,
        max_num_batched_tokens: int,
        iteration_log: str | None = None,
    ) -> None:
        if max_num_batched_tokens < max_batch:
            raise AgentsimError(
                "max_num_batched_tokens must be >= max_batch so every running request can decode"
            )
        self.engine = engine
        self.torch: Any = engine.torch
        self.max_batch = max_batch
        self.max_num_batched_tokens = max_num_batched_tokens
        self.inbox: queue.Queue[_Request] = queue.Queue()
        self.waiting: list[_Request] = []
        self.prefilling: list[_Request] = []
        self.running: list[_Request] = []  # decoding
        self.eos = getattr(engine.model.config, "eos_token_id", None)
        self.stop = threading.Event()
        self.iterations = 0
        self._batch: tuple[_Request, ...] = ()
        self._cache: Any = None  # StaticCache of the batch, left-padded
        self._mask: Any = None  # [batch, capacity]: 1 on filled slots of each row
        self._width = 0  # filled slots (the longest request's length)
        self._capacity = 0  # slots allocated
        self._build_s = 0.0  # time in _build_batch this iteration
        # open for the server's life (a daemon thread writes it; the process closes it)
        self._log = (
            open(iteration_log, "a", encoding="utf-8")  # noqa: SIM115
            if iteration_log
            else None
        )
        self.thread = threading.Thread(target=self._loop, name="agentsim-scheduler", daemon=True)

    def submit(self, req: _Request) -> None:
        self.inbox.put(req)

    def _drain(self, block: bool) -> None:
        try:
            if block:
                self.waiting.append(self.inbox.get(timeout=0.05))
            while True:
                self.waiting.append(self.inbox.get_nowait())
        except queue.Empty:
            pass

    def _loop(self) -> None:
        with self.torch.inference_mode():
            while not self.stop.is_set():
                self._drain(block=not (self.running or self.prefilling or self.waiting))
                if self.running or self.prefilling or self.waiting:
                    self._iteration()

    def _iteration(self) -> None:
        t0 = time.perf_counter()
        budget = self.max_num_batched_tokens - len(self.running)
        chunks: list[tuple[_Request, int]] = []
        for req in self.prefilling:
            n = min(len(req.prompt) - req.length, budget)
            if n <= 0:
                break
            chunks.append((req, n))
            budget -= n
        while (
            self.waiting
            and budget > 0
            and len(self.running) + len(self.prefilling) < self.max_batch
        ):
            req = self.waiting.pop(0)
            req.cache = self.engine.new_dynamic_cache()
            self.prefilling.append(req)
            n = min(len(req.prompt), budget)
            chunks.append((req, n))
            budget -= n
        firsts = [(req, self._prefill_chunk(req, n)) for req, n in chunks]
        t1 = time.perf_counter()
        self._build_s = 0.0
        decoded = self._decode() if self.running else []
        dt = time.perf_counter() - t0
        if self._log is not None:
            rec = {
                "start_unix_s": time.time() - (time.perf_counter() - t0),
                "iteration_s": dt,
                "prefill_chunks": [n for _, n in chunks],
                "prefill_s": t1 - t0,
                "num_decode": len(self.running),
                "decode_context_sum": sum(r.length for r in self.running),
                "decode_width": self._width if self.running else 0,
                "decode_slots": self._capacity if self.running else 0,
                "build_s": self._build_s,
                "decode_s": t0 + dt - t1 - self._build_s,
            }
            self._log.write(json.dumps(rec) + "\n")
            self._log.flush()
        self.iterations += 1
        still: list[_Request] = []
        for req, tok in zip(self.running, decoded, strict=True):
            req.length += 1
            if not self._emit(req, tok, dt):
                still.append(req)
        if len(still) != len(self.running):
            if not still:
                self._batch, self._cache, self._mask = (), None, None
                self._width = self._capacity = 0
            self.running = still  # finished rows leave the batched cache at the next rebuild
        for req, first in firsts:
            if first is None:
                continue
            self.prefilling.remove(req)
            req.kv = [(layer.keys, layer.values) for layer in req.cache.layers]
            req.cache = None
            if not self._emit(req, first, dt):
                self.running.append(req)

    def _prefill_chunk(self, req: _Request, n: int) -> int | None:
        """Run ``n`` more prompt tokens of ``req``; its first output token when the
        prompt is complete, else ``None``."""
        e = self.engine
        ids = self.torch.tensor(
            [req.prompt[req.length : req.length + n]], dtype=self.torch.long, device=e.device
        )
        tok = int(e.prefill(ids, req.cache)[0, 0])
        req.length += n
        return tok if req.length == len(req.prompt) else None

    def _emit(self, req: _Request, tok: int, dt: float) -> bool:
        """Hand a token to the request's handler; True when the request is finished."""
        req.generated += 1
        req.last_token = tok
        req.iterations.append(dt)
        req.tokens.put(tok)
        eos = self.eos if isinstance(self.eos, list) else [self.eos]
        done = req.generated >= req.max_tokens or (not req.ignore_eos and tok in eos)
        if done:
            req.tokens.put(None)
        return done

    def _build_batch(self) -> None:
        """Left-pad every running request's KV into one batched StaticCache (rows of
        requests already in the previous batch are sliced out of it).

        The cache has ``DECODE_ROOM`` slots beyond the longest request, written in
        place by the decode steps (one slot per step for all rows, left padding keeps
        them aligned), so a decode step copies only the new token's KV -- a DynamicCache
        concatenates, i.e. copies, every layer's whole KV every step -- and the 2-D
        padding mask is updated in place.  Rebuilt when the running set changes or the
        room is used up, like the torch engine's grid decode (a StaticCache of exactly
        the context) apart from the padding and the unused slots."""
        torch = self.torch
        old = {r: i for i, r in enumerate(self._batch)}
        if self._cache is not None:
            width = self._width
            for r in self.running:
                if r in old:
                    i, start = old[r], width - r.length
                    r.kv = [
                        (lay.keys[i : i + 1, :, start:width], lay.values[i : i + 1, :, start:width])
                        for lay in self._cache.layers
                    ]
        longest = max(r.length for r in self.running)
        room = max(1, min(DECODE_ROOM, max(r.max_tokens - r.generated for r in self.running)))
        capacity = -(-(longest + room) // DECODE_ALIGN) * DECODE_ALIGN
        cache = require("transformers").StaticCache(
            config=self.engine.model.config, max_cache_len=capacity
        )
        pad = torch.nn.functional.pad
        for li in range(len(self.running[0].kv)):
            ks = [pad(r.kv[li][0], (0, 0, longest - r.length, 0)) for r in self.running]
            vs = [pad(r.kv[li][1], (0, 0, longest - r.length, 0)) for r in self.running]
            cache.update(torch.cat(ks), torch.cat(vs), li)
        mask = torch.zeros(
            (len(self.running), capacity), dtype=torch.long, device=self.engine.device
        )
        for i, r in enumerate(self.running):
            mask[i, longest - r.length : longest] = 1
            r.kv = []
        self._batch, self._cache, self._mask = tuple(self.running), cache, mask
        self._width, self._capacity = longest, capacity

    def _decode(self) -> list[int]:
        """One batched decode step of every running request; their next tokens."""
        torch = self.torch
        dev = self.engine.device
        if tuple(self.running) != self._batch or self._width >= self._capacity:
            t = time.perf_counter()
            self._build_batch()
            self._build_s = time.perf_counter() - t
        ids = torch.tensor([[r.last_token] for r in self.running], dtype=torch.long, device=dev)
        pos = torch.tensor([[r.length] for r in self.running], dtype=torch.long, device=dev)
        self._mask[:, self._width] = 1
        out = self.engine.decode(ids, self._cache, pos, attention_mask=self._mask)
        self._width += 1
        return [int(t) for t in out[:, 0].tolist()]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, cfg: ServerConfig, scheduler: Scheduler, header: dict[str, Any]) -> None:
        super().__init__((cfg.host, cfg.port), _Handler)
        self.cfg = cfg
        self.scheduler = scheduler
        self.header = header
        self.name = cfg.served_name or str(header["model"])
        self.log_lock = threading.Lock()
        self.last_activity = time.monotonic()
        self.accepted: dict[Any, float] = {}  # connection -> perf_counter at accept

    def process_request(self, request: Any, client_address: Any) -> None:
        """Stamp the connection when accepted, before a handler thread is started, so
        logged latencies include the server's own dispatch time."""
        self.accepted[request] = time.perf_counter()
        super().process_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return

    def _json(self, code: int, obj: dict[str, Any]) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, code: int, msg: str) -> None:
        self._json(code, {"error": {"message": msg, "type": "invalid_request_error", "code": code}})

    def do_GET(self) -> None:
        self.server.accepted.pop(self.request, None)
        self.server.last_activity = time.monotonic()
        if self.path in ("/health", "/v1/health"):
            self._json(200, {"status": "ok"})
        elif self.path == "/v1/models":
            self._json(
                200,
                {
                    "object": "list",
                    "data": [{"id": self.server.name, "object": "model", "owned_by": "agentsim"}],
                    "agentsim": self.server.header,
                },
            )
        else:
            self._error(404, f"no route {self.path}")

    # long: one request's life (parse, queue, stream tokens, close) in the handler thread
    def do_POST(self) -> None:
        received = self.server.accepted.pop(self.request, None) or time.perf_counter()
        self.server.last_activity = time.monotonic()
        if self.path != "/v1/completions":
            self._error(404, f"no route {self.path} (this server serves /v1/completions)")
            return
        try:
            body = json.loads(
                self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}"
            )
            req = self._parse(body, received)
        except (ValueError, TypeError) as e:
            self._error(400, str(e))
            return
        self.server.scheduler.submit(req)
        created = int(time.time())
        stream = bool(body.get("stream", False))
        usage_wanted = bool((body.get("stream_options") or {}).get("include_usage", False))
        times: list[float] = []
        toks: list[int] = []
        if stream:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
        while True:
            tok = req.tokens.get(timeout=TOKEN_TIMEOUT_S)
            if tok is None:
                break
            toks.append(tok)
            # stamp when the token is handed to the socket, before writing it: a thread
            # descheduled after the write would otherwise log it after the client saw it
            times.append(time.perf_counter())
            if stream:
                chunk = {
                    "id": req.rid,
                    "object": "text_completion",
                    "created": created,
                    "model": self.server.name,
                    "choices": [
                        {
                            "index": 0,
                            "text": f"<{tok}>",
                            "logprobs": None,
                            "finish_reason": "length" if len(toks) >= req.max_tokens else None,
                        }
                    ],
                }
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.wfile.flush()
        usage = {
            "prompt_tokens": len(req.prompt),
            "completion_tokens": len(toks),
            "total_tokens": len(req.prompt) + len(toks),
        }
        finish = "length" if len(toks) >= req.max_tokens else "stop"
        if stream:
            if usage_wanted:
                tail = {
                    "id": req.rid,
                    "object": "text_completion",
                    "created": created,
                    "model": self.server.name,
                    "choices": [],
                    "usage": usage,
                }
                self.wfile.write(b"data: " + json.dumps(tail).encode() + b"\n\n")
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        else:
            text = "".join(f"<{t}>" for t in toks)
            self._json(
                200,
                {
                    "id": req.rid,
                    "object": "text_completion",
                    "created": created,
                    "model": self.server.name,
                    "choices": [
                        {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
                    ],
                    "usage": usage,
                },
            )
            times = [time.perf_counter()] * len(toks)
        self.server.last_activity = time.monotonic()
        self._log(req, received, times)

    def _parse(self, body: Any, received: float) -> _Request:
        if not isinstance(body, dict):
            raise ValueError("request body must be a JSON object")
        model = body.get("model")
        if model not in (None, self.server.name):
            raise ValueError(f"model {model!r} is not served here (serving {self.server.name!r})")
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], list):
            prompt = prompt[0]
        vocab = self.server.scheduler.engine.vocab_size
        if isinstance(prompt, str):
            ids = [b % vocab for b in prompt.encode()]
        elif isinstance(prompt, list) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in prompt
        ):
            ids = [int(t) for t in prompt]
            if any(t < 0 or t >= vocab for t in ids):
                raise ValueError(f"prompt token ids must be in [0, {vocab})")
        else:
            raise ValueError("prompt must be a string or a list of token ids")
        if not ids:
            raise ValueError("prompt is empty")
        max_tokens = body.get("max_tokens", 16)
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ValueError("max_tokens must be an integer >= 1")
        limit = int(self.server.scheduler.engine.model.config.max_position_embeddings)
        if len(ids) + max_tokens > limit:
            raise ValueError(
                f"prompt + max_tokens = {len(ids) + max_tokens} exceeds the model's {limit} positions"
            )
        return _Request(
            rid=f"cmpl-{uuid.uuid4().hex[:16]}",
            prompt=ids,
            max_tokens=max_tokens,
            ignore_eos=bool(body.get("ignore_eos", False)),
            received=received,
            user=str(body["user"]) if body.get("user") is not None else None,
        )

    def _log(self, req: _Request, received: float, times: list[float]) -> None:
        path = self.server.cfg.log_path
        if not path:
            return
        rec = {
            "request_id": req.rid,
            "user": req.user,
            "received_unix_s": time.time() - (time.perf_counter() - received),
            "prompt_tokens": len(req.prompt),
            "completion_tokens": len(times),
            "ttft_s": times[0] - received if times else None,
            "itl_s": [b - a for a, b in zip(times, times[1:], strict=False)],
            "e2e_s": (times[-1] - received) if times else None,
            "iteration_s": req.iterations,
        }
        with self.server.log_lock, open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")


class CalibrationServer:
    """The server, startable from code (tests) or the command line."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.engine = TorchEngine(cfg.engine)
        self.engine.warm_up()
        header = self.engine.header().to_json()
        header["server"] = {
            "max_batch": cfg.max_batch,
            "max_num_batched_tokens": cfg.max_num_batched_tokens,
            "prefix_caching": False,
            "scheduling": "fcfs; decodes first, then prompt chunks within the token budget",
        }
        self.scheduler = Scheduler(
            self.engine, cfg.max_batch, cfg.max_num_batched_tokens, cfg.iteration_log_path
        )
        self.httpd = _Server(cfg, self.scheduler, header)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def _watchdog(self) -> None:
        start = time.monotonic()
        while not self.scheduler.stop.is_set():
            now = time.monotonic()
            if self.cfg.max_lifetime_s is not None and now - start > self.cfg.max_lifetime_s:
                break
            if (
                self.cfg.idle_exit_s is not None
                and now - self.httpd.last_activity > self.cfg.idle_exit_s
            ):
                break
            time.sleep(0.2)
        self.httpd.shutdown()

    def serve_forever(self) -> None:
        """Serve until the lifetime or idle limit (or :meth:`close`)."""
        self.scheduler.thread.start()
        threading.Thread(target=self._watchdog, name="agentsim-watchdog", daemon=True).start()
        try:
            self.httpd.serve_forever(poll_interval=0.1)
        finally:
            self.scheduler.stop.set()
            self.httpd.server_close()

    def close(self) -> None:
        self.scheduler.stop.set()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The server's command-line options (shared by ``agentsim calibrate serve``)."""
    p.add_argument("--model", required=True, help="preset, HF alias, or config.json path")
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where the model runs (default cpu)",
    )
    p.add_argument(
        "--dtype",
        default="auto",
        help="auto (bf16 on cuda, fp32 on cpu), float32, float16, bfloat16",
    )
    p.add_argument(
        "--layers", type=int, default=None, help="instantiate only this many decoder layers"
    )
    p.add_argument("--threads", type=int, default=1, help="intra-op CPU threads (default 1)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks an ephemeral port")
    p.add_argument("--max-batch", type=int, default=32, help="most running requests")
    p.add_argument(
        "--max-num-batched-tokens",
        type=int,
        default=4096,
        help="most new tokens per iteration (decodes + prompt chunks)",
    )
    p.add_argument(
        "--log", default=None, help="append per-request server timings (JSON Lines) here"
    )
    p.add_argument(
        "--iteration-log",
        default=None,
        help="append every iteration's shape and timings (JSON Lines) here",
    )
    p.add_argument(
        "--max-lifetime-s", type=float, default=None, help="exit after this many seconds"
    )
    p.add_argument(
        "--idle-exit-s", type=float, default=None, help="exit after this many idle seconds"
    )
    p.add_argument("--served-name", default=None, help="model name to report and accept")


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        engine=TorchEngineConfig(
            model=args.model,
            device=args.device,
            dtype=args.dtype,
            layers=args.layers,
            threads=args.threads,
        ),
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_num_batched_tokens=args.max_num_batched_tokens,
        log_path=args.log,
        iteration_log_path=args.iteration_log,
        max_lifetime_s=args.max_lifetime_s,
        idle_exit_s=args.idle_exit_s,
        served_name=args.served_name,
    )


def serve(cfg: ServerConfig) -> int:
    """Start the server, print ``listening on URL`` (one line, flushed), serve."""
    server = CalibrationServer(cfg)
    # hand the GIL over every 0.5 ms (default 5 ms) so a handler thread stamps and
    # writes a token promptly while the scheduler thread runs Python between kernels
    sys.setswitchinterval(5e-4)
    print(f"listening on {server.url}", flush=True)
    server.serve_forever()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m sim.calibration.server", description=__doc__.split("\n\n")[0]
    )
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return serve(config_from_args(args))
    except AgentsimError as e:
        print(f"agentsim: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
