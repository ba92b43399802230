"""Any OpenAI-compatible upstream: OpenAI itself, vLLM, Ollama, Groq, Together, LiteLLM, ...

HTTP goes through the provider's `UpstreamHTTP` (providers/http.py: one pooled session, bounded
reads). The request body is sent as the bytes stored at validation, so a line costs no JSON work
here unless its model name must be rewritten.
"""

from __future__ import annotations

from typing import Unpack

import orjson
from yarl import URL

from aistats_gateway.errors import UpstreamUnavailable
from aistats_gateway.providers.base import (
    ProviderResult,
    final_429,
    parse_openai_ratelimit,
    parse_retry_after,
    usage_dict,
    usage_of,
)
from aistats_gateway.providers.http import HttpOptions, HttpProvider


class OpenAICompatibleProvider(HttpProvider):
    kind = "openai"

    def __init__(self, name: str, base_url: str, api_key: str | None, models: list[str],
                 **http: Unpack[HttpOptions]) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "aistats-gateway/0.1"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        super().__init__(name, models, headers, **http)
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self._urls: dict[str, URL] = {}

    def url_for(self, endpoint: str) -> str:
        """`base_url` includes the version (as OPENAI_BASE_URL does): .../v1 + /chat/completions."""
        return self.base_url + (endpoint[3:] if endpoint.startswith("/v1/") else endpoint)

    def _url(self, endpoint: str) -> URL:
        url = self._urls.get(endpoint)
        if url is None:  # parsed once per endpoint, not once per request
            url = self._urls[endpoint] = URL(self.url_for(endpoint))
        return url

    async def send(self, endpoint: str, model: str, body: bytes) -> ProviderResult:
        status, raw, headers = await self.http.post(self._url(endpoint), body)
        retry_after = parse_retry_after(headers)
        upstream_id = headers.get("x-request-id")
        limits = parse_openai_ratelimit(headers)
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
