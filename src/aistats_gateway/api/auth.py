"""Bearer-key authentication: a key maps to exactly one workspace.

Keys are stored as SHA-256 hashes; lookups are cached briefly in memory so polling clients do not
cost a database read per request. A missing or unknown key answers 401 with the envelope.

Browsers cannot set an Authorization header on a WebSocket handshake, so the lifecycle stream also
takes the key as an offered subprotocol: the client offers `["aistats.v1", "bearer.<key>"]` and the
server selects `aistats.v1` (never the key, which is not echoed back). The Authorization header, when
present, wins; both paths end in the same `workspace_for` check and the same 401.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from fastapi import Request

from aistats_gateway.domain.keys import hash_key
from aistats_gateway.errors import AuthenticationFailed
from aistats_gateway.storage.store import Store

CACHE_SECONDS = 5.0  # a revoked key stops working within this long


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


WS_SUBPROTOCOL = "aistats.v1"  # selected when offered, so browsers see their protocol accepted
WS_BEARER_PREFIX = "bearer."  # an offered "bearer.<key>" subprotocol carries the key


def websocket_credentials(authorization: str | None, offered: Sequence[str]) -> tuple[str | None, str | None]:
    """The key of a WebSocket handshake and the subprotocol to select: (token, `aistats.v1` or None).

    The Authorization header wins when present (unchanged for non-browser clients); otherwise the
    first offered `bearer.<key>` subprotocol gives the key."""
    selected = WS_SUBPROTOCOL if WS_SUBPROTOCOL in offered else None
    token = bearer_token(authorization)
    if token is None and authorization is None:
        for protocol in offered:
            if protocol.startswith(WS_BEARER_PREFIX) and len(protocol) > len(WS_BEARER_PREFIX):
                token = protocol[len(WS_BEARER_PREFIX):]
                break
    return token, selected


class Authenticator:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, tuple[str, float]] = {}

    async def workspace_for(self, token: str | None) -> str:
        if token is None:
            raise AuthenticationFailed(
                "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key")
        digest = hash_key(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        workspace = await self.store.workspace_for_key(digest)
        if workspace is None:
            raise AuthenticationFailed("Invalid API key.", code="invalid_api_key")
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (workspace, now + CACHE_SECONDS)
        return workspace

    async def __call__(self, request: Request) -> str:
        return await self.workspace_for(bearer_token(request.headers.get("authorization")))
