"""The price catalog: the shipped list prices (prices.toml) plus config overrides, resolved by name.

Owns the price data model (frozen dataclasses of integer nanos: 1 USD = 10^9 nanos), its validation, and
model-name resolution (aliases, a `provider/` prefix in the model name, provider-agnostic names so an
OpenAI-compatible provider called anything still finds "openai" prices). Money never passes through a
float: prices are written as decimal strings and converted exactly.

Must never do I/O beyond reading the shipped prices.toml through importlib.resources, never read config
or the environment (overrides are passed in), and knows nothing of requests, usage or batches
(calculator.py does the arithmetic).
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any, TypeGuard

from aistats_gateway.domain.execution import BATCH as BATCH  # the plan names are the domain's
from aistats_gateway.domain.execution import STANDARD as STANDARD

# The meter names and the nanos unit are money values shared by every layer: they live in domain.money.
from aistats_gateway.domain.money import CACHE_WRITE as CACHE_WRITE
from aistats_gateway.domain.money import CACHE_WRITE_1H as CACHE_WRITE_1H
from aistats_gateway.domain.money import CACHED as CACHED
from aistats_gateway.domain.money import EMBEDDING as EMBEDDING
from aistats_gateway.domain.money import INPUT as INPUT
from aistats_gateway.domain.money import METERS as METERS
from aistats_gateway.domain.money import NANOS_PER_USD as NANOS_PER_USD
from aistats_gateway.domain.money import OUTPUT as OUTPUT
from aistats_gateway.domain.money import REQUESTS as REQUESTS

TOKENS_PER_UNIT = 1_000_000
# Token meters are priced per 1M tokens, `requests` per request, unless an entry says otherwise.
DEFAULT_UNIT_SIZE: dict[str, int] = {meter: (1 if meter == REQUESTS else TOKENS_PER_UNIT) for meter in METERS}

# A sanity bound on one unit's price (per 1M tokens or per request), far above any real list price.
MAX_UNIT_PRICE_USD = 1_000_000


# fail(field, problem) -> the ValueError to raise, naming the model being parsed.
_Fail = Callable[[str, str], ValueError]

_ENTRY_KEYS = frozenset({"provider", "model", "aliases", "default_max_output_tokens", "plans", "tiers", "note"})
_TIER_KEYS = frozenset({"above_input_tokens", "plans"})


@dataclass(frozen=True)
class MeterPrice:
    """The price of one meter: `unit_price_nanos` integer nanos per `unit_size` units (tokens or requests)."""

    meter: str
    unit_size: int
    unit_price_nanos: int


@dataclass(frozen=True)
class PriceTier:
    """Prices for requests whose input tokens (input + cached reads) exceed `above_input_tokens`.

    `plans` is complete: every meter of the model's plan, with the tier's prices merged over the base ones.
    """

    above_input_tokens: int
    plans: dict[str, dict[str, MeterPrice]]


@dataclass(frozen=True)
class ModelPrice:
    """The prices of one model: `plans[plan][meter]`, tiers in ascending threshold order."""

    provider: str
    model: str
    plans: dict[str, dict[str, MeterPrice]]
    default_max_output_tokens: int
    tiers: tuple[PriceTier, ...] = ()
    aliases: tuple[str, ...] = ()

    def plan_name(self, plan: str) -> str:
        """`plan` if the model prices it, else `standard` (the undiscounted list price; never under-bills)."""
        return plan if plan in self.plans else STANDARD

    def meters(self, plan: str, input_tokens: int = 0) -> dict[str, MeterPrice]:
        """The meter prices of `plan` for a request with `input_tokens` input tokens (the tier they select)."""
        name = self.plan_name(plan)
        chosen = self.plans[name]
        for tier in self.tiers:
            if input_tokens > tier.above_input_tokens:
                chosen = tier.plans[name]
        return chosen


class PriceCatalog:
    """An immutable set of model prices with name resolution; build it with `load` (or from entries)."""

    def __init__(self, models: Iterable[ModelPrice]) -> None:
        self._models: tuple[ModelPrice, ...] = tuple(models)
        self._exact: dict[tuple[str, str], ModelPrice] = {}
        self._by_name: dict[str, list[ModelPrice]] = {}
        for price in self._models:
            provider = _norm(price.provider)
            for name in (price.model, *price.aliases):
                key = (provider, _norm(name))
                other = self._exact.get(key)
                if other is not None:
                    raise ValueError(
                        f"price catalog: model '{price.provider}/{price.model}' field 'aliases': the name "
                        f"'{name}' is already used by '{other.provider}/{other.model}'; each name of a provider "
                        "must be unique"
                    )
                self._exact[key] = price
                self._by_name.setdefault(_norm(name), []).append(price)

    @classmethod
    def load(cls, overrides: list[dict[str, Any]] | None = None) -> PriceCatalog:
        """The shipped prices.toml, with `overrides` (entries of the same shape) replacing or adding models.

        An override replaces the shipped entry of the same (provider, model) — aliases included — or is added.
        Raises ValueError naming the model and the field when any entry is invalid.
        """
        return cls.from_entries(_shipped_entries(), overrides)

    @classmethod
    def from_entries(
        cls, entries: Iterable[Mapping[str, Any]], overrides: Iterable[Mapping[str, Any]] | None = None
    ) -> PriceCatalog:
        """A catalog of `entries` (prices.toml's `[[models]]` shape) with `overrides` applied; pure."""
        merged: dict[tuple[str, str], ModelPrice] = {}
        for index, entry in enumerate(entries):
            price = parse_model_price(entry, where=f"models[{index}]")
            key = (_norm(price.provider), _norm(price.model))
            if key in merged:
                raise ValueError(
                    f"price catalog: model '{price.provider}/{price.model}' field 'model': listed twice"
                )
            merged[key] = price
        for index, entry in enumerate(overrides or ()):
            price = parse_model_price(entry, where=f"overrides[{index}]")
            merged[(_norm(price.provider), _norm(price.model))] = price
        return cls(merged.values())

    def models(self) -> list[ModelPrice]:
        return list(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def lookup(self, provider: str, model: str) -> ModelPrice | None:
        """The price of `model` served by `provider`, or None when no entry prices that name.

        Order: an exact (provider, name) entry, where name is the model id or one of its aliases, first as
        given and then without a `prefix/` (so "openai/gpt-4o-mini" works); then the (prefix, rest) entry;
        then any provider's entry for that name (so an OpenAI-compatible provider named "vllm" serving
        "gpt-4o-mini" gets OpenAI's price, and an unknown self-hosted model gets None). Case-insensitive.
        """
        wanted = _norm(provider)
        full = _norm(model)
        names = [full]
        prefix = ""
        if "/" in full:
            prefix, rest = full.split("/", 1)
            names.append(rest)
        for name in names:
            hit = self._exact.get((wanted, name))
            if hit is not None:
                return hit
        if prefix:
            hit = self._exact.get((prefix, names[1]))
            if hit is not None:
                return hit
        for name in names:
            candidates = self._by_name.get(name)
            if candidates:
                return candidates[0]
        return None


@functools.cache
def _shipped_entries() -> tuple[Mapping[str, Any], ...]:
    text = resources.files("aistats_gateway.pricing").joinpath("prices.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    models = data.get("models")
    if not isinstance(models, list):
        raise ValueError("price catalog: prices.toml has no [[models]] entries")
    return tuple(models)


def _norm(name: str) -> str:
    return name.strip().lower()


def parse_model_price(entry: Mapping[str, Any], where: str = "entry") -> ModelPrice:
    """Validate one `[[models]]` entry into a ModelPrice; ValueError names the model and the field."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"price catalog: {where} must be a table with provider, model and plans")
    raw_provider = entry.get("provider")
    raw_model = entry.get("model")
    label = f"{raw_provider}/{raw_model}" if isinstance(raw_provider, str) and isinstance(raw_model, str) else where

    def fail(field: str, problem: str) -> ValueError:
        return ValueError(f"price catalog: model '{label}' field '{field}': {problem}")

    for key, value in (("provider", raw_provider), ("model", raw_model)):
        if not isinstance(value, str) or not value.strip():
            raise fail(key, "must be a non-empty string")
    provider, model = str(raw_provider).strip(), str(raw_model).strip()
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise fail(unknown[0], "unknown field; allowed: " + ", ".join(sorted(_ENTRY_KEYS)))

    if not isinstance(entry.get("note", ""), str):
        raise fail("note", "must be a string")

    aliases = entry.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
        raise fail("aliases", "must be a list of non-empty strings")

    max_output = entry.get("default_max_output_tokens")
    if not _is_int(max_output) or max_output < 0:
        raise fail("default_max_output_tokens", "must be an integer >= 0 (the model's maximum output tokens)")

    raw_plans = entry.get("plans")
    if not isinstance(raw_plans, Mapping) or not raw_plans:
        raise fail("plans", f"must be a table of plans, at least '{STANDARD}'")
    if STANDARD not in raw_plans:
        raise fail("plans", f"the '{STANDARD}' plan is required")
    plans = {name: _parse_plan(meters, f"plans.{name}", fail) for name, meters in raw_plans.items()}
    for name, meters in plans.items():
        if not meters:
            raise fail(f"plans.{name}", "prices no meter")

    raw_tiers = entry.get("tiers", [])
    if not isinstance(raw_tiers, list):
        raise fail("tiers", "must be a list of tiers")
    tiers: list[PriceTier] = []
    for index, raw in enumerate(raw_tiers):
        tiers.append(_parse_tier(raw, f"tiers[{index}]", plans, fail))
    tiers.sort(key=lambda tier: tier.above_input_tokens)
    thresholds = [tier.above_input_tokens for tier in tiers]
    if len(set(thresholds)) != len(thresholds):
        raise fail("tiers", "two tiers have the same above_input_tokens")

    return ModelPrice(
        provider=provider,
        model=model,
        plans=plans,
        default_max_output_tokens=max_output,
        tiers=tuple(tiers),
        aliases=tuple(a.strip() for a in aliases),
    )


def _parse_tier(raw: Any, field: str, base: dict[str, dict[str, MeterPrice]], fail: _Fail) -> PriceTier:
    if not isinstance(raw, Mapping):
        raise fail(field, "must be a table with above_input_tokens and plans")
    unknown = sorted(set(raw) - _TIER_KEYS)
    if unknown:
        raise fail(f"{field}.{unknown[0]}", "unknown field; allowed: above_input_tokens, plans")
    threshold = raw.get("above_input_tokens")
    if not _is_int(threshold) or threshold <= 0:
        raise fail(f"{field}.above_input_tokens", "must be an integer > 0")
    raw_plans = raw.get("plans")
    if not isinstance(raw_plans, Mapping):
        raise fail(f"{field}.plans", "must be a table of plans")
    if set(raw_plans) != set(base):
        raise fail(
            f"{field}.plans",
            "must list exactly the model's plans (" + ", ".join(sorted(base)) + "); got "
            + (", ".join(sorted(raw_plans)) or "none"),
        )
    plans: dict[str, dict[str, MeterPrice]] = {}
    for name, meters in raw_plans.items():
        changed = _parse_plan(meters, f"{field}.plans.{name}", fail)
        extra = sorted(set(changed) - set(base[name]))
        if extra:
            raise fail(f"{field}.plans.{name}.{extra[0]}", f"the base plan '{name}' does not price this meter")
        plans[name] = {**base[name], **changed}
    return PriceTier(above_input_tokens=threshold, plans=plans)


def _parse_plan(raw: Any, field: str, fail: _Fail) -> dict[str, MeterPrice]:
    if not isinstance(raw, Mapping):
        raise fail(field, "must be a table of meter = price")
    meters: dict[str, MeterPrice] = {}
    for meter, value in raw.items():
        where = f"{field}.{meter}"
        if meter not in DEFAULT_UNIT_SIZE:
            raise fail(where, "unknown meter; meters: " + ", ".join(METERS))
        unit_size = DEFAULT_UNIT_SIZE[meter]
        usd_value = value
        if isinstance(value, Mapping):
            if set(value) - {"usd", "unit_size"} or "usd" not in value:
                raise fail(where, "a meter table is { usd = \"…\", unit_size = N }")
            usd_value = value["usd"]
            unit_size = value.get("unit_size", unit_size)
            if not _is_int(unit_size) or unit_size <= 0:
                raise fail(f"{where}.unit_size", "must be an integer > 0")
        try:
            nanos = usd_to_nanos(usd_value)
        except ValueError as exc:
            raise fail(where, str(exc)) from None
        meters[meter] = MeterPrice(meter, unit_size, nanos)
    return meters


def usd_to_nanos(value: Any) -> int:
    """An exact USD amount (decimal string, int, or a float's shortest repr) as integer nanos, >= 0.

    Raises ValueError for anything negative, non-finite, malformed, or finer than 1 nano-USD.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a price in USD; write a decimal string such as \"0.15\"")
    if isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal USD amount, such as \"0.15\"") from None
    elif isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        amount = Decimal(repr(value))
    else:
        raise ValueError(f"{value!r} is not a price in USD; write a decimal string such as \"0.15\"")
    if not amount.is_finite() or amount < 0 or amount > MAX_UNIT_PRICE_USD:
        raise ValueError(f"{value!r} must be an amount from 0 to {MAX_UNIT_PRICE_USD} USD")
    # Exact integer arithmetic on the decimal's digits (Decimal multiplication would round at 28 digits).
    _, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    coefficient = int("".join(map(str, digits)))
    shift = exponent + 9
    if shift >= 0:
        return coefficient * int(10**shift)
    nanos, remainder = divmod(coefficient, int(10 ** (-shift)))
    if remainder:
        raise ValueError(f"{value!r} is finer than 1 nano-USD (9 decimal places) per unit")
    return nanos


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
