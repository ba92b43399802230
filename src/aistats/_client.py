"""`AIStats` (sync) and `AsyncAIStats`: the documented SDK calls over httpx.

Every call is defined once, in `_Calls`, as "build a Request, hand it to `_send`"; the sync client's
`_send` returns the result and the async client's returns an awaitable of it. Only httpx is needed
(websockets joins for lifecycle streams). The API key travels in the Authorization header only.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, Generic, TypeVar

import httpx

from aistats import _requests as rq
from aistats import _stream
from aistats._errors import APIConnectionError, from_response
from aistats._types import APIObject, Batch, FileObject, Page

DEFAULT_BASE_URL = "http://127.0.0.1:8787/v1"
R = TypeVar("R")
KINDS: dict[str, type[APIObject]] = {"batch": Batch, "file": FileObject, "page": Page, "object": APIObject}


def _settings(api_key: str | None, base_url: str | None) -> tuple[str, str]:
    key = api_key or os.environ.get("AI_STATS_API_KEY") or os.environ.get("AISTATS_API_KEY")
    if not key:
        raise ValueError("an API key is required: pass api_key=... or set AI_STATS_API_KEY")
    url = (base_url or os.environ.get("AISTATS_BASE_URL") or os.environ.get("AI_STATS_BASE_URL")
           or DEFAULT_BASE_URL)
    return key, url.rstrip("/")


def _result(request: rq.Request, response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        raise from_response(response.status_code, body)
    if request.kind == "raw":
        return response.content
    parsed = response.json()
    if request.kind == "page":
        page = Page.wrap(parsed)
        item = Batch if request.path.startswith("/batches") else FileObject
        page["data"] = [item(x) for x in page.get("data", [])]
        return page
    return KINDS[request.kind](APIObject.wrap(parsed))


class _Calls(Generic[R]):
    base_url: str

    def _send(self, request: rq.Request) -> R:
        raise NotImplementedError

    # ---- the documented top-level calls
    def upload_file(self, *, file: rq.FileInput, purpose: str = "batch", filename: str | None = None) -> R:
        return self._send(rq.upload_file(file, purpose, filename))

    def create_batch(self, params: dict[str, Any] | None = None, **kwargs: Any) -> R:
        """`create_batch({...})` as the documented SDK shows, or keyword arguments."""
        return self._send(rq.create_batch(params, kwargs))

    def get_batch(self, batch_id: str) -> R:
        return self._send(rq.Request("GET", f"/batches/{rq.require_id(batch_id, 'batch_id')}", kind="batch"))

    def cancel_batch(self, batch_id: str) -> R:
        return self._send(rq.Request("POST", f"/batches/{rq.require_id(batch_id, 'batch_id')}/cancel", kind="batch"))

    def retry_batch(self, batch_id: str, *, statuses: list[str] | None = None, error_codes: list[str] | None = None,
                    custom_ids: list[str] | None = None, idempotency_key: str | None = None) -> R:
        """A new batch re-running the lines of a terminal batch that did not succeed (narrowed by the filters)."""
        return self._send(rq.retry_batch(batch_id, statuses, error_codes, custom_ids, idempotency_key))

    def list_batches(self, *, after: str | None = None, limit: int | None = None, status: str | None = None,
                     session_id: str | None = None) -> R:
        return self._send(rq.Request("GET", "/batches", params=rq.clean({
            "after": after, "limit": limit, "status": status, "session_id": session_id}), kind="page"))

    def get_file(self, file_id: str) -> R:
        return self._send(rq.Request("GET", f"/files/{rq.require_id(file_id, 'file_id')}", kind="file"))

    def get_file_content(self, file_id: str) -> R:
        return self._send(rq.Request("GET", f"/files/{rq.require_id(file_id, 'file_id')}/content", kind="raw"))

    def list_files(self, *, purpose: str | None = None, after: str | None = None, limit: int | None = None) -> R:
        return self._send(rq.Request("GET", "/files", params=rq.clean({"purpose": purpose, "after": after,
                                                                        "limit": limit}), kind="page"))

    def delete_file(self, file_id: str) -> R:
        return self._send(rq.Request("DELETE", f"/files/{rq.require_id(file_id, 'file_id')}"))

    def get_async_job_websocket_url(self, kind: str, job_id: str, *, interval_ms: int | None = None,
                                    close_on_terminal: bool | None = None) -> str:
        return rq.websocket_url(self.base_url, kind, job_id, interval_ms, close_on_terminal)


class Batches(Generic[R]):
    def __init__(self, client: _Calls[R]) -> None:
        self._c = client

    def create(self, params: dict[str, Any] | None = None, **kwargs: Any) -> R:
        return self._c.create_batch(params, **kwargs)

    def get(self, batch_id: str) -> R:
        return self._c.get_batch(batch_id)

    def cancel(self, batch_id: str) -> R:
        return self._c.cancel_batch(batch_id)

    def retry(self, batch_id: str, *, statuses: list[str] | None = None, error_codes: list[str] | None = None,
              custom_ids: list[str] | None = None, idempotency_key: str | None = None) -> R:
        return self._c.retry_batch(batch_id, statuses=statuses, error_codes=error_codes, custom_ids=custom_ids,
                                   idempotency_key=idempotency_key)

    def list(self, *, after: str | None = None, limit: int | None = None, status: str | None = None,
             session_id: str | None = None) -> R:
        return self._c.list_batches(after=after, limit=limit, status=status, session_id=session_id)

    def websocket_url(self, batch_id: str, *, interval_ms: int | None = None,
                      close_on_terminal: bool | None = None) -> str:
        return self._c.get_async_job_websocket_url("batch", batch_id, interval_ms=interval_ms,
                                                   close_on_terminal=close_on_terminal)

    def stream(self, batch_id: str, *, interval_ms: int | None = None) -> Any:
        """Lifecycle events (sync iterator, or async iterator on AsyncAIStats)."""
        return self._c.stream_batch(batch_id, interval_ms=interval_ms)  # type: ignore[attr-defined]

    def follow(self, batch_id: str, *, interval_ms: int | None = 1000, poll_interval: float = 1.0,
               give_up_after: float | None = 300.0) -> Any:
        """`Update(batch, state)` for every change until terminal: the stream, polling while it is down
        (sync client only)."""
        return self._c.follow_batch(batch_id, interval_ms=interval_ms,  # type: ignore[attr-defined]
                                    poll_interval=poll_interval, give_up_after=give_up_after)

    def wait(self, batch_id: str, *, timeout: float | None = None, poll_interval: float = 2.0) -> Any:
        """The terminal batch (awaitable on AsyncAIStats)."""
        return self._c.wait_batch(batch_id, timeout=timeout, poll_interval=poll_interval)  # type: ignore[attr-defined]

    def results(self, batch_id: str, *, follow: bool = False, merged: bool = False) -> Any:
        """Parsed result lines, also while the batch runs (async iterator on AsyncAIStats); `merged`: one line per
        custom_id of a retry chain's root input, the latest success in the chain else the latest outcome."""
        return self._c.batch_results(batch_id, follow=follow, merged=merged)  # type: ignore[attr-defined]


class Files(Generic[R]):
    def __init__(self, client: _Calls[R]) -> None:
        self._c = client

    def create(self, *, file: rq.FileInput, purpose: str = "batch", filename: str | None = None) -> R:
        return self._c.upload_file(file=file, purpose=purpose, filename=filename)

    def get(self, file_id: str) -> R:
        return self._c.get_file(file_id)

    def list(self, *, purpose: str | None = None, after: str | None = None, limit: int | None = None) -> R:
        return self._c.list_files(purpose=purpose, after=after, limit=limit)

    def content(self, file_id: str) -> R:
        return self._c.get_file_content(file_id)

    def delete(self, file_id: str) -> R:
        return self._c.delete_file(file_id)


class AsyncJobs:
    def __init__(self, client: _Calls[Any]) -> None:
        self._c = client

    def websocket_url(self, kind: str, job_id: str, *, interval_ms: int | None = None,
                      close_on_terminal: bool | None = None) -> str:
        return self._c.get_async_job_websocket_url(kind, job_id, interval_ms=interval_ms,
                                                   close_on_terminal=close_on_terminal)


class AIStats(_Calls[Any]):
    """Synchronous client. `AIStats(api_key=..., base_url="http://127.0.0.1:8787/v1")`."""

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *, timeout: float = 60.0,
                 max_retries: int = 2, http_client: httpx.Client | None = None) -> None:
        self.api_key, self.base_url = _settings(api_key, base_url)
        self.max_retries = max_retries
        self._http = http_client or httpx.Client(timeout=timeout)
        self._headers = {"Authorization": f"Bearer {self.api_key}"}
        self.batches: Batches[Any] = Batches(self)
        self.files: Files[Any] = Files(self)
        self.async_jobs = AsyncJobs(self)

    def _send(self, request: rq.Request) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(request.method, self.base_url + request.path, json=request.json,
                                              params=request.params or None, files=request.files,
                                              data=request.data, headers={**self._headers, **request.headers})
            except httpx.TransportError as exc:
                delay = rq.retry_delay(attempt, None, None, self.max_retries) if rq.idempotent(request) else None
                if delay is None:
                    raise APIConnectionError(f"cannot reach {self.base_url}: {exc}") from exc
                time.sleep(delay)
                continue
            if response.status_code >= 400 and rq.idempotent(request):
                delay = rq.retry_delay(attempt, response.status_code, response.headers.get("retry-after"),
                                       self.max_retries)
                if delay is not None:
                    time.sleep(delay)
                    continue
            return _result(request, response)

    def stream_batch(self, batch_id: str, *, interval_ms: int | None = None) -> Iterator[APIObject]:
        """Lifecycle events of a batch from the WebSocket, until it is terminal (reconnects on drops)."""
        return _stream.stream(self, rq.require_id(batch_id, "batch_id"), interval_ms)

    def follow_batch(self, batch_id: str, *, interval_ms: int | None = 1000, poll_interval: float = 1.0,
                     give_up_after: float | None = 300.0) -> Iterator[_stream.Update]:
        """Every snapshot of a batch until terminal, saying whether it came live, by polling, or that the
        gateway is being reconnected to; never silent while the gateway is away."""
        return _stream.follow(self, rq.require_id(batch_id, "batch_id"), interval_ms, poll_interval, give_up_after)

    def wait_batch(self, batch_id: str, *, timeout: float | None = None, poll_interval: float = 2.0) -> Batch:
        """The terminal batch: from the stream, or by polling if the stream is unavailable."""
        return _stream.wait(self, rq.require_id(batch_id, "batch_id"), timeout, poll_interval)

    def batch_results(self, batch_id: str, *, follow: bool = False, merged: bool = False) -> Iterator[APIObject]:
        """Parsed result lines settled so far (with `follow`, until the batch is terminal; `merged`: a chain's)."""
        return _stream.results(self, rq.require_id(batch_id, "batch_id"), follow, merged)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AIStats:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncAIStats(_Calls[Awaitable[Any]]):
    """Asynchronous client: the same calls, awaited."""

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *, timeout: float = 60.0,
                 max_retries: int = 2, http_client: httpx.AsyncClient | None = None) -> None:
        self.api_key, self.base_url = _settings(api_key, base_url)
        self.max_retries = max_retries
        self._http = http_client or httpx.AsyncClient(timeout=timeout)
        self._headers = {"Authorization": f"Bearer {self.api_key}"}
        self.batches: Batches[Awaitable[Any]] = Batches(self)
        self.files: Files[Awaitable[Any]] = Files(self)
        self.async_jobs = AsyncJobs(self)

    async def _send(self, request: rq.Request) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(request.method, self.base_url + request.path,
                                                    json=request.json, params=request.params or None,
                                                    files=request.files, data=request.data,
                                                    headers={**self._headers, **request.headers})
            except httpx.TransportError as exc:
                delay = rq.retry_delay(attempt, None, None, self.max_retries) if rq.idempotent(request) else None
                if delay is None:
                    raise APIConnectionError(f"cannot reach {self.base_url}: {exc}") from exc
                await asyncio.sleep(delay)
                continue
            if response.status_code >= 400 and rq.idempotent(request):
                delay = rq.retry_delay(attempt, response.status_code, response.headers.get("retry-after"),
                                       self.max_retries)
                if delay is not None:
                    await asyncio.sleep(delay)
                    continue
            return _result(request, response)

    def stream_batch(self, batch_id: str, *, interval_ms: int | None = None) -> AsyncIterator[APIObject]:
        """`async for event in client.stream_batch(id)`: lifecycle events until terminal."""
        return _stream.astream(self, rq.require_id(batch_id, "batch_id"), interval_ms)

    async def wait_batch(self, batch_id: str, *, timeout: float | None = None, poll_interval: float = 2.0
                         ) -> Batch:
        return await _stream.await_batch(self, rq.require_id(batch_id, "batch_id"), timeout, poll_interval)

    def batch_results(self, batch_id: str, *, follow: bool = False, merged: bool = False
                      ) -> AsyncIterator[APIObject]:
        return _stream.aresults(self, rq.require_id(batch_id, "batch_id"), follow, merged)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncAIStats:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
