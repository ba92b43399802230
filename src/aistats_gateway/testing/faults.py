"""Scripted faults, shared by the fake upstreams (testing/upstream.py, testing/anthropic_upstream.py).

Owns what the fakes do alike: the per-key attempt ledger behind `"x_fault": {"key", "plan"}` (the n-th attempt
with a key plays `plan[n-1]`, then "ok"), the `--rpm` rolling window, and the faults that break the connection
or the answer's bytes rather than answering an error ("hang", "reset", "badjson", "truncated"). Each fake keeps
its own answers and error bodies (OpenAI's and Anthropic's differ).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from typing import Any

from aiohttp import web


class RpmWindow:
    """`--rpm N`: at most N/60 requests (at least one) in any rolling second; 0 lets everything through."""

    def __init__(self, rpm: int) -> None:
        self.rpm = rpm
        self._window: deque[float] = deque()

    def throttled(self) -> bool:
        """Whether a request now is one too many (a request let through counts against the window)."""
        if self.rpm <= 0:
            return False
        now = time.monotonic()
        while self._window and now - self._window[0] > 1.0:
            self._window.popleft()
        if len(self._window) >= max(1, self.rpm // 60):
            return True
        self._window.append(now)
        return False


def count_attempt(ledger: dict[str, int], fault: dict[str, Any], raw: bytes) -> tuple[str, int]:
    """(key, attempt number) of a request: its fault key, or a hash of its raw body when it names none."""
    key = str(fault.get("key") or hashlib.sha256(raw).hexdigest()[:16])
    ledger[key] += 1
    return key, ledger[key]


def planned(fault: dict[str, Any], attempt: int) -> Any:
    """What the fault plan scripts for this attempt: a status (int), or an action name; "ok" past its end."""
    plan = fault.get("plan") or []
    return plan[attempt - 1] if attempt <= len(plan) else "ok"


async def connection_fault(request: web.Request, action: Any) -> web.StreamResponse | None:
    """Play a fault that is not an error answer; None when `action` is not one of them."""
    if action == "hang":
        await asyncio.sleep(3600)
        raise web.HTTPInternalServerError()
    if action == "reset":  # drop the connection before answering
        if request.transport is not None:
            request.transport.abort()
        raise web.HTTPInternalServerError()
    if action == "badjson":  # 200 with a body that is not JSON
        return web.Response(body=b"{this is not json", content_type="application/json")
    if action == "truncated":  # 200 whose body stops short of its content-length
        resp = web.StreamResponse(status=200, headers={"content-type": "application/json", "content-length": "1000"})
        await resp.prepare(request)
        await resp.write(b'{"id": "cut')
        if request.transport is not None:
            request.transport.abort()
        return resp
    return None
