"""Pricing: the shipped catalog, name resolution, overrides, validation and the nanos arithmetic.

Every expected amount is worked out by hand in a comment: cost = quantity × unit_price_nanos / unit_size,
with unit prices in nanos per 1M tokens ($1 / 1M tokens = 1_000_000_000 nanos per 1M = 1_000 nanos per token).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from aistats_gateway.pricing import (
    BATCH,
    METERS,
    STANDARD,
    MeterPrice,
    ModelPrice,
    PriceCatalog,
    PricedMeter,
    PricingLines,
    PricingRow,
    estimate_request_nanos,
    line_nanos,
    meters_from_usage,
    output_cap,
    price_meters,
    round_half_up,
    usd,
    usd_to_nanos,
)


@pytest.fixture(scope="module")
def catalog() -> PriceCatalog:
    return PriceCatalog.load()


def price(catalog: PriceCatalog, provider: str, model: str) -> ModelPrice:
    found = catalog.lookup(provider, model)
    assert found is not None, f"{provider}/{model} is not priced"
    return found


def cost(priced: list[PricedMeter]) -> int:
    lines = PricingLines()
    lines.add("p", "m", STANDARD, priced)
    return lines.total_nanos()


def by_meter(priced: list[PricedMeter]) -> dict[str, int]:
    return {p.meter: p.nanos for p in priced}


def entry(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "provider": "vllm",
        "model": "llama-3.1-8b",
        "default_max_output_tokens": 4096,
        "plans": {"standard": {"input_text_tokens": "0.10", "output_text_tokens": "0.20"}},
    }
    base.update(changes)
    return base


# ------------------------------------------------------------------------------------------- the catalog

REQUIRED = {
    "openai": ["gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o",
               "gpt-4o-mini", "o3", "o4-mini", "o3-mini", "text-embedding-3-small", "text-embedding-3-large",
               "text-embedding-ada-002"],
    "anthropic": ["claude-opus-4-1", "claude-opus-4", "claude-sonnet-4-5", "claude-sonnet-4", "claude-3-7-sonnet",
                  "claude-haiku-4-5", "claude-3-5-haiku", "claude-3-haiku"],
    "mock": ["mock/echo", "mock/slow", "mock/reject"],
}


def test_shipped_catalog_prices_every_required_model(catalog: PriceCatalog) -> None:
    for provider, models in REQUIRED.items():
        for model in models:
            found = price(catalog, provider, model)
            assert (found.provider, found.model) == (provider, model)
            assert set(found.plans) == {STANDARD, BATCH}


def test_shipped_list_prices_in_nanos(catalog: PriceCatalog) -> None:
    mini = price(catalog, "openai", "gpt-4o-mini").plans[STANDARD]
    # $0.15 / 1M = 0.15 × 10^9 = 150_000_000 nanos per 1M tokens; $0.075 → 75_000_000; $0.60 → 600_000_000
    assert mini["input_text_tokens"] == MeterPrice("input_text_tokens", 1_000_000, 150_000_000)
    assert mini["cached_read_text_tokens"].unit_price_nanos == 75_000_000
    assert mini["output_text_tokens"].unit_price_nanos == 600_000_000
    # batch cached read: $0.0375 / 1M → 37_500_000 nanos (still an integer)
    batch = price(catalog, "openai", "gpt-4o-mini").plans[BATCH]
    assert batch["cached_read_text_tokens"].unit_price_nanos == 37_500_000
    # requests are priced per request (unit_size 1), at $0
    assert mini["requests"] == MeterPrice("requests", 1, 0)
    opus = price(catalog, "anthropic", "claude-opus-4-1").plans[STANDARD]
    # $15 → 15_000_000_000; cache hits 10% = $1.50 → 1_500_000_000; $75 → 75_000_000_000
    assert [opus[m].unit_price_nanos for m in ("input_text_tokens", "cached_read_text_tokens", "output_text_tokens")] \
        == [15_000_000_000, 1_500_000_000, 75_000_000_000]
    embed = price(catalog, "openai", "text-embedding-3-small").plans[STANDARD]
    assert embed["embedding_tokens"].unit_price_nanos == 20_000_000  # $0.02 / 1M
    assert "output_text_tokens" not in embed


def test_anthropic_cache_reads_are_a_tenth_of_input_except_haiku_3(catalog: PriceCatalog) -> None:
    for model in REQUIRED["anthropic"]:
        plans = price(catalog, "anthropic", model).plans[STANDARD]
        ratio = (plans["cached_read_text_tokens"].unit_price_nanos, plans["input_text_tokens"].unit_price_nanos)
        if model == "claude-3-haiku":
            assert ratio == (30_000_000, 250_000_000)  # published: $0.03 hits on $0.25 input
        else:
            assert ratio[0] * 10 == ratio[1]


def test_batch_plan_is_half_the_standard_plan_for_every_shipped_model(catalog: PriceCatalog) -> None:
    for model in catalog.models():
        tables = [(model.plans[STANDARD], model.plans[BATCH])]
        tables += [(tier.plans[STANDARD], tier.plans[BATCH]) for tier in model.tiers]
        for standard, batch in tables:
            assert set(standard) == set(batch), model.model
            for meter, unit in standard.items():
                assert batch[meter].unit_size == unit.unit_size
                assert batch[meter].unit_price_nanos * 2 == unit.unit_price_nanos, (model.model, meter)


def test_batch_request_costs_half_the_standard_request(catalog: PriceCatalog) -> None:
    gpt5 = price(catalog, "openai", "gpt-5")
    meters = {"input_text_tokens": 10_000, "cached_read_text_tokens": 2_000, "output_text_tokens": 3_000, "requests": 1}
    # standard, per token $1.25/1M = 1_250 nanos, $0.125/1M = 125, $10/1M = 10_000:
    #   10_000 × 1_250 + 2_000 × 125 + 3_000 × 10_000 = 12_500_000 + 250_000 + 30_000_000 = 42_750_000 nanos
    assert cost(price_meters(gpt5, STANDARD, meters)) == 42_750_000
    # batch, per token 625 / 62.5 / 5_000 nanos: 6_250_000 + 125_000 + 15_000_000 = 21_375_000 nanos
    assert cost(price_meters(gpt5, BATCH, meters)) == 21_375_000


def test_mock_models_cost_nothing(catalog: PriceCatalog) -> None:
    for model in REQUIRED["mock"]:
        for plan in price(catalog, "mock", model).plans.values():
            assert all(unit.unit_price_nanos == 0 for unit in plan.values())


# ------------------------------------------------------------------------------------------- resolution


def test_lookup_resolves_aliases_prefixes_case_and_provider_kinds(catalog: PriceCatalog) -> None:
    assert price(catalog, "openai", "gpt-4o-mini-2024-07-18").model == "gpt-4o-mini"
    assert price(catalog, "openai", "openai/gpt-4o-mini").model == "gpt-4o-mini"
    assert price(catalog, "openai", "GPT-4o-Mini").model == "gpt-4o-mini"
    assert price(catalog, "anthropic", "claude-3-5-haiku-20241022").model == "claude-3-5-haiku"
    assert price(catalog, "anthropic", "claude-3-5-haiku-latest").model == "claude-3-5-haiku"
    assert price(catalog, "anthropic", "claude-sonnet-4-0").model == "claude-sonnet-4"
    # An OpenAI-compatible provider may be called anything: the model name alone finds the price.
    assert price(catalog, "vllm", "gpt-4o-mini").provider == "openai"
    assert price(catalog, "openrouter", "anthropic/claude-sonnet-4-20250514").model == "claude-sonnet-4"
    assert price(catalog, "mock", "mock/echo").provider == "mock"
    # Unknown self-hosted models are not priced.
    assert catalog.lookup("vllm", "meta-llama/Llama-3.1-8B-Instruct") is None
    assert catalog.lookup("openai", "gpt-unknown") is None
    # gpt-4o-2024-05-13 has its own, higher price and is deliberately not an alias of gpt-4o.
    assert catalog.lookup("openai", "gpt-4o-2024-05-13") is None


# ------------------------------------------------------------------------------------------- overrides


def test_override_replaces_a_shipped_model() -> None:
    override = {"provider": "openai", "model": "gpt-4o-mini", "default_max_output_tokens": 100,
                "plans": {"standard": {"input_text_tokens": "1", "output_text_tokens": "2"}}}
    catalog = PriceCatalog.load([override])
    replaced = price(catalog, "openai", "gpt-4o-mini")
    assert replaced.plans[STANDARD]["input_text_tokens"].unit_price_nanos == 1_000_000_000
    assert replaced.default_max_output_tokens == 100
    # The override replaces the whole entry, aliases included.
    assert catalog.lookup("openai", "gpt-4o-mini-2024-07-18") is None
    assert len(catalog) == len(PriceCatalog.load())


def test_override_adds_a_model_and_an_exact_provider_entry_wins() -> None:
    catalog = PriceCatalog.load([
        entry(),
        {"provider": "vllm", "model": "gpt-4o-mini", "default_max_output_tokens": 16384,
         "plans": {"standard": {"input_text_tokens": "0", "output_text_tokens": "0"}}},
    ])
    llama = price(catalog, "vllm", "llama-3.1-8b")
    assert llama.plans[STANDARD]["output_text_tokens"].unit_price_nanos == 200_000_000  # $0.20 / 1M
    assert price(catalog, "vllm", "gpt-4o-mini").provider == "vllm"
    assert price(catalog, "openai", "gpt-4o-mini").provider == "openai"
    # A model with no batch plan is billed at its standard price in a batch (never under-bills).
    meters = {"input_text_tokens": 1_000_000, "output_text_tokens": 0}
    assert cost(price_meters(llama, BATCH, meters)) == 100_000_000  # 1M × $0.10 / 1M


def test_override_prices_may_be_ints_floats_or_unit_tables() -> None:
    catalog = PriceCatalog.from_entries([entry(plans={"standard": {
        "input_text_tokens": 0.15,  # a float's shortest repr "0.15" → 150_000_000, exactly
        "output_text_tokens": 2,
        "requests": {"usd": "0.001", "unit_size": 1},
        "embedding_tokens": {"usd": "0.5", "unit_size": 1000},
    }})])
    plan = price(catalog, "vllm", "llama-3.1-8b").plans[STANDARD]
    assert plan["input_text_tokens"].unit_price_nanos == 150_000_000
    assert plan["output_text_tokens"].unit_price_nanos == 2_000_000_000
    assert plan["requests"] == MeterPrice("requests", 1, 1_000_000)
    assert plan["embedding_tokens"] == MeterPrice("embedding_tokens", 1000, 500_000_000)


# ------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"plans": {"batch": {"input_text_tokens": "1"}}}, "plans"),
        ({"plans": {"standard": {"input_text_tokens": "-1"}}}, "plans.standard.input_text_tokens"),
        ({"plans": {"standard": {"input_text_tokens": "abc"}}}, "plans.standard.input_text_tokens"),
        ({"plans": {"standard": {"input_text_tokens": "0.0000000001"}}}, "plans.standard.input_text_tokens"),
        ({"plans": {"standard": {"input_text_tokens": True}}}, "plans.standard.input_text_tokens"),
        ({"plans": {"standard": {"image_tokens": "1"}}}, "plans.standard.image_tokens"),
        ({"plans": {"standard": {}}}, "plans.standard"),
        ({"default_max_output_tokens": -1}, "default_max_output_tokens"),
        ({"default_max_output_tokens": True}, "default_max_output_tokens"),
        ({"aliases": "llama"}, "aliases"),
        ({"price": "1"}, "price"),
        ({"tiers": [{"above_input_tokens": 0, "plans": {"standard": {}}}]}, "tiers[0].above_input_tokens"),
        ({"tiers": [{"above_input_tokens": 10, "plans": {"batch": {}}}]}, "tiers[0].plans"),
        ({"tiers": [{"above_input_tokens": 10, "plans": {"standard": {"requests": "1"}}}]},
         "tiers[0].plans.standard.requests"),
    ],
)
def test_invalid_entries_name_the_model_and_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError) as raised:
        PriceCatalog.load([entry(**changes)])
    assert "vllm/llama-3.1-8b" in str(raised.value)
    assert f"field '{field}'" in str(raised.value)


def test_missing_names_and_duplicate_aliases_are_rejected() -> None:
    with pytest.raises(ValueError, match="field 'model'"):
        PriceCatalog.from_entries([entry(model="")])
    with pytest.raises(ValueError, match=r"'llama-3\.1-8b'.*already used by 'vllm/llama-3\.1-8b'"):
        PriceCatalog.from_entries([entry(), entry(model="llama-3.1-8b-fast", aliases=["llama-3.1-8b"])])


def test_usd_to_nanos_is_exact() -> None:
    assert usd_to_nanos("0.0375") == 37_500_000
    assert usd_to_nanos("0.000000001") == 1
    assert usd_to_nanos("22.50") == 22_500_000_000
    with pytest.raises(ValueError, match="finer than 1 nano"):
        usd_to_nanos("123456.0000000000000000000000001")  # 28-digit Decimal arithmetic would round it away
    with pytest.raises(ValueError):
        usd_to_nanos("NaN")


# ------------------------------------------------------------------------------------------- usage → meters


def test_meters_from_chat_completions_usage_splits_cached_tokens() -> None:
    usage = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
             "prompt_tokens_details": {"cached_tokens": 200}}
    assert meters_from_usage("/v1/chat/completions", usage) == {
        "requests": 1, "input_text_tokens": 800, "cached_read_text_tokens": 200, "output_text_tokens": 500}
    assert meters_from_usage("/v1/completions", {"prompt_tokens": 7, "completion_tokens": 3,
                                                 "prompt_tokens_details": None})["input_text_tokens"] == 7


def test_meters_from_responses_usage() -> None:
    usage = {"input_tokens": 300, "output_tokens": 120, "input_tokens_details": {"cached_tokens": 100},
             "output_tokens_details": {"reasoning_tokens": 80}}
    # reasoning tokens are part of output_tokens, so they are billed as output
    assert meters_from_usage("/v1/responses", usage) == {
        "requests": 1, "input_text_tokens": 200, "cached_read_text_tokens": 100, "output_text_tokens": 120}


def test_meters_from_anthropic_usage_split_cache_reads_and_writes() -> None:
    usage = {"input_tokens": 50, "output_tokens": 40, "cache_read_input_tokens": 1000,
             "cache_creation_input_tokens": 200}
    # Anthropic's input_tokens exclude the cache: input = 50, 200 written (5-minute), 1000 read
    assert meters_from_usage("/v1/messages", usage) == {
        "requests": 1, "input_text_tokens": 50, "cached_read_text_tokens": 1000, "cached_write_text_tokens": 200,
        "output_text_tokens": 40}
    hourly = {**usage, "cache_creation": {"ephemeral_5m_input_tokens": 120, "ephemeral_1h_input_tokens": 80}}
    assert meters_from_usage("/v1/messages", hourly) == {
        "requests": 1, "input_text_tokens": 50, "cached_read_text_tokens": 1000, "cached_write_text_tokens": 120,
        "cached_write_1h_text_tokens": 80, "output_text_tokens": 40}


def test_anthropic_cache_writes_cost_their_multiple_of_input() -> None:
    catalog = PriceCatalog.load()
    price = catalog.lookup("anthropic", "claude-sonnet-4-5")
    assert price is not None
    usage = {"input_tokens": 1_000_000, "output_tokens": 0, "cache_read_input_tokens": 0,
             "cache_creation_input_tokens": 2_000_000,
             "cache_creation": {"ephemeral_5m_input_tokens": 1_000_000, "ephemeral_1h_input_tokens": 1_000_000}}
    meters = meters_from_usage("/v1/messages", usage)
    # 3M input tokens in all: above the 200k long-context tier ($6 input): $6 + 1.25 x $6 + 2 x $6
    standard = sum(m.nanos for m in price_meters(price, "standard", meters))
    assert standard == (6_000_000_000 + 7_500_000_000 + 12_000_000_000)
    batch = sum(m.nanos for m in price_meters(price, "batch", meters))
    assert batch == standard // 2


def test_meters_from_embeddings_and_missing_usage() -> None:
    assert meters_from_usage("/v1/embeddings", {"prompt_tokens": 42, "total_tokens": 42}) == {
        "requests": 1, "embedding_tokens": 42}
    assert meters_from_usage("/v1/chat/completions", None) == {"requests": 1}
    assert meters_from_usage("/v1/moderations", None) == {"requests": 1}
    # garbage counts read as 0; cached can never exceed the prompt
    assert meters_from_usage("/v1/chat/completions", {"prompt_tokens": -5, "completion_tokens": "x",
                                                      "prompt_tokens_details": {"cached_tokens": 9}}) == {
        "requests": 1, "input_text_tokens": 0, "cached_read_text_tokens": 0, "output_text_tokens": 0}


# ------------------------------------------------------------------------------------------- meters → nanos


def test_per_meter_costs_gpt_4o_mini(catalog: PriceCatalog) -> None:
    usage = {"prompt_tokens": 1000, "completion_tokens": 500, "prompt_tokens_details": {"cached_tokens": 200}}
    priced = price_meters(price(catalog, "openai", "gpt-4o-mini"), STANDARD,
                          meters_from_usage("/v1/chat/completions", usage))
    assert by_meter(priced) == {
        "input_text_tokens": 120_000,  # 800 × 150_000_000 / 1_000_000 = 120_000 nanos
        "cached_read_text_tokens": 15_000,  # 200 × 75_000_000 / 1_000_000 = 15_000
        "output_text_tokens": 300_000,  # 500 × 600_000_000 / 1_000_000 = 300_000
        "requests": 0,  # 1 × 0
    }
    assert cost(priced) == 435_000  # $0.000435


def test_per_meter_costs_claude_haiku_4_5_and_embeddings(catalog: PriceCatalog) -> None:
    haiku = price(catalog, "anthropic", "claude-haiku-4-5-20251001")
    meters = meters_from_usage("/v1/messages", {"input_tokens": 1200, "output_tokens": 300,
                                                "cache_read_input_tokens": 4000})
    assert by_meter(price_meters(haiku, STANDARD, meters)) == {
        "input_text_tokens": 1_200_000,  # 1_200 × $1/1M = 1_200 × 1_000 nanos
        "cached_read_text_tokens": 400_000,  # 4_000 × $0.10/1M = 4_000 × 100 nanos
        "output_text_tokens": 1_500_000,  # 300 × $5/1M = 300 × 5_000 nanos
        "requests": 0,
    }
    large = price(catalog, "openai", "text-embedding-3-large")
    priced = price_meters(large, BATCH, meters_from_usage("/v1/embeddings", {"prompt_tokens": 10_000}))
    assert by_meter(priced) == {"embedding_tokens": 650_000, "requests": 0}  # 10_000 × 65_000_000 / 1M


def test_sonnet_4_switches_to_the_long_context_tier_above_200k_input(catalog: PriceCatalog) -> None:
    sonnet = price(catalog, "anthropic", "claude-sonnet-4")
    at_threshold = {"input_text_tokens": 100_000, "cached_read_text_tokens": 100_000, "output_text_tokens": 1_000}
    # 200_000 input tokens is not above 200k: base prices $3 / $0.30 / $15
    assert by_meter(price_meters(sonnet, STANDARD, at_threshold)) == {
        "input_text_tokens": 300_000_000,  # 100_000 × 3_000 nanos
        "cached_read_text_tokens": 30_000_000,  # 100_000 × 300 nanos
        "output_text_tokens": 15_000_000,  # 1_000 × 15_000 nanos
    }
    above = {"input_text_tokens": 150_000, "cached_read_text_tokens": 60_000, "output_text_tokens": 1_000}
    # 210_000 > 200_000: every meter at the tier, $6 / $0.60 / $22.50
    priced = price_meters(sonnet, STANDARD, above)
    assert by_meter(priced) == {
        "input_text_tokens": 900_000_000,  # 150_000 × 6_000 nanos
        "cached_read_text_tokens": 36_000_000,  # 60_000 × 600 nanos
        "output_text_tokens": 22_500_000,  # 1_000 × 22_500 nanos
    }
    assert cost(priced) == 958_500_000
    # the batch tier is half: 450_000_000 + 18_000_000 + 11_250_000
    assert cost(price_meters(sonnet, BATCH, above)) == 479_250_000
    # Sonnet 3.7 has no long-context tier
    assert cost(price_meters(price(catalog, "anthropic", "claude-3-7-sonnet"), STANDARD, above)) == \
        150_000 * 3_000 + 60_000 * 300 + 1_000 * 15_000


def test_unpriced_meters_fall_back_or_are_not_billed(catalog: PriceCatalog) -> None:
    embed = price(catalog, "openai", "text-embedding-3-small")
    # input tokens on an embedding model are billed as embedding tokens; output has no price
    priced = price_meters(embed, STANDARD, {"input_text_tokens": 1_000_000, "output_text_tokens": 5})
    assert [(p.meter, p.quantity, p.nanos) for p in priced] == [("embedding_tokens", 1_000_000, 20_000_000)]
    no_cache = PriceCatalog.from_entries([entry()]).lookup("vllm", "llama-3.1-8b")
    assert no_cache is not None
    # cached reads of a model without a cached price are billed as input: one merged input line
    priced = price_meters(no_cache, STANDARD, {"input_text_tokens": 10, "cached_read_text_tokens": 5})
    assert priced == [PricedMeter("input_text_tokens", 15, 1_000_000, 100_000_000)]
    with pytest.raises(ValueError, match="quantity"):
        price_meters(no_cache, STANDARD, {"input_text_tokens": -1})


# ------------------------------------------------------------------------------------------- lines


def test_rounding_happens_once_per_line_on_the_aggregate(catalog: PriceCatalog) -> None:
    mini = price(catalog, "openai", "gpt-4o-mini")
    lines = PricingLines()
    per_request = []
    for _ in range(3):
        priced = price_meters(mini, BATCH, {"cached_read_text_tokens": 1, "requests": 1})
        per_request.append(sum(p.nanos for p in priced))
        lines.add("openai", mini.model, BATCH, priced)
    # one request: 1 cached token × 37_500_000 / 1_000_000 = 37.5 nanos → 38 rounded alone; three alone → 114
    assert per_request == [38, 38, 38]
    # the line: 3 × 37_500_000 / 1_000_000 = 112.5 nanos → 113: the exact sum (112.5), rounded once
    assert lines.total_nanos() == 113
    wire = lines.to_wire()
    assert [(w["dimension"], w["quantity"], w["line_nanos"], w["line_cost_usd"]) for w in wire] == [
        ("cached_read_text_tokens", 3, 113, "0.000000113"), ("requests", 3, 0, "0.000000000")]


def test_lines_aggregate_per_provider_model_meter_price_and_plan(catalog: PriceCatalog) -> None:
    sonnet = price(catalog, "anthropic", "claude-sonnet-4-5")
    lines = PricingLines()
    small = {"input_text_tokens": 1_000, "output_text_tokens": 100}
    large = {"input_text_tokens": 250_000, "output_text_tokens": 100}
    for meters in (small, small, large):
        lines.add("anthropic", sonnet.model, BATCH, price_meters(sonnet, BATCH, meters))
    lines.add("anthropic", sonnet.model, STANDARD, price_meters(sonnet, STANDARD, small))
    got = [(w["pricing_plan"], w["dimension"], w["quantity"], w["unit_price_usd"], w["line_nanos"])
           for w in lines.to_wire()]
    assert got == [
        # batch base: 2_000 × $1.50/1M = 3_000_000; 200 × $7.50/1M = 1_500_000
        ("batch", "input_text_tokens", 2_000, "1.500000000", 3_000_000),
        # batch long-context tier (250k > 200k): 250_000 × $3/1M = 750_000_000; 100 × $11.25/1M = 1_125_000
        ("batch", "input_text_tokens", 250_000, "3.000000000", 750_000_000),
        ("batch", "output_text_tokens", 200, "7.500000000", 1_500_000),
        ("batch", "output_text_tokens", 100, "11.250000000", 1_125_000),
        # standard: 1_000 × $3/1M = 3_000_000; 100 × $15/1M = 1_500_000
        ("standard", "input_text_tokens", 1_000, "3.000000000", 3_000_000),
        ("standard", "output_text_tokens", 100, "15.000000000", 1_500_000),
    ]
    assert lines.total_nanos() == 3_000_000 + 750_000_000 + 1_500_000 + 1_125_000 + 3_000_000 + 1_500_000


def test_to_wire_has_exactly_the_api_fields(catalog: PriceCatalog) -> None:
    mini = price(catalog, "openai", "gpt-4o-mini")
    lines = PricingLines()
    lines.add("openai", "gpt-4o-mini", BATCH, price_meters(mini, BATCH, {"output_text_tokens": 1_000_000}))
    assert lines.to_wire() == [{
        "provider": "openai", "model": "gpt-4o-mini", "dimension": "output_text_tokens", "quantity": 1_000_000,
        "unit_size": 1_000_000, "unit_price_usd": "0.300000000", "line_nanos": 300_000_000,
        "line_cost_usd": "0.300000000", "pricing_plan": "batch",
    }]


def test_mock_batch_lists_zero_cost_lines_and_omits_zero_quantities(catalog: PriceCatalog) -> None:
    echo = price(catalog, "mock", "mock/echo")
    lines = PricingLines()
    for _ in range(2):
        meters = meters_from_usage("/v1/chat/completions", {"prompt_tokens": 12, "completion_tokens": 4})
        lines.add("mock", echo.model, BATCH, price_meters(echo, BATCH, meters))
    lines.add("mock", echo.model, BATCH, [PricedMeter("embedding_tokens", 0, 1_000_000, 0)])
    wire = lines.to_wire()
    assert [(w["dimension"], w["quantity"], w["line_cost_usd"]) for w in wire] == [
        ("input_text_tokens", 24, "0.000000000"),
        ("output_text_tokens", 8, "0.000000000"),
        ("requests", 2, "0.000000000"),
    ]
    assert lines.total_nanos() == 0
    assert len(lines.rows()) == 4  # the zero-quantity line is kept in rows, left out of the wire


def test_rows_round_trip_and_merge(catalog: PriceCatalog) -> None:
    nano = price(catalog, "openai", "gpt-5-nano")
    lines = PricingLines()
    lines.add("openai", "gpt-5-nano", BATCH, price_meters(nano, BATCH, {"cached_read_text_tokens": 1}))
    rows = lines.rows()
    # $0.0025 / 1M = 2_500_000 nanos per 1M tokens = 2.5 nanos per token
    assert rows == [PricingRow("openai", "gpt-5-nano", "batch", "cached_read_text_tokens", 1_000_000, 2_500_000, 1)]
    assert lines.total_nanos() == 3  # 2.5 → 3
    reloaded = PricingLines.from_rows([tuple(r) for r in rows] + [list(rows[0])])  # plain tuples and lists
    assert reloaded.rows() == [rows[0]._replace(quantity=2)]
    assert reloaded.total_nanos() == 5  # 2 × 2.5 = 5, not 3 + 3
    reloaded.merge(lines)
    assert reloaded.total_nanos() == 8  # 3 × 2.5 = 7.5 → 8
    with pytest.raises(ValueError, match="pricing row 0"):
        PricingLines.from_rows([("openai", "gpt-4o-mini", "standard", "input_text_tokens", 1_000_000, 1.5, 1)])
    with pytest.raises(ValueError, match="expected 7 values"):
        PricingLines.from_rows([("openai", "gpt-4o-mini")])


def test_round_half_up_and_line_nanos() -> None:
    assert round_half_up(5, 10) == 1  # 0.5 → 1
    assert round_half_up(4, 10) == 0  # 0.4 → 0
    assert round_half_up(15, 10) == 2  # 1.5 → 2
    assert round_half_up(-15, 10) == -2  # halves away from zero
    assert line_nanos(1, 1_000_000, 500_000) == 1  # 0.5 nano → 1
    assert line_nanos(1, 1_000_000, 400_000) == 0  # 0.4 nano → 0
    assert line_nanos(3, 1_000_000, 37_500_000) == 113  # 112.5 → 113
    # 10^12 tokens = 10^6 units of 1M at $75 = $75_000_000 = 7.5 × 10^16 nanos, exact in integers
    assert line_nanos(10**12, 1_000_000, 75_000_000_000) == 75_000_000 * 1_000_000_000


def test_usd_formatting() -> None:
    assert usd(0) == "0.000000000"
    assert usd(1) == "0.000000001"
    assert usd(435_000) == "0.000435000"
    assert usd(1_500_000_000) == "1.500000000"
    assert usd(123_456_789_012) == "123.456789012"
    assert usd(-5) == "-0.000000005"
    assert usd(-1_000_000_001) == "-1.000000001"
    with pytest.raises(TypeError):
        usd(0.5)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- estimates

ENGLISH = ("The quarterly report shows revenue growth of twelve percent, driven mostly by new customers in "
           "the logistics sector. Summarise the three main risks the board should discuss next week. ")


def realistic_usage(endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    """What an upstream would report for typical English text: ~4 characters per token, 4 tokens of framing
    per message plus 3 for the reply priming, and the whole output cap (or the model's maximum) used."""
    def tokens(text: str) -> int:
        return math.ceil(len(text) / 4)
    texts = [m["content"] for m in body.get("messages", [])]
    prompt = sum(tokens(t) + 4 for t in texts) + 3
    for field in ("system", "instructions", "input", "prompt"):
        value = body.get(field)
        if isinstance(value, str):
            prompt += tokens(value)
        elif isinstance(value, list):
            prompt += sum(tokens(v) for v in value)
    output = body.get("max_tokens") or body.get("max_completion_tokens") or body.get("max_output_tokens")
    if endpoint == "/v1/embeddings":
        return {"prompt_tokens": prompt, "total_tokens": prompt}
    if endpoint == "/v1/messages":
        return {"input_tokens": prompt, "output_tokens": output}
    if endpoint == "/v1/responses":
        return {"input_tokens": prompt, "output_tokens": output}
    return {"prompt_tokens": prompt, "completion_tokens": output}


SAMPLES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("openai", "gpt-4o-mini", "/v1/chat/completions", {
        "model": "gpt-4o-mini", "max_tokens": 300,
        "messages": [{"role": "system", "content": "You are a concise analyst."},
                     {"role": "user", "content": ENGLISH * 20}]}),
    ("openai", "gpt-5", "/v1/chat/completions", {
        "model": "gpt-5", "max_completion_tokens": 2_000,
        "messages": [{"role": "user", "content": "Hi"}]}),
    ("openai", "o4-mini", "/v1/responses", {
        "model": "o4-mini", "max_output_tokens": 5_000, "instructions": "Answer in French.", "input": ENGLISH * 5}),
    ("anthropic", "claude-sonnet-4-5", "/v1/messages", {
        "model": "claude-sonnet-4-5", "max_tokens": 1_024, "system": "Be brief.",
        "messages": [{"role": "user", "content": ENGLISH * 50}]}),
    ("anthropic", "claude-3-haiku", "/v1/messages", {
        "model": "claude-3-haiku", "max_tokens": 50, "messages": [{"role": "user", "content": ENGLISH}]}),
    ("openai", "text-embedding-3-small", "/v1/embeddings", {
        "model": "text-embedding-3-small", "input": [ENGLISH, ENGLISH * 3, "short"]}),
]


@pytest.mark.parametrize(("provider", "model", "endpoint", "body"), SAMPLES, ids=[s[1] for s in SAMPLES])
@pytest.mark.parametrize("plan", [STANDARD, BATCH])
def test_estimate_is_an_upper_bound_of_the_realistic_cost(
    catalog: PriceCatalog, provider: str, model: str, endpoint: str, body: dict[str, Any], plan: str
) -> None:
    found = price(catalog, provider, model)
    actual = cost(price_meters(found, plan, meters_from_usage(endpoint, realistic_usage(endpoint, body))))
    estimate = estimate_request_nanos(endpoint, body, found, plan)
    assert actual > 0
    assert estimate >= actual
    assert estimate <= 3 * actual + 1_000_000  # conservative, not absurd


def test_estimate_uses_the_model_maximum_output_without_a_cap(catalog: PriceCatalog) -> None:
    mini = price(catalog, "openai", "gpt-4o-mini")
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
    # the JSON {"messages":[{"role":"user","content":"Hi"}]} is 43 bytes → ceil(43 / 2.5) = 18 tokens, + 16
    # overhead = 34 input tokens × 150 nanos = 5_100 nanos; 16_384 output tokens × 600 nanos = 9_830_400
    assert estimate_request_nanos("/v1/chat/completions", body, mini, STANDARD) == 5_100 + 9_830_400
    assert output_cap(body, 16_384) == 16_384
    assert output_cap({"max_tokens": 10, "n": 3}, 16_384) == 30


def test_estimate_prices_a_long_prompt_at_the_long_context_tier(catalog: PriceCatalog) -> None:
    sonnet = price(catalog, "anthropic", "claude-sonnet-4")
    body = {"max_tokens": 1_000, "messages": [{"role": "user", "content": ENGLISH * 4_500}]}
    usage = realistic_usage("/v1/messages", body)
    assert usage["input_tokens"] > 200_000  # a real request in the tier
    actual = cost(price_meters(sonnet, STANDARD, meters_from_usage("/v1/messages", usage)))
    estimate = estimate_request_nanos("/v1/messages", body, sonnet, STANDARD)
    assert estimate >= actual
    tier = sonnet.tiers[0].plans[STANDARD]
    assert actual == usage["input_tokens"] * tier["input_text_tokens"].unit_price_nanos // 1_000_000 \
        + 1_000 * tier["output_text_tokens"].unit_price_nanos // 1_000_000


def test_estimate_counts_token_id_arrays_and_non_ascii_conservatively(catalog: PriceCatalog) -> None:
    embed = price(catalog, "openai", "text-embedding-3-large")
    ids = list(range(5_000))
    # 5_000 token ids + 16 overhead, at 130 nanos per token, rounded up: 5_016 × 130 = 652_080
    assert estimate_request_nanos("/v1/embeddings", {"input": ids}, embed, STANDARD) == 652_080
    mini = price(catalog, "openai", "gpt-4o-mini")
    chinese = {"max_tokens": 1, "messages": [{"role": "user", "content": "季度报告显示收入增长" * 100}]}
    # 1_000 CJK characters are at most ~1_500 tokens; the estimate counts ≥ 2.4 per character
    estimate = estimate_request_nanos("/v1/chat/completions", chinese, mini, STANDARD)
    assert estimate >= 2_400 * 150


def test_estimate_covers_the_meters_of_every_shipped_model(catalog: PriceCatalog) -> None:
    body = {"max_tokens": 100, "messages": [{"role": "user", "content": ENGLISH}], "input": ENGLISH}
    for model in catalog.models():
        for plan in model.plans:
            endpoint = "/v1/embeddings" if "embedding_tokens" in model.plans[plan] and \
                "output_text_tokens" not in model.plans[plan] else "/v1/chat/completions"
            estimate = estimate_request_nanos(endpoint, body, model, plan)
            assert (estimate > 0) == (model.provider != "mock"), model.model


def test_every_meter_name_is_known() -> None:
    assert METERS == ("input_text_tokens", "cached_read_text_tokens", "cached_write_text_tokens",
                      "cached_write_1h_text_tokens", "output_text_tokens", "embedding_tokens", "requests")


def test_estimate_covers_cache_writes_only_when_the_prompt_asks_for_caching() -> None:
    price = PriceCatalog.load().lookup("anthropic", "claude-haiku-4-5")
    assert price is not None
    plain = {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "x" * 1000}]}
    marked = {**plain, "system": [{"type": "text", "text": "y", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}
    base = estimate_request_nanos("/v1/messages", plain, price, STANDARD)
    cached = estimate_request_nanos("/v1/messages", marked, price, STANDARD)
    # The marked prompt may be written to the 1-hour cache: its input is priced at 2x ($2 vs $1 per 1M).
    output = 10 * 5_000
    assert cached - output > 1.9 * (base - output)


def reference_estimate(endpoint: str, body: dict[str, Any], found: ModelPrice, plan: str) -> int:
    """The estimate written out plainly (the form before request_estimator prepared it per model): the tier by
    the input estimate, the dearest of every candidate input meter, each meter rounded up."""
    from aistats_gateway.pricing.calculator import _price_of, estimate_input_tokens

    def ceil_nanos(quantity: int, unit: MeterPrice | None) -> int:
        return 0 if unit is None or quantity <= 0 else -(-quantity * unit.unit_price_nanos // unit.unit_size)

    tokens = estimate_input_tokens(body)
    table = found.meters(plan, tokens)
    total = ceil_nanos(1, _price_of(table, "requests"))
    if endpoint.endswith("embeddings"):
        return total + ceil_nanos(tokens, _price_of(table, "embedding_tokens"))
    meters = ["input_text_tokens", "cached_read_text_tokens"]
    if ("cached_write_text_tokens" in table or "cached_write_1h_text_tokens" in table) and \
            "cache_control" in repr(body):
        meters += ["cached_write_text_tokens", "cached_write_1h_text_tokens"]
    total += max((ceil_nanos(tokens, _price_of(table, m)) for m in meters), default=0)
    return total + ceil_nanos(output_cap(body, found.default_max_output_tokens), _price_of(table, "output_text_tokens"))


def test_the_prepared_estimator_gives_the_plain_estimate_for_every_model_plan_and_endpoint(
        catalog: PriceCatalog) -> None:
    from aistats_gateway.pricing.calculator import request_estimator

    bodies: list[dict[str, Any]] = [
        {"messages": [{"role": "user", "content": ENGLISH * n}], "max_tokens": n, "n": 2}
        for n in (0, 1, 40, 4_500)
    ] + [
        {"input": list(range(300)), "max_output_tokens": 7}, {"input": "héllo wörld 季度" * 50, "best_of": True},
        {"prompt": [[1, 2], [3]], "max_completion_tokens": 5, "max_tokens": 9, "tools": None},
        {"system": [{"type": "text", "text": "y", "cache_control": {"type": "ephemeral"}}], "max_tokens": -1,
         "messages": [{"role": "user", "content": "z" * 700_000}]},
    ]
    for found in catalog.models():
        for plan in (STANDARD, BATCH):
            for endpoint in ("/v1/chat/completions", "/v1/embeddings", "/v1/messages", "/v1/responses"):
                estimate = request_estimator(endpoint, found, found.plan_name(plan))
                for body in bodies:
                    expected = reference_estimate(endpoint, body, found, found.plan_name(plan))
                    assert estimate(body) == expected == estimate_request_nanos(endpoint, body, found, plan), (
                        found.model, plan, endpoint)
