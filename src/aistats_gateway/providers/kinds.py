"""Provider kinds: the one registry of what each `kind` of [[providers]] entry is built into.

A kind names a wire dialect: its default base URL, the realtime client the executor sends lines through,
and — for kinds whose provider has one — the batch API client native execution runs provider batches with
(executor/native.py). The app builds every configured provider here, the native runner every batch client,
and the settings check `batch_api = true` against `BATCH_API_KINDS`, so a new kind is added in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aistats_gateway.providers.anthropic import DEFAULT_BASE_URL as ANTHROPIC_DEFAULT_URL
from aistats_gateway.providers.anthropic import AnthropicProvider
from aistats_gateway.providers.base import Provider
from aistats_gateway.providers.http import HttpOptions
from aistats_gateway.providers.mock import MockProvider
from aistats_gateway.providers.native_anthropic import AnthropicBatches
from aistats_gateway.providers.native_openai import OpenAIBatches
from aistats_gateway.providers.openai_compat import OpenAICompatibleProvider

if TYPE_CHECKING:
    from aistats_gateway.config import ProviderConfig, Settings

OPENAI_DEFAULT_URL = "https://api.openai.com/v1"

BatchClient = OpenAIBatches | AnthropicBatches


@dataclass(frozen=True)
class Kind:
    name: str
    default_url: str | None  # the base URL when the entry gives none
    realtime: Callable[[ProviderConfig, Settings, str | None], Provider]  # (entry, settings, base URL)
    batches: Callable[[ProviderConfig, str | None, float], BatchClient] | None = None  # None: no batch API


def _http_options(cfg: ProviderConfig, settings: Settings) -> HttpOptions:
    """A sending provider's session bounds: its own timeout or the executor's, and a pool as wide as the wider
    of its own concurrency and a lane's."""
    ex = settings.executor
    return HttpOptions(timeout_seconds=cfg.timeout_seconds or ex.request_timeout_seconds,
                       connect_timeout_seconds=ex.connect_timeout_seconds,
                       max_connections=max(cfg.max_concurrency or 0, ex.max_lane_concurrency),
                       max_response_bytes=ex.max_response_bytes)


def _openai(cfg: ProviderConfig, settings: Settings, url: str | None) -> Provider:
    return OpenAICompatibleProvider(cfg.name, url or OPENAI_DEFAULT_URL, cfg.api_key, cfg.models,
                                    **_http_options(cfg, settings))


def _anthropic(cfg: ProviderConfig, settings: Settings, url: str | None) -> Provider:
    return AnthropicProvider(cfg.name, url, cfg.api_key, cfg.models, **_http_options(cfg, settings))


def _mock(cfg: ProviderConfig, settings: Settings, _url: str | None) -> Provider:
    return MockProvider(cfg.name, settings.mock.slow_latency_ms)


def _openai_batches(cfg: ProviderConfig, url: str | None, timeout: float) -> BatchClient:
    return OpenAIBatches(cfg.name, url or OPENAI_DEFAULT_URL, cfg.api_key, timeout_seconds=timeout)


def _anthropic_batches(cfg: ProviderConfig, url: str | None, timeout: float) -> BatchClient:
    return AnthropicBatches(cfg.name, url, cfg.api_key, timeout_seconds=timeout)


KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind("openai", OPENAI_DEFAULT_URL, _openai, _openai_batches),
    Kind("anthropic", ANTHROPIC_DEFAULT_URL, _anthropic, _anthropic_batches),
    Kind("mock", None, _mock),
)}
BATCH_API_KINDS = frozenset(name for name, kind in KINDS.items() if kind.batches is not None)


def base_url(cfg: ProviderConfig) -> str | None:
    return cfg.base_url or KINDS[cfg.kind].default_url


def build_provider(cfg: ProviderConfig, settings: Settings) -> Provider:
    """The realtime client of a [[providers]] entry."""
    return KINDS[cfg.kind].realtime(cfg, settings, base_url(cfg))


def build_batch_client(cfg: ProviderConfig, timeout: float) -> BatchClient:
    """The batch API client of a [[providers]] entry with `batch_api = true` (the settings checked its kind)."""
    make = KINDS[cfg.kind].batches
    if make is None:
        raise ValueError(f"provider '{cfg.name}': kind '{cfg.kind}' has no batch API")
    return make(cfg, base_url(cfg), timeout)
