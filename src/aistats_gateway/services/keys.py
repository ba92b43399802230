"""API keys and workspaces: the default workspace, its static or generated key, extra keys.

At start: the default workspace exists; `AISTATS_API_KEY` (if set) is a key of it; and if the
database holds no key at all, one is generated and returned so the caller prints it once (only
its hash is stored).
"""

from __future__ import annotations

from aistats_gateway import ids
from aistats_gateway.api.auth import DEFAULT_WORKSPACE, hash_key, new_key
from aistats_gateway.storage.store import Store


async def ensure_default_keys(store: Store, static_key: str | None) -> str | None:
    """Returns a freshly generated key (to print once), or None."""
    await store.ensure_workspace(DEFAULT_WORKSPACE, "default")
    if static_key:
        await store.add_api_key(ids.key_id(), DEFAULT_WORKSPACE, hash_key(static_key), static_key[:12], "static")
        return None
    if await store.count_keys() > 0:
        return None
    key = new_key()
    await store.add_api_key(ids.key_id(), DEFAULT_WORKSPACE, hash_key(key), key[:12], "generated")
    return key


async def create_key(store: Store, workspace: str, name: str | None = None) -> str:
    """A new key for `workspace` (created if new, e.g. `ws_team_a`); returns the plaintext key."""
    workspace_id = workspace if workspace.startswith("ws_") else f"ws_{workspace}"
    await store.ensure_workspace(workspace_id, workspace)
    key = new_key()
    await store.add_api_key(ids.key_id(), workspace_id, hash_key(key), key[:12], name)
    return key
