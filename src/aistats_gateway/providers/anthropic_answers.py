"""Anthropic Messages answers → OpenAI shapes, pure (no I/O).

Owns the answer half of the Anthropic translation (anthropic_translate.py owns the request half):
  * a Messages answer → a `chat.completion` object (text, `tool_calls` with JSON-string arguments,
    finish_reason from stop_reason) or a `response` object (`message` and `function_call` output items,
    status `incomplete` with `incomplete_details` when the output was cut);
  * Anthropic usage → OpenAI usage: the prompt counts input + cache reads + cache writes, and
    `cached_tokens` are the cache reads (Anthropic's `input_tokens` excludes both);
  * `normalized_usage` is what pricing gets: Anthropic's own usage object with both cache counts always
    present, so pricing/calculator.py reads it in its Anthropic shape whatever the line's endpoint;
  * Anthropic error answers → the OpenAI error envelope `{"error": {message, type, param, code}}`.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
                  "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter"}
# Anthropic error types → OpenAI's (types not listed keep their Anthropic name).
_ERROR_TYPES = {"api_error": "server_error", "overloaded_error": "server_error"}


class AnswerError(ValueError):
    """A 2xx answer that is not a Messages object (no content list)."""


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def normalized_usage(answer: Any) -> dict[str, Any]:
    """The answer's Anthropic usage with `cache_read_input_tokens`/`cache_creation_input_tokens` present."""
    usage = answer.get("usage") if isinstance(answer, dict) else None
    out = dict(usage) if isinstance(usage, dict) else {}
    for key in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
        out[key] = _count(out.get(key))
    return out


def prompt_tokens(usage: dict[str, Any]) -> int:
    """Every input token of the request: uncached input + cache reads + cache writes."""
    return (_count(usage.get("input_tokens")) + _count(usage.get("cache_read_input_tokens"))
            + _count(usage.get("cache_creation_input_tokens")))


def chat_usage(usage: dict[str, Any]) -> dict[str, Any]:
    prompt, completion = prompt_tokens(usage), _count(usage.get("output_tokens"))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": _count(usage.get("cache_read_input_tokens"))}}


def responses_usage(usage: dict[str, Any]) -> dict[str, Any]:
    prompt, output = prompt_tokens(usage), _count(usage.get("output_tokens"))
    return {"input_tokens": prompt, "output_tokens": output, "total_tokens": prompt + output,
            "input_tokens_details": {"cached_tokens": _count(usage.get("cache_read_input_tokens"))},
            "output_tokens_details": {"reasoning_tokens": 0}}


def _content(answer: Any) -> list[dict[str, Any]]:
    content = answer.get("content") if isinstance(answer, dict) else None
    if not isinstance(content, list):
        raise AnswerError("the answer has no 'content' list")
    return [block for block in content if isinstance(block, dict)]


def _text_and_calls(answer: Any) -> tuple[str, list[tuple[str, str, str]]]:
    """(joined text, [(tool_use id, name, JSON arguments)]); thinking blocks are left out."""
    texts: list[str] = []
    calls: list[tuple[str, str, str]] = []
    for block in _content(answer):
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            calls.append((str(block.get("id", "")), str(block.get("name", "")),
                          orjson.dumps(block.get("input") or {}).decode()))
    return "".join(texts), calls


def to_chat_completion(answer: dict[str, Any], now: int | None = None) -> dict[str, Any]:
    text, calls = _text_and_calls(answer)
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None,
                               "refusal": None}
    if calls:
        message["tool_calls"] = [{"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
                                 for cid, name, args in calls]
    stop = answer.get("stop_reason")
    return {
        "id": f"chatcmpl-{answer.get('id', '')}",
        "object": "chat.completion",
        "created": int(time.time()) if now is None else now,
        "model": answer.get("model"),
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": FINISH_REASONS.get(str(stop), "stop")}],
        "usage": chat_usage(normalized_usage(answer)),
    }


def to_response(answer: dict[str, Any], request: dict[str, Any], now: int | None = None) -> dict[str, Any]:
    """A Messages answer as a Responses `response` object; `request` is the line's Responses body."""
    text, calls = _text_and_calls(answer)
    msg_id = str(answer.get("id", ""))
    stop = str(answer.get("stop_reason"))
    incomplete = {"max_tokens": "max_output_tokens", "model_context_window_exceeded": "max_output_tokens",
                  "refusal": "content_filter"}.get(stop)
    output: list[dict[str, Any]] = []
    if text or not calls:
        output.append({"type": "message", "id": msg_id, "status": "incomplete" if incomplete else "completed",
                       "role": "assistant",
                       "content": [{"type": "output_text", "text": text, "annotations": []}]})
    for cid, name, args in calls:
        output.append({"type": "function_call", "id": f"fc_{cid}", "call_id": cid, "name": name,
                       "arguments": args, "status": "completed"})
    return {
        "id": "resp_" + msg_id.removeprefix("msg_"),
        "object": "response",
        "created_at": int(time.time()) if now is None else now,
        "status": "incomplete" if incomplete else "completed",
        "error": None,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": answer.get("model"),
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "temperature": request.get("temperature"),
        "top_p": request.get("top_p"),
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "metadata": request.get("metadata") or {},
        "usage": responses_usage(normalized_usage(answer)),
    }


def openai_error(message: str, *, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def error_to_openai(status: int, raw: bytes, provider: str) -> bytes:
    """An Anthropic error answer (`{"type": "error", "error": {type, message}}`) as OpenAI's envelope."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        kind = str(error.get("type") or "api_error")
        return openai_error(error["message"], type_=_ERROR_TYPES.get(kind, kind), code=kind)
    snippet = raw[:500].decode("utf-8", "replace")
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return openai_error(f"{provider} answered HTTP {status}: {snippet}", type_=kind, code=f"http_{status}")
