"""Batch vocabulary: statuses (OpenAI wire strings), endpoints, windows and create-time field rules.

Pure: parses and checks values, never touches storage. Every rejection is an `InvalidRequest`
naming the field (`param`) and the accepted forms, so the API can answer 400 with a fix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aistats_gateway.domain.urlguard import UnsafeTarget, check_url
from aistats_gateway.domain.webhook_endpoints import batch_events, parse_events
from aistats_gateway.errors import InvalidRequest, excerpt


class BatchStatus(StrEnum):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def lifecycle(self) -> str:
        """The coarse status of API.md: finalizing/cancelling count as running."""
        return _LIFECYCLE[self]


TERMINAL = frozenset(
    {BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)
_LIFECYCLE = {
    BatchStatus.VALIDATING: "pending",
    BatchStatus.IN_PROGRESS: "running",
    BatchStatus.FINALIZING: "running",
    BatchStatus.CANCELLING: "running",
    BatchStatus.COMPLETED: "completed",
    BatchStatus.FAILED: "failed",
    BatchStatus.CANCELLED: "cancelled",
    BatchStatus.EXPIRED: "expired",
}


# Error codes of lines that settled without ever being sent: the batch stopped first. They are in OpenAI's
# `failed` count (and the error file), but they are not failures of the requests: "not run".
NOT_RUN_CODES = {"batch_cancelled": "cancelled", "batch_expired": "expired"}


@dataclass(frozen=True)
class RequestCounts:
    """OpenAI's counts (`failed` includes lines never run) and the split of `failed` the gateway keeps:
    `cancelled` / `expired`, lines settled unsent because the batch was cancelled or expired."""

    total: int
    completed: int
    failed: int
    cancelled: int = 0
    expired: int = 0

    @property
    def settled(self) -> int:
        return self.completed + self.failed

    @property
    def not_run(self) -> int:
        return self.cancelled + self.expired

    @property
    def errored(self) -> int:
        """Lines that ran and failed (an error answer, or no answer after every attempt)."""
        return max(0, self.failed - self.not_run)

    @property
    def ran(self) -> int:
        """Lines actually tried to the end: succeeded or errored."""
        return self.completed + self.errored

    def extensions(self) -> dict[str, int]:
        """The gateway's additions to `request_counts` (OpenAI's three stay as they are)."""
        return {"succeeded": self.completed, "errored": self.errored, "cancelled": self.cancelled,
                "expired": self.expired}

    @property
    def progress(self) -> int:
        """Whole percent settled, 0..100; 100 only when every line is settled."""
        if self.total <= 0:
            return 0
        pct = (self.settled * 100) // self.total
        return 100 if self.settled >= self.total else min(pct, 99)

    def with_running(self, running: Iterable[Mapping[str, int]]) -> RequestCounts:
        """These (settled) counts plus those running provider batches report: lines of a native batch settle
        here only when their provider batch ends, so meanwhile its progress is the providers' (never past
        `total`)."""
        running = list(running)
        completed = min(self.total, self.completed + sum(c.get("completed", 0) for c in running))
        failed = min(self.total - completed, self.failed + sum(c.get("failed", 0) for c in running))
        return RequestCounts(self.total, completed, failed, self.cancelled, self.expired)


# Endpoints the gateway accepts, normalized to their `/v1/...` form.
ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/messages",
)


def normalize_endpoint(value: str) -> str | None:
    """`responses`, `/responses`, `/v1/responses` → `/v1/responses`; None if unknown."""
    path = value.strip()
    if not path.startswith("/"):
        path = "/" + path
    if not path.startswith("/v1/"):
        path = "/v1" + path
    path = path.rstrip("/")
    return path if path in ENDPOINTS else None


MAX_ENDPOINT_CHARS = 64  # the caller's spelling is stored (VARCHAR(128)) and echoed: no valid one is longer


def parse_endpoint(value: Any) -> str:
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(
            f"'endpoint' must be a string, got {type(value).__name__}. Use one of: " + ", ".join(ENDPOINTS) + ".",
            code="invalid_type",
            param="endpoint",
        )
    if value is None or not value.strip():
        raise InvalidRequest(
            "Missing required parameter 'endpoint'. Use one of: " + ", ".join(ENDPOINTS) + ".",
            code="missing_required_parameter",
            param="endpoint",
        )
    normalized = normalize_endpoint(value) if len(value) <= MAX_ENDPOINT_CHARS else None
    if normalized is None:
        raise InvalidRequest(
            f"Unsupported endpoint '{excerpt(value)}'. Use one of: " + ", ".join(ENDPOINTS)
            + " (the '/v1' prefix and leading slash are optional).",
            code="invalid_endpoint",
            param="endpoint",
        )
    return normalized


# ASCII digits (\d would take "١٢h" too), at most 12 of them (int() refuses over 4,300 digits: a 500)
_WINDOW = re.compile(r"^\s*([0-9]{1,12})\s*([hm])\s*$")
MAX_WINDOW_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class CompletionWindow:
    """A parsed `completion_window`: its length, and its spelling as stored and echoed ('0024 h' → '24h': the
    column is VARCHAR(16), and spaces or leading zeros mean nothing)."""

    seconds: int
    text: str


DEFAULT_WINDOW = CompletionWindow(24 * 3600, "24h")


def parse_completion_window(value: Any) -> CompletionWindow:
    """`24h`, `90m`, … → the window; at least one minute, at most seven days."""
    if value is None:
        return DEFAULT_WINDOW
    if not isinstance(value, str):
        raise InvalidRequest(
            "'completion_window' must be a string such as '24h' or '90m'.",
            code="invalid_completion_window",
            param="completion_window",
        )
    match = _WINDOW.match(value)
    if not match:
        raise InvalidRequest(
            f"Invalid completion_window '{excerpt(value)}': use '<N>h' or '<N>m', e.g. '24h' (at most 168h).",
            code="invalid_completion_window",
            param="completion_window",
        )
    amount, unit = int(match.group(1)), match.group(2)
    seconds = amount * (3600 if unit == "h" else 60)
    if seconds < 60 or seconds > MAX_WINDOW_SECONDS:
        raise InvalidRequest(
            f"completion_window '{excerpt(value)}' is out of range: it must be between 1m and 168h (7 days).",
            code="invalid_completion_window",
            param="completion_window",
        )
    return CompletionWindow(seconds, f"{amount}{unit}")


# OpenAI's bounds for `expires_after` (files) and `output_expires_after` (batches): 1 hour to 30 days.
EXPIRES_AFTER_MIN_SECONDS = 3600
EXPIRES_AFTER_MAX_SECONDS = 30 * 86400


def parse_expires_after(value: Any, param: str) -> int | None:
    """OpenAI's file expiration policy `{"anchor": "created_at", "seconds": N}`: the seconds, or None when absent.

    Multipart uploads send the fields as strings (`expires_after[seconds]=3600`), so digit strings count."""
    if value is None:
        return None
    shape = f"'{param}' must be an object {{\"anchor\": \"created_at\", \"seconds\": N}}"
    if not isinstance(value, dict):
        raise InvalidRequest(f"{shape}, got {type(value).__name__}.", code="invalid_type", param=param)
    unknown = sorted(set(value) - {"anchor", "seconds"})
    if unknown:
        raise InvalidRequest(f"Unknown parameter '{param}.{excerpt(unknown[0])}'; {shape}.", code="unknown_parameter",
                             param=f"{param}.{unknown[0][:100]}")
    if value.get("anchor") != "created_at":
        raise InvalidRequest(f"'{param}.anchor' must be 'created_at' (the only anchor), got "
                             f"{excerpt(repr(value.get('anchor')))}.",
                             code="invalid_value", param=f"{param}.anchor")
    seconds = value.get("seconds")
    if isinstance(seconds, str) and seconds.strip().isascii() and seconds.strip().isdigit():
        # ASCII only: str.isdigit() is true for "٣٦٠٠" and "²" too; more than 12 digits is out of range anyway
        # (and int() refuses over 4,300 of them)
        seconds = int(seconds) if len(seconds.strip()) <= 12 else EXPIRES_AFTER_MAX_SECONDS + 1
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise InvalidRequest(f"'{param}.seconds' must be an integer number of seconds, got {excerpt(repr(seconds))}.",
                             code="invalid_type", param=f"{param}.seconds")
    if not EXPIRES_AFTER_MIN_SECONDS <= seconds <= EXPIRES_AFTER_MAX_SECONDS:
        raise InvalidRequest(f"'{param}.seconds' is {seconds}; it must be between {EXPIRES_AFTER_MIN_SECONDS} "
                             f"(1 hour) and {EXPIRES_AFTER_MAX_SECONDS} (30 days).", code="invalid_value",
                             param=f"{param}.seconds")
    return seconds


def parse_metadata(value: Any) -> dict[str, str] | None:
    """OpenAI's rules: at most 16 pairs, string keys ≤ 64 chars, string values ≤ 512 chars."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest("'metadata' must be an object of string keys and string values.",
                             code="invalid_metadata", param="metadata")
    if len(value) > 16:
        raise InvalidRequest(f"'metadata' has {len(value)} keys; at most 16 are allowed.",
                             code="invalid_metadata", param="metadata")
    for key, val in value.items():
        if len(key) > 64:
            raise InvalidRequest(f"metadata key '{key[:70]}…' is longer than 64 characters.",
                                 code="invalid_metadata", param=f"metadata.{key[:64]}")
        if not isinstance(val, str):
            raise InvalidRequest(f"metadata['{key}'] must be a string, got {type(val).__name__}.",
                                 code="invalid_metadata", param=f"metadata.{key}")
        if len(val) > 512:
            raise InvalidRequest(f"metadata['{key}'] is {len(val)} characters long; at most 512 allowed.",
                                 code="invalid_metadata", param=f"metadata.{key}")
    return dict(value)


def parse_session_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest("'session_id' must be a non-empty string.", code="invalid_session_id",
                             param="session_id")
    if len(value) > 256:
        raise InvalidRequest(f"'session_id' is {len(value)} characters long; at most 256 allowed.",
                             code="invalid_session_id", param="session_id")
    if "\x00" in value:  # PostgreSQL text cannot hold NUL
        raise InvalidRequest("'session_id' must not contain NUL characters (\\u0000).", code="invalid_session_id",
                             param="session_id")
    return value


_PREF_LISTS = ("order", "only", "ignore")
_SORTS = ("price", "latency", "throughput")


def parse_provider_preferences(value: Any) -> dict[str, Any] | None:
    """Routing preferences `{order, only, ignore, allow_fallbacks, sort}`; shape checked here."""
    if value is None:
        return None
    if isinstance(value, str):
        return {"only": [value]}
    if not isinstance(value, dict):
        raise InvalidRequest("'provider' must be an object like {\"order\": [\"openai\"]}.",
                             code="invalid_provider_preferences", param="provider")
    out: dict[str, Any] = {}
    for key, val in value.items():
        if key in _PREF_LISTS:
            if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
                raise InvalidRequest(f"'provider.{key}' must be a list of provider names.",
                                     code="invalid_provider_preferences", param=f"provider.{key}")
            out[key] = list(val)
        elif key == "allow_fallbacks":
            if not isinstance(val, bool):
                raise InvalidRequest("'provider.allow_fallbacks' must be true or false.",
                                     code="invalid_provider_preferences", param="provider.allow_fallbacks")
            out[key] = val
        elif key == "sort":
            if val not in _SORTS:
                raise InvalidRequest(f"'provider.sort' must be one of {', '.join(_SORTS)}.",
                                     code="invalid_provider_preferences", param="provider.sort")
            out[key] = val
        else:
            raise InvalidRequest(
                f"Unknown field 'provider.{excerpt(key)}'; allowed: order, only, ignore, allow_fallbacks, sort.",
                code="invalid_provider_preferences", param=f"provider.{key[:100]}")
    return out


WEBHOOK_EVENTS = (
    "batch.created",
    "batch.status_changed",
    "batch.progress",
    "batch.completed",
    "batch.failed",
    "batch.cancelled",
    "batch.expired",
)
MAX_WEBHOOK_SECRET_CHARS = 1024
DEFAULT_WEBHOOK_EVENTS = ("batch.completed", "batch.failed", "batch.cancelled", "batch.expired")


def parse_webhook_choice(webhook: Any, endpoint_id: Any, *, allow_local_http: bool = False) -> dict[str, Any] | None:
    """The batch's webhook from `webhook` and `webhook_endpoint_id`: a registered endpoint
    (`{"endpoint_id", "events"}`, events `[]` meaning the endpoint's own) or an inline one (`parse_webhook`).
    As on the AI Stats server, `webhook: {endpoint_id | endpointId, events?}` is the same as
    `webhook_endpoint_id` and wins over it; an inline URL together with an endpoint id is refused."""
    if endpoint_id is not None and not (isinstance(endpoint_id, str) and endpoint_id.strip()):
        raise InvalidRequest("'webhook_endpoint_id' must be a webhook endpoint id string (we_…).",
                             code="invalid_type", param="webhook_endpoint_id")
    if isinstance(webhook, dict) and ("endpoint_id" in webhook or "endpointId" in webhook):
        unknown = sorted(set(webhook) - {"endpoint_id", "endpointId", "events"})
        if unknown:
            raise InvalidRequest(f"'webhook.{excerpt(unknown[0])}' cannot be given with 'webhook.endpoint_id': the "
                                 "endpoint has its own URL and secret.", code="invalid_webhook",
                                 param=f"webhook.{unknown[0][:100]}")
        endpoint_id = webhook.get("endpoint_id", webhook.get("endpointId"))
        if not (isinstance(endpoint_id, str) and endpoint_id.strip()):
            raise InvalidRequest("'webhook.endpoint_id' must be a webhook endpoint id string (we_…).",
                                 code="invalid_type", param="webhook.endpoint_id")
        events_in = webhook.get("events")
        events = [] if events_in is None else batch_events(parse_events(events_in, "webhook.events"))
        if events_in and not events:
            raise InvalidRequest("'webhook.events' names no batch event (video.* events are never sent for a "
                                 "batch); use batch.* or job.* names.", code="invalid_webhook_events",
                                 param="webhook.events")
        return {"endpoint_id": endpoint_id, "events": events}
    if endpoint_id is not None:
        if webhook is not None:
            raise InvalidRequest("Give either 'webhook_endpoint_id' or an inline 'webhook' {url, secret}, not both.",
                                 code="conflicting_parameters", param="webhook_endpoint_id")
        return {"endpoint_id": endpoint_id, "events": []}
    return parse_webhook(webhook, allow_local_http=allow_local_http)


def parse_webhook(value: Any, *, allow_local_http: bool = False) -> dict[str, Any] | None:
    """`{url, events?, secret?}`: URL rules and event normalization (`job.*` → `batch.*`).

    Here the URL's shape, scheme and literal host are checked so a bad value fails at create with a
    clear 400; resolved addresses are checked again at every delivery (domain/urlguard.py).
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest("'webhook' must be an object {url, events?, secret?}.", code="invalid_webhook",
                             param="webhook")
    unknown = set(value) - {"url", "events", "secret"}
    if unknown:
        raise InvalidRequest(f"Unknown webhook field(s): {excerpt(', '.join(sorted(unknown)))}.",
                             code="invalid_webhook", param=f"webhook.{sorted(unknown)[0][:100]}")
    url = value.get("url")
    if not isinstance(url, str) or not url:
        raise InvalidRequest("'webhook.url' is required.", code="invalid_webhook", param="webhook.url")
    try:
        check_url(url, allow_local=allow_local_http)
    except UnsafeTarget as exc:
        raise InvalidRequest(f"Invalid webhook.url '{excerpt(url)}': {excerpt(str(exc), 300)}.",
                             code="invalid_webhook_url", param="webhook.url") from None
    events_in = value.get("events")
    if events_in is None:
        events = list(DEFAULT_WEBHOOK_EVENTS)
    else:
        if not isinstance(events_in, list) or not all(isinstance(e, str) for e in events_in):
            raise InvalidRequest("'webhook.events' must be a list of event names.", code="invalid_webhook",
                                 param="webhook.events")
        events = []
        for name in events_in:
            normalized = "batch." + name[4:] if name.startswith("job.") else name
            if normalized in WEBHOOK_EVENTS and normalized not in events:
                events.append(normalized)
        if not events:
            raise InvalidRequest(
                f"webhook.events {excerpt(repr(events_in))} has no valid event; use any of {', '.join(WEBHOOK_EVENTS)} "
                "(or their job.* forms).", code="invalid_webhook_events", param="webhook.events")
    secret = value.get("secret")
    if secret is not None and (not isinstance(secret, str) or not secret.strip()):
        raise InvalidRequest("'webhook.secret' must be a non-empty string.", code="invalid_webhook",
                             param="webhook.secret")
    if isinstance(secret, str) and len(secret) > MAX_WEBHOOK_SECRET_CHARS:
        # Stored with the batch and copied into every event's snapshot: a body-sized secret multiplies.
        raise InvalidRequest(f"'webhook.secret' is {len(secret):,} characters long; at most "
                             f"{MAX_WEBHOOK_SECRET_CHARS:,} are allowed.", code="invalid_webhook",
                             param="webhook.secret")
    if isinstance(secret, str) and secret != secret.strip():
        # Receivers (the AI Stats and Phaseo SDKs) strip the secret before verifying; a padded
        # secret could never verify, so refuse it now rather than fail every delivery later.
        raise InvalidRequest("'webhook.secret' must not start or end with whitespace.", code="invalid_webhook",
                             param="webhook.secret")
    return {"url": url, "events": events, "secret": secret}
