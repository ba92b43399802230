"""The executor's and the validator's view of prices: usage → priced pricing rows, request → estimate.

Wraps the catalog with a per-(provider, model) cache. A model the catalog does not know (a self-hosted
model behind an OpenAI-compatible server, say) is priced at zero under the plan name `unpriced`, so its
usage still shows in `pricing_lines` and nothing is charged for it; prices can be added in the config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aistats_gateway.pricing.calculator import (
    PricingRow,
    estimate_input_tokens,
    line_nanos,
    meters_from_usage,
    output_cap,
    price_meters,
    request_estimator,
)
from aistats_gateway.pricing.catalog import (
    DEFAULT_UNIT_SIZE,
    EMBEDDING,
    INPUT,
    OUTPUT,
    REQUESTS,
    STANDARD,
    ModelPrice,
    PriceCatalog,
)

UNPRICED = "unpriced"
# The length of a typical chat answer, in tokens, for the expected cost of a dry run: short answers are the
# common case in batch work (classification, extraction, short replies); the upper bound covers long ones.
TYPICAL_OUTPUT_TOKENS = 256
_MISSING: ModelPrice | None = None


class Pricer:
    def __init__(self, catalog: PriceCatalog, plan: str = STANDARD) -> None:
        self.catalog = catalog
        self.plan = plan
        self._cache: dict[tuple[str, str], ModelPrice | None] = {}
        self._estimators: dict[tuple[str, str, str], Callable[[Mapping[str, Any]], int]] = {}
        self._plans: dict[str, Pricer] = {plan: self}

    def with_plan(self, plan: str) -> Pricer:
        """The same catalog priced at `plan` (models without it fall back to standard, as always)."""
        found = self._plans.get(plan)
        if found is None:
            found = self._plans[plan] = Pricer(self.catalog, plan)
        return found

    def price_of(self, provider: str, model: str) -> ModelPrice | None:
        key = (provider, model)
        if key not in self._cache:
            self._cache[key] = self.catalog.lookup(provider, model)
        return self._cache[key]

    def unit_cost(self, provider: str, model: str) -> int:
        """A comparable price for routing by `sort: price`: nanos of one million input plus one million
        output tokens (a model without a price ranks last)."""
        price = self.price_of(provider, model)
        if price is None:
            return 2**62
        table = price.meters(price.plan_name(self.plan))
        total = 0
        for meter in (INPUT, OUTPUT):
            unit = table.get(meter)
            if unit is not None:
                total += unit.unit_price_nanos * 1_000_000 // unit.unit_size
        return total

    def rows(self, provider: str, model: str, meters: Mapping[str, int]) -> list[PricingRow]:
        price = self.price_of(provider, model)
        if price is None:
            return [PricingRow(provider, model, UNPRICED, meter, DEFAULT_UNIT_SIZE[meter], 0, quantity)
                    for meter, quantity in meters.items() if quantity > 0]
        plan = price.plan_name(self.plan)
        return [PricingRow(provider, price.model, plan, m.meter, m.unit_size, m.unit_price_nanos, m.quantity)
                for m in price_meters(price, plan, meters)]

    def usage_rows(self, provider: str, model: str, endpoint: str, usage: Any) -> tuple[list[PricingRow], int]:
        """Priced rows of one answered request and its own cost (rounded per request, for the request log)."""
        rows = self.rows(provider, model, meters_from_usage(endpoint, usage if isinstance(usage, dict) else None))
        return rows, sum(line_nanos(r.quantity, r.unit_size, r.unit_price_nanos) for r in rows)

    def estimate(self, provider: str, model: str, endpoint: str, body: Mapping[str, Any]) -> int:
        """Upper bound of one request's cost (0 for unpriced models)."""
        return self.estimator(provider, model, endpoint)(body)

    def estimator(self, provider: str, model: str, endpoint: str) -> Callable[[Mapping[str, Any]], int]:
        """`estimate` for one (provider, model, endpoint), prepared once (calculator.request_estimator)."""
        key = (provider, model, endpoint)
        found = self._estimators.get(key)
        if found is None:
            price = self.price_of(provider, model)
            found = _unpriced if price is None else request_estimator(endpoint, price, price.plan_name(self.plan))
            self._estimators[key] = found
        return found

    def expected_rows(self, provider: str, model: str, endpoint: str, body: Mapping[str, Any]) -> list[PricingRow]:
        """The pricing rows a request would likely produce: its prompt's estimated size and a typical answer
        (TYPICAL_OUTPUT_TOKENS per completion, or less under its output cap). `estimate` stays the upper bound
        (the full cap), which is what a credit hold needs; the two differ wherever answers are capped high."""
        price = self.price_of(provider, model)
        default_cap = price.default_max_output_tokens if price is not None else 0
        tokens = estimate_input_tokens(body)
        if endpoint.endswith("/embeddings"):
            meters = {EMBEDDING: tokens, REQUESTS: 1}
        else:
            cap = output_cap(body, default_cap)
            typical = output_cap({"max_tokens": TYPICAL_OUTPUT_TOKENS, "n": body.get("n"),
                                  "best_of": body.get("best_of")}, TYPICAL_OUTPUT_TOKENS)
            meters = {INPUT: tokens, OUTPUT: min(cap, typical) if cap else typical, REQUESTS: 1}
        return self.rows(provider, model, meters)


def _unpriced(_body: Mapping[str, Any]) -> int:
    return 0
