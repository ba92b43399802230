"""Money as values: integer nanos, one request's priced meters, a batch's aggregated pricing lines.

Owns the value types every layer shares (the calculator makes them, storage persists them, the wire renders
them) and the arithmetic that belongs to the values themselves: rounding a line half up once, on its
aggregated quantity; rendering nanos as an exact USD string; and why a finished batch was billed as it was.
1 USD = 10^9 nanos and no float ever holds money. Pure: no I/O, nothing of ours beyond `domain`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from aistats_gateway.domain.batch import BatchStatus

NANOS_PER_USD = 1_000_000_000

INPUT = "input_text_tokens"
CACHED = "cached_read_text_tokens"
CACHE_WRITE = "cached_write_text_tokens"  # Anthropic 5-minute cache writes (1.25x input)
CACHE_WRITE_1H = "cached_write_1h_text_tokens"  # Anthropic 1-hour cache writes (2x input)
OUTPUT = "output_text_tokens"
EMBEDDING = "embedding_tokens"
REQUESTS = "requests"
METERS: tuple[str, ...] = (INPUT, CACHED, CACHE_WRITE, CACHE_WRITE_1H, OUTPUT, EMBEDDING, REQUESTS)
METER_ORDER = {meter: index for index, meter in enumerate(METERS)}


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


def billing_reason(*, ran: bool, cost_nanos: int, failed_lines: int, target: BatchStatus) -> str:
    """Why a batch ending in `target` was billed as it was (API.md's `billing_reason`): nothing ran (the
    terminal status itself), it ran at no cost, it was charged for a partial success, or charged in full."""
    if not ran:
        return target.value
    if cost_nanos == 0:
        return "zero_cost"
    if failed_lines > 0 or target is not BatchStatus.COMPLETED:
        return "charged_partial_success"
    return "charged"


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
        rows.sort(key=lambda r: (r.provider, r.model, r.plan, METER_ORDER.get(r.meter, len(METER_ORDER)),
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
