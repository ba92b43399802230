"""Any OpenAI-compatible upstream: OpenAI itself, vLLM, Ollama, Groq, Together, LiteLLM, ...

One shared aiohttp session per provider (connection reuse; aiohttp's pool costs far less CPU per
request than httpx's under concurrency, and this is the executor's hot path). The request body is
sent as the bytes stored at validation, so a line costs no JSON work here unless its model name
must be rewritten. Response bodies are read with a size bound so one huge answer cannot exhaust
memory.
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
from yarl import URL

from aistats_gateway.providers.base import (
    ProviderResult,
    UpstreamUnavailable,
    final_429,
    matches,
    parse_openai_ratelimit,
    parse_retry_after,
    usage_dict,
    usage_of,
)

MAX_RESPONSE_BYTES = 64 * 1024 * 1024


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


class OpenAICompatibleProvider:
    kind = "openai"

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None,
        models: list[str],
        *,
        timeout_seconds: float,
        connect_timeout_seconds: float,
        max_connections: int,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.max_response_bytes = max_response_bytes
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.patterns = models
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_seconds, sock_connect=connect_timeout_seconds
        )
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}
        self._headers = {"Content-Type": "application/json", "User-Agent": "aistats-gateway/0.1"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    def serves(self, model: str) -> bool:
        return matches(self.patterns, model)

    def listed_models(self) -> list[str]:
        return [p for p in self.patterns if "*" not in p]

    def _session_or_new(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers=self._headers,
                json_serialize=lambda v: orjson.dumps(v).decode(),
                cookie_jar=aiohttp.DummyCookieJar(),  # upstream cookies are never wanted
            )
        return self._session

    def url_for(self, endpoint: str) -> str:
        """`base_url` includes the version (as OPENAI_BASE_URL does): .../v1 + /chat/completions."""
        return self.base_url + (endpoint[3:] if endpoint.startswith("/v1/") else endpoint)

    def _url(self, endpoint: str) -> URL:
        url = self._urls.get(endpoint)
        if url is None:  # parsed once per endpoint, not once per request
            url = self._urls[endpoint] = URL(self.url_for(endpoint))
        return url

    async def send(self, endpoint: str, model: str, body: bytes) -> ProviderResult:
        session = self._session_or_new()
        try:
            async with session.post(self._url(endpoint), data=body, allow_redirects=False) as resp:
                declared = resp.content_length
                if declared is not None and declared > self.max_response_bytes:
                    raise UpstreamUnavailable("too_large",
                                              f"upstream answer exceeds {self.max_response_bytes} bytes")
                raw = await resp.read() if declared is not None else await _read_bounded(
                    resp, self.max_response_bytes)
                status = resp.status
                retry_after = parse_retry_after(resp.headers)
                upstream_id = resp.headers.get("x-request-id")
                limits = parse_openai_ratelimit(resp.headers)
        except TimeoutError as exc:
            raise UpstreamUnavailable("timeout", f"{self.name} did not answer in time") from exc
        except aiohttp.ClientPayloadError as exc:
            raise UpstreamUnavailable("invalid_response", f"{self.name} sent a broken body: {exc}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable("connection", f"cannot reach {self.name}: {exc}") from exc
        tin = tout = 0
        usage = None
        if 200 <= status < 300:
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise UpstreamUnavailable(
                    "invalid_response", f"{self.name} answered {status} with a body that is not JSON"
                ) from exc
            tin, tout = usage_of(parsed)
            usage = usage_dict(parsed)
        return ProviderResult(status, raw, retry_after, upstream_id, tin, tout, usage, limits,
                              final=final_429(status, raw))

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
            await asyncio.sleep(0)
