"""Webhook signatures (pure): lowercase hex HMAC-SHA256 of "{timestamp}.{raw body}" keyed by the secret.

The same values go out under `x-ai-stats-*` and `x-phaseo-*`, so both SDK generations verify them.
A timestamp is taken per attempt, so a retry is re-signed and stays inside receivers' 300 s window.
While a registered endpoint's rotated secret overlaps (domain/webhook_endpoints.py), a delivery is signed
with each secret: `*-signature` carries the current secret's (the one header the SDKs' verifiers read, so a
receiver switched to the new secret verifies at once), and `*-signatures` lists every signature, current
first, comma-separated, so a receiver that reads it (our SDK's `verify_webhook`) verifies with either secret.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

PREFIXES = ("x-ai-stats-", "x-phaseo-")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: int, body: bytes, signature: str, *, now: float, tolerance: float = 300) -> bool:
    """`signature`: one signature, or the comma-separated `*-signatures` list (any one matching verifies)."""
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body)
    return any(hmac.compare_digest(expected, s.strip().lower()) for s in signature.split(","))


def headers(
    *,
    secrets: Sequence[str],
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
    if secrets:  # none: unsigned (an inline webhook without a secret)
        signatures = [sign(key, timestamp, body) for key in secrets]
        values["signature"] = signatures[0]
        values["signatures"] = ",".join(signatures)
    out = {"content-type": "application/json", "user-agent": "aistats-gateway-webhooks/0.1"}
    for prefix in PREFIXES:
        for name, value in values.items():
            out[prefix + name] = value
    return out
