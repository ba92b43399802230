"""What one request may hold on to: a body that stops arriving, and uploads streaming at once.

The head of a request (size, read deadline) is guarded before the application by http_guard.py.
Here, at the ASGI layer, only the time the application spends *waiting for body bytes* is counted: a
parser paused because the application is busy writing to disk is not the client's fault. A stalled
upload used to keep its descriptor and its `.tmp` blob for as long as the client kept the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aistats_gateway.errors import RequestTimeout, ServiceUnavailable

UPLOAD_RETRY_AFTER_SECONDS = 5


class BodyTimeoutMiddleware:
    """Pure ASGI: waiting longer than `seconds` for the next piece of a request body raises RequestTimeout
    (408) inside the route, which aborts what it was writing; the answer closes the connection, since
    the unread rest of the body cannot be told from a next request. Once the body is complete, `receive`
    (which then only reports a disconnect, e.g. during a long download) is not timed."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = {"body_done": False, "timed_out": False}

        async def timed_receive() -> Message:
            if state["body_done"]:
                return await receive()
            try:
                async with asyncio.timeout(self.seconds):
                    message = await receive()
            except TimeoutError:
                state["timed_out"] = True
                raise RequestTimeout(
                    f"No bytes of the request body arrived for {self.seconds:g} s (limits.body_timeout_seconds); "
                    "the request was abandoned and nothing was stored. Send it again.") from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["body_done"] = True
            return message

        async def send_closing(message: Message) -> None:
            if state["timed_out"] and message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        await self.app(scope, timed_receive, send_closing)


class UploadSlots:
    """At most `limit` uploads stream into this process at once; one more is refused 503 with Retry-After
    (each holds a descriptor, a temporary blob and buffers while it lasts)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        if self.active >= self.limit:
            raise ServiceUnavailable(
                f"{self.active} uploads are already streaming into this gateway process, its limit "
                f"(limits.max_concurrent_uploads = {self.limit}); retry in {UPLOAD_RETRY_AFTER_SECONDS} s.",
                code="too_many_uploads",
                headers={"Retry-After": str(UPLOAD_RETRY_AFTER_SECONDS), "Connection": "close"})
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
