"""What every provider batch client (native_openai.py, native_anthropic.py) shares: the remote batch as the
runner sees it, what looking for a lost create found, the outcome of one line, the two failure kinds, and
bounded HTTP over one aiohttp session.

Failure kinds matter for exactly-once: `Rejected` means the provider answered and refused (a 4xx other than
408/409/429) — nothing was created; `Unavailable` means no usable answer (timeout, connection, 5xx, 429) —
for a create that is AMBIGUOUS: the runner must look for the batch before it may send the create again.
Clients never decide retries; they never touch our storage except writing downloaded files to blobs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from aistats_gateway.domain.upstream import retryable_status
from aistats_gateway.errors import NativeError, Rejected, Unavailable
from aistats_gateway.storage.blobs import BlobStore

# Ended statuses, normalised: what the provider batch ended as.
COMPLETED, EXPIRED, CANCELLED, FAILED = "completed", "expired", "cancelled", "failed"


@dataclass(frozen=True)
class RemoteBatch:
    id: str
    status: str  # the provider's own status word, shown on our batch object
    ended_as: str | None  # None while it runs; else COMPLETED | EXPIRED | CANCELLED | FAILED
    counts: dict[str, int]  # OpenAI's request_counts shape: total, completed, failed
    result_refs: list[str] = field(default_factory=list)  # provider file ids / URLs holding the results
    error: str | None = None  # why it failed, for FAILED
    created_at: float | None = None
    tags: dict[str, str] = field(default_factory=dict)  # OpenAI metadata (how a lost create is found again)


@dataclass(frozen=True)
class Search:
    """What looking for the batch of a create whose answer was lost found (`find()` of a client)."""

    found: RemoteBatch | None = None  # the provider batch PROVEN to be the job's (never one merely alike)
    pending: int = 0  # batches that may be the job's but cannot be told apart yet (Anthropic: still running)


# The custom_ids a job sent to the provider, read from our storage only when a client needs them as proof.
ExpectedIds = Callable[[], Awaitable[frozenset[str]]]


@dataclass(frozen=True)
class Outcome:
    """One line's result as the provider reported it, in OpenAI shapes."""

    status: int | None  # the HTTP status of the answer; None when the request got no answer
    body: bytes | None  # the answer (2xx) or error body (otherwise), OpenAI-shaped for translated lines
    usage: dict[str, Any] | None = None  # for pricing (the provider's own usage object)
    input_tokens: int = 0
    output_tokens: int = 0
    error_code: str | None = None  # when status is None: batch_cancelled, batch_expired, ...
    error_message: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def classify(status: int, raw: bytes, what: str) -> NativeError:
    snippet = raw[:300].decode("utf-8", "replace")
    message = f"{what} answered HTTP {status}: {snippet}"
    if retryable_status(status):
        return Unavailable(message, status)
    return Rejected(message, status)


class HttpClient:
    """One aiohttp session with the provider's auth headers; JSON calls and streamed downloads."""

    def __init__(self, name: str, headers: Mapping[str, str], timeout_seconds: float) -> None:
        self.name = name
        self._headers = dict(headers)
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds, sock_connect=min(10.0, timeout_seconds))
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers,
                                                  cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def call(self, method: str, url: str, *, what: str, data: Any = None,
                   headers: Mapping[str, str] | None = None, params: Mapping[str, str] | None = None) -> Any:
        """The parsed JSON answer of a 2xx; raises Rejected or Unavailable otherwise."""
        try:
            async with self.session().request(method, url, data=data, headers=headers, params=params,
                                              allow_redirects=False) as resp:
                raw = await resp.read()
                status = resp.status
        except TimeoutError as exc:
            raise Unavailable(f"{what}: {self.name} did not answer in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise Unavailable(f"{what}: cannot reach {self.name}: {exc}") from exc
        if not 200 <= status < 300:
            raise classify(status, raw, f"{what}: {self.name}")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Unavailable(f"{what}: {self.name} answered {status} with a body that is not JSON") from exc

    async def stream(self, url: str, *, what: str) -> AsyncGenerator[bytes, None]:
        """The body of a GET, chunk by chunk; raises Rejected or Unavailable as `call` does. Close it (aclosing)
        when stopping early, so the connection goes back to the pool."""
        try:
            async with self.session().get(url, allow_redirects=True) as resp:
                if not 200 <= resp.status < 300:
                    raise classify(resp.status, await resp.read(), f"{what}: {self.name}")
                async for chunk in resp.content.iter_chunked(1 << 20):
                    yield chunk
        except TimeoutError as exc:
            raise Unavailable(f"{what}: {self.name} did not answer in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise Unavailable(f"{what}: cannot reach {self.name}: {exc}") from exc

    async def delete(self, url: str, *, what: str) -> None:
        """DELETE `url`; a 404 counts as done (already gone: deleting is how we clean up, and may be repeated)."""
        try:
            await self.call("DELETE", url, what=what)
        except Rejected as exc:
            if exc.status != 404:
                raise

    async def download(self, url: str, blobs: BlobStore, key: str, *, what: str) -> int:
        """Stream `url` into the blob `key` (published atomically); returns its size."""
        writer = blobs.writer(key)
        try:
            async with contextlib.aclosing(self.stream(url, what=what)) as chunks:
                async for chunk in chunks:
                    await writer.write(chunk)
            return await writer.commit()
        except BaseException:
            await writer.abort()
            raise

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
            await asyncio.sleep(0)


def result_custom_id(record: dict[str, Any]) -> str | None:
    """The custom_id a provider's result line names (both OpenAI's output lines and Anthropic's results carry
    it at the top level); None when it has none usable."""
    value = record.get("custom_id")
    return value if isinstance(value, str) else None


async def split_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The non-empty lines of a stream of chunks."""
    buf = b""
    async for chunk in chunks:
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line.strip():
                yield line
    if buf.strip():
        yield buf


def blob_lines(blobs: BlobStore, key: str) -> AsyncIterator[bytes]:
    """The non-empty lines of a blob, streamed."""
    return split_lines(blobs.read(key))
