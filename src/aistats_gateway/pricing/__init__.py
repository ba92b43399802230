"""Pricing: the shipped price catalog (catalog.py, prices.toml) and pure nanos arithmetic (calculator.py).

Money is integer nanos (1 USD = 10^9 nanos) everywhere in this package; `usd()` renders it for the wire.
Nothing here does I/O except reading the shipped prices.toml, and nothing imports the rest of the gateway.
"""

from aistats_gateway.pricing.calculator import (
    PricedMeter,
    PricingLines,
    PricingRow,
    estimate_input_tokens,
    estimate_request_nanos,
    line_nanos,
    meters_from_usage,
    output_cap,
    price_meters,
    round_half_up,
    usd,
)
from aistats_gateway.pricing.catalog import (
    BATCH,
    METERS,
    NANOS_PER_USD,
    STANDARD,
    MeterPrice,
    ModelPrice,
    PriceCatalog,
    PriceTier,
    parse_model_price,
    usd_to_nanos,
)

__all__ = [
    "BATCH",
    "METERS",
    "NANOS_PER_USD",
    "STANDARD",
    "MeterPrice",
    "ModelPrice",
    "PriceCatalog",
    "PriceTier",
    "PricedMeter",
    "PricingLines",
    "PricingRow",
    "estimate_input_tokens",
    "estimate_request_nanos",
    "line_nanos",
    "meters_from_usage",
    "output_cap",
    "parse_model_price",
    "price_meters",
    "round_half_up",
    "usd",
    "usd_to_nanos",
]
