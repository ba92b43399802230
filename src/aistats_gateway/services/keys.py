"""API keys and workspaces: the default workspace, its static or generated key, extra keys, revocation.

At start: the default workspace exists; `AISTATS_API_KEY` (if set) is its static key, and any other
static key is revoked then — rotating the setting retires the old key (keys made by `keys create`
are never touched); if the database holds no active key at all, one is generated and returned so
the caller prints it once (only its hash is stored). With no `AISTATS_API_KEY` the last static key
is left as it was (a start with a forgotten setting must not lock every client out) and a warning
says so.

`keys revoke` names exactly one key — its id, the key itself, or its SHA-256 hash — never a prefix
(prefixes were 12 characters once, shared by many keys of different workspaces).
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from aistats_gateway import ids
from aistats_gateway.domain.keys import DEFAULT_WORKSPACE, hash_key, key_prefix, new_key
from aistats_gateway.storage.schema import KEY_GENERATED, KEY_STATIC
from aistats_gateway.storage.store import Store

log = logging.getLogger(__name__)
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_SHOWN_IDS = 5


async def ensure_default_keys(store: Store, static_key: str | None, now: float | None = None) -> str | None:
    """Returns a freshly generated key (to print once), or None."""
    now = time.time() if now is None else now
    await store.ensure_workspace(DEFAULT_WORKSPACE, "default")
    if static_key:
        digest = hash_key(static_key)
        await store.add_api_key(ids.key_id(), DEFAULT_WORKSPACE, digest, key_prefix(static_key), "static", KEY_STATIC)
        for row in await store.revoke_static_keys(digest, now):
            log.warning("AISTATS_API_KEY changed: the previous static key %s (%s…) is revoked", row["id"],
                        row["prefix"])
        if any(row["revoked_at"] is not None for row in await store.find_keys("", [digest])):
            log.warning("AISTATS_API_KEY is a revoked key: the gateway refuses it; set a new one")
        return None
    for row in await store.list_keys(DEFAULT_WORKSPACE):
        if row["kind"] == KEY_STATIC and row["revoked_at"] is None:
            log.warning("AISTATS_API_KEY is not set: the static key %s (%s…) of an earlier start still works; "
                        "`aistats keys revoke %s` retires it", row["id"], row["prefix"], row["id"])
    if await store.count_keys() > 0:
        return None
    key = new_key()
    await store.add_api_key(ids.key_id(), DEFAULT_WORKSPACE, hash_key(key), key_prefix(key), "generated",
                            KEY_GENERATED)
    return key


async def create_key(store: Store, workspace: str, name: str | None = None) -> str:
    """A new key for `workspace` (created if new, e.g. `ws_team_a`); returns the plaintext key."""
    workspace_id = workspace if workspace.startswith("ws_") else f"ws_{workspace}"
    await store.ensure_workspace(workspace_id, workspace)
    key = new_key()
    await store.add_api_key(ids.key_id(), workspace_id, hash_key(key), key_prefix(key), name)
    return key


def key_lookup(arg: str) -> tuple[str, list[str]]:
    """What a `keys revoke` argument can be: a key id, or the hashes it may stand for (the key's own
    hash, or — given 64 hex digits — that hash itself). Ids and hashes are unique columns."""
    hashes = [hash_key(arg)]
    if _SHA256_HEX.fullmatch(arg):
        hashes.append(arg)
    return arg, hashes


def masked(arg: str) -> str:
    """An argument as messages may repeat it: a key id whole; anything else (it may be a key) cut to its
    prefix, so a mistyped secret does not end up in terminal scrollback or logs."""
    if arg.startswith("key_"):
        return arg
    shown = key_prefix(arg)
    return arg if shown == arg else shown + "…"


def refusal(arg: str, matches: Sequence[dict[str, Any]], keys: Sequence[dict[str, Any]]) -> str:
    """Why `keys revoke arg` revoked nothing, given the keys it named (`matches`) and, when it named
    none, every key (to tell a prefix from a typo)."""
    if len(matches) > 1:
        return (f"'{masked(arg)}' names {len(matches)} keys ({_ids(matches)}); nothing revoked: "
                "give one key id (see `aistats keys list`)")
    if matches:
        return f"key {matches[0]['id']} was already revoked; nothing revoked"
    sharing = [k for k in keys if k["prefix"].startswith(arg) or arg.startswith(k["prefix"])]
    if sharing:
        said = arg if any(k["prefix"].startswith(arg) for k in sharing) else masked(arg)  # no more than shown
        return (f"'{said}' is not a whole key but the beginning of {len(sharing)} key(s) ({_ids(sharing)}); "
                "nothing revoked: give a key id (see `aistats keys list`) or the whole key")
    return f"no key has the id, key or hash '{masked(arg)}'; nothing revoked"


def _ids(rows: Sequence[dict[str, Any]]) -> str:
    shown = ", ".join(str(r["id"]) for r in rows[:_SHOWN_IDS])
    return shown + (f" and {len(rows) - _SHOWN_IDS} more" if len(rows) > _SHOWN_IDS else "")


async def revoke(store: Store, arg: str, now: float) -> tuple[dict[str, Any] | None, str]:
    """Revoke the one key `arg` names: (the key revoked, a message) or (None, why nothing was revoked)."""
    key_id, hashes = key_lookup(arg)
    matches = await store.find_keys(key_id, hashes)
    if len(matches) == 1 and matches[0]["revoked_at"] is None:
        row = matches[0]
        if await store.revoke_key(row["id"], now):
            return row, f"revoked {row['id']} ({row['workspace_id']}, {row['prefix']}…)"
        matches = [{**row, "revoked_at": int(now)}]  # revoked by someone else meanwhile
    return None, refusal(arg, matches, [] if matches else await store.list_keys())


def listing(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """`keys list` rows: each with `shown` (its prefix, or None when another key has the same one — keys
    stored before prefixes grew are then told apart by id) and `current_static` (the static key the
    gateway accepts: the one AISTATS_API_KEY named at the last start)."""
    counts = Counter(r["prefix"] for r in rows)
    return [{**r, "shown": r["prefix"] if counts[r["prefix"]] == 1 else None,
             "current_static": r["kind"] == KEY_STATIC and r["revoked_at"] is None} for r in rows]
