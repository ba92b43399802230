"""Lifecycle streams, waiting, and live results — sync and async.

`stream()` yields the WebSocket's events (`job.snapshot`, `job.updated`, ...) with `data` as a Batch,
sends a text `ping` when idle, and reconnects with backoff when the connection drops before the
job is terminal (the new connection starts with a fresh snapshot). `follow()` is what a live view
needs: every batch snapshot as it changes, from the stream while it works and by polling the moment it
drops, each `Update` saying which ("live", "polling", "reconnecting") so a view never freezes silently
while the gateway restarts. `wait()` returns the terminal batch (the last of `follow()`). `results()`
iterates the parsed result lines of `GET /batches/{id}/results`, resuming after the last custom_id seen
if the connection drops.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from aistats import _requests as rq
from aistats._errors import APIConnectionError, APIError, from_response
from aistats._types import APIObject, Batch

if TYPE_CHECKING:
    from websockets.exceptions import InvalidStatus

    from aistats._client import AIStats, AsyncAIStats

PING_EVERY = 20.0
MAX_RECONNECTS = 5
FOLLOW_OPEN_TIMEOUT = 5.0  # a live view polls instead of waiting long for a handshake


def _event(raw: str | bytes) -> APIObject:
    frame = APIObject(APIObject.wrap(json.loads(raw)))
    if isinstance(frame.get("data"), dict):
        frame["data"] = Batch(frame["data"])
    return frame


def _backoff(failures: int) -> float:
    """Seconds before reconnect attempt `failures` (1-based): 0.5, 1, 2, 4, 8, 8, ..."""
    return float(min(8.0, 0.5 * 2.0 ** (failures - 1)))


def _terminal(event: APIObject) -> bool:
    data = event.get("data")
    return isinstance(data, dict) and data.get("status") in rq.TERMINAL


def _ends_stream(event: APIObject) -> bool:
    """Whether `stream()` stops after this event: the batch was deleted or is terminal."""
    return event.get("type") == "job.deleted" or _terminal(event)


def _ws_target(client: AIStats | AsyncAIStats, batch_id: str, interval_ms: int | None) -> tuple[str, dict[str, str]]:
    """(URL, headers) of a batch's lifecycle WebSocket, which closes itself once the batch is terminal."""
    url = client.get_async_job_websocket_url("batch", batch_id, interval_ms=interval_ms, close_on_terminal=True)
    return url, {"Authorization": f"Bearer {client.api_key}"}


def _refused(exc: InvalidStatus) -> APIError:
    """The API error a refused WebSocket handshake carries (401, 404 ...)."""
    return from_response(exc.response.status_code, json.loads(exc.response.body or b"{}"))


def _reconnect_delay(failures: int, what: str, exc: BaseException) -> float:
    """Seconds to wait before reconnecting a stream that dropped `failures` times in a row; APIConnectionError
    once it has dropped more than MAX_RECONNECTS times."""
    if failures > MAX_RECONNECTS:
        raise APIConnectionError(f"{what} kept dropping: {exc}") from exc
    return _backoff(failures)


# What a dropped results stream raises (it is then resumed after the last custom_id seen).
_RESULTS_DROPS = (httpx.TransportError, httpx.RemoteProtocolError)


class _ResultsCursor:
    """Where a dropped results stream (`results()`/`aresults()`) resumes: after the last custom_id yielded, or,
    for merged results (they take no cursor and restart from the top), by skipping the lines already yielded."""

    def __init__(self, client: AIStats | AsyncAIStats, batch_id: str, follow: bool, merged: bool) -> None:
        self.url = f"{client.base_url}/batches/{batch_id}/results"
        self.headers = client._headers
        self.follow, self.merged = follow, merged
        self.after: str | None = None
        self.sent = 0  # lines yielded so far
        self.seen = 0  # lines read on the current connection

    def reconnected(self) -> None:
        self.seen = 0

    def request(self) -> dict[str, Any]:
        """The arguments of the streamed GET (no read timeout: a followed stream idles between lines)."""
        return {"method": "GET", "url": self.url, "params": rq.results_params(self.follow, self.after, self.merged),
                "headers": self.headers, "timeout": httpx.Timeout(30.0, read=None)}

    def take(self, line: str) -> APIObject | None:
        """The item a line holds, or None for a blank line or one yielded before the reconnect."""
        if not line.strip():
            return None
        self.seen += 1
        if self.merged and self.seen <= self.sent:
            return None
        item: APIObject = APIObject.wrap(json.loads(line))
        self.after = item.get("custom_id", self.after)
        self.sent += 1
        return item


def stream(client: AIStats, batch_id: str, interval_ms: int | None = None) -> Iterator[APIObject]:
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    url, headers = _ws_target(client, batch_id, interval_ms)
    failures = 0
    while True:
        try:
            with connect(url, additional_headers=headers, open_timeout=15) as ws:
                failures = 0
                while True:
                    try:
                        raw = ws.recv(timeout=PING_EVERY)
                    except TimeoutError:
                        ws.send("ping")
                        continue
                    event = _event(raw)
                    if event.get("type") == "pong":
                        continue
                    yield event
                    if _ends_stream(event):
                        return
        except InvalidStatus as exc:
            raise _refused(exc) from exc
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            failures += 1
            time.sleep(_reconnect_delay(failures, f"lifecycle stream for {batch_id}", exc))


@dataclass(frozen=True)
class Update:
    """One step of `follow()`: the newest batch seen (None before the first) and how it is watched:
    "live" from the stream, "polling" while the stream is unavailable but the API answers,
    "reconnecting" while the gateway cannot be reached (`batch` is then the last one seen). `event` is
    the stream event's type (`job.snapshot`, `job.updated`, ...) when live."""

    batch: Batch | None
    state: str
    event: str | None = None


def stream_retry_delay(failures: int) -> float:
    """Seconds of polling before re-opening a stream that failed `failures` times in a row while the API
    answered: at once first, then backing off to 15 s (a proxy without WebSockets is not hammered)."""
    return 0.0 if failures <= 1 else float(min(15.0, 2.0 ** (failures - 2)))


def _stream_drops() -> tuple[type[BaseException], ...]:
    from websockets.exceptions import ConnectionClosed, InvalidHandshake

    return ConnectionClosed, InvalidHandshake, OSError, TimeoutError


def _one_stream(client: AIStats, batch_id: str, interval_ms: int | None) -> Iterator[APIObject]:
    """Events of one WebSocket connection; returns when it closes, raises when it cannot open."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url, headers = _ws_target(client, batch_id, interval_ms)
    try:
        with connect(url, additional_headers=headers, open_timeout=FOLLOW_OPEN_TIMEOUT) as ws:
            while True:
                try:
                    raw = ws.recv(timeout=PING_EVERY)
                except TimeoutError:
                    ws.send("ping")
                    continue
                event = _event(raw)
                if event.get("type") != "pong":
                    yield event
    except InvalidStatus as exc:
        if exc.response.status_code < 500:  # refused (401, 404 ...): polling would be refused the same way
            raise _refused(exc) from exc
        raise


def follow(client: AIStats, batch_id: str, interval_ms: int | None = 1000, poll_interval: float = 1.0,
           give_up_after: float | None = 300.0) -> Iterator[Update]:
    """Every batch snapshot until the batch is terminal (or deleted). A dropped stream is followed by a poll
    at once and one every `poll_interval` seconds, the stream being re-opened as soon as the gateway answers
    again. Raises APIConnectionError once the gateway has been unreachable for `give_up_after` seconds."""
    last: Batch | None = None
    failures = 0  # stream failures in a row
    next_stream = 0.0
    down_since: float | None = None
    while True:
        if time.monotonic() >= next_stream:
            try:
                for event in _one_stream(client, batch_id, interval_ms):
                    if isinstance(event.get("data"), Batch):
                        last, failures, down_since = event["data"], 0, None
                        yield Update(last, "live", str(event.get("type")))
                    if _ends_stream(event):
                        return
            except _stream_drops():
                pass
            failures += 1
            next_stream = time.monotonic() + stream_retry_delay(failures)
        try:
            batch = client.get_batch(batch_id)
        except APIError as exc:
            if not isinstance(exc, APIConnectionError) and (exc.status_code or 0) < 500:
                raise
            now = time.monotonic()
            down_since = down_since or now
            if give_up_after is not None and now - down_since > give_up_after:
                raise APIConnectionError(f"the gateway has been unreachable for {give_up_after:.0f}s: {exc}",
                                         status_code=exc.status_code) from exc
            yield Update(last, "reconnecting")
        else:
            if down_since is not None:  # the gateway is back: its stream failed because it was away
                down_since, failures, next_stream = None, 0, 0.0
            last = Batch(batch)
            yield Update(last, "polling")
            if last.status in rq.TERMINAL:
                return
        time.sleep(poll_interval)


def wait(client: AIStats, batch_id: str, timeout: float | None, poll_interval: float) -> Batch:
    deadline = None if timeout is None else time.monotonic() + timeout
    last: Batch | None = None
    for update in follow(client, batch_id, interval_ms=1000, poll_interval=poll_interval):
        last = update.batch or last
        if last is not None and last.status in rq.TERMINAL:
            return last
        if deadline is not None and time.monotonic() > deadline:
            state = last.status if last is not None else "unknown"
            raise TimeoutError(f"batch {batch_id} is still {state} after {timeout}s")
    if last is None:  # deleted before anything was seen
        return Batch(client.get_batch(batch_id))
    return last


def results(client: AIStats, batch_id: str, follow: bool, merged: bool = False) -> Iterator[APIObject]:
    cursor = _ResultsCursor(client, batch_id, follow, merged)
    failures = 0
    while True:
        cursor.reconnected()
        try:
            with client._http.stream(**cursor.request()) as response:
                if response.status_code >= 400:
                    response.read()
                    raise from_response(response.status_code, response.json())
                for line in response.iter_lines():
                    if (item := cursor.take(line)) is not None:
                        yield item
                return
        except _RESULTS_DROPS as exc:
            failures += 1
            time.sleep(_reconnect_delay(failures, f"results stream for {batch_id}", exc))


async def astream(client: AsyncAIStats, batch_id: str, interval_ms: int | None = None) -> AsyncIterator[APIObject]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    url, headers = _ws_target(client, batch_id, interval_ms)
    failures = 0
    while True:
        try:
            async with connect(url, additional_headers=headers, open_timeout=15) as ws:
                failures = 0
                while True:
                    try:
                        raw = await asyncio.wait_for(ws.recv(), PING_EVERY)
                    except TimeoutError:
                        await ws.send("ping")
                        continue
                    event = _event(raw)
                    if event.get("type") == "pong":
                        continue
                    yield event
                    if _ends_stream(event):
                        return
        except InvalidStatus as exc:
            raise _refused(exc) from exc
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            failures += 1
            await asyncio.sleep(_reconnect_delay(failures, f"lifecycle stream for {batch_id}", exc))


async def await_batch(client: AsyncAIStats, batch_id: str, timeout: float | None, poll_interval: float) -> Batch:
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        async for event in astream(client, batch_id, interval_ms=1000):
            if _terminal(event):
                return Batch(event["data"])
            if deadline is not None and time.monotonic() > deadline:
                break
    except APIConnectionError:
        pass
    while True:
        batch = await client.get_batch(batch_id)
        if batch.status in rq.TERMINAL:
            return Batch(batch)
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch_id} is still {batch.status} after {timeout}s")
        await asyncio.sleep(poll_interval)


async def aresults(client: AsyncAIStats, batch_id: str, follow: bool, merged: bool = False) -> AsyncIterator[APIObject]:
    cursor = _ResultsCursor(client, batch_id, follow, merged)
    failures = 0
    while True:
        cursor.reconnected()
        try:
            async with client._http.stream(**cursor.request()) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise from_response(response.status_code, response.json())
                async for line in response.aiter_lines():
                    if (item := cursor.take(line)) is not None:
                        yield item
                return
        except _RESULTS_DROPS as exc:
            failures += 1
            await asyncio.sleep(_reconnect_delay(failures, f"results stream for {batch_id}", exc))
