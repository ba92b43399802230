"""API keys as values: how a key is made, stored (a SHA-256 hash) and shown (a prefix that tells keys apart
without giving one away). Used by the authenticator (api/auth.py), the key service and the CLI."""

from __future__ import annotations

import hashlib
import secrets

DEFAULT_WORKSPACE = "ws_default"
KEY_PREFIX = "sk-aistats-"
PREFIX_SECRET_CHARS = 8  # 64^8 random prefixes: keys of one gateway do not share one in practice


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_prefix(key: str) -> str:
    """What is stored and shown of a key to tell it from others: `sk-aistats-` and 8 random characters of
    a generated key; of a static key (any length) never more than half, so the prefix does not give it away."""
    return key[:min(len(KEY_PREFIX) + PREFIX_SECRET_CHARS, len(key) // 2)]
