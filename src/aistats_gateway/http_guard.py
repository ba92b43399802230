"""The HTTP/1.1 connection guard: a request's head must be small and arrive in time.

uvicorn's httptools protocol (what `http="auto"` picks) has no limit on the size of a request's head
and no timeout for reading it: one 50 MiB header was accepted, 8 connections sending 40 MB headers
took the process from 116 to 506 MiB (httptools accumulates a header value whole before handing it
over, so the limit must count the raw bytes fed to the parser, not the parsed headers), and 800
connections dribbling a byte at a time were held for as long as they liked. `guarded_protocol(limits)`
returns a subclass that

* answers 431 and closes when a request line plus headers exceed `max_header_bytes`;
* answers 408 and closes when a connection has not delivered a complete head within
  `header_timeout_seconds` of opening or of its request's first byte (a total, not an idle timeout,
  so dribbling does not extend it). Idle keep-alive connections are uvicorn's own `timeout_keep_alive`.

A body that stops arriving is the ASGI layer's business (api/limits.py): only there is it known whether
the application is waiting for bytes or the parser is paused because the application is busy.
The answers are written here, before any application code runs, in the API's error envelope.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from aistats_gateway import ids
from aistats_gateway.config import LimitsConfig
from aistats_gateway.errors import GatewayError, HeaderTooLarge, RequestTimeout

log = logging.getLogger(__name__)
_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large"}


def error_bytes(err: GatewayError) -> bytes:
    """A complete `Connection: close` HTTP/1.1 response carrying `err` in the error envelope."""
    body = orjson.dumps(err.body(ids.gateway_request_id()))
    head = (f"HTTP/1.1 {err.status_code} {_REASONS.get(err.status_code, '')}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n")
    return head.encode("ascii") + body


def header_room(limit: int, used: int, incoming: int) -> int | None:
    """How many of `incoming` bytes may go to the parser while a head is incomplete: None = all of them."""
    return None if used + incoming <= limit else max(0, limit - used)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head size limit and a head read deadline (see the module doc)."""

    limits: LimitsConfig = LimitsConfig()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_pending = True  # between a request's end (or the connection's start) and its headers' end
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never sends a byte is dropped too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_pending:
            room = header_room(self.limits.max_header_bytes, self._head_bytes, len(data))
            if room is not None:
                # Feed only what fits: if the head completes inside it, the rest is body (or the next request).
                if room:
                    self._head_bytes += room
                    super().data_received(data[:room])
                if self._head_pending and not self.transport.is_closing():
                    self._refuse(HeaderTooLarge(
                        f"The request line and headers are larger than the {self.limits.max_header_bytes:,}-byte "
                        "limit (limits.max_header_bytes).", code="request_header_too_large"))
                    return
                data = data[room:]
                if not data or self.transport.is_closing() or self.transport.get_protocol() is not self:
                    return  # nothing left, refused, or handed to the WebSocket protocol
            else:
                self._head_bytes += len(data)
        super().data_received(data)

    # Parser callbacks (httptools calls them from inside `feed_data`).
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # a keep-alive connection's next request gets the same deadline
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._head_pending = False
        self._head_bytes = 0
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._head_pending = True
        super().on_message_complete()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_pending = True
        self._head_timer = self.loop.call_later(self.limits.header_timeout_seconds, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # An earlier request on this connection is still being answered: writing an answer now would
            # interleave with it, so the connection just ends when that answer does.
            self.cycle.keep_alive = False
            return
        self._refuse(RequestTimeout(
            f"The request line and headers did not arrive within {self.limits.header_timeout_seconds:g} s "
            "(limits.header_timeout_seconds).", code="request_header_timeout"))

    def _refuse(self, err: GatewayError) -> None:
        log.info("closing a connection from %s: %s", self.client, err.message)
        self._cancel_head_timer()
        self._head_pending = False
        self.transport.write(error_bytes(err))
        self.transport.close()


def guarded_protocol(limits: LimitsConfig) -> type[asyncio.Protocol]:
    """The protocol class to hand to uvicorn (`http=`), bound to these limits."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})
