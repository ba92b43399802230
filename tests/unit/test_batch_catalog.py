"""The rules behind GET /v1/batches/capabilities and /models (services/catalog.py) and the usage details the
batch object sums (pricing/calculator.usage_details), without a server."""

from __future__ import annotations

from aistats_gateway.config import ProviderConfig
from aistats_gateway.pricing.calculator import usage_details
from aistats_gateway.pricing.catalog import PriceCatalog
from aistats_gateway.services import catalog

CATALOG = PriceCatalog.load()


def test_patterns_expand_against_the_catalog_of_the_providers_kind_and_the_upstream_list() -> None:
    cfg = ProviderConfig(name="vllm", kind="openai", models=["gpt-4o*", "local-*", "exact-model"])
    served = catalog.served_models(cfg, CATALOG, ["local-a", "gpt-4o-mini", "unrouted"])
    assert served[0] == "exact-model" and {"gpt-4o", "gpt-4o-mini", "local-a"} <= set(served)
    assert "unrouted" not in served and not any(m.startswith("claude") for m in served)
    assert len(served) == len(set(served))
    claude = ProviderConfig(name="c", kind="anthropic", models=["claude-*"])
    assert all(m.startswith("claude-") for m in catalog.served_models(claude, CATALOG, None))


def test_native_input_modes_only_with_batch_api() -> None:
    on = catalog.capability(ProviderConfig(name="openai", kind="openai", batch_api=True))
    off = catalog.capability(ProviderConfig(name="a", kind="anthropic"))
    assert on["native_input_modes"] == ["file"] and on["name"] == "OpenAI-compatible"
    assert off["native_input_modes"] == [] and off["name"] == "a (Anthropic)"


def test_prices_are_exact_decimal_strings() -> None:
    assert catalog.usd_text(75_000_000) == "0.075" and catalog.usd_text(2_000_000_000) == "2"
    assert catalog.usd_text(0) == "0"


def test_params_filter_resolves_aliases() -> None:
    assert catalog.parse_params(["request_endpoint, window", "metadata", "endpoint"]) == [
        "endpoint", "completion_window", "metadata"]
    entries = catalog.model_entries([ProviderConfig(name="mock", kind="mock")], CATALOG, {}, {"endpoint", "metadata"})
    assert len(catalog.keep_supporting(entries, ["endpoint"])) == len(entries) == 3
    assert catalog.keep_supporting(entries, ["prompts"]) == []


def test_usage_details_of_each_shape() -> None:
    chat = {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 3}}
    responses = {"input_tokens": 10, "output_tokens": 5, "input_tokens_details": {"cached_tokens": 2},
                 "output_tokens_details": {"reasoning_tokens": 1}}
    anthropic = {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 7}
    assert usage_details("/v1/chat/completions", chat) == (4, 3)
    assert usage_details("/v1/responses", responses) == (2, 1)
    assert usage_details("/v1/messages", anthropic) == (7, 0)
    assert usage_details("/v1/chat/completions", None) == (0, 0)
