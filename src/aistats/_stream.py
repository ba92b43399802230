"""Lifecycle streams, waiting, and live results — sync and async.

`stream()` yields the WebSocket's events (`job.snapshot`, `job.updated`, ...) with `data` as a Batch,
sends a text `ping` when idle, and reconnects with backoff when the connection drops before the
job is terminal (the new connection starts with a fresh snapshot). `wait()` returns the terminal
batch: the stream first, polling as the fallback. `results()` iterates the parsed result lines of
`GET /batches/{id}/results`, resuming after the last custom_id seen if the connection drops.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import httpx

from aistats import _requests as rq
from aistats._errors import APIConnectionError, from_response
from aistats._types import APIObject, Batch

if TYPE_CHECKING:
    from aistats._client import AIStats, AsyncAIStats

PING_EVERY = 20.0
MAX_RECONNECTS = 5


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


def stream(client: AIStats, batch_id: str, interval_ms: int | None = None) -> Iterator[APIObject]:
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    url = client.get_async_job_websocket_url("batch", batch_id, interval_ms=interval_ms, close_on_terminal=True)
    failures = 0
    while True:
        try:
            with connect(url, additional_headers={"Authorization": f"Bearer {client.api_key}"},
                         open_timeout=15) as ws:
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
                    if event.get("type") == "job.deleted" or _terminal(event):
                        return
        except InvalidStatus as exc:
            body = exc.response.body or b"{}"
            raise from_response(exc.response.status_code, json.loads(body or b"{}")) from exc
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            failures += 1
            if failures > MAX_RECONNECTS:
                raise APIConnectionError(f"lifecycle stream for {batch_id} kept dropping: {exc}") from exc
            time.sleep(_backoff(failures))


def wait(client: AIStats, batch_id: str, timeout: float | None, poll_interval: float) -> Batch:
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        for event in stream(client, batch_id, interval_ms=1000):
            if _terminal(event):
                return Batch(event["data"])
            if deadline is not None and time.monotonic() > deadline:
                break
    except APIConnectionError:
        pass  # fall back to polling
    while True:
        batch = client.get_batch(batch_id)
        if batch.status in rq.TERMINAL:
            return Batch(batch)
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch_id} is still {batch.status} after {timeout}s")
        time.sleep(poll_interval)


def results(client: AIStats, batch_id: str, follow: bool) -> Iterator[APIObject]:
    after: str | None = None
    failures = 0
    while True:
        try:
            with client._http.stream("GET", f"{client.base_url}/batches/{batch_id}/results",
                                     params=rq.results_params(follow, after), headers=client._headers,
                                     timeout=httpx.Timeout(30.0, read=None)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise from_response(response.status_code, response.json())
                for line in response.iter_lines():
                    if line.strip():
                        item = APIObject.wrap(json.loads(line))
                        after = item.get("custom_id", after)
                        yield item
                return
        except (httpx.TransportError, httpx.RemoteProtocolError) as exc:
            failures += 1
            if failures > MAX_RECONNECTS:
                raise APIConnectionError(f"results stream for {batch_id} kept dropping: {exc}") from exc
            time.sleep(_backoff(failures))


async def astream(client: AsyncAIStats, batch_id: str, interval_ms: int | None = None) -> AsyncIterator[APIObject]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    url = client.get_async_job_websocket_url("batch", batch_id, interval_ms=interval_ms, close_on_terminal=True)
    failures = 0
    while True:
        try:
            async with connect(url, additional_headers={"Authorization": f"Bearer {client.api_key}"},
                               open_timeout=15) as ws:
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
                    if event.get("type") == "job.deleted" or _terminal(event):
                        return
        except InvalidStatus as exc:
            raise from_response(exc.response.status_code, json.loads(exc.response.body or b"{}")) from exc
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            failures += 1
            if failures > MAX_RECONNECTS:
                raise APIConnectionError(f"lifecycle stream for {batch_id} kept dropping: {exc}") from exc
            await asyncio.sleep(_backoff(failures))


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


async def aresults(client: AsyncAIStats, batch_id: str, follow: bool) -> AsyncIterator[APIObject]:
    after: str | None = None
    failures = 0
    while True:
        try:
            async with client._http.stream("GET", f"{client.base_url}/batches/{batch_id}/results",
                                           params=rq.results_params(follow, after), headers=client._headers,
                                           timeout=httpx.Timeout(30.0, read=None)) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise from_response(response.status_code, response.json())
                async for line in response.aiter_lines():
                    if line.strip():
                        item = APIObject.wrap(json.loads(line))
                        after = item.get("custom_id", after)
                        yield item
                return
        except (httpx.TransportError, httpx.RemoteProtocolError) as exc:
            failures += 1
            if failures > MAX_RECONNECTS:
                raise APIConnectionError(f"results stream for {batch_id} kept dropping: {exc}") from exc
            await asyncio.sleep(_backoff(failures))
