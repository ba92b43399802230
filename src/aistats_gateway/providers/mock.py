"""The built-in `mock` provider: deterministic answers, realistic shapes and token usage, no network.

A product feature (the default config runs on it, and so do demos and tests), not a test double.
Models:
    mock/echo     answers at once, echoing the last user input
    mock/slow     the same after `[mock] slow_latency_ms` (default 250 ms), to watch progress move
    mock/reject   answers every request with a 400 invalid_request_error, to see the error file
Responses follow each endpoint's OpenAI (or, for /v1/messages, Anthropic) response shape; token
counts use the common ~4-characters-per-token estimate and honour the request's output cap.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from typing import Any

import orjson

from aistats_gateway.providers.base import ProviderResult, usage_of

MODELS = ("mock/echo", "mock/slow", "mock/reject")


def estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                text = part.get("text") or part.get("input_text") or ""
                if isinstance(text, str):
                    parts.append(text)
            elif isinstance(part, str):
                parts.append(part)
        return " ".join(parts)
    return "" if content is None else orjson.dumps(content).decode()


def _prompt(endpoint: str, body: dict[str, Any]) -> tuple[str, int]:
    """(text to echo, prompt tokens) for a request body."""
    if endpoint in ("/v1/chat/completions", "/v1/messages"):
        messages = body.get("messages")
        if not isinstance(messages, list):
            messages = []
        texts = [_text_of(m.get("content")) for m in messages if isinstance(m, dict)]
        system = body.get("system")
        tokens = sum(estimate_tokens(t) + 4 for t in texts) + 3 + (estimate_tokens(_text_of(system)) if system else 0)
        last_user = next(
            (_text_of(m.get("content")) for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"),
            texts[-1] if texts else "",
        )
        return last_user, tokens
    if endpoint == "/v1/responses":
        value = body.get("input", "")
        if isinstance(value, list):
            texts = [_text_of(m.get("content")) if isinstance(m, dict) else _text_of(m) for m in value]
            text = texts[-1] if texts else ""
            tokens = sum(estimate_tokens(t) + 4 for t in texts)
        else:
            text = _text_of(value)
            tokens = estimate_tokens(text)
        if isinstance(body.get("instructions"), str):
            tokens += estimate_tokens(body["instructions"])
        return text, max(tokens, 1)
    value = body.get("input", body.get("prompt", ""))
    if isinstance(value, list):
        texts = [_text_of(v) for v in value]
        return " ".join(texts), sum(estimate_tokens(t) for t in texts)
    text = _text_of(value)
    return text, estimate_tokens(text)


def _cap(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_output_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


class MockProvider:
    kind = "mock"

    def __init__(self, name: str = "mock", slow_latency_ms: int = 250) -> None:
        self.name = name
        self.slow_latency = slow_latency_ms / 1000.0

    def serves(self, model: str) -> bool:
        return model in MODELS

    def listed_models(self) -> list[str]:
        return list(MODELS)

    async def close(self) -> None:
        return None

    async def send(self, endpoint: str, model: str, body: bytes) -> ProviderResult:
        if model == "mock/slow" and self.slow_latency > 0:
            await asyncio.sleep(self.slow_latency)
        request = orjson.loads(body)
        if model == "mock/reject":
            error = {"error": {"message": "mock/reject rejects every request (use mock/echo for answers).",
                               "type": "invalid_request_error", "param": "model", "code": "mock_rejected"}}
            return ProviderResult(400, orjson.dumps(error))
        messages = request.get("messages")
        if endpoint in ("/v1/chat/completions", "/v1/messages") and messages is not None \
                and not isinstance(messages, list):  # as OpenAI and Anthropic answer it
            error = {"error": {"message": f"Invalid type for 'messages': expected an array, got "
                                          f"{type(messages).__name__}.",
                               "type": "invalid_request_error", "param": "messages", "code": "invalid_type"}}
            return ProviderResult(400, orjson.dumps(error))
        answer = respond(endpoint, model, request)
        tin, tout = usage_of(answer)
        return ProviderResult(200, orjson.dumps(answer), input_tokens=tin, output_tokens=tout,
                              usage=answer.get("usage"))


def respond(endpoint: str, model: str, body: dict[str, Any]) -> dict[str, Any]:
    """The deterministic answer of `mock/*` to one request (public: the test upstream reuses it)."""
    text, prompt_tokens = _prompt(endpoint, body)
    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]
    now = int(time.time())
    reply = f"echo: {text}" if text else "echo"
    cap = _cap(body)
    finish = "stop"
    if cap is not None and estimate_tokens(reply) > cap:
        reply, finish = reply[: cap * 4], "length"
    out_tokens = estimate_tokens(reply)
    if endpoint == "/v1/chat/completions":
        return {
            "id": f"chatcmpl-mock-{digest}", "object": "chat.completion", "created": now, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply, "refusal": None},
                         "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": out_tokens,
                      "total_tokens": prompt_tokens + out_tokens},
            "system_fingerprint": "mock",
        }
    if endpoint == "/v1/responses":
        return {
            "id": f"resp_mock_{digest}", "object": "response", "created_at": now,
            "status": "completed" if finish == "stop" else "incomplete", "model": model,
            "output": [{"type": "message", "id": f"msg_mock_{digest}", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": reply, "annotations": []}]}],
            "usage": {"input_tokens": prompt_tokens, "output_tokens": out_tokens,
                      "total_tokens": prompt_tokens + out_tokens},
        }
    if endpoint == "/v1/messages":
        return {
            "id": f"msg_mock_{digest}", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": reply}],
            "stop_reason": "end_turn" if finish == "stop" else "max_tokens", "stop_sequence": None,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": out_tokens},
        }
    if endpoint == "/v1/completions":
        return {
            "id": f"cmpl-mock-{digest}", "object": "text_completion", "created": now, "model": model,
            "choices": [{"index": 0, "text": reply, "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": out_tokens,
                      "total_tokens": prompt_tokens + out_tokens},
        }
    if endpoint == "/v1/embeddings":
        return _embeddings(model, body, prompt_tokens)
    return _moderations(model, body, digest)  # /v1/moderations


def _embeddings(model: str, body: dict[str, Any], prompt_tokens: int) -> dict[str, Any]:
    """One vector per input, derived from the input's hash (so equal inputs embed equally), of the requested
    `dimensions` (default 8)."""
    inputs = body.get("input")
    values = inputs if isinstance(inputs, list) else [inputs]
    requested = body.get("dimensions")
    dims = requested if isinstance(requested, int) and 0 < requested <= 4096 else 8
    data = []
    for i, value in enumerate(values):
        seed = hashlib.sha256(orjson.dumps(value)).digest()
        vector = [round((seed[j % len(seed)] - 127.5) / 127.5, 6) for j in range(dims)]
        data.append({"object": "embedding", "index": i, "embedding": vector})
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}


def _moderations(model: str, body: dict[str, Any], digest: str) -> dict[str, Any]:
    """Nothing flagged, one result per input."""
    inputs = body.get("input")
    values = inputs if isinstance(inputs, list) else [inputs]
    return {
        "id": f"modr-mock-{digest}", "model": model,
        "results": [{"flagged": False, "categories": {}, "category_scores": {}} for _ in values],
    }
