"""Prefixed, sortable identifiers (ULIDs).

Owns the id formats of the wire contract: `file-…`, `batch_…`, `batch_req_…`, `G-…`, `evt_…`, and
workspace/key ids. ULIDs sort by creation time, which the list endpoints rely on for cursor
pagination. Generation is monotonic within one process, so ids minted in the same millisecond
still sort in creation order.
"""

from __future__ import annotations

import os
import random
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_lock = threading.Lock()
# Ids must be unique and sortable, not secret (a foreign id answers 404 like a missing one), so a PRNG
# seeded from the OS is enough and keeps id minting off the syscall path (it runs twice per result line).
_rng = random.Random(os.urandom(32))
_last_ms = 0
_last_rand = 0


_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # every 10-bit value as two characters
_SHIFTS = tuple(range(120, -1, -10))


def _encode128(value: int) -> str:
    """Crockford base32 of a 128-bit value as 26 characters, ten bits (two characters) at a time."""
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])


def ulid(now_ms: int | None = None) -> str:
    """A 26-character ULID; strictly increasing within this process."""
    global _last_ms, _last_rand
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            rand = (_last_rand + 1) & ((1 << 80) - 1)
        else:
            rand = _rng.getrandbits(80)
        _last_ms, _last_rand = ms, rand
    return _encode128((ms << 80) | rand)


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



def key_id() -> str:
    return "key_" + ulid()
