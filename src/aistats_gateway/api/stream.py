"""The lifecycle stream: `GET /v1/async/{kind}/{id}/ws` (WebSocket).

Checks, in API.md's order: a plain GET → 426; bad key → 401; unknown kind → 400; missing or foreign
job → 404 `async_job_not_found_or_not_owned` (refusals before the upgrade are HTTP answers with the
error envelope). Then `job.snapshot` at once, and `job.updated` whenever the batch changed — woken by
the store's commit hook through the in-process bus, never by polling — coalesced to at most one per
`interval_ms` (default 2500, clamped 1000..10000). Text `ping` → `pong`; text `refresh` → an immediate
fresh `job.updated`. After a terminal update the socket closes with 1000 when `close_on_terminal`.
The key is re-checked every `AUTH_RECHECK_SECONDS` (through the authenticator's short cache, so sockets
sharing a key cost one database read per cache period): keys are revoked by `aistats keys revoke`,
another process, possibly beside several API processes, so no in-process event would reach them all;
a revoked key's socket is closed with 4401 "API key revoked" within about 7 seconds.
The key comes from `Authorization: Bearer` or, for browsers, an offered `bearer.<key>` subprotocol
(see api/auth.py); `aistats.v1` is selected when offered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

import orjson
from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from sqlalchemy.exc import SQLAlchemyError

from aistats_gateway.api.auth import Authenticator, websocket_credentials
from aistats_gateway.api.deps import gateway
from aistats_gateway.api.errors import request_id_of
from aistats_gateway.api.responses import JSONResponse
from aistats_gateway.api.views import batch_view
from aistats_gateway.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    NotFound,
    UpgradeRequired,
    excerpt,
)
from aistats_gateway.storage.records import BatchRecord
from aistats_gateway.tasks import cancel_and_wait

router = APIRouter(tags=["stream"])
KINDS = ("batch",)
DEFAULT_INTERVAL_MS = 2500
AUTH_RECHECK_SECONDS = 2.0  # plus auth.CACHE_SECONDS: how long a revoked key's socket may stay open
CLOSE_KEY_REVOKED = 4401  # 4000-4999: application codes; 4401 mirrors HTTP 401
log = logging.getLogger(__name__)


def wait_seconds(now: float, update_due: float | None, auth_due: float) -> float:
    """How long the stream may sleep before it has work: the next coalesced update (None: nothing is
    pending, a commit will wake it) or the next key check, whichever comes first."""
    due = auth_due if update_due is None else min(update_due, auth_due)
    return max(0.0, due - now)


def clamp_interval(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_INTERVAL_MS
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"interval_ms must be an integer number of milliseconds, got '{excerpt(raw)}'.",
                             code="invalid_interval_ms", param="interval_ms") from None
    return max(1000, min(10000, value))


def parse_bool(raw: str | None, name: str, default: bool) -> bool:
    if raw is None or raw == "":
        return default
    lowered = raw.lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise InvalidRequest(f"{name} must be true or false, got '{excerpt(raw)}'.", code=f"invalid_{name}", param=name)


@router.get("/v1/async/{kind}/{job_id}/ws")
async def upgrade_required(request: Request, kind: str, job_id: str) -> JSONResponse:
    err = UpgradeRequired("This endpoint is a WebSocket: connect with an Upgrade: websocket handshake "
                          "(e.g. ws://host/v1/async/batch/<id>/ws).")
    return JSONResponse(err.body(request_id_of(request)), status_code=err.status_code)


async def _admit(websocket: WebSocket, kind: str, job_id: str) -> tuple[str, BatchRecord]:
    """The handshake's checks, in the order a client can fix them: key, job kind, options, the job itself.
    Raises the GatewayError that the caller turns into the refusal."""
    gw = gateway(websocket)
    token, _ = websocket_credentials(websocket.headers.get("authorization"), websocket.scope.get("subprotocols") or [])
    workspace = await gw.auth.workspace_for(token)
    if kind not in KINDS:
        raise InvalidRequest(f"Unknown job kind '{excerpt(kind)}'; supported: {', '.join(KINDS)}.",
                             code="unknown_job_kind", param="kind")
    clamp_interval(websocket.query_params.get("interval_ms"))
    parse_bool(websocket.query_params.get("close_on_terminal"), "close_on_terminal", True)
    record = await gw.store.batches.get(job_id, workspace) if "\x00" not in job_id else None  # PG: no NUL
    if record is None:
        raise NotFound(f"No {kind} job '{excerpt(job_id)}' in this workspace.",
                       code="async_job_not_found_or_not_owned", param="id")
    return workspace, record


@router.websocket("/v1/async/{kind}/{job_id}/ws")
async def lifecycle_stream(websocket: WebSocket, kind: str, job_id: str) -> None:
    gw = gateway(websocket)
    token, subprotocol = websocket_credentials(websocket.headers.get("authorization"),
                                               websocket.scope.get("subprotocols") or [])
    try:
        workspace, record = await _admit(websocket, kind, job_id)
    except GatewayError as exc:
        body = exc.body(request_id_of(websocket))
        await websocket.send_denial_response(JSONResponse(body, status_code=exc.status_code))
        return
    interval = clamp_interval(websocket.query_params.get("interval_ms")) / 1000.0
    close_on_terminal = parse_bool(websocket.query_params.get("close_on_terminal"), "close_on_terminal", True)
    base = (gw.settings.public_url or str(websocket.base_url).replace("ws://", "http://", 1).replace(
        "wss://", "https://", 1)).rstrip("/")
    sub = gw.bus.subscribe(job_id)
    inbox: deque[str] = deque()
    closed = asyncio.Event()

    async def receive() -> None:
        try:
            while True:
                inbox.append((await websocket.receive_text()).strip())
                sub.changed.set()
        except (WebSocketDisconnect, RuntimeError):
            closed.set()
            sub.changed.set()

    await websocket.accept(subprotocol=subprotocol)
    reader = asyncio.create_task(receive())
    try:
        await _send(websocket, "job.snapshot", await batch_view(gw, record, base))
        if record.status.terminal and close_on_terminal:
            await websocket.close(1000)
            return
        last_sent = time.monotonic()
        auth_due = last_sent + AUTH_RECHECK_SECONDS
        while not closed.is_set():
            await _wait_for_work(sub, last_sent + interval, auth_due)
            if time.monotonic() >= auth_due:
                if not await key_still_valid(gw.auth, token):
                    await websocket.close(CLOSE_KEY_REVOKED, "API key revoked")
                    return
                auth_due = time.monotonic() + AUTH_RECHECK_SECONDS
            if (answered := await _answer_messages(websocket, inbox, sub, workspace, kind, job_id)) is None:
                return  # the job is gone: the socket was closed
            last_sent = 0.0 if answered else last_sent  # a refresh is answered at once
            if sub.latest is not None and time.monotonic() >= last_sent + interval:
                latest = sub.take()
                assert latest is not None
                await _send(websocket, "job.updated", await batch_view(gw, latest, base))
                last_sent = time.monotonic()
                if latest.status.terminal and close_on_terminal:
                    await websocket.close(1000)
                    return
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        sub.close()
        await cancel_and_wait([reader])


async def _send(websocket: WebSocket, frame_type: str, data: Any) -> None:
    await websocket.send_text(orjson.dumps({"type": frame_type, "data": data}).decode())


async def _wait_for_work(sub: Any, update_due: float, auth_due: float) -> None:
    """Sleep until a commit changes the batch (idle), the next interval (an update is waiting: later commits
    just replace it), a client message, or the key's next check — whichever comes first."""
    sub.armed = sub.latest is None
    timeout = wait_seconds(time.monotonic(), None if sub.armed else update_due, auth_due)
    if timeout > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sub.changed.wait(), timeout)
    sub.changed.clear()


async def _answer_messages(websocket: WebSocket, inbox: deque[str], sub: Any, workspace: str, kind: str,
                           job_id: str) -> bool | None:
    """Answer what the client sent: `ping` → pong; `refresh` → the batch re-read for the next frame. True when a
    refresh asks for a frame now, None when the job is gone (the socket is closed then)."""
    refresh = False
    while inbox:
        message = inbox.popleft()
        if message == "ping":
            await websocket.send_text('{"type":"pong"}')
        elif message == "refresh":
            fresh = await gateway(websocket).store.batches.get(job_id, workspace)
            if fresh is None:
                await _send(websocket, "job.deleted", {"id": job_id, "object": kind})
                await websocket.close(1000)
                return None
            sub.latest = fresh
            refresh = True
    return refresh


async def key_still_valid(auth: Authenticator, token: str | None) -> bool:
    """False once the key is refused; storage trouble is not a revocation (the next check tries again)."""
    try:
        await auth.workspace_for(token)
    except AuthenticationFailed:
        return False
    except (SQLAlchemyError, OSError) as exc:
        log.warning("could not re-check a WebSocket's key (will retry): %s", exc)
    return True
