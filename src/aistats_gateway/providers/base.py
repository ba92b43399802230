"""The Provider protocol and what a send returns.

A provider turns (endpoint, model, body bytes) into a `ProviderResult` — any HTTP status, with the
raw body kept as bytes so the executor can embed it in the output file without re-encoding — or
raises `UpstreamUnavailable` when no answer came back (timeout, connection error, unreadable body).
Deciding what to retry is not the provider's job (see executor/retry.py).
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """What an upstream said about its limits on one answer; None where it said nothing.

    Resets are seconds from now until that budget is whole again. Lanes learn limits from this
    (executor/lanes.py); providers only parse their own header dialect into it.
    """

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None


@dataclass(frozen=True)
class ProviderResult:
    status: int
    body: bytes
    retry_after: float | None = None  # seconds, from Retry-After / retry-after-ms
    upstream_request_id: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    usage: dict[str, Any] | None = None  # the answer's `usage` object as sent (for pricing)
    limits: RateLimitInfo | None = None  # rate-limit headers of this answer, if any
    final: bool = False  # the upstream says retrying cannot help (e.g. a 429 for exhausted quota)


class Provider(Protocol):
    name: str
    kind: str

    def serves(self, model: str) -> bool:
        """Whether this provider answers for `model` (its configured patterns)."""
        ...

    def listed_models(self) -> list[str]:
        """Concrete model names to show in GET /v1/models."""
        ...

    async def send(self, endpoint: str, model: str, body: bytes) -> ProviderResult: ...

    async def close(self) -> None: ...


def matches(patterns: list[str], model: str) -> bool:
    for pattern in patterns:
        if pattern == "*" or pattern == model:
            return True
        if pattern.endswith("*") and model.startswith(pattern[:-1]):
            return True
    return False


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` as seconds or an HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(value: str | None) -> float | None:
    """OpenAI's reset durations (`1s`, `6m0s`, `20ms`, `1h2m3.5s`) or plain seconds, as seconds."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    total, pos = 0.0, 0
    for match in _DURATION.finditer(value):
        if match.start() != pos:
            return None
        number, unit = float(match.group(1)), match.group(2)
        total += number * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
        pos = match.end()
    return total if pos == len(value) and pos > 0 else None


def int_header(headers: Mapping[str, str], name: str) -> int | None:
    """A numeric rate-limit header as an int (some send `59.0`); None when absent or not a number."""
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


def parse_openai_ratelimit(headers: Mapping[str, str]) -> RateLimitInfo | None:
    """`x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (OpenAI, Groq, vLLM proxies, ...)."""
    if "x-ratelimit-limit-requests" not in headers and "x-ratelimit-limit-tokens" not in headers \
            and "x-ratelimit-remaining-requests" not in headers and "x-ratelimit-remaining-tokens" not in headers:
        return None
    return RateLimitInfo(
        limit_requests=int_header(headers, "x-ratelimit-limit-requests"),
        remaining_requests=int_header(headers, "x-ratelimit-remaining-requests"),
        reset_requests=parse_duration(headers.get("x-ratelimit-reset-requests")),
        limit_tokens=int_header(headers, "x-ratelimit-limit-tokens"),
        remaining_tokens=int_header(headers, "x-ratelimit-remaining-tokens"),
        reset_tokens=parse_duration(headers.get("x-ratelimit-reset-tokens")),
    )


# 429 answers that are not pacing: the account is out of quota or over a spend limit until someone acts.
FINAL_429_MARKERS = (b"insufficient_quota", b"enforced_spend_limit", b"billing_hard_limit_reached")


def final_429(status: int, body: bytes) -> bool:
    """A 429 whose body says waiting will not help (retrying it 50 times only delays the error)."""
    return status == 429 and any(marker in body for marker in FINAL_429_MARKERS)


def usage_dict(parsed: Any) -> dict[str, Any] | None:
    usage = parsed.get("usage") if isinstance(parsed, dict) else None
    return usage if isinstance(usage, dict) else None


def usage_of(parsed: Any) -> tuple[int, int]:
    """(input, output) tokens from an OpenAI- or Anthropic-shaped `usage` object; zeros if absent."""
    if not isinstance(parsed, dict):
        return 0, 0
    usage = parsed.get("usage")
    if not isinstance(usage, dict):
        return 0, 0
    tin = usage.get("prompt_tokens", usage.get("input_tokens", 0))
    tout = usage.get("completion_tokens", usage.get("output_tokens", 0))
    return (tin if isinstance(tin, int) else 0), (tout if isinstance(tout, int) else 0)


def with_model(body: bytes, model: str) -> bytes:
    """The body with `model` replaced (used when a routing prefix like `openai/` must be dropped)."""
    parsed = orjson.loads(body)
    parsed["model"] = model
    return orjson.dumps(parsed)
