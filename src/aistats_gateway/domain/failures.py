"""What a failed line failed with: its code, upstream HTTP status and message, read from its error-file line.

One home for the rule, used where lines settle (the batch's `error_summary`, counted in the settle
transaction) and where a retry picks its lines (`error_codes`, `statuses`): the executor renders the
error line once, and both read the same three facts back from it, so they can never disagree.

  * a line that got no upstream answer: `{"error": {"code", "message"}}` (or no stored line at all, only the
    code a cancel or expiry settled it with);
  * an upstream error answer: `{"response": {"status_code", "body"}}`; the code is the body's
    `error.code` (OpenAI), else `error.type` (Anthropic), else one named after the status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from aistats_gateway.domain.jsonl import HALT_MESSAGES

MAX_CODE = 64  # the column's width; upstream codes are short
MAX_MESSAGE = 500
RETRY_STATUSES = ("failed", "expired", "cancelled")  # a line's outcome other than success, as /retry names it
_HALTED = {"batch_expired": "expired", "batch_cancelled": "cancelled"}


@dataclass(frozen=True)
class Failure:
    code: str
    status_code: int | None  # the upstream's HTTP status; None when the line got no upstream answer
    message: str
    custom_id: str | None = None  # as the error line names it (None: not read from a line)

    @property
    def outcome(self) -> str:
        """"expired" or "cancelled" for a line its batch's end settled unrun; else "failed"."""
        return _HALTED.get(self.code, "failed")


def _status_code_name(status: int) -> str:
    if status == 429:
        return "rate_limit_exceeded"
    if status >= 500:
        return "server_error"
    return f"http_{status}"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def failure_of(result: bytes | None, error_code: str | None) -> Failure:
    """The failure of a failed line from what its item row holds: the stored error line, or only the code a
    cancel or expiry settled it with. Never raises: an unreadable line is `request_failed`."""
    if result is None:
        halted = error_code or "request_failed"
        return Failure(halted[:MAX_CODE], None, HALT_MESSAGES.get(halted, "The request failed."))
    try:
        line = orjson.loads(result)
    except orjson.JSONDecodeError:
        return Failure("request_failed", None, "The request failed.")
    if not isinstance(line, dict):
        return Failure("request_failed", None, "The request failed.")
    custom_id = _text(line.get("custom_id"))
    error = line.get("error")
    response = line.get("response")
    if isinstance(response, dict) and isinstance(response.get("status_code"), int):
        status = int(response["status_code"])
        body = response.get("body")
        inner = body.get("error") if isinstance(body, dict) else None
        code: str | None = None
        message: str | None = None
        if isinstance(inner, dict):
            code = _text(inner.get("code")) or _text(inner.get("type"))
            message = _text(inner.get("message"))
        elif isinstance(body, str):
            message = body
        return Failure((code or _status_code_name(status))[:MAX_CODE], status,
                       (message or f"The upstream answered HTTP {status}.")[:MAX_MESSAGE], custom_id)
    if isinstance(error, dict):
        named = _text(error.get("code")) or error_code or "request_failed"
        return Failure(named[:MAX_CODE], None, (_text(error.get("message")) or "The request failed.")[:MAX_MESSAGE],
                       custom_id)
    return Failure((error_code or "request_failed")[:MAX_CODE], None, "The request failed.", custom_id)
