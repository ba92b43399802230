"""A fault-injecting OpenAI-compatible upstream, runnable as its own process.

    python -m aistats_gateway.testing.upstream --port 9100 [--latency-ms 0] [--rpm 0]

It answers every OpenAI endpoint with the same deterministic answers as the built-in mock
provider, and keeps a ledger of how often each request was seen. A request can script its own
faults with an extra body field (the gateway passes bodies through unchanged):

    "x_fault": {"key": "line-7", "plan": [500, 429, "ok"], "retry_after": 0.2}

The n-th attempt with that key gets `plan[n-1]` (after the plan runs out: "ok"). Plan entries:
an HTTP status (4xx/5xx answered with an OpenAI error body; 429 carries Retry-After when
`retry_after` is given), "ok", "reset" (drop the connection before answering), "hang" (never
answer), "badjson" (200 with a body that is not JSON), "truncated" (200 with a cut-off body),
"quota" (429 `insufficient_quota`, which no retry can fix),
"big:<n>" (200 with n bytes of padding in the answer).
`--rpm` rejects requests beyond that many per minute with 429 (a rolling one-second window of
rpm/60). `GET /_ledger` returns {key: attempts}; `GET /_stats` totals; `POST /_reset` clears them.
`GET /_accepts` returns what was answered 2xx: {"per_second": {unix second: count}, "by_key": {key: count}}
(the per-second accept log that multi-process tests hold against the limit). `GET /_bodies` returns the
raw request body last received per key, as text ({key: body}), for tests of exactly what was sent.
`"x_usage": {"cached_tokens": n, "reasoning_tokens": m}` in a body adds those usage details to the answer
(chat: prompt/completion_tokens_details; responses: input/output_tokens_details).
`GET /v1/models` lists `--models` (comma-separated) as OpenAI does; `_stats` counts those calls as `models_list`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import defaultdict
from typing import Any

import orjson
from aiohttp import web

from aistats_gateway.providers.mock import respond
from aistats_gateway.testing.faults import RpmWindow, connection_fault, count_attempt, planned

ENDPOINTS = ("chat/completions", "responses", "embeddings", "completions", "moderations", "messages")
DEFAULT_MODELS = ("gpt-4o-mini", "local-llama-3.1-8b")


class Upstream:
    def __init__(self, latency_ms: float = 0.0, rpm: int = 0, models: tuple[str, ...] = DEFAULT_MODELS) -> None:
        self.models = models
        self.latency = latency_ms / 1000.0
        self.window = RpmWindow(rpm)
        self.ledger: dict[str, int] = defaultdict(int)
        self.stats: dict[str, int] = defaultdict(int)
        self.accepted: dict[str, int] = defaultdict(int)
        self.per_second: dict[int, int] = defaultdict(int)
        self.bodies: dict[str, str] = {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        endpoint = "/v1/" + request.match_info["endpoint"]
        raw = await request.read()
        self.stats["requests"] += 1
        try:
            body: dict[str, Any] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _error(400, "invalid JSON body")
        fault = body.pop("x_fault", None) or {}
        details = body.pop("x_usage", None)
        key, attempt = count_attempt(self.ledger, fault, raw)
        self.bodies[key] = raw.decode("utf-8", "replace")
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.window.throttled():
            self.stats["throttled"] += 1
            return _error(429, "rate limit reached (test upstream --rpm)", headers={"retry-after-ms": "200"})
        action = planned(fault, attempt)
        self.stats[f"action:{action}"] += 1
        if action == "ok":
            self.accepted[key] += 1
            self.per_second[int(time.time())] += 1
            answer = respond(endpoint, str(body.get("model", "unknown")), body)
            if isinstance(details, dict) and isinstance(answer.get("usage"), dict):
                _add_details(answer["usage"], details)
            return web.Response(body=orjson.dumps(answer), content_type="application/json",
                                headers={"x-request-id": f"req_up_{key}_{attempt}"})
        if (broken := await connection_fault(request, action)) is not None:
            return broken
        if isinstance(action, str) and action.startswith("big:"):
            answer = respond(endpoint, str(body.get("model", "unknown")), body)
            answer["padding"] = "x" * int(action[4:])
            return web.Response(body=orjson.dumps(answer), content_type="application/json")
        if action == "quota":  # OpenAI's answer when the account has no credit left: a 429 retries cannot fix
            return web.json_response({"error": {
                "message": "You exceeded your current quota, please check your plan and billing details.",
                "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}, status=429)
        status = int(action)
        headers = {}
        if status == 429 and fault.get("retry_after") is not None:
            headers["retry-after"] = str(fault["retry_after"])
        return _error(status, f"scripted fault {status} (attempt {attempt} of key {key})", headers=headers)

    async def models_view(self, _request: web.Request) -> web.Response:
        self.stats["models_list"] += 1
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "test-upstream"} for m in self.models]
        return web.json_response({"object": "list", "data": data}, dumps=lambda v: orjson.dumps(v).decode())

    async def ledger_view(self, _request: web.Request) -> web.Response:
        return web.json_response(dict(self.ledger), dumps=lambda v: orjson.dumps(v).decode())

    async def stats_view(self, _request: web.Request) -> web.Response:
        return web.json_response(dict(self.stats), dumps=lambda v: orjson.dumps(v).decode())

    async def accepts_view(self, _request: web.Request) -> web.Response:
        return web.json_response({"per_second": dict(self.per_second), "by_key": dict(self.accepted)},
                                 dumps=lambda v: orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS).decode())

    async def bodies_view(self, _request: web.Request) -> web.Response:
        return web.json_response(self.bodies, dumps=lambda v: orjson.dumps(v).decode())

    async def reset(self, _request: web.Request) -> web.Response:
        self.bodies.clear()
        self.ledger.clear()
        self.stats.clear()
        self.accepted.clear()
        self.per_second.clear()
        return web.json_response({"ok": True})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/{endpoint:(" + "|".join(ENDPOINTS) + ")}", self.handle)
        app.router.add_get("/v1/models", self.models_view)
        app.router.add_get("/_ledger", self.ledger_view)
        app.router.add_get("/_stats", self.stats_view)
        app.router.add_get("/_accepts", self.accepts_view)
        app.router.add_get("/_bodies", self.bodies_view)
        app.router.add_post("/_reset", self.reset)
        return app


def _add_details(usage: dict[str, Any], details: dict[str, Any]) -> None:
    chat = "prompt_tokens" in usage
    usage["prompt_tokens_details" if chat else "input_tokens_details"] = {
        "cached_tokens": details.get("cached_tokens", 0)}
    usage["completion_tokens_details" if chat else "output_tokens_details"] = {
        "reasoning_tokens": details.get("reasoning_tokens", 0)}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    kind = "rate_limit_error" if status == 429 else ("server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rpm", type=int, default=0)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="ids GET /v1/models lists")
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        pass
    upstream = Upstream(args.latency_ms, args.rpm, tuple(m for m in args.models.split(",") if m))
    web.run_app(upstream.app(), host=args.host, port=args.port, access_log=None,
                shutdown_timeout=1.0,
                print=lambda *_: None)


if __name__ == "__main__":
    main()
