"""What each SDK call sends, as data: one definition serves the sync and the async client.

Pure: builds `Request`s and URLs; never performs I/O.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

FileInput = str | bytes | os.PathLike[str] | IO[bytes]


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    kind: str = "object"  # object | batch | file | page | raw
    headers: dict[str, str] = field(default_factory=dict)  # beside the client's own (e.g. Idempotency-Key)


def clean(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def upload_file(file: FileInput, purpose: str, filename: str | None = None) -> Request:
    """Multipart upload; `file` is a path, raw JSONL text (str), bytes, or a binary file object."""
    name = filename
    content: Any
    if isinstance(file, os.PathLike) or (isinstance(file, str) and "\n" not in file and Path(file).is_file()):
        path = Path(file)
        content, name = path.read_bytes(), name or path.name
    elif isinstance(file, str):
        content = file.encode("utf-8")
    elif isinstance(file, bytes):
        content = file
    elif isinstance(file, io.IOBase) or hasattr(file, "read"):
        content = file
        name = name or Path(str(getattr(file, "name", "upload.jsonl"))).name
    else:
        raise TypeError(f"unsupported file input of type {type(file).__name__}")
    return Request("POST", "/files", files={"file": (name or "upload.jsonl", content, "application/jsonl")},
                   data={"purpose": purpose}, kind="file")


def create_batch(params: dict[str, Any] | None, kwargs: dict[str, Any]) -> Request:
    body = {**(params or {}), **clean(kwargs)}
    return Request("POST", "/batches", json=body, kind="batch")


def require_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string")
    return value.strip()


def websocket_url(base_url: str, kind: str, job_id: str, interval_ms: int | None = None,
                  close_on_terminal: bool | None = None) -> str:
    """`{base}/async/{kind}/{id}/ws` with http→ws, https→wss; query only for given values; no key."""
    job_id = require_id(job_id, "job id")
    kind = require_id(kind, "kind")
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    query = clean({"interval_ms": interval_ms,
                   "close_on_terminal": None if close_on_terminal is None else str(close_on_terminal).lower()})
    path = f"{parts.path}/async/{kind}/{job_id}/ws"
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


def idempotent(request: Request) -> bool:
    """Safe to send twice: reads, deletes and cancels, and a create carrying an Idempotency-Key (the gateway
    answers a repeat with the object the first one made); a create or upload without one is not."""
    return request.method in ("GET", "DELETE") or (request.method == "POST" and request.path.endswith("/cancel")) \
        or "Idempotency-Key" in request.headers


def retry_delay(attempt: int, status: int | None, retry_after: str | None, max_retries: int) -> float | None:
    """Seconds to wait before retry `attempt` (1-based), or None to give up. `status` None = no answer."""
    if attempt > max_retries or (status is not None and status not in RETRYABLE_STATUS):
        return None
    if retry_after:
        try:
            return min(60.0, max(0.0, float(retry_after)))
        except ValueError:
            pass
    return float(min(8.0, 0.5 * 2.0 ** (attempt - 1)))


def results_params(follow: bool, after: str | None, merged: bool = False) -> dict[str, Any]:
    if merged:  # a chain's merged results take no cursor: a reconnect starts over (the caller skips what it has)
        return {"merged": "true"}
    return clean({"follow": "true" if follow else None, "after": after})


def retry_batch(batch_id: str, statuses: list[str] | None, error_codes: list[str] | None,
                custom_ids: list[str] | None, idempotency_key: str | None) -> Request:
    return Request("POST", f"/batches/{require_id(batch_id, 'batch_id')}/retry",
                   json=clean({"statuses": statuses, "error_codes": error_codes, "custom_ids": custom_ids}),
                   kind="batch", headers={"Idempotency-Key": idempotency_key} if idempotency_key else {})
