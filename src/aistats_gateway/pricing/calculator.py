"""Pricing arithmetic, pure: usage → meters → priced meters → aggregated pricing lines, in integer nanos.

Owns the money rules of the wire contract (API.md, "billing and pricing_lines"):
  * amounts are integer nanos (1 USD = 10^9 nanos) end to end; no float ever holds money;
  * one request's usage becomes meters (`meters_from_usage`), priced at the plan and the tier the request's
    input selects (`price_meters`);
  * lines aggregate per (provider, model, meter, unit price, plan) and are rounded once per line, half up,
    on the aggregated quantity (`PricingLines`), so N requests of fractional-nano cost sum exactly;
  * `estimate_request_nanos` is a fast, conservative upper bound of one request's cost, for reservations.
Never does I/O, never reads config or the catalog file (the caller passes a ModelPrice), never decides
whether a request is billable (the caller prices what it bills).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from aistats_gateway.pricing.catalog import (
    CACHE_WRITE,
    CACHE_WRITE_1H,
    CACHED,
    EMBEDDING,
    INPUT,
    METERS,
    NANOS_PER_USD,
    OUTPUT,
    REQUESTS,
    MeterPrice,
    ModelPrice,
)

# Estimates count 1 token per 2.5 bytes of the compact, ASCII-escaped JSON of the prompt fields. English
# text runs at ~4 characters per token (and JSON adds quotes, keys and braces on top of the text), so this
# over-counts typical prompts by 60% or more; non-ASCII text is escaped to \uXXXX (6 bytes = 2.4 tokens per
# character), which covers CJK scripts at ~1-1.5 tokens per character. Token-id arrays are counted exactly.
ESTIMATE_BYTES_PER_TOKEN_NUM = 5  # bytes per token = 5 / 2 = 2.5
ESTIMATE_BYTES_PER_TOKEN_DEN = 2
# Added to every estimate: the chat format's per-request priming tokens and similar framing.
ESTIMATE_OVERHEAD_TOKENS = 16
# Body fields whose content the upstream bills as input tokens.
PROMPT_FIELDS = (
    "messages", "input", "prompt", "system", "instructions", "tools", "functions", "tool_choice",
    "response_format", "text", "suffix",
)
_PROMPT_FIELD_SET = frozenset(PROMPT_FIELDS)
OUTPUT_CAP_FIELDS = ("max_completion_tokens", "max_output_tokens", "max_tokens")

_METER_ORDER = {meter: index for index, meter in enumerate(METERS)}
# A meter the plan does not price is billed at the first of these meters the plan does price.
_FALLBACK: dict[str, tuple[str, ...]] = {
    CACHED: (INPUT,),
    CACHE_WRITE: (INPUT,),
    CACHE_WRITE_1H: (CACHE_WRITE, INPUT),
    EMBEDDING: (INPUT,),
    INPUT: (EMBEDDING,),
}


@dataclass(frozen=True)
class PricedMeter:
    """`quantity` units of `meter` at `unit_price_nanos` nanos per `unit_size` units (one request's share)."""

    meter: str
    quantity: int
    unit_size: int
    unit_price_nanos: int

    @property
    def nanos(self) -> int:
        """This meter's cost alone, rounded half up (a line rounds its aggregated quantity instead)."""
        return line_nanos(self.quantity, self.unit_size, self.unit_price_nanos)


class PricingRow(NamedTuple):
    """One aggregated line as plain values, for persisting and reloading a PricingLines."""

    provider: str
    model: str
    plan: str
    meter: str
    unit_size: int
    unit_price_nanos: int
    quantity: int


def round_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded to the nearest integer, halves away from zero; exact."""
    if denominator <= 0:
        raise ValueError("denominator must be > 0")
    if numerator < 0:
        return -round_half_up(-numerator, denominator)
    return (2 * numerator + denominator) // (2 * denominator)


def line_nanos(quantity: int, unit_size: int, unit_price_nanos: int) -> int:
    """quantity × unit_price_nanos / unit_size, rounded half up to integer nanos."""
    return round_half_up(quantity * unit_price_nanos, unit_size)


def usd(nanos: int) -> str:
    """Integer nanos as an exact USD string with 9 decimals: 1_500_000_000 → "1.500000000", -5 → "-0.000000005"."""
    if not isinstance(nanos, int) or isinstance(nanos, bool):
        raise TypeError(f"usd() takes integer nanos, not {type(nanos).__name__}")
    whole, fraction = divmod(abs(nanos), NANOS_PER_USD)
    return f"{'-' if nanos < 0 else ''}{whole}.{fraction:09d}"


# ---------------------------------------------------------------------------------------------- usage


def _count(value: Any) -> int:
    """A token count from an upstream usage field: a non-negative integer, else 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and value.is_integer() and value > 0:
        return int(value)
    return 0


def _detail(usage: Mapping[str, Any], key: str, field: str) -> int:
    details = usage.get(key)
    return _count(details.get(field)) if isinstance(details, Mapping) else 0


def _endpoint_kind(endpoint: str) -> str:
    path = endpoint.strip().rstrip("/")
    for kind in ("embeddings", "messages", "responses", "moderations"):
        if path == kind or path.endswith("/" + kind):
            return kind
    return "completions"


def meters_from_usage(endpoint: str, usage: Mapping[str, Any] | None) -> dict[str, int]:
    """The meters of one upstream response's `usage` object; always `requests: 1`.

    * embeddings: prompt_tokens → embedding_tokens;
    * OpenAI chat/completions shape (prompt_tokens, completion_tokens, prompt_tokens_details.cached_tokens)
      and responses shape (input_tokens, output_tokens, input_tokens_details.cached_tokens): cached tokens
      are split out of the input, input_text_tokens = input - cached;
    * Anthropic messages shape (input_tokens excludes the cache): cache_read_input_tokens are cached reads,
      cache_creation_input_tokens are cache writes — 1-hour ones (`cache_creation.ephemeral_1h_input_tokens`)
      on their own meter, the rest as 5-minute writes.
    The shape is recognised by its fields, so an Anthropic upstream answering in OpenAI's shape (or the
    reverse) is read correctly. Missing, negative or non-integer counts read as 0.
    """
    meters: dict[str, int] = {REQUESTS: 1}
    if not isinstance(usage, Mapping):
        return meters
    kind = _endpoint_kind(endpoint)
    if kind == "embeddings":
        tokens = _count(usage.get("prompt_tokens")) or _count(usage.get("input_tokens"))
        meters[EMBEDDING] = tokens or _count(usage.get("total_tokens"))
        return meters
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        prompt = _count(usage.get("prompt_tokens"))
        cached = min(_detail(usage, "prompt_tokens_details", "cached_tokens"), prompt)
        uncached, output = prompt - cached, _count(usage.get("completion_tokens"))
    elif kind == "messages" or "cache_read_input_tokens" in usage or "cache_creation_input_tokens" in usage:
        cached = _count(usage.get("cache_read_input_tokens"))
        uncached = _count(usage.get("input_tokens"))
        output = _count(usage.get("output_tokens"))
        writes = _count(usage.get("cache_creation_input_tokens"))
        hour = min(_detail(usage, "cache_creation", "ephemeral_1h_input_tokens"), writes)
        if writes - hour:
            meters[CACHE_WRITE] = writes - hour
        if hour:
            meters[CACHE_WRITE_1H] = hour
    else:
        prompt = _count(usage.get("input_tokens"))
        cached = min(_detail(usage, "input_tokens_details", "cached_tokens"), prompt)
        uncached, output = prompt - cached, _count(usage.get("output_tokens"))
    meters[INPUT] = uncached
    meters[CACHED] = cached
    meters[OUTPUT] = output
    return meters


def usage_details(endpoint: str, usage: Any) -> tuple[int, int]:
    """(cached input tokens, reasoning tokens) of one answer's `usage`, for the batch object's usage details:
    cache reads exactly as the pricing reads them (the cached_read meter of meters_from_usage), reasoning from
    `completion_tokens_details` (chat) or `output_tokens_details` (responses). Zeros when absent."""
    if not isinstance(usage, Mapping):
        return 0, 0
    cached = meters_from_usage(endpoint, usage).get(CACHED, 0)
    reasoning = (_detail(usage, "completion_tokens_details", "reasoning_tokens")
                 or _detail(usage, "output_tokens_details", "reasoning_tokens"))
    return cached, reasoning


# ---------------------------------------------------------------------------------------------- pricing


def _price_of(table: Mapping[str, MeterPrice], meter: str) -> MeterPrice | None:
    found = table.get(meter)
    if found is not None:
        return found
    for other in _FALLBACK.get(meter, ()):
        found = table.get(other)
        if found is not None:
            return found
    return None


def price_meters(price: ModelPrice, plan: str, meters: Mapping[str, int]) -> list[PricedMeter]:
    """One request's meters priced at `plan` and at the tier its input tokens (input + cached) select.

    Zero quantities are left out. A meter the plan does not price is billed at its fallback meter (cached
    reads and embedding tokens as input, input as embedding tokens) or, with none, not billed. A plan the
    model does not price falls back to `standard`. Raises ValueError for a negative or non-integer quantity.
    """
    for meter, quantity in meters.items():
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 0:
            raise ValueError(f"meter '{meter}' quantity must be an integer >= 0, got {quantity!r}")
    input_tokens = meters.get(INPUT, 0) + meters.get(CACHED, 0) + meters.get(CACHE_WRITE, 0) + \
        meters.get(CACHE_WRITE_1H, 0)
    table = price.meters(plan, input_tokens)
    merged: dict[tuple[str, int, int], int] = {}
    for meter in sorted(meters, key=lambda m: _METER_ORDER.get(m, len(_METER_ORDER))):
        quantity = meters[meter]
        unit = _price_of(table, meter)
        if quantity == 0 or unit is None:
            continue
        key = (unit.meter, unit.unit_size, unit.unit_price_nanos)
        merged[key] = merged.get(key, 0) + quantity
    return [PricedMeter(meter, quantity, size, nanos) for (meter, size, nanos), quantity in merged.items()]


class PricingLines:
    """Pricing lines of a batch: quantities aggregated per (provider, model, plan, meter, unit price).

    Each line's cost is computed once, on its aggregated quantity, rounded half up to integer nanos.
    `model` is whatever the caller records (the catalog's canonical `ModelPrice.model` keeps lines of
    aliases together). `rows()` / `from_rows()` persist and reload the aggregate as plain tuples.
    """

    def __init__(self) -> None:
        self._quantities: dict[tuple[str, str, str, str, int, int], int] = {}

    def add(self, provider: str, model: str, plan: str, priced: Iterable[PricedMeter]) -> None:
        for item in priced:
            if item.quantity < 0:
                raise ValueError(f"meter '{item.meter}' quantity must be >= 0, got {item.quantity}")
            self._add(PricingRow(provider, model, plan, item.meter, item.unit_size, item.unit_price_nanos,
                                 item.quantity))

    def add_row(self, row: PricingRow) -> None:
        """Add one plain row (e.g. from Pricer) into the aggregate."""
        self._add(row)

    def _add(self, row: PricingRow) -> None:
        key = (row.provider, row.model, row.plan, row.meter, row.unit_size, row.unit_price_nanos)
        self._quantities[key] = self._quantities.get(key, 0) + row.quantity

    def merge(self, other: PricingLines) -> None:
        """Add every line of `other` into this aggregate."""
        for row in other.rows():
            self._add(row)

    def rows(self) -> list[PricingRow]:
        """Every aggregated line, zero quantities included, in wire order."""
        rows = [PricingRow(*key, quantity) for key, quantity in self._quantities.items()]
        rows.sort(key=lambda r: (r.provider, r.model, r.plan, _METER_ORDER.get(r.meter, len(_METER_ORDER)),
                                 r.meter, r.unit_size, r.unit_price_nanos))
        return rows

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]]) -> PricingLines:
        """An aggregate from (provider, model, plan, meter, unit_size, unit_price_nanos, quantity) rows;
        rows with the same key add up. Raises ValueError for a malformed row."""
        lines = cls()
        for index, raw in enumerate(rows):
            values = tuple(raw)
            if len(values) != len(PricingRow._fields):
                raise ValueError(f"pricing row {index}: expected {len(PricingRow._fields)} values, got {len(values)}")
            row = PricingRow(*values)
            strings_ok = all(isinstance(v, str) and v for v in values[:4])
            ints_ok = all(isinstance(v, int) and not isinstance(v, bool) for v in values[4:])
            if not (strings_ok and ints_ok) or row.unit_size <= 0 or row.unit_price_nanos < 0 or row.quantity < 0:
                raise ValueError(f"pricing row {index}: malformed {values!r}")
            lines._add(row)
        return lines

    def __len__(self) -> int:
        return len(self._quantities)

    def total_nanos(self) -> int:
        return sum(line_nanos(q, key[4], key[5]) for key, q in self._quantities.items())

    def to_wire(self) -> list[dict[str, Any]]:
        """API.md's `pricing_lines`: lines with a quantity, zero-priced ones included."""
        wire: list[dict[str, Any]] = []
        for row in self.rows():
            if row.quantity == 0:
                continue
            nanos = line_nanos(row.quantity, row.unit_size, row.unit_price_nanos)
            wire.append({
                "provider": row.provider,
                "model": row.model,
                "dimension": row.meter,
                "quantity": row.quantity,
                "unit_size": row.unit_size,
                "unit_price_usd": usd(row.unit_price_nanos),
                "line_nanos": nanos,
                "line_cost_usd": usd(nanos),
                "pricing_plan": row.plan,
            })
        return wire


# ---------------------------------------------------------------------------------------------- estimates


def _token_ids(value: Any) -> int | None:
    """The token count of a token-id array (list of ints, or list of such lists), else None."""
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return len(value)
    if all(isinstance(v, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in v) for v in value):
        return sum(len(v) for v in value)
    return None


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """A conservative upper bound of a request's input tokens (see ESTIMATE_BYTES_PER_TOKEN_*)."""
    counted = 0
    text: dict[str, Any] = {}
    # In the body's own order (the JSON's size does not depend on the order of its fields): a body has a few
    # fields, fewer than there are prompt fields to look up.
    for field, value in body.items():
        if value is None or field not in _PROMPT_FIELD_SET:
            continue
        ids = _token_ids(value) if field in ("input", "prompt") else None
        if ids is not None:
            counted += ids
        else:
            text[field] = value
    size = 0
    if text:
        raw = orjson.dumps(text, default=str)  # fast path; exact for ASCII text
        # Non-ASCII text is measured as \uXXXX escapes (6 bytes a character): over-counts, never under-counts.
        size = len(raw) if raw.isascii() else len(json.dumps(text, ensure_ascii=True, separators=(",", ":"),
                                                              default=str))
    by_bytes = -(-size * ESTIMATE_BYTES_PER_TOKEN_DEN // ESTIMATE_BYTES_PER_TOKEN_NUM)
    return counted + by_bytes + ESTIMATE_OVERHEAD_TOKENS


def output_cap(body: Mapping[str, Any], default: int) -> int:
    """The request's output cap × the completions it asks for (`n`, `best_of`); `default` when uncapped."""
    cap = 0
    for name in OUTPUT_CAP_FIELDS:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            cap = value
    choices = 1
    for name in ("n", "best_of"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > choices:
            choices = value
    return (cap or default) * choices


def _ceil_nanos(quantity: int, unit: MeterPrice | None) -> int:
    if unit is None or quantity <= 0:
        return 0
    return -(-quantity * unit.unit_price_nanos // unit.unit_size)


def _dearest(units: Iterable[MeterPrice | None]) -> MeterPrice | None:
    """The unit with the highest price per unit (exact, in integers): ceil(q × price / size) is largest for it,
    whatever the quantity q."""
    best: MeterPrice | None = None
    for unit in units:
        if unit is not None and (best is None or unit.unit_price_nanos * best.unit_size >
                                 best.unit_price_nanos * unit.unit_size):
            best = unit
    return best


class _TierPrices(NamedTuple):
    """What an estimate needs of one tier's meter table, looked up once."""

    requests_nanos: int
    dearest_input: MeterPrice | None  # of input and cached reads (embeddings: the embedding price)
    dearest_write: MeterPrice | None  # of those and the cache writes; None when the table prices no cache write
    output: MeterPrice | None

    @classmethod
    def of(cls, table: Mapping[str, MeterPrice], embeddings: bool) -> _TierPrices:
        requests = _ceil_nanos(1, _price_of(table, REQUESTS))
        if embeddings:
            return cls(requests, _price_of(table, EMBEDDING), None, None)
        inputs = [_price_of(table, m) for m in (INPUT, CACHED)]
        writes = None
        if CACHE_WRITE in table or CACHE_WRITE_1H in table:
            writes = _dearest([*inputs, *(_price_of(table, m) for m in (CACHE_WRITE, CACHE_WRITE_1H))])
        return cls(requests, _dearest(inputs), writes, _price_of(table, OUTPUT))


def request_estimator(endpoint: str, price: ModelPrice, plan: str) -> Callable[[Mapping[str, Any]], int]:
    """`estimate_request_nanos` for one (endpoint, model price, plan), with everything that does not depend on the
    body (endpoint kind, meter lookups per tier) worked out once: validation prices every line through one."""
    embeddings = _endpoint_kind(endpoint) == "embeddings"
    name = price.plan_name(plan)
    base = _TierPrices.of(price.plans[name], embeddings)
    tiers = [(tier.above_input_tokens, _TierPrices.of(tier.plans[name], embeddings)) for tier in price.tiers]
    default_cap = price.default_max_output_tokens

    def estimate(body: Mapping[str, Any]) -> int:
        input_tokens = estimate_input_tokens(body)
        prices = base
        for threshold, tier in tiers:
            if input_tokens > threshold:
                prices = tier
        unit = prices.dearest_input
        if prices.dearest_write is not None and b"cache_control" in orjson.dumps(body, default=str):
            unit = prices.dearest_write  # a prompt marked for caching may be written at up to 2x input
        total = prices.requests_nanos + _ceil_nanos(input_tokens, unit)
        if embeddings:
            return total
        return total + _ceil_nanos(output_cap(body, default_cap), prices.output)

    return estimate


def estimate_request_nanos(endpoint: str, body: Mapping[str, Any], price: ModelPrice, plan: str) -> int:
    """A fast, conservative upper bound of one request's cost in nanos, for reservations.

    Input tokens are estimated from the JSON of the prompt fields (1 token per 2.5 bytes, plus a fixed
    overhead) and priced at the tier that estimate selects, at the dearest of the input and cached-read
    prices (and of the cache-write prices when the body marks anything with `cache_control`); output is the
    request's cap (max_completion_tokens / max_output_tokens / max_tokens, times
    `n`/`best_of`), else `price.default_max_output_tokens`, at the output price of that tier; embeddings
    count input only. Each meter is rounded up. Image and audio parts count only by their JSON size.
    Pricing many requests of one model: `request_estimator` (the same function, prepared once).
    """
    return request_estimator(endpoint, price, plan)(body)
