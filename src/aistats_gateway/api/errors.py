"""Every error path renders the API.md envelope; nothing user-caused answers a bare 500.

Also stamps each response with `x-request-id` (a `G-` id), the same id the error envelope carries.
"""

from __future__ import annotations

import errno
import logging
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aistats_gateway import ids
from aistats_gateway.api.responses import JSONResponse
from aistats_gateway.errors import (
    AuthenticationFailed,
    GatewayError,
    InsufficientStorage,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    StorageUnavailable,
    excerpt,
)
from aistats_gateway.logs import request_id_var

log = logging.getLogger(__name__)


def request_id_of(request: HTTPConnection) -> str:
    rid = request.scope.get("aistats.request_id")
    if not isinstance(rid, str):
        rid = ids.gateway_request_id()
        request.scope["aistats.request_id"] = rid
    return rid


def error_response(exc: GatewayError, request: HTTPConnection) -> JSONResponse:
    return JSONResponse(exc.body(request_id_of(request)), status_code=exc.status_code, headers=exc.headers or None)


# A full disk (or quota) while writing a blob is the operator's to fix, not a bug: 507, no traceback.
STORAGE_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class RequestIdMiddleware:
    """Pure ASGI (no per-request task overhead): assigns the id and sets the response header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ids.gateway_request_id()
        scope["aistats.request_id"] = rid
        token = request_id_var.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class NulGuardMiddleware:
    """Refuses a NUL character (`%00`) in the path or a query parameter with a 400 naming it.

    No id, cursor, filter or name of the gateway contains one, and PostgreSQL text cannot hold it: passed
    on to a query, `GET /v1/batches/a%00b` or `?after=%00` failed in the driver (a 500). SQLite took them
    and found nothing; both now answer the same 400. Runs inside RequestIdMiddleware (the id is set)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            where = _nul_in(scope)
            if where is not None:
                param, message = where
                response = error_response(InvalidRequest(message, code="invalid_character", param=param),
                                          Request(scope))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _nul_in(scope: Scope) -> tuple[str | None, str] | None:
    if "\x00" in scope.get("path", ""):
        return None, "The URL path contains a NUL character (%00); no id or route of the gateway has one."
    query = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                shown = name.replace("\x00", "\\u0000")[:64]
                return shown, f"Query parameter '{shown}' contains a NUL character (%00)."
    return None


async def _gateway(request: HTTPConnection, exc: GatewayError) -> JSONResponse:
    return error_response(exc, request)


async def _validation(request: HTTPConnection, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    param = ".".join(loc) or None
    msg = f"Invalid parameter '{param}': {first.get('msg')}" if param else str(first.get("msg"))
    return error_response(InvalidRequest(msg, code="invalid_parameter", param=param), request)


async def _http(request: HTTPConnection, exc: StarletteHTTPException) -> JSONResponse:
    err: GatewayError
    method = request.scope.get("method", "WEBSOCKET")
    path = excerpt(request.url.path, 200)
    if exc.status_code == 404:
        hint = "; routes have no trailing slash" if path.endswith("/") and path != "/" else ""
        err = NotFound(f"No route {method} {path}{hint}.", code="route_not_found")
    elif exc.status_code == 401:
        err = AuthenticationFailed(str(exc.detail))
    elif exc.status_code == 413:
        err = PayloadTooLarge(str(exc.detail))
    elif exc.status_code == 405:
        err = MethodNotAllowed(f"Method {method} is not allowed on {path}.")
    else:
        err = GatewayError(str(exc.detail), code="http_error")
        err.status_code = exc.status_code  # type: ignore[misc]
        if exc.status_code < 500:
            err.error_type = "invalid_request_error"  # type: ignore[misc]
    return error_response(err, request)


async def _storage(request: HTTPConnection, exc: StorageUnavailable) -> JSONResponse:
    log.warning("storage unavailable on %s: %s", request.url.path, exc.detail)
    return error_response(exc, request)


async def _gone(request: HTTPConnection, exc: ClientDisconnect) -> JSONResponse:
    # The client went away mid-body (an upload's partial blob was already removed by its route): nothing
    # to fix on this side and nobody to answer.
    log.info("client disconnected before sending the whole body of %s %s", request.scope.get("method"),
             request.url.path)
    return error_response(InvalidRequest("The client disconnected before sending the whole request body.",
                                         code="client_disconnected"), request)


async def _os_error(request: HTTPConnection, exc: OSError) -> JSONResponse:
    if exc.errno not in STORAGE_FULL_ERRNOS:
        raise exc  # as if unhandled here: the generic 500 (HTTP), or uvicorn's own handling (WebSocket)
    log.warning("storage full on %s: %s", request.url.path, exc)
    return error_response(InsufficientStorage(
        f"The gateway's file storage is full ({exc.strerror}); nothing was stored. Retry once space has been "
        "freed.", code="insufficient_storage"), request)


async def _unexpected(request: HTTPConnection, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.scope.get("method", "WEBSOCKET"), request.url.path)
    return error_response(GatewayError("The gateway hit an internal error; it has been logged.",
                                      code="internal_error"), request)


_HANDLERS: tuple[tuple[type[Exception], Any], ...] = (
    (GatewayError, _gateway),
    (RequestValidationError, _validation),
    (StarletteHTTPException, _http),
    (StorageUnavailable, _storage),
    (ClientDisconnect, _gone),
    (OSError, _os_error),
    (Exception, _unexpected),
)


def install(app: FastAPI) -> None:
    """The handlers serve WebSocket handshakes too (Starlette sends their response as the refusal), so they read
    only what both have: `request.method` raised AttributeError on a WebSocket, turning a 503 into a bare 500."""
    for exc_type, handler in _HANDLERS:
        app.add_exception_handler(exc_type, handler)
