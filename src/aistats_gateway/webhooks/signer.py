"""Webhook signatures (pure): lowercase hex HMAC-SHA256 of "{timestamp}.{raw body}" keyed by the secret.

The same values go out under `x-ai-stats-*` and `x-phaseo-*`, so both SDK generations verify them.
A timestamp is taken per attempt, so a retry is re-signed and stays inside receivers' 300 s window.
"""

from __future__ import annotations

import hashlib
import hmac

PREFIXES = ("x-ai-stats-", "x-phaseo-")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: int, body: bytes, signature: str, *, now: float, tolerance: float = 300) -> bool:
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature.strip().lower())


def headers(
    *,
    secret: str | None,
    timestamp: int,
    body: bytes,
    event_id: str,
    event_type: str,
    delivery_key: str,
    attempt: int,
    max_attempts: int,
) -> dict[str, str]:
    values = {
        "timestamp": str(timestamp),
        "event-id": event_id,
        "event-type": event_type,
        "delivery-key": delivery_key,
        "attempt": str(attempt),
        "max-attempts": str(max_attempts),
    }
    if secret:
        values["signature"] = sign(secret, timestamp, body)
    out = {"content-type": "application/json", "user-agent": "aistats-gateway-webhooks/0.1"}
    for prefix in PREFIXES:
        for name, value in values.items():
            out[prefix + name] = value
    return out
