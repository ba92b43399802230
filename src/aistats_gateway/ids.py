"""Prefixed, sortable identifiers (ULIDs).

Owns the id formats of the wire contract: `file-…`, `batch_…`, `batch_req_…`, `G-…`, `evt_…`, and
workspace/key ids. ULIDs sort by creation time, which the list endpoints rely on for cursor
pagination. Generation is monotonic within one process, so ids minted in the same millisecond
still sort in creation order.
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_lock = threading.Lock()
_last_ms = 0
_last_rand = 0


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def ulid(now_ms: int | None = None) -> str:
    """A 26-character ULID; strictly increasing within this process."""
    global _last_ms, _last_rand
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            rand = (_last_rand + 1) & ((1 << 80) - 1)
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _last_ms, _last_rand = ms, rand
    return _encode(ms, 10) + _encode(rand, 16)


def file_id() -> str:
    return "file-" + ulid()


def batch_id() -> str:
    return "batch_" + ulid()


def batch_request_id() -> str:
    return "batch_req_" + ulid()


def gateway_request_id() -> str:
    return "G-" + ulid()


def event_id() -> str:
    return "evt_" + ulid()


def workspace_id() -> str:
    return "ws_" + ulid()


def key_id() -> str:
    return "key_" + ulid()
