"""Webhook endpoint rules (pure): the create/update bodies, event names, secrets and the rotation overlap.

A registered endpoint (`/v1/webhook-endpoints`) holds a URL, the events it wants, a status and a signing
secret `whsec_…` (32 random bytes, base64url, as the AI Stats server makes them). Rotating keeps the previous
secret signing for an overlap window (default 24 h, chosen per call, 0 ends it at once), so a receiver that
still knows only the old secret, and one that already knows only the new one, both verify every delivery
meanwhile (signer.py sends one signature per secret). The URL obeys the one SSRF rule of urlguard.py.
Every refusal is an InvalidRequest naming the field.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from aistats_gateway.domain.urlguard import UnsafeTarget, check_url
from aistats_gateway.errors import InvalidRequest, excerpt

PHASES = ("created", "status_changed", "progress", "completed", "failed", "cancelled", "expired")
# The 21 names the SDKs type; `video.*` ones are stored and echoed, but a batch has no video events.
ENDPOINT_EVENTS = tuple(f"{kind}.{phase}" for kind in ("job", "video", "batch") for phase in PHASES)
DEFAULT_EVENTS = ("batch.completed", "batch.failed", "batch.cancelled", "batch.expired")
DEFAULT_NAME = "Async webhooks"
MAX_NAME_CHARS = 120
STATUSES = ("active", "disabled")
DEFAULT_OVERLAP_SECONDS = 24 * 3600
MAX_OVERLAP_SECONDS = 7 * 24 * 3600
SECRET_PREFIX = "whsec_"
CREATE_FIELDS = ("url", "name", "events")
UPDATE_FIELDS = ("url", "name", "events", "status")


def new_secret() -> str:
    """`whsec_` and 43 base64url characters (32 random bytes, no padding)."""
    return SECRET_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def normalize_event(name: str) -> str | None:
    """`Batch.Completed` → `batch.completed`, `canceled` → `cancelled`, a bare phase → `job.<phase>`; None if
    not one of the 21 names."""
    value = name.strip().lower().replace("canceled", "cancelled")
    if value in PHASES:
        value = "job." + value
    return value if value in ENDPOINT_EVENTS else None


def parse_events(value: Any, param: str) -> list[str]:
    """A list of event names, normalized and de-duplicated in order; an unknown name is a 400 naming it."""
    if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
        raise InvalidRequest(f"'{param}' must be a list of event names such as \"batch.completed\".",
                             code="invalid_webhook_events", param=param)
    events: list[str] = []
    for index, name in enumerate(value):
        normalized = normalize_event(name)
        if normalized is None:
            raise InvalidRequest(f"Unknown event {excerpt(repr(name))} in '{param}[{index}]'; use "
                                 "job.*, batch.* or video.* with one of: " + ", ".join(PHASES) + ".",
                                 code="invalid_webhook_events", param=f"{param}[{index}]")
        if normalized not in events:
            events.append(normalized)
    return events


def batch_events(endpoint_events: Sequence[str]) -> list[str]:
    """What an endpoint's event list subscribes a batch to: `job.X` and `batch.X` both mean `batch.X`."""
    out: list[str] = []
    for name in endpoint_events:
        kind, _, phase = name.partition(".")
        if kind in ("job", "batch") and f"batch.{phase}" not in out:
            out.append(f"batch.{phase}")
    return out


def parse_url(value: Any, *, allow_local: bool) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest("'url' is required: the https URL deliveries are sent to.", code="invalid_webhook_url",
                             param="url")
    try:
        check_url(value, allow_local=allow_local)
    except UnsafeTarget as exc:
        raise InvalidRequest(f"Invalid webhook endpoint url '{excerpt(value)}': {excerpt(str(exc), 300)}.",
                             code="invalid_webhook_url", param="url") from None
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_CHARS or "\x00" in value:
        raise InvalidRequest(f"'name' must be a string of 1 to {MAX_NAME_CHARS} characters.",
                             code="invalid_value", param="name")
    return value.strip()


def _check_fields(body: Mapping[str, Any], allowed: Sequence[str]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise InvalidRequest(f"Unknown parameter '{excerpt(unknown[0])}'. Accepted: {', '.join(allowed)}.",
                             code="unknown_parameter", param=unknown[0][:100])


def parse_create(body: Mapping[str, Any], *, allow_local: bool) -> dict[str, Any]:
    """`{url, name?, events?}` → the stored values (name, url, events)."""
    _check_fields(body, CREATE_FIELDS)
    events = body.get("events")
    return {
        "url": parse_url(body.get("url"), allow_local=allow_local),
        "name": DEFAULT_NAME if body.get("name") is None else _name(body["name"]),
        "events": (parse_events(events, "events") or list(DEFAULT_EVENTS)) if events is not None
        else list(DEFAULT_EVENTS),
    }


def parse_update(body: Mapping[str, Any], *, allow_local: bool) -> dict[str, Any]:
    """Any of `{url, name, events, status}` → the values to change (at least one)."""
    _check_fields(body, UPDATE_FIELDS)
    values: dict[str, Any] = {}
    if body.get("url") is not None:
        values["url"] = parse_url(body["url"], allow_local=allow_local)
    if body.get("name") is not None:
        values["name"] = _name(body["name"])
    if body.get("events") is not None:
        values["events"] = parse_events(body["events"], "events") or list(DEFAULT_EVENTS)
    if body.get("status") is not None:
        if body["status"] not in STATUSES:
            raise InvalidRequest(f"'status' must be \"active\" or \"disabled\", got {excerpt(repr(body['status']))} "
                                 "(DELETE the endpoint to delete it).", code="invalid_value", param="status")
        values["status"] = body["status"]
    if not values:
        raise InvalidRequest("Nothing to update: give any of url, name, events, status.",
                             code="missing_required_parameter", param="body")
    return values


def parse_overlap(body: Mapping[str, Any]) -> int:
    """The rotation's overlap window in seconds: `overlap_seconds` (0 to 7 days), default 24 h."""
    _check_fields(body, ("overlap_seconds",))
    value = body.get("overlap_seconds")
    if value is None:
        return DEFAULT_OVERLAP_SECONDS
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_OVERLAP_SECONDS:
        raise InvalidRequest(f"'overlap_seconds' must be an integer from 0 to {MAX_OVERLAP_SECONDS} (7 days), got "
                             f"{excerpt(repr(value))}.", code="invalid_value", param="overlap_seconds")
    return value


def signing_secrets(secret: str, previous: str | None, previous_until: int | None, now: float) -> list[str]:
    """The secrets a delivery is signed with at `now`: the current one first, then the previous one while its
    overlap window lasts."""
    if previous and previous_until is not None and now < previous_until:
        return [secret, previous]
    return [secret]
