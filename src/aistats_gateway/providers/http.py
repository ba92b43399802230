"""The upstream HTTP client every sending provider shares: one aiohttp session per provider, bounded reads;
and `HttpProvider`, what the sending providers (openai_compat.py, anthropic.py) have in common around it.

Owns the connection pool (aiohttp's pool costs far less CPU per request than httpx's under concurrency,
and this is the executor's hot path), the size bound on answers (one huge answer cannot exhaust memory),
and the mapping of transport failures to `UpstreamUnavailable` kinds. It never interprets a body or a
status: providers do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import NotRequired, TypedDict, Unpack

import aiohttp
import orjson
from yarl import URL

from aistats_gateway.errors import UpstreamUnavailable
from aistats_gateway.providers.base import matches

MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class HttpOptions(TypedDict):
    """How a sending provider's session is bounded (kinds.py reads them from [executor] and [[providers]])."""

    timeout_seconds: float
    connect_timeout_seconds: float
    max_connections: int
    max_response_bytes: NotRequired[int]


class UpstreamHTTP:
    def __init__(self, name: str, headers: Mapping[str, str], *, timeout_seconds: float,
                 connect_timeout_seconds: float, max_connections: int,
                 max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self.name = name
        self.max_response_bytes = max_response_bytes
        self._headers = dict(headers)
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds, sock_connect=connect_timeout_seconds)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _session_or_new(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers=self._headers,
                json_serialize=lambda v: orjson.dumps(v).decode(),
                cookie_jar=aiohttp.DummyCookieJar(),  # upstream cookies are never wanted
            )
        return self._session

    async def post(self, url: URL | str, body: bytes) -> tuple[int, bytes, Mapping[str, str]]:
        """(status, whole body, headers) of one POST; raises UpstreamUnavailable when no usable answer came."""
        try:
            async with self._session_or_new().post(url, data=body, allow_redirects=False) as resp:
                declared = resp.content_length
                if declared is not None and declared > self.max_response_bytes:
                    raise UpstreamUnavailable("too_large", f"upstream answer exceeds {self.max_response_bytes} bytes")
                raw = await resp.read() if declared is not None else await _read_bounded(
                    resp, self.max_response_bytes)
                return resp.status, raw, resp.headers
        except TimeoutError as exc:
            raise UpstreamUnavailable("timeout", f"{self.name} did not answer in time") from exc
        except aiohttp.ClientPayloadError as exc:
            raise UpstreamUnavailable("invalid_response", f"{self.name} sent a broken body: {exc}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable("connection", f"cannot reach {self.name}: {exc}") from exc

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
            await asyncio.sleep(0)


class HttpProvider:
    """The part every provider that sends over `UpstreamHTTP` shares: its name, the model patterns it serves
    (those without a wildcard are the models /v1/models lists), and its pooled session."""

    def __init__(self, name: str, models: list[str], headers: Mapping[str, str],
                 **http: Unpack[HttpOptions]) -> None:
        self.name = name
        self.patterns = models
        self.http = UpstreamHTTP(name, headers, **http)

    def serves(self, model: str) -> bool:
        return matches(self.patterns, model)

    def listed_models(self) -> list[str]:
        return [p for p in self.patterns if "*" not in p]

    async def close(self) -> None:
        await self.http.close()


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, refusing more than `limit` bytes (memory stays bounded for huge answers)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await resp.content.read(1 << 20):
        size += len(chunk)
        if size > limit:
            raise UpstreamUnavailable("too_large", f"upstream answer exceeds {limit} bytes")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
