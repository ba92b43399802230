"""A fake Anthropic Messages API, runnable as its own process (a test peer of the Anthropic provider).

    python -m aistats_gateway.testing.anthropic_upstream --port 9200 [--rpm 0] [--api-key KEY] [--latency-ms 0]

POST /v1/messages answers like Anthropic does:
  * 401 `authentication_error` without an `x-api-key` header (or with another key than `--api-key`);
    400 `invalid_request_error` without `anthropic-version`;
  * 400 `invalid_request_error` for a malformed body: missing model, max_tokens not a positive integer, empty
    messages, roles not alternating user/assistant starting with user, unknown content block types, a
    `tool_result` not answering a `tool_use` of the previous assistant turn, temperature outside 0..1,
    top-level fields the Messages API does not have (so leaked OpenAI fields are caught);
  * otherwise a deterministic answer: "echo: <last user text>" (or "echo: tool result: <text>" after a
    tool result), cut at the first of `stop_sequences` (stop_reason stop_sequence) or at max_tokens×4
    characters (stop_reason max_tokens). Tool use: when `tools` are given and `tool_choice` is `any` or
    names a tool, or is auto and the last user text mentions a tool's name, the answer is a `tool_use`
    of that tool (the first one for `any`) whose input fills each required string property with the
    user text, with stop_reason tool_use;
  * usage: ~4 characters a token; blocks marked `cache_control` make the prompt prefix up to the last mark
    a cache entry: the first request with that prefix reports it as `cache_creation_input_tokens`, later
    ones as `cache_read_input_tokens` (both excluded from `input_tokens`, as Anthropic does);
  * headers: `request-id` and `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,
    remaining,reset}` (resets as RFC 3339 times).
`--rpm N` answers requests beyond N a minute (a rolling one-second window of N/60) with 429
`rate_limit_error` and `retry-after: 1`. Fault plans work as in testing/upstream.py (testing/faults.py): a body field
    "x_fault": {"key": "line-7", "plan": [529, 429, "ok"], "retry_after": 0.2}
gives the n-th attempt with that key `plan[n-1]`: an HTTP status (answered with Anthropic's error body for
that status: 429 rate_limit_error, 529 overloaded_error, 500 api_error, ...), "ok", "reset", "hang",
"badjson" or "truncated". GET /_ledger → {key: attempts}; GET /_stats → totals; GET /_requests → the last
200 request bodies received; POST /_reset clears all three.

Message Batches (`/v1/messages/batches`, testing/anthropic_batches.py) answer with this fake's `answer()`:
`--batch-request-ms` paces them, `--state-file` keeps them across restarts, `--create-faults N` makes the
first N creates ambiguous (stored, answered 500).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
from collections import defaultdict, deque
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from aistats_gateway.testing.anthropic_batches import MessageBatches
from aistats_gateway.testing.faults import RpmWindow, connection_fault, count_attempt, planned

FIELDS = frozenset({"model", "messages", "max_tokens", "system", "temperature", "top_p", "top_k", "stop_sequences",
                    "stream", "tools", "tool_choice", "metadata", "thinking", "service_tier"})
BLOCKS = frozenset({"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"})
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
               529: "overloaded_error"}
LIMITS = {"requests": 4000, "tokens": 480000, "input-tokens": 400000, "output-tokens": 80000}


class Invalid(Exception):
    pass


def tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content if isinstance(content, list) else []:
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif block.get("type") == "tool_result":
            parts.append(_text(block.get("content")))
    return " ".join(parts)


def validate(body: dict[str, Any]) -> None:
    """Raise Invalid with Anthropic's wording for the first problem of a Messages request body."""
    extra = sorted(set(body) - FIELDS)
    if extra:
        raise Invalid(f"{extra[0]}: Extra inputs are not permitted")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise Invalid("model: Field required")
    if not isinstance(body.get("max_tokens"), int) or isinstance(body["max_tokens"], bool) or body["max_tokens"] < 1:
        raise Invalid("max_tokens: Field required (a positive integer)")
    temperature = body.get("temperature")
    if temperature is not None and not (isinstance(temperature, (int, float)) and 0 <= temperature <= 1):
        raise Invalid("temperature: Input should be less than or equal to 1")
    system = body.get("system")
    if system is not None and not isinstance(system, str) and not (
            isinstance(system, list) and all(isinstance(b, dict) and b.get("type") == "text"
                                             and isinstance(b.get("text"), str) for b in system)):
        raise Invalid("system: Input should be a valid string or a list of text blocks")
    stops = body.get("stop_sequences")
    if stops is not None and not (isinstance(stops, list) and all(isinstance(x, str) for x in stops)):
        raise Invalid("stop_sequences: Input should be a valid list of strings")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Invalid("messages: at least one message is required")
    tool_ids: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role != ("user" if i % 2 == 0 else "assistant"):
            raise Invalid(f"messages.{i}.role: roles must alternate between \"user\" and \"assistant\", "
                          "starting with \"user\"")
        content = message.get("content")
        if isinstance(content, str):
            if not content:
                raise Invalid(f"messages.{i}: all messages must have non-empty content")
            continue
        if not isinstance(content, list) or not content:
            raise Invalid(f"messages.{i}: all messages must have non-empty content")
        seen: set[str] = set()
        for j, block in enumerate(content):
            kind = block.get("type") if isinstance(block, dict) else None
            if not isinstance(kind, str) or kind not in BLOCKS:
                raise Invalid(f"messages.{i}.content.{j}.type: Input tag '{kind}' found using 'type' does not "
                              f"match any of the expected tags: {', '.join(sorted(BLOCKS))}")
            if kind == "tool_use":
                if role != "assistant" or not isinstance(block.get("input"), dict):
                    raise Invalid(f"messages.{i}.content.{j}: tool_use blocks belong to assistant turns, with an "
                                  "object input")
                seen.add(str(block.get("id")))
            if kind == "text" and not isinstance(block.get("text"), str):
                raise Invalid(f"messages.{i}.content.{j}.text: Input should be a valid string")
            if kind == "tool_result" and str(block.get("tool_use_id")) not in tool_ids:
                raise Invalid(f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                              f"{block.get('tool_use_id')}. Each `tool_result` block must have a corresponding "
                              "`tool_use` block in the previous message.")
        tool_ids = seen
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise Invalid("tools: Input should be a valid list")
    for i, tool in enumerate(tools or []):
        if not isinstance(tool, dict) or not tool.get("name") or not isinstance(tool.get("input_schema"), dict):
            raise Invalid(f"tools.{i}: a tool needs a name and an input_schema object")


class AnthropicUpstream:
    def __init__(self, latency_ms: float = 0.0, rpm: int = 0, api_key: str | None = None, *,
                 batch_request_ms: float = 50.0, state_file: Path | None = None, create_faults: int = 0) -> None:
        self.batches = MessageBatches(self, validate, error, request_ms=batch_request_ms, state_file=state_file,
                                      create_faults=create_faults)
        self.latency = latency_ms / 1000.0
        self.window = RpmWindow(rpm)
        self.api_key = api_key
        self.ledger: dict[str, int] = defaultdict(int)
        self.stats: dict[str, int] = defaultdict(int)
        self.requests: deque[dict[str, Any]] = deque(maxlen=200)
        self.cache: set[str] = set()

    def _usage(self, body: dict[str, Any], out_tokens: int) -> dict[str, Any]:
        pieces: list[tuple[str, bool]] = []  # (text, marked with cache_control)
        for tool in body.get("tools") or []:
            pieces.append((orjson.dumps(tool).decode(), "cache_control" in tool))
        system = body.get("system")
        for block in [{"type": "text", "text": system}] if isinstance(system, str) else system or []:
            pieces.append((block.get("text", ""), "cache_control" in block))
        for message in body["messages"]:
            content = message["content"]
            for block in [{"type": "text", "text": content}] if isinstance(content, str) else content:
                pieces.append((_text([block]) or orjson.dumps(block).decode(), "cache_control" in block))
        marks = [i for i, (_, marked) in enumerate(pieces) if marked]
        total = sum(tokens(text) + 1 for text, _ in pieces) + 3
        created = read = 0
        if marks:
            prefix = pieces[: marks[-1] + 1]
            cached = sum(tokens(text) + 1 for text, _ in prefix)
            key = hashlib.sha256(orjson.dumps([body["model"], prefix])).hexdigest()
            if key in self.cache:
                read = cached
            else:
                self.cache.add(key)
                created = cached
        return {"input_tokens": total - created - read, "cache_creation_input_tokens": created,
                "cache_read_input_tokens": read, "output_tokens": out_tokens, "service_tier": "standard",
                "cache_creation": {"ephemeral_5m_input_tokens": created, "ephemeral_1h_input_tokens": 0}}

    def answer(self, body: dict[str, Any], message_id: str) -> dict[str, Any]:
        """The deterministic Messages answer to a valid body (reusable by a future Batches endpoint)."""
        last = body["messages"][-1]
        text = _text(last["content"])
        after_tool = isinstance(last["content"], list) and any(b.get("type") == "tool_result" for b in last["content"])
        tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
        choice = body.get("tool_choice") or {"type": "auto"}
        tool = None
        if tools and not after_tool and choice.get("type") != "none":
            if choice.get("type") == "any":
                tool = tools[0]
            elif choice.get("type") == "tool":
                tool = next((t for t in tools if t["name"] == choice.get("name")), None)
            else:
                tool = next((t for t in tools if t["name"] in text), None)
        if tool is not None:
            schema = tool.get("input_schema") or {}
            props = schema.get("properties") or {}
            args = {name: text for name in schema.get("required") or [] if props.get(name, {}).get("type") == "string"}
            content: list[dict[str, Any]] = [{"type": "tool_use", "id": f"toolu_{message_id[4:]}",
                                              "name": tool["name"], "input": args}]
            stop, stop_seq, out_tokens = "tool_use", None, 12 + tokens(orjson.dumps(args).decode())
        else:
            reply = ("echo: tool result: " if after_tool else "echo: ") + text
            stop, stop_seq = "end_turn", None
            for seq in body.get("stop_sequences") or []:
                at = reply.find(seq)
                if at >= 0:
                    reply, stop, stop_seq = reply[:at], "stop_sequence", seq
                    break
            if tokens(reply) > body["max_tokens"]:
                reply, stop, stop_seq = reply[: body["max_tokens"] * 4], "max_tokens", None
            content, out_tokens = [{"type": "text", "text": reply}], tokens(reply)
        return {"id": message_id, "type": "message", "role": "assistant", "model": body["model"], "content": content,
                "stop_reason": stop, "stop_sequence": stop_seq, "usage": self._usage(body, out_tokens)}

    def _headers(self, request_id: str) -> dict[str, str]:
        reset = (datetime.now(UTC) + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
        used = self.stats["requests"]
        headers = {"request-id": request_id}
        for family, limit in LIMITS.items():
            remaining = max(0, limit - used * (1 if family == "requests" else 100))
            headers.update({f"anthropic-ratelimit-{family}-limit": str(limit),
                            f"anthropic-ratelimit-{family}-remaining": str(remaining),
                            f"anthropic-ratelimit-{family}-reset": reset})
        return headers

    async def messages(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.stats["requests"] += 1
        key_header = request.headers.get("x-api-key")
        if not key_header or (self.api_key is not None and key_header != self.api_key):
            return error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return error(400, "anthropic-version: header is required")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return error(400, "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return error(400, "The request body must be a JSON object.")
        fault = body.pop("x_fault", None) or {}
        self.requests.append(body)
        key, attempt = count_attempt(self.ledger, fault, raw)
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.window.throttled():
            self.stats["throttled"] += 1
            return error(429, "Number of requests has exceeded your per-minute rate limit (fake --rpm)",
                         {"retry-after": "1"})
        action = planned(fault, attempt)
        self.stats[f"action:{action}"] += 1
        request_id = f"req_fake_{key}_{attempt}"
        if action == "ok":
            try:
                validate(body)
            except Invalid as exc:
                self.stats["invalid"] += 1
                return error(400, str(exc), {"request-id": request_id})
            answer = self.answer(body, f"msg_{hashlib.sha256(f'{key}:{attempt}'.encode()).hexdigest()[:24]}")
            return web.Response(body=orjson.dumps(answer), content_type="application/json",
                                headers=self._headers(request_id))
        if (broken := await connection_fault(request, action)) is not None:
            return broken
        status = int(action)
        headers = {"request-id": request_id}
        if fault.get("retry_after") is not None:
            headers["retry-after"] = str(fault["retry_after"])
        return error(status, f"scripted fault {status} (attempt {attempt} of key {key})", headers)

    async def ledger_view(self, _request: web.Request) -> web.Response:
        return web.json_response(dict(self.ledger), dumps=lambda v: orjson.dumps(v).decode())

    async def stats_view(self, _request: web.Request) -> web.Response:
        return web.json_response(dict(self.stats), dumps=lambda v: orjson.dumps(v).decode())

    async def requests_view(self, _request: web.Request) -> web.Response:
        return web.json_response(list(self.requests), dumps=lambda v: orjson.dumps(v).decode())

    async def reset(self, _request: web.Request) -> web.Response:
        self.ledger.clear()
        self.stats.clear()
        self.requests.clear()
        return web.json_response({"ok": True})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_get("/_ledger", self.ledger_view)
        app.router.add_get("/_stats", self.stats_view)
        app.router.add_get("/_requests", self.requests_view)
        app.router.add_post("/_reset", self.reset)
        self.batches.mount(app)
        return app


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body = {"type": "error", "error": {"type": kind, "message": message},
            "request_id": (headers or {}).get("request-id")}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rpm", type=int, default=0)
    parser.add_argument("--api-key", default=None, help="accept only this x-api-key (default: any non-empty key)")
    parser.add_argument("--batch-request-ms", type=float, default=50.0, help="Message Batches: time per request")
    parser.add_argument("--state-file", type=Path, default=None, help="Message Batches: keep batches in this file")
    parser.add_argument("--create-faults", type=int, default=0, help="Message Batches: first N creates answer 500")
    args = parser.parse_args(argv)
    fake = AnthropicUpstream(args.latency_ms, args.rpm, args.api_key, batch_request_ms=args.batch_request_ms,
                             state_file=args.state_file, create_faults=args.create_faults)
    web.run_app(fake.app(), host=args.host, port=args.port,
                access_log=None, shutdown_timeout=1.0, print=lambda *_: None)


if __name__ == "__main__":
    main()
