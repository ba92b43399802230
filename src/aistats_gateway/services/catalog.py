"""What the gateway can run as batches: per-provider capabilities and the models with their prices.

Owns `GET /v1/batches/capabilities` and `GET /v1/batches/models` (the question users ask before uploading:
which models take batches, through which providers and endpoints, at what price). Everything is computed from
the providers this gateway actually runs (settings.providers) and the price catalog: nothing is a fixed list of
someone else's providers. The rules are plain functions over those values (unit-testable without a loop);
`UpstreamModels` is the only I/O: it asks OpenAI-compatible upstreams for their `GET /v1/models`, with a short
timeout and a cache, and an upstream that does not answer only means its listed models are left out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import aiohttp

from aistats_gateway.config import ProviderConfig
from aistats_gateway.domain.batch import ENDPOINTS
from aistats_gateway.pricing.catalog import (
    BATCH,
    EMBEDDING,
    NANOS_PER_USD,
    OUTPUT,
    REQUESTS,
    STANDARD,
    MeterPrice,
    ModelPrice,
    PriceCatalog,
)
from aistats_gateway.providers.anthropic import MESSAGES, TRANSLATED
from aistats_gateway.providers.base import matches
from aistats_gateway.providers.mock import MODELS as MOCK_MODELS

NAMES = {"openai": "OpenAI-compatible", "anthropic": "Anthropic", "mock": "Mock (built in)"}
DOCS = {
    "openai": "https://platform.openai.com/docs/guides/batch",
    "anthropic": "https://docs.anthropic.com/en/docs/build-with-claude/batch-processing",
}
# What each provider kind's own batch API takes (OpenAI: an uploaded JSONL file; Anthropic: inline requests).
NATIVE_INPUT = {"openai": ["file"], "anthropic": ["requests"]}
# Every provider takes both through the gateway: an uploaded file (`input_file_id`) or inline rows.
GATEWAY_INPUT = ["file", "requests"]
# Spellings of batch parameters other clients use for the `params` filter (as the AI Stats server accepts).
PARAM_ALIASES = {"request_endpoint": "endpoint", "window": "completion_window", "file": "input_file_id",
                 "webhooks": "webhook", "routing": "provider"}


def endpoints_of(kind: str) -> list[dict[str, str]]:
    """`{endpoint, mode}`: `native` = sent to the provider as written; `translated` = the gateway rewrites the
    request to the provider's own API and the answer back (Anthropic behind chat/completions and responses)."""
    if kind == "anthropic":
        return [{"endpoint": MESSAGES, "mode": "native"}] + [
            {"endpoint": e, "mode": "translated"} for e in ENDPOINTS if e in TRANSLATED]
    return [{"endpoint": e, "mode": "native"} for e in ENDPOINTS]


def native_capable(cfg: ProviderConfig) -> bool:
    return cfg.batch_api and cfg.kind in NATIVE_INPUT


def capability(cfg: ProviderConfig) -> dict[str, Any]:
    """One entry of `GET /v1/batches/capabilities` for a configured provider."""
    native = NATIVE_INPUT[cfg.kind] if native_capable(cfg) else []
    if cfg.kind == "mock":
        notes = "Deterministic built-in answers (mock/echo, mock/slow, mock/reject) for trying the API; no upstream."
    else:
        notes = "Lines run through the gateway's managed executor (paced per provider and model lane, retried)"
        notes += (f"; its own batch API is enabled (batch_api), so `execution: \"native\"` (and `auto` with a 24h "
                  f"window) hands the batch to {NAMES[cfg.kind]}'s batch API at batch prices." if cfg.batch_api
                  else "; no provider batch API is enabled for it (batch_api = false): lines are billed at "
                       "standard prices.")
    return {
        "id": cfg.name, "name": NAMES[cfg.kind] if cfg.name == cfg.kind else f"{cfg.name} ({NAMES[cfg.kind]})",
        "status": "active", "kind": cfg.kind,
        "preview_readiness": "validated", "reconciliation_mode": "polling",
        "endpoints": endpoints_of(cfg.kind), "gateway_input_modes": list(GATEWAY_INPUT),
        "native_input_modes": list(native), "execution_modes": ["managed", "native"] if native else ["managed"],
        "documentation_url": DOCS.get(cfg.kind), "notes": notes,
    }


def capabilities(providers: Iterable[ProviderConfig]) -> list[dict[str, Any]]:
    return [capability(cfg) for cfg in providers]


def served_models(cfg: ProviderConfig, catalog: PriceCatalog, upstream: Sequence[str] | None) -> list[str]:
    """The model ids a provider serves: its exact patterns, catalog models of its kind matching a wildcard
    pattern, and the upstream's own `/v1/models` ids matching any pattern (mock: its built-in models)."""
    if cfg.kind == "mock":
        return list(MOCK_MODELS)  # the mock provider serves exactly these, whatever its patterns say
    found = [p for p in cfg.models if "*" not in p]
    found += [m.model for m in catalog.models() if m.provider == cfg.kind and matches(cfg.models, m.model)]
    found += [m for m in upstream or () if matches(cfg.models, m)]
    return list(dict.fromkeys(found))


def usd_text(nanos: int) -> str:
    """Exact USD as a plain decimal string ("0.125", "2"); never a float."""
    text = format(Decimal(nanos) / NANOS_PER_USD, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def meter_entry(provider: str, price: MeterPrice) -> dict[str, Any]:
    return {"provider_id": provider, "unit": "requests" if price.meter == REQUESTS else "tokens",
            "unit_size": price.unit_size, "price_per_unit": usd_text(price.unit_price_nanos), "currency": "usd"}


def plan_meters(provider: str, price: ModelPrice | None, plan: str) -> dict[str, Any] | None:
    """The meters of one plan (None when the model has no price, or no such plan)."""
    if price is None or plan not in price.plans:
        return None
    return {meter: meter_entry(provider, p) for meter, p in price.plans[plan].items()}


def model_endpoints(provider_endpoints: list[str], price: ModelPrice | None) -> list[str]:
    """An embedding model (catalog: embedding tokens, no output) serves only /v1/embeddings."""
    table = price.plans.get(STANDARD, {}) if price is not None else {}
    if EMBEDDING in table and OUTPUT not in table:
        return [e for e in provider_endpoints if e.endswith("/embeddings")]
    return provider_endpoints


def supported_params(endpoints: list[str], create_fields: Iterable[str], native: bool) -> dict[str, Any]:
    """The `supported_params_detail` of one provider for one model."""
    detail: dict[str, Any] = {name: {"supported": True} for name in sorted(create_fields)}
    if "endpoint" in detail:
        detail["endpoint"] = {"supported": True, "values": endpoints}
    if "execution" in detail:
        detail["execution"] = {"supported": True, "values": ["auto", "managed", "native"] if native else
                               ["auto", "managed"]}
    return detail


def _cheapest(plans: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Per meter, the cheapest provider's entry (by price per unit, normalised to one unit)."""
    best: dict[str, Any] = {}
    for meters in plans:
        for meter, entry in (meters or {}).items():
            old = best.get(meter)
            if old is None or (Decimal(entry["price_per_unit"]) / entry["unit_size"]
                               < Decimal(old["price_per_unit"]) / old["unit_size"]):
                best[meter] = entry
    return best or None


def model_entries(
    providers: Sequence[ProviderConfig], catalog: PriceCatalog, upstream: dict[str, list[str] | None],
    create_fields: Iterable[str],
) -> list[dict[str, Any]]:
    """`GET /v1/batches/models`: one entry per model some provider serves, in configuration order.

    `pricing` has `standard` (what a managed batch pays: the providers' list prices) and `batch` (the providers'
    batch-API price, only through providers with batch_api on; null where none has it), each `{pricing_plan,
    meters}` with the cheapest provider per meter; the top-level `pricing_plan`/`meters` repeat `standard` (the
    AI Stats shape). An unpriced model (say, a self-hosted one) has `meters: null` and is billed nothing."""
    fields = sorted(create_fields)
    by_model: dict[str, list[tuple[ProviderConfig, ModelPrice | None]]] = {}
    for cfg in providers:
        for model in served_models(cfg, catalog, upstream.get(cfg.name)):
            by_model.setdefault(model, []).append((cfg, catalog.lookup(cfg.kind, model)))
    out = []
    for model, offers in by_model.items():
        entries: list[dict[str, Any]] = []
        all_endpoints: list[str] = []
        for cfg, price in offers:
            endpoints = model_endpoints([e["endpoint"] for e in endpoints_of(cfg.kind)], price)
            all_endpoints += [e for e in endpoints if e not in all_endpoints]
            detail = supported_params(endpoints, fields, native_capable(cfg))
            entries.append({
                "id": cfg.name, "kind": cfg.kind, "endpoints": endpoints, "batch_api": cfg.batch_api,
                "supported_params": fields, "supported_parameters": fields,
                "supported_params_detail": detail, "supported_parameters_detail": detail,
                "pricing": {STANDARD: plan_meters(cfg.name, price, STANDARD),
                            BATCH: plan_meters(cfg.name, price, BATCH) if native_capable(cfg) else None},
            })
        standard = _cheapest([e["pricing"][STANDARD] for e in entries])
        batch = _cheapest([e["pricing"][BATCH] for e in entries])
        detail = supported_params(all_endpoints, fields, any(native_capable(cfg) for cfg, _ in offers))
        if "endpoint" in detail:
            detail["endpoint"]["providers"] = [e["id"] for e in entries]
        embedding = all_endpoints == ["/v1/embeddings"]
        out.append({
            "model": model, "id": model, "object": "model", "name": model, "status": "active",
            "input_types": ["text"], "output_types": ["embedding"] if embedding else ["text"],
            "endpoints": all_endpoints,
            "supported_params": fields, "supported_parameters": fields,
            "supported_params_detail": detail, "supported_parameters_detail": detail,
            "providers": entries,
            "pricing": {"pricing_plan": STANDARD, "meters": standard,
                        STANDARD: {"pricing_plan": STANDARD, "meters": standard},
                        BATCH: {"pricing_plan": BATCH, "meters": batch} if batch else None},
        })
    return out


def parse_params(values: Sequence[str]) -> list[str]:
    """`params=a,b&params=c` → canonical names (aliases resolved), in order, without duplicates."""
    names = [PARAM_ALIASES.get(n, n) for v in values for n in (p.strip().lower() for p in v.split(",")) if n]
    return list(dict.fromkeys(names))


def keep_supporting(models: list[dict[str, Any]], params: Sequence[str]) -> list[dict[str, Any]]:
    """Models (and, within them, providers) that support every parameter in `params`."""
    if not params:
        return models
    kept = []
    for entry in models:
        providers = [p for p in entry["providers"] if all(n in p["supported_params_detail"] for n in params)]
        if providers:
            kept.append({**entry, "providers": providers})
    return kept


class UpstreamModels:
    """`GET {base_url}/models` of OpenAI-compatible upstreams, cached: `ttl` seconds after an answer,
    `retry_after` seconds after a failure (so an unreachable upstream costs one short timeout per window, not
    one per call), and at most `timeout` seconds per ask (all upstreams are asked at once)."""

    def __init__(self, timeout: float = 2.0, ttl: float = 300.0, retry_after: float = 30.0) -> None:
        self.timeout = timeout
        self.ttl = ttl
        self.retry_after = retry_after
        self._cache: dict[str, tuple[float, list[str] | None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def all(self, providers: Iterable[ProviderConfig]) -> dict[str, list[str] | None]:
        asked = [p for p in providers if p.kind == "openai"]
        found = await asyncio.gather(*(self.ids(p) for p in asked))
        return {p.name: ids for p, ids in zip(asked, found, strict=True)}

    async def ids(self, cfg: ProviderConfig) -> list[str] | None:
        """The upstream's model ids, or None when it did not answer (or answered something else)."""
        lock = self._locks.setdefault(cfg.name, asyncio.Lock())
        async with lock:  # concurrent calls share one ask
            cached = self._cache.get(cfg.name)
            if cached is not None and cached[0] > time.monotonic():
                return cached[1]
            ids = await self._fetch(cfg)
            self._cache[cfg.name] = (time.monotonic() + (self.ttl if ids is not None else self.retry_after), ids)
            return ids

    async def _fetch(self, cfg: ProviderConfig) -> list[str] | None:
        url = (cfg.base_url or "https://api.openai.com/v1").rstrip("/") + "/models"
        headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session, \
                    session.get(url, headers=headers, allow_redirects=False) as response:
                if response.status != 200:
                    return None
                body = await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            return None
        return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str) and m["id"]][:10_000]
