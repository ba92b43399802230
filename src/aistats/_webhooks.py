"""Verify the gateway's signed webhook deliveries (no dependency on the server package).

The signature is the lowercase hex HMAC-SHA256 of "{timestamp}.{raw body}" keyed by the webhook secret,
sent as `x-ai-stats-signature` with `x-ai-stats-timestamp` (and the same under `x-phaseo-*`). While a rotated
endpoint secret overlaps, `x-ai-stats-signatures` lists one signature per secret (comma-separated): any match
verifies, so a receiver holding either the old or the new secret accepts the delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping


def compute_signature(secret: str, timestamp: int | str, body: bytes | str) -> str:
    raw = body.encode("utf-8") if isinstance(body, str) else body
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()


def verify_webhook(secret: str, body: bytes | str, headers: Mapping[str, str], *, tolerance_seconds: float = 300,
                   now: float | None = None) -> bool:
    """True when the delivery is authentic and fresh. Pass the raw body exactly as received."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for prefix in ("x-ai-stats-", "x-phaseo-"):
        signature = lowered.get(prefix + "signatures") or lowered.get(prefix + "signature")
        timestamp = lowered.get(prefix + "timestamp")
        if signature and timestamp:
            break
    else:
        return False
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_seconds:
        return False
    expected = compute_signature(secret.strip(), ts, body)
    return any(hmac.compare_digest(expected, s.strip().lower()) for s in signature.split(","))
