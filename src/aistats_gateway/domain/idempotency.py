"""Idempotent creates: the rules of the `Idempotency-Key` header, as plain values and functions.

A key is the client's promise that two requests carrying it are the same request: within `TTL` of its first
use, the same key with the same request answers the object that first request created (same id, header
`Idempotent-Replayed: true`); with a different request it is refused (409 `idempotency_key_reused`), since
answering either object would be wrong for one of them. Keys are per workspace. "The same request" is the
route plus a fingerprint of what the request asks for: a JSON body in canonical form (so key order and
whitespace do not matter), an upload's content and form fields (never the multipart boundary, which clients
draw anew for every send). The storage half (one row per key, written with the object) is in
storage/idempotency.py.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from aistats_gateway.errors import Conflict, InvalidRequest

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
TTL = 24 * 3600  # seconds a key answers its first object; after that it may create a new one
MAX_KEY_CHARS = 255


@dataclass(frozen=True)
class IdempotencyKey:
    key: str
    fingerprint: str  # what the request asked for (hex sha-256 of route and body)
    kind: str  # "batch" | "file": what it creates


@dataclass(frozen=True)
class StoredKey:
    fingerprint: str
    kind: str
    object_id: str
    created_at: int


def parse_key(raw: str | None) -> str | None:
    """The header's value, or None without one; 400 naming the header for an empty, long or non-ASCII one."""
    if raw is None:
        return None
    if not raw or len(raw) > MAX_KEY_CHARS or not all(" " <= ch <= "~" for ch in raw):
        raise InvalidRequest(f"The '{HEADER}' header must be 1 to {MAX_KEY_CHARS} printable ASCII characters "
                             f"(a UUID is typical); got {len(raw)} character(s).",
                             code="invalid_idempotency_key", param=HEADER)
    return raw


def fingerprint(route: str, *parts: bytes) -> str:
    """The fingerprint of a request: its route and the parts of what it asks for, each length-prefixed."""
    digest = hashlib.sha256(route.encode())
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def json_fingerprint(route: str, body: Any) -> str:
    """A JSON body's fingerprint: canonical (sorted keys, no whitespace), so a re-serialized body matches."""
    return fingerprint(route, orjson.dumps(body, option=orjson.OPT_SORT_KEYS))


def upload_fingerprint(content_sha256: bytes, purpose: str, filename: str, expires_after: int | None) -> str:
    """An upload's fingerprint: its content (hashed as it streamed in) and the fields that shape the file."""
    return fingerprint("files.create", content_sha256, purpose.encode(), filename.encode(),
                       str(expires_after).encode())


def live(stored: StoredKey | None, now: float) -> StoredKey | None:
    """The stored key while it still answers (within TTL of its first use); None once it may be used anew."""
    return stored if stored is not None and stored.created_at + TTL > now else None


def replay_of(stored: StoredKey | None, key: IdempotencyKey, now: float) -> str | None:
    """The id of the object to answer again, or None to create one; 409 if the key was used for another
    request (a different body or route) within TTL."""
    found = live(stored, now)
    if found is None:
        return None
    if found.fingerprint != key.fingerprint or found.kind != key.kind:
        raise Conflict(f"The {HEADER} '{key.key}' was already used with a different request (another body or "
                       f"endpoint) at {found.created_at}; it answers {found.object_id} for {TTL // 3600} h. Use a "
                       "new key for a new request.", code="idempotency_key_reused", param=HEADER)
    return found.object_id
