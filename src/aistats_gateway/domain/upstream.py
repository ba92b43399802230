"""What an upstream's HTTP status means for trying again: the one rule, for requests and provider batch calls.

Retryable: 408, 409, 429 and every 5xx (the set the official OpenAI SDK retries). Everything else is the
upstream's definitive answer: a line settles with it at once, a provider batch call is `Rejected`. Pure.
"""

from __future__ import annotations

RETRYABLE_STATUS = frozenset({408, 409, 429})


def retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500
