"""The Anthropic provider: Claude through the Messages API, for native and OpenAI-shaped lines.

`/v1/messages` lines go to Anthropic unchanged and come back unchanged. `/v1/chat/completions` and
`/v1/responses` lines are translated to a Messages request (anthropic_translate.py) and the answer back to
the OpenAI shape (anthropic_answers.py), errors included; a line that cannot be translated gets a 400 with
an OpenAI error naming the field, without a request to Anthropic. Other endpoints get a 400 too.

HTTP goes through providers/http.py (one pooled session per provider, bounded body reads, timeouts and
transport failures raised as `UpstreamUnavailable`). `base_url` is the API root without the version
(`https://api.anthropic.com`); a trailing `/v1` is tolerated. Rate-limit headers
(`anthropic-ratelimit-*`, RFC 3339 resets) become `RateLimitInfo`. Pricing gets Anthropic's own usage
object (with cache reads and writes) whatever the line's endpoint.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Unpack

import orjson

from aistats_gateway.errors import UpstreamUnavailable
from aistats_gateway.providers.anthropic_answers import (
    AnswerError,
    error_to_openai,
    normalized_usage,
    openai_error,
    prompt_tokens,
    to_chat_completion,
    to_response,
)
from aistats_gateway.providers.anthropic_translate import (
    TranslationError,
    chat_to_messages,
    responses_to_messages,
)
from aistats_gateway.providers.base import (
    ProviderResult,
    RateLimitInfo,
    final_429,
    int_header,
    parse_retry_after,
)
from aistats_gateway.providers.http import HttpOptions, HttpProvider

DEFAULT_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
MESSAGES = "/v1/messages"
TRANSLATED = {"/v1/chat/completions": chat_to_messages, "/v1/responses": responses_to_messages}


def parse_reset(value: str | None, now: float | None = None) -> float | None:
    """An RFC 3339 reset time (`2025-08-21T12:40:59Z`) as seconds from now (never negative)."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_anthropic_ratelimit(headers: Mapping[str, str], now: float | None = None) -> RateLimitInfo | None:
    """`anthropic-ratelimit-requests-*` and the tightest of the `tokens`/`input-tokens`/`output-tokens`
    budgets (the one with the fewest tokens remaining); None when the answer carried none of them."""
    prefix = "anthropic-ratelimit-"
    requests = (int_header(headers, prefix + "requests-limit"), int_header(headers, prefix + "requests-remaining"))
    tightest: tuple[int | None, int | None, float | None] | None = None
    for family in ("tokens", "input-tokens", "output-tokens"):
        limit = int_header(headers, f"{prefix}{family}-limit")
        remaining = int_header(headers, f"{prefix}{family}-remaining")
        if limit is None and remaining is None:
            continue
        candidate = (limit, remaining, parse_reset(headers.get(f"{prefix}{family}-reset"), now))
        if tightest is None or (remaining is not None and (tightest[1] is None or remaining < tightest[1])):
            tightest = candidate
    if requests == (None, None) and tightest is None:
        return None
    limit_t, remaining_t, reset_t = tightest or (None, None, None)
    return RateLimitInfo(
        limit_requests=requests[0], remaining_requests=requests[1],
        reset_requests=parse_reset(headers.get(prefix + "requests-reset"), now),
        limit_tokens=limit_t, remaining_tokens=remaining_t, reset_tokens=reset_t,
    )


class AnthropicProvider(HttpProvider):
    kind = "anthropic"

    def __init__(self, name: str, base_url: str | None, api_key: str | None, models: list[str],
                 **http: Unpack[HttpOptions]) -> None:
        headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION,
                   "user-agent": "aistats-gateway/0.1"}
        if api_key:
            headers["x-api-key"] = api_key
        super().__init__(name, models, headers, **http)
        root = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.base_url = root[:-3] if root.endswith("/v1") else root
        self.url = self.base_url + MESSAGES

    async def send(self, endpoint: str, model: str, body: bytes) -> ProviderResult:
        request: dict[str, Any] | None = None
        if endpoint == MESSAGES:
            payload = body
        elif endpoint in TRANSLATED:
            try:
                request = orjson.loads(body)
                if not isinstance(request, dict):
                    raise TranslationError("the request body must be a JSON object")
                payload = orjson.dumps(TRANSLATED[endpoint](request))
            except (orjson.JSONDecodeError, TranslationError) as exc:
                message = exc.message if isinstance(exc, TranslationError) else "the request body is not JSON"
                param = exc.param if isinstance(exc, TranslationError) else None
                return ProviderResult(400, openai_error(message, param=param, code="unsupported_for_anthropic"))
        else:
            return ProviderResult(400, openai_error(
                f"Provider '{self.name}' (Anthropic) does not serve {endpoint}; it serves /v1/messages, "
                "/v1/chat/completions and /v1/responses.", code="unsupported_endpoint"))
        status, raw, headers = await self.http.post(self.url, payload)
        retry_after = parse_retry_after(headers)
        upstream_id = headers.get("request-id") or headers.get("x-request-id")
        limits = parse_anthropic_ratelimit(headers)
        if not 200 <= status < 300:
            out = raw if request is None else error_to_openai(status, raw, self.name)
            return ProviderResult(status, out, retry_after, upstream_id, limits=limits, final=final_429(status, raw))
        try:
            answer = orjson.loads(raw)
            if not isinstance(answer, dict):
                raise AnswerError("the answer is not a JSON object")
            usage = normalized_usage(answer)
            if request is None:
                out = raw
            elif endpoint == "/v1/chat/completions":
                out = orjson.dumps(to_chat_completion(answer))
            else:
                out = orjson.dumps(to_response(answer, request))
        except (orjson.JSONDecodeError, AnswerError) as exc:
            raise UpstreamUnavailable("invalid_response",
                                      f"{self.name} answered {status} with a body that is not a message: {exc}"
                                      ) from exc
        return ProviderResult(status, out, retry_after, upstream_id, prompt_tokens(usage), usage["output_tokens"],
                              usage, limits)
