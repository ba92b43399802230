"""A fast, rate-limiting OpenAI-shaped upstream for benchmarks and tests, runnable as its own process.

    python -m aistats_gateway.testing.mock_upstream --port 9200 [--latency-ms 50 [--latency-dist longtail]]
        [--rpm 10000] [--tpm 2000000] [--seed 1]

It owns: answering POST /v1/chat/completions, /v1/responses, /v1/embeddings and /v1/completions
with small deterministic answers (with `usage`), enforcing RPM/TPM like OpenAI (429 with its body
and headers), and a per-`custom_id` ledger, at a cost per request small enough that it is never
what a benchmark measures. It is a raw `asyncio.Protocol` HTTP/1.1 server (httptools parser,
uvloop when importable; keep-alive, Content-Length bodies; chunked request bodies get 400), not
aiohttp, which is ~3x more CPU per request. `aistats_gateway.testing.upstream` stays the fault-injecting peer.

Accounting (documented for whoever reads the figures):
* prompt_tokens = whitespace-separated words in every text of the request: messages[].content
  (strings and text parts), responses `input` (string, parts or messages), embeddings/completions
  `input`/`prompt` (string or list of strings). max_tokens = `max_tokens`, `max_completion_tokens`
  or `max_output_tokens`, default 16. completion_tokens = min(max_tokens, 8). A request costs 1
  request and prompt_tokens + max_tokens tokens.
* `--rpm R` / `--tpm T`: each a token bucket holding 1 s of rate (R/60 requests, T/60 tokens),
  full at start and after /_reset, refilled continuously. A request that does not fit either
  bucket is answered at once with 429 (type "requests" when the request bucket is short, else
  "tokens") and consumes nothing. A request bigger than a whole bucket needs a full bucket.
* Headers, on every answer when that limit is set: x-ratelimit-limit-* = the per-minute limit;
  x-ratelimit-remaining-* = limit - what the last second's use has not yet refilled;
  x-ratelimit-reset-* = time until the bucket is full again (Go-style duration: `6ms`, `1.5s`,
  `1m0.5s`). After one request at RPM 10,000 that is remaining 9999, reset `6ms`, as OpenAI says.
  429s also carry `retry-after-ms` (until the bucket has room for this request) and `retry-after`
  (that, rounded up to whole seconds). The 429 message's "Used" is the last second's use at
  per-minute scale (so an empty bucket reads "Used <limit>").
* Latency (200s only; 429s are answered at arrival, as OpenAI does): `--latency-ms N` fixed, or
  with `--latency-dist longtail` lognormal with median N and sigma 0.99, so p99 ~= 10 x N. Timers
  (call_later), never a blocking sleep.
* Ledger key: the body's `user` if it is a string, else `metadata.custom_id`, else none.
  GET /_ledger -> {"accepted": {key: n}, "seen": {key: n}}; GET /_stats -> totals, per-second
  accepted requests and tokens, the busiest second, the latency settings and this process's CPU;
  POST /_reset clears all of it and refills the buckets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import time
from collections import defaultdict, deque
from typing import Any, cast

import httptools
import orjson

ENDPOINTS = frozenset({b"/v1/chat/completions", b"/v1/responses", b"/v1/embeddings", b"/v1/completions"})
DEFAULT_MAX_TOKENS = 16
COMPLETION_CAP = 8
LONGTAIL_SIGMA = math.log(10.0) / 2.326  # lognormal: p99 / median = exp(2.326 sigma) = 10
STATUS_TEXT = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
               429: b"Too Many Requests"}


def go_duration(seconds: float) -> str:
    """OpenAI's reset format: `0s`, `6ms`, `1.5s`, `1m0.5s`."""
    if seconds <= 0:
        return "0s"
    if seconds < 1.0:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    minutes, secs = divmod(round(seconds, 3), 60.0)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


class Bucket:
    """One limit: capacity = 1 s of a per-minute `limit`, refilled continuously."""

    def __init__(self, limit: int, kind: str, unit: str) -> None:
        self.limit, self.kind, self.unit = limit, kind, unit
        self.rate = limit / 60.0
        self.capacity = self.rate
        self.level = self.capacity
        self.stamp = time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, cost: float) -> float:
        """Seconds until `cost` fits (0: it fits now). Call refill first."""
        need = min(cost, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def headers(self) -> list[tuple[str, str]]:
        deficit = self.capacity - self.level
        return [(f"x-ratelimit-limit-{self.kind}", str(self.limit)),
                (f"x-ratelimit-remaining-{self.kind}", str(max(0, self.limit - math.ceil(deficit - 1e-9)))),
                (f"x-ratelimit-reset-{self.kind}", go_duration(deficit / self.rate))]


def _words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    if isinstance(value, dict):
        if "content" in value:
            return _words(value["content"])
        text = value.get("text")
        return len(text.split()) if isinstance(text, str) else 0
    return 0


def prompt_tokens(path: bytes, body: dict[str, Any]) -> int:
    if path == b"/v1/chat/completions":
        return _words(body.get("messages"))
    if path == b"/v1/completions":
        return _words(body.get("prompt"))
    return _words(body.get("input"))


def max_tokens_of(body: dict[str, Any]) -> int:
    for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        value = body.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_MAX_TOKENS


def answer(path: bytes, body: dict[str, Any], n: int, ptok: int, ctok: int) -> dict[str, Any]:
    model = str(body.get("model", "mock"))
    text = " ".join(["ok"] * ctok)
    now = int(time.time())
    usage = {"prompt_tokens": ptok, "completion_tokens": ctok, "total_tokens": ptok + ctok}
    if path == b"/v1/chat/completions":
        return {"id": f"chatcmpl-mock{n}", "object": "chat.completion", "created": now, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                             "logprobs": None, "finish_reason": "length" if ctok == max_tokens_of(body) else "stop"}],
                "usage": usage, "system_fingerprint": "fp_mock"}
    if path == b"/v1/responses":
        return {"id": f"resp_mock{n}", "object": "response", "created_at": now, "status": "completed", "model": model,
                "output": [{"type": "message", "id": f"msg_mock{n}", "status": "completed", "role": "assistant",
                            "content": [{"type": "output_text", "text": text, "annotations": []}]}],
                "usage": {"input_tokens": ptok, "output_tokens": ctok, "total_tokens": ptok + ctok}}
    if path == b"/v1/embeddings":
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
        return {"object": "list", "model": model,
                "data": [{"object": "embedding", "index": i, "embedding": [0.125] * 8} for i in range(count)],
                "usage": {"prompt_tokens": ptok, "total_tokens": ptok}}
    return {"id": f"cmpl-mock{n}", "object": "text_completion", "created": now, "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}], "usage": usage}


def error_body(message: str, kind: str, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


class MockUpstream:
    """The state shared by all connections: limits, counters, ledger, latency."""

    def __init__(self, *, rpm: int = 0, tpm: int = 0, latency_ms: float = 0.0, latency_dist: str = "fixed",
                 seed: int = 1) -> None:
        self.rpm, self.tpm = rpm, tpm
        self.latency_ms, self.latency_dist = latency_ms, latency_dist
        self.rng = random.Random(seed)
        self.reset()

    def reset(self) -> None:
        self.buckets = [b for b in (Bucket(self.rpm, "requests", "requests per min (RPM)") if self.rpm else None,
                                    Bucket(self.tpm, "tokens", "tokens per min (TPM)") if self.tpm else None) if b]
        self.started = time.monotonic()
        self.counts: dict[str, int] = defaultdict(int)
        self.per_second: dict[int, list[int]] = {}
        self.accepted: dict[str, int] = defaultdict(int)
        self.seen: dict[str, int] = defaultdict(int)

    def delay(self) -> float:
        if self.latency_ms <= 0:
            return 0.0
        if self.latency_dist == "longtail":
            return self.rng.lognormvariate(math.log(self.latency_ms / 1000.0), LONGTAIL_SIGMA)
        return self.latency_ms / 1000.0

    def handle(self, method: bytes, path: bytes, raw: bytes) -> tuple[int, bytes, list[tuple[str, str]], float]:
        """(status, body, extra headers, delay in seconds) for one request."""
        if path.startswith(b"/_"):
            return self._control(method, path)
        if path not in ENDPOINTS:
            return 404, error_body(f"Unknown path {path.decode(errors='replace')}", "invalid_request_error"), [], 0.0
        if method != b"POST":
            return 405, error_body(f"Use POST for {path.decode()}", "invalid_request_error"), [], 0.0
        self.counts["requests"] += 1
        try:
            body = orjson.loads(raw)
            if not isinstance(body, dict):
                raise TypeError("not an object")
        except (orjson.JSONDecodeError, TypeError):
            self.counts["bad_requests"] += 1
            return 400, error_body("The request body is not a JSON object.", "invalid_request_error"), [], 0.0
        user, meta = body.get("user"), body.get("metadata")
        key = user if isinstance(user, str) else (meta.get("custom_id") if isinstance(meta, dict) else None)
        if isinstance(key, str):
            self.seen[key] += 1
        else:
            key = None
            self.counts["unkeyed"] += 1
        ptok, mtok = prompt_tokens(path, body), max_tokens_of(body)
        cost = ptok + mtok
        now = time.monotonic()
        for bucket in self.buckets:
            bucket.refill(now)
        waits = [(b.wait_for(cost if b.kind == "tokens" else 1), b) for b in self.buckets]
        short = [(w, b) for w, b in waits if w > 0]
        if short:
            return self._throttle(body, cost, short)
        for bucket in self.buckets:
            bucket.level -= min(cost if bucket.kind == "tokens" else 1, bucket.capacity)
        self.counts["accepted"] += 1
        self.counts["accepted_tokens"] += cost
        second = self.per_second.setdefault(int(now - self.started), [0, 0])
        second[0] += 1
        second[1] += cost
        if key is not None:
            self.accepted[key] += 1
        n = self.counts["accepted"]
        out = orjson.dumps(answer(path, body, n, ptok, min(mtok, COMPLETION_CAP)))
        headers = [("x-request-id", f"req_mock{n}")]
        for bucket in self.buckets:
            headers += bucket.headers()
        return 200, out, headers, self.delay()

    def _throttle(self, body: dict[str, Any], cost: int,
                  short: list[tuple[float, Bucket]]) -> tuple[int, bytes, list[tuple[str, str]], float]:
        wait, bucket = short[0]  # the request bucket first: OpenAI reports RPM before TPM
        retry = max(w for w, _ in short)
        self.counts["throttled"] += 1
        self.counts[f"throttled_{bucket.kind}"] += 1
        requested = cost if bucket.kind == "tokens" else 1
        used = min(bucket.limit, round((bucket.capacity - bucket.level) * 60))  # the last second, per minute
        message = (f"Rate limit reached for {body.get('model', 'mock')} in organization org-mock on "
                   f"{bucket.unit}: Limit {bucket.limit}, Used {used}, Requested {requested}. Please try again in "
                   f"{go_duration(wait)}. Visit https://platform.openai.com/account/rate-limits to learn more.")
        headers = [("retry-after-ms", str(max(1, math.ceil(retry * 1000)))), ("retry-after", str(math.ceil(retry)))]
        for b in self.buckets:
            headers += b.headers()
        return 429, error_body(message, bucket.kind, "rate_limit_exceeded"), headers, 0.0

    def _control(self, method: bytes, path: bytes) -> tuple[int, bytes, list[tuple[str, str]], float]:
        if path == b"/_stats" and method == b"GET":
            return 200, orjson.dumps(self.stats()), [], 0.0
        if path == b"/_ledger" and method == b"GET":
            return 200, orjson.dumps({"accepted": self.accepted, "seen": self.seen}), [], 0.0
        if path == b"/_reset" and method == b"POST":
            self.reset()
            return 200, b'{"ok":true}', [], 0.0
        message = f"Unknown control path {path.decode(errors='replace')}"
        return 404, error_body(message, "invalid_request_error"), [], 0.0

    def stats(self) -> dict[str, Any]:
        seconds = sorted(self.per_second.items())
        times = os.times()
        return {
            **{k: self.counts.get(k, 0) for k in ("requests", "accepted", "throttled", "throttled_requests",
                                                   "throttled_tokens", "bad_requests", "unkeyed",
                                                   "accepted_tokens")},
            "per_second": [[s, n, tok] for s, (n, tok) in seconds],
            "max_accepted_in_1s": max((n for _, (n, _) in seconds), default=0),
            "max_tokens_in_1s": max((tok for _, (_, tok) in seconds), default=0),
            "limits": {"rpm": self.rpm or None, "tpm": self.tpm or None, "bucket_seconds": 1.0},
            "latency": {"ms": self.latency_ms, "dist": self.latency_dist,
                        "longtail_sigma": LONGTAIL_SIGMA if self.latency_dist == "longtail" else None},
            "cpu_s": times.user + times.system,
            "uptime_s": time.monotonic() - self.started,
        }


class HttpProtocol(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; answers leave in request order even when delayed."""

    def __init__(self, app: MockUpstream, loop: asyncio.AbstractEventLoop) -> None:
        self.app, self.loop = app, loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.chunked = False
        self.slots: deque[list[bytes | None]] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "Upgrades are not supported.")
        except httptools.HttpParserError:
            self._fail(400, "Malformed HTTP request.")

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.body, self.chunked = b"", [], False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname == b"transfer-encoding" and b"chunked" in value.lower():
            self.chunked = True
        elif lname == b"expect" and value.lower() == b"100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.chunked:
            self._fail(400, "Chunked request bodies are not supported; send Content-Length.")
            return
        keep = self.parser.should_keep_alive()
        path = self.url.split(b"?", 1)[0]
        status, body, headers, delay = self.app.handle(self.parser.get_method(), path, b"".join(self.body))
        slot: list[bytes | None] = [None]
        self.slots.append(slot)
        data = _response(status, body, headers, keep)
        if delay > 0:
            self.loop.call_later(delay, self._ready, slot, data, keep)
        else:
            self._ready(slot, data, keep)

    def _ready(self, slot: list[bytes | None], data: bytes, keep: bool) -> None:
        slot[0] = data
        while self.slots and self.slots[0][0] is not None and self.transport is not None:
            out = self.slots.popleft()[0]
            assert out is not None
            self.transport.write(out)
        if not keep and self.transport is not None and not self.slots:
            self.transport.close()

    def _fail(self, status: int, message: str) -> None:
        if self.transport is not None:
            self.transport.write(_response(status, error_body(message, "invalid_request_error"), [], False))
            self.transport.close()
            self.transport = None


def _response(status: int, body: bytes, headers: list[tuple[str, str]], keep: bool) -> bytes:
    head = [b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            % (status, STATUS_TEXT.get(status, b"Error"), len(body))]
    head.extend(f"{k}: {v}\r\n".encode() for k, v in headers)
    if not keep:
        head.append(b"connection: close\r\n")
    head.append(b"\r\n")
    head.append(body)
    return b"".join(head)


async def serve(app: MockUpstream, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpProtocol(app, loop), host, port, backlog=1024, reuse_address=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--rpm", type=int, default=0, help="requests per minute (0: unlimited)")
    parser.add_argument("--tpm", type=int, default=0, help="tokens per minute (0: unlimited)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="fixed latency, or the median for longtail")
    parser.add_argument("--latency-dist", choices=("fixed", "longtail"), default="fixed")
    parser.add_argument("--seed", type=int, default=1, help="seed of the longtail latency draws")
    args = parser.parse_args(argv)
    if args.rpm < 0 or args.tpm < 0 or args.latency_ms < 0:
        parser.error("--rpm, --tpm and --latency-ms must not be negative")
    app = MockUpstream(rpm=args.rpm, tpm=args.tpm, latency_ms=args.latency_ms, latency_dist=args.latency_dist,
                       seed=args.seed)
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner, contextlib.suppress(KeyboardInterrupt):
        runner.run(serve(app, args.host, args.port))


if __name__ == "__main__":
    main()
